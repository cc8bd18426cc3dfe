// Hocuspocus frames by hand (lib0 encoding) and a raw `ws` client, for what the provider never sends.

import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import WebSocket from 'ws';

import { track } from './tracking.mjs';
import { AUTH, MT, PROVIDER_VERSION, SYNC, withTimeout } from './util.mjs';

// ---------------------------------------------------------------------------------------------
// Raw frames (lib0 encoding) and a raw ws client
// ---------------------------------------------------------------------------------------------

/** Encode one Hocuspocus frame: varString(address) varUint(type) + whatever `write` adds. */
export function frame(address, type, write) {
  const enc = encoding.createEncoder();
  encoding.writeVarString(enc, address);
  encoding.writeVarUint(enc, type);
  if (write) write(enc);
  return encoding.toUint8Array(enc);
}

export const authFrame = (doc, token = '', version = PROVIDER_VERSION) =>
  frame(doc, MT.Auth, (e) => {
    encoding.writeVarUint(e, AUTH.Token);
    encoding.writeVarString(e, token);
    if (version !== null) encoding.writeVarString(e, version);
  });

export const syncStep1Frame = (doc, stateVector = new Uint8Array([0])) =>
  frame(doc, MT.Sync, (e) => {
    encoding.writeVarUint(e, SYNC.Step1);
    encoding.writeVarUint8Array(e, stateVector);
  });

export const syncStep2Frame = (doc, update) =>
  frame(doc, MT.Sync, (e) => {
    encoding.writeVarUint(e, SYNC.Step2);
    encoding.writeVarUint8Array(e, update);
  });

export const updateFrame = (doc, update) =>
  frame(doc, MT.Sync, (e) => {
    encoding.writeVarUint(e, SYNC.Update);
    encoding.writeVarUint8Array(e, update);
  });

export const queryAwarenessFrame = (doc) => frame(doc, MT.QueryAwareness);
export const statelessFrame = (doc, payload) => frame(doc, MT.Stateless, (e) => encoding.writeVarString(e, payload));
export const broadcastStatelessFrame = (doc, payload) =>
  frame(doc, MT.BroadcastStateless, (e) => encoding.writeVarString(e, payload));
export const closeFrame = (doc) => frame(doc, MT.CLOSE);

/** Decode an awareness update: [{clientId, clock, state}] (state parsed from JSON, null = removed). */
export function decodeAwarenessUpdate(update) {
  const dec = decoding.createDecoder(update);
  const n = decoding.readVarUint(dec);
  const entries = [];
  for (let i = 0; i < n; i += 1) {
    const clientId = decoding.readVarUint(dec);
    const clock = decoding.readVarUint(dec);
    const state = JSON.parse(decoding.readVarString(dec));
    entries.push({ clientId, clock, state });
  }
  return entries;
}

/** Decode a frame received from the server. Never throws: undecodable frames get `error`. */
export function decodeFrame(bytes) {
  const out = { bytes, length: bytes.length };
  if (bytes.length === 1 && (bytes[0] === MT.Ping || bytes[0] === MT.Pong)) {
    out.type = bytes[0];
    out.ping = bytes[0] === MT.Ping;
    out.pong = bytes[0] === MT.Pong;
    return out;
  }
  try {
    const dec = decoding.createDecoder(bytes);
    out.address = decoding.readVarString(dec);
    out.type = decoding.readVarUint(dec);
    switch (out.type) {
      case MT.Sync:
      case MT.SyncReply:
        out.sub = decoding.readVarUint(dec);
        out.payload = decoding.readVarUint8Array(dec);
        break;
      case MT.Awareness:
        out.payload = decoding.readVarUint8Array(dec);
        out.awareness = decodeAwarenessUpdate(out.payload);
        break;
      case MT.Auth:
        out.sub = decoding.readVarUint(dec);
        out.string = decoding.hasContent(dec) ? decoding.readVarString(dec) : '';
        break;
      case MT.Stateless:
      case MT.CLOSE:
        out.string = decoding.hasContent(dec) ? decoding.readVarString(dec) : '';
        break;
      case MT.SyncStatus:
        out.sub = decoding.readVarInt(dec);
        break;
      default:
        break;
    }
  } catch (error) {
    out.error = String(error?.message || error);
  }
  return out;
}

export function describeFrame(f) {
  if (f.ping) return 'Ping';
  if (f.pong) return 'Pong';
  const name = Object.keys(MT).find((k) => MT[k] === f.type) ?? `type${f.type}`;
  const addr = f.address !== undefined ? JSON.stringify(f.address.length > 40 ? `${f.address.slice(0, 40)}…` : f.address) : '?';
  let extra = '';
  if (f.sub !== undefined) extra += ` sub=${f.sub}`;
  if (f.string !== undefined) extra += ` ${JSON.stringify(f.string)}`;
  if (f.payload) extra += ` (${f.payload.length} B)`;
  if (f.error) extra += ` ERROR ${f.error}`;
  return `${addr} ${name}${extra}`;
}

/**
 * A raw `ws` client that records every frame it receives and how its socket closed.
 * `answerPings` (default true) answers a one-byte Ping with a one-byte Pong, like the v4 provider;
 * `autoPong` (default true) answers WebSocket-level pings, like every browser.
 */
export class RawClient {
  static async connect(url, { answerPings = true, autoPong = true, timeout = 5_000, path: urlPath = '/' } = {}) {
    const client = new RawClient(`${url}${urlPath}`, answerPings, autoPong);
    track(client);
    await withTimeout(client.opened, timeout, `raw client to open ${url}`);
    return client;
  }

  constructor(url, answerPings, autoPong) {
    this.frames = [];
    this.waiters = new Set();
    this.closeInfo = null;
    this.pingsReceived = 0;
    this.wsPingsReceived = 0;
    // autoPong: false leaves WebSocket-level pings unanswered (ws answers them by default).
    this.ws = new WebSocket(url, { perMessageDeflate: false, autoPong });
    this.ws.on('ping', () => {
      this.wsPingsReceived += 1;
    });
    this.ws.binaryType = 'nodebuffer';
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
    this.opened.catch(() => {});
    this.ws.on('error', () => {
      // recorded through 'close'
    });
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString('utf8') };
        this.notify();
        resolve(this.closeInfo);
      });
    });
    this.ws.on('message', (data, isBinary) => {
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
      const f = decodeFrame(bytes);
      f.isBinary = isBinary;
      f.at = Date.now();
      this.frames.push(f);
      if (f.ping) {
        this.pingsReceived += 1;
        if (answerPings && this.isOpen) this.ws.send(new Uint8Array([MT.Pong]));
      }
      this.notify();
    });
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  notify() {
    for (const w of [...this.waiters]) w();
  }

  send(bytes) {
    this.ws.send(bytes);
  }

  /** Index to pass as `since` to only look at frames received from now on. */
  mark() {
    return this.frames.length;
  }

  /** Wait for a received frame matching `pred` (searching from index `since`). */
  waitFrame(pred, { since = 0, timeout = 5_000, message = 'a matching frame' } = {}) {
    const find = () => this.frames.slice(since).find(pred);
    const found = find();
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const check = () => {
        const f = find();
        if (f) {
          done();
          resolve(f);
        } else if (this.closeInfo) {
          done();
          reject(
            new Error(
              `socket closed (${JSON.stringify(this.closeInfo)}) before ${message}; frames: ${this.describeFrames(since)}`,
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeout} ms waiting for ${message}; frames: ${this.describeFrames(since)}`));
      }, timeout);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Wait for the socket to close; resolves {code, reason}. */
  waitClose({ timeout = 5_000 } = {}) {
    return withTimeout(this.closed, timeout, `socket to be closed by the server; frames: ${this.describeFrames()}`);
  }

  describeFrames(since = 0) {
    const list = this.frames.slice(since).map(describeFrame);
    return list.length ? list.join(' | ') : '(none)';
  }

  /** Send Auth(token) for `doc` and wait for the Auth answer. Returns the scope; throws if denied. */
  async auth(doc, { token = '', timeout = 5_000 } = {}) {
    const since = this.mark();
    this.send(authFrame(doc, token));
    const answer = await this.waitFrame((f) => f.address === doc && f.type === MT.Auth, {
      since,
      timeout,
      message: `the Auth answer for ${JSON.stringify(doc.slice(0, 40))}`,
    });
    if (answer.sub !== AUTH.Authenticated) {
      throw new Error(`not authenticated: ${describeFrame(answer)}`);
    }
    return answer.string;
  }

  /** Send SyncStep1 (empty state vector by default) and wait for the server's SyncStep2. */
  async syncHandshake(doc, { stateVector, timeout = 5_000 } = {}) {
    const since = this.mark();
    this.send(syncStep1Frame(doc, stateVector));
    return this.waitFrame((f) => f.address === doc && f.type === MT.Sync && f.sub === SYNC.Step2, {
      since,
      timeout,
      message: 'SyncStep2 from the server',
    });
  }

  destroy() {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    this.ws.terminate();
  }
}

/** The frames (decoded) received by a HocuspocusProviderWebsocket, recorded from now on. */
export function recordSocketFrames(socket) {
  const frames = [];
  const handler = (event) => {
    const data = event?.data;
    let bytes;
    if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else return;
    const f = decodeFrame(bytes.slice());
    f.at = Date.now();
    frames.push(f);
  };
  socket.on('message', handler);
  frames.stop = () => socket.off('message', handler);
  return frames;
}
