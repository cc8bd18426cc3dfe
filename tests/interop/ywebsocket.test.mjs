// The y-websocket endpoint: plain `y-websocket` clients (3.0.0, and 2.1.0 for the key cases)
// against zedi-sync, on the same port and the same documents as the Hocuspocus provider.
// The document name is the URL path (percent-decoded); the token travels in `?token=`.
//
// Every y-websocket provider here is created with `disableBc: true`: in one Node process two
// providers of the same room would otherwise sync through lib0's BroadcastChannel and never
// need the server. zedi-sync only: skipped in reference mode (Hocuspocus has no such endpoint).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before } from 'node:test';

import * as awarenessProtocol from 'y-protocols/awareness';
import { WebsocketProvider as WebsocketProvider3 } from 'y-websocket';
import { WebsocketProvider as WebsocketProvider2 } from 'y-websocket-v2';

import {
  REFERENCE,
  WebSocket,
  Y,
  cleanupAll,
  decodeAwarenessUpdate,
  decoding,
  encoding,
  makeDataDir,
  openProvider,
  quietPeriod,
  sleep,
  startPostgres,
  startRedis,
  startServer,
  test,
  text,
  uniqueDoc,
  waitFor,
  waitSynced,
  waitText,
  withTimeout,
} from './harness.mjs';
import { track } from './lib/tracking.mjs';

const VERSIONS = [
  { version: '3.0.0', WebsocketProvider: WebsocketProvider3 },
  { version: '2.1.0', WebsocketProvider: WebsocketProvider2 },
];
const V3 = VERSIONS[0];

// y-protocols message types (the y-websocket wire format: no document name, one message per frame).
const YM = { Sync: 0, Awareness: 1, Auth: 2, QueryAwareness: 3 };
const YSYNC = { Step1: 0, Step2: 1, Update: 2 };

const skip = (t) => (REFERENCE ? (t.skip('zedi-sync y-websocket endpoint only'), true) : false);

let server;
before(async () => {
  if (REFERENCE) return;
  server = await startServer();
});
after(cleanupAll);

// ---------------------------------------------------------------------------------------------
// y-websocket clients
// ---------------------------------------------------------------------------------------------

const toBytes = (data) => {
  if (data instanceof ArrayBuffer) return new Uint8Array(data).slice();
  if (Array.isArray(data)) return new Uint8Array(Buffer.concat(data));
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
};

/** Decode one y-websocket frame. Never throws: `error` says what did not decode; `rest` counts trailing bytes. */
function decodeYFrame(bytes) {
  const out = { bytes, length: bytes.length };
  const dec = decoding.createDecoder(bytes);
  try {
    out.type = decoding.readVarUint(dec);
    switch (out.type) {
      case YM.Sync:
        out.sub = decoding.readVarUint(dec);
        out.payload = decoding.readVarUint8Array(dec);
        break;
      case YM.Awareness:
        out.payload = decoding.readVarUint8Array(dec);
        out.awareness = decodeAwarenessUpdate(out.payload);
        break;
      case YM.Auth:
        out.sub = decoding.readVarUint(dec);
        out.reason = decoding.readVarString(dec);
        break;
      default:
        break;
    }
    out.rest = bytes.length - dec.pos;
  } catch (error) {
    out.error = String(error?.message || error);
  }
  return out;
}

function describeYFrame(f) {
  const name = Object.keys(YM).find((k) => YM[k] === f.type) ?? `type${f.type}`;
  let extra = '';
  if (f.sub !== undefined) extra += ` sub=${f.sub}`;
  if (f.reason !== undefined) extra += ` ${JSON.stringify(f.reason)}`;
  if (f.awareness) extra += ` ${JSON.stringify(f.awareness.map((e) => [e.clientId, e.state]))}`;
  else if (f.payload) extra += ` (${f.payload.length} B)`;
  if (f.rest) extra += ` +${f.rest} trailing bytes`;
  if (f.error) extra += ` ERROR ${f.error}`;
  return `${name}${extra}`;
}

/**
 * A `ws` WebSocket class for one provider that keeps every socket it opens, with the decoded
 * frames each received and the errors it raised (ws reports a refused upgrade as
 * "Unexpected server response: 401").
 */
function recordingWebSocketClass() {
  const sockets = [];
  class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      this.received = [];
      this.errors = [];
      sockets.push(this);
      this.on('message', (data) => this.received.push(decodeYFrame(toBytes(data))));
      this.on('error', (error) => this.errors.push(String(error?.message || error)));
    }
  }
  return { RecordingWebSocket, sockets };
}

/**
 * A y-websocket provider of `WebsocketProvider` for document `name` on `url`; destroyed (with
 * its awareness and doc) after the test. `frames()` lists what all its sockets received.
 */
function createYws(WebsocketProvider, url, name, { token, doc = new Y.Doc(), ...options } = {}) {
  const { RecordingWebSocket, sockets } = recordingWebSocketClass();
  const provider = new WebsocketProvider(url, name, doc, {
    WebSocketPolyfill: RecordingWebSocket,
    disableBc: true,
    params: token === undefined ? {} : { token },
    maxBackoffTime: 1_000,
    ...options,
  });
  provider.sockets = sockets;
  provider.frames = () => sockets.flatMap((s) => s.received);
  provider.errors = () => sockets.flatMap((s) => s.errors);
  track({
    destroy: () => {
      provider.destroy();
      provider.awareness.destroy();
      doc.destroy();
    },
  });
  return provider;
}

const ytext = (provider, field = 'default') => provider.doc.getText(field).toString();

function ywsState(provider) {
  const t = ytext(provider);
  return JSON.stringify({
    room: provider.roomname,
    connected: provider.wsconnected,
    synced: provider.synced,
    sockets: provider.sockets.length,
    errors: provider.errors().slice(-3),
    frames: provider.frames().slice(-6).map(describeYFrame),
    text: t.length > 200 ? `${t.slice(0, 200)}… (${t.length} chars)` : t,
  });
}

function waitYSynced(provider, { timeout = 10_000 } = {}) {
  return waitFor(() => provider.wsconnected && provider.synced, {
    timeout,
    message: `y-websocket provider "${provider.roomname}" to be synced`,
    describe: () => ywsState(provider),
  });
}

async function openYws(WebsocketProvider, url, name, options = {}) {
  const provider = createYws(WebsocketProvider, url, name, options);
  await waitYSynced(provider);
  return provider;
}

/** Wait until every y-websocket provider's Y.Text equals `expected` (or satisfies it). */
function waitYText(providers, expected, { field = 'default', timeout = 10_000 } = {}) {
  const list = Array.isArray(providers) ? providers : [providers];
  const ok = typeof expected === 'function' ? expected : (s) => s === expected;
  return waitFor(() => list.every((p) => ok(ytext(p, field))), {
    timeout,
    message: `y-websocket text "${field}" to be ${typeof expected === 'function' ? 'as expected' : JSON.stringify(expected)}`,
    describe: () => list.map(ywsState).join('\n    '),
  });
}

const awarenessIds = (awareness) => JSON.stringify([...awareness.getStates().keys()]);

// ---------------------------------------------------------------------------------------------
// A raw y-websocket client (ws + lib0), for frames the provider never sends
// ---------------------------------------------------------------------------------------------

class YRawClient {
  static async connect(url, name, { token, timeout = 5_000 } = {}) {
    const query = token === undefined ? '' : `?token=${encodeURIComponent(token)}`;
    const client = new YRawClient(`${url}/${encodeURIComponent(name)}${query}`);
    track(client);
    await withTimeout(client.opened, timeout, `raw y-websocket client to open ${name}`);
    return client;
  }

  constructor(url) {
    this.frames = [];
    this.waiters = new Set();
    this.closeInfo = null;
    this.ws = new WebSocket(url, { perMessageDeflate: false });
    this.ws.binaryType = 'nodebuffer';
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
    this.opened.catch(() => {});
    this.ws.on('error', () => {});
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString('utf8') };
        this.notify();
        resolve(this.closeInfo);
      });
    });
    this.ws.on('message', (data, isBinary) => {
      const f = decodeYFrame(toBytes(data));
      f.isBinary = isBinary;
      this.frames.push(f);
      this.notify();
    });
  }

  notify() {
    for (const w of [...this.waiters]) w();
  }

  send(bytes) {
    this.ws.send(bytes);
  }

  mark() {
    return this.frames.length;
  }

  describeFrames(since = 0) {
    const list = this.frames.slice(since).map(describeYFrame);
    return list.length ? list.join(' | ') : '(none)';
  }

  waitFrame(pred, { since = 0, timeout = 5_000, message = 'a matching frame' } = {}) {
    const find = () => this.frames.slice(since).find(pred);
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      const check = () => {
        const f = find();
        if (f) {
          done();
          resolve(f);
        } else if (this.closeInfo) {
          done();
          reject(new Error(`socket closed (${JSON.stringify(this.closeInfo)}) before ${message}; frames: ${this.describeFrames(since)}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeout} ms waiting for ${message}; frames: ${this.describeFrames(since)}`));
      }, timeout);
      this.waiters.add(check);
      check();
    });
  }

  /** Wait for the server to close the socket; resolves {code, reason}. */
  waitClose({ timeout = 5_000 } = {}) {
    return withTimeout(this.closed, timeout, `socket to be closed by the server; frames: ${this.describeFrames()}`);
  }

  destroy() {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    this.ws.terminate();
  }
}

const yMessage = (write) => {
  const enc = encoding.createEncoder();
  write(enc);
  return encoding.toUint8Array(enc);
};
const ySyncStep1 = (stateVector = new Uint8Array([0])) =>
  yMessage((e) => {
    encoding.writeVarUint(e, YM.Sync);
    encoding.writeVarUint(e, YSYNC.Step1);
    encoding.writeVarUint8Array(e, stateVector);
  });
const yUpdate = (update) =>
  yMessage((e) => {
    encoding.writeVarUint(e, YM.Sync);
    encoding.writeVarUint(e, YSYNC.Update);
    encoding.writeVarUint8Array(e, update);
  });
const yAwareness = (update) =>
  yMessage((e) => {
    encoding.writeVarUint(e, YM.Awareness);
    encoding.writeVarUint8Array(e, update);
  });
const yQueryAwareness = () => yMessage((e) => encoding.writeVarUint(e, YM.QueryAwareness));
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
};

// ---------------------------------------------------------------------------------------------
// Auth: HS256 tokens, as in auth.test.mjs
// ---------------------------------------------------------------------------------------------

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);
function signHs256(secret, claims) {
  const input = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(crypto.createHmac('sha256', secret).update(input).digest())}`;
}
const HS_SECRET = 'yws-test-secret';
const rwToken = () => signHs256(HS_SECRET, { sub: 'writer', exp: now() + 600 });
const roToken = () => signHs256(HS_SECRET, { sub: 'viewer', exp: now() + 600, 'cognito:groups': ['viewers'] });

let authServerPromise = null;
/** One server with auth on (HS256 secret, read-only group, documents claim), started on first use. */
function authServer() {
  authServerPromise ??= startServer({
    env: {
      JWT_SECRET: HS_SECRET,
      ZEDI__AUTH__LEEWAY_SECS: '0',
      ZEDI__AUTH__DOCUMENTS_CLAIM: 'zedi:documents',
      ZEDI__AUTH__READONLY_GROUPS: 'viewers',
      // A socket refused after the upgrade idles until this closes it (see the no-token test).
      ZEDI__TIMEOUTS__AUTH_MS: '1500',
      ZEDI__TIMEOUTS__PING_INTERVAL_MS: '500',
    },
  });
  return authServerPromise;
}

/**
 * Open a WebSocket to `url` and report how the upgrade was answered: `{status: 101}` (then
 * closed at once) or `{status, body}` of the refusal.
 */
function upgradeOutcome(url, { protocols } = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`no answer to the upgrade of ${url} within 5 s`));
    }, 5_000);
    ws.on('open', () => {
      clearTimeout(timer);
      ws.terminate();
      resolve({ status: 101, protocol: ws.protocol });
    });
    ws.on('unexpected-response', (req, res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        req.destroy();
        resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') });
      });
    });
    ws.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Sync between y-websocket clients (both versions)
// ---------------------------------------------------------------------------------------------

for (const { version, WebsocketProvider } of VERSIONS) {
  test(`y-websocket ${version}: two clients converge both ways`, async (t) => {
    if (skip(t)) return;
    const name = uniqueDoc(`yws-converge-${version}`);
    const [a, b] = await Promise.all([
      openYws(WebsocketProvider, server.url, name),
      openYws(WebsocketProvider, server.url, name),
    ]);

    // Concurrent edits.
    a.doc.getText('default').insert(0, 'alpha ');
    b.doc.getText('default').insert(0, 'beta ');
    await waitYText([a, b], (s) => s.includes('alpha ') && s.includes('beta '));
    assert.equal(ytext(a), ytext(b));
    assert.equal(ytext(a).length, 'alpha beta '.length);

    // Sequential edits each way.
    const ta = a.doc.getText('default');
    ta.insert(ta.length, '| from A');
    await waitYText(b, (s) => s.endsWith('| from A'));
    const tb = b.doc.getText('default');
    tb.insert(tb.length, ' | from B');
    await waitYText(a, (s) => s.endsWith('| from A | from B'));

    // Other shared types.
    a.doc.getMap('meta').set('title', 'Converged');
    b.doc.getArray('list').push([1, 2, 3]);
    await waitFor(() => b.doc.getMap('meta').get('title') === 'Converged', { message: 'map entry on B' });
    await waitFor(() => a.doc.getArray('list').length === 3, { message: 'array entries on A' });
    assert.equal(ytext(a), ytext(b));

    // Each frame from the server holds one message (the client reads one message per frame).
    for (const f of [...a.frames(), ...b.frames()]) {
      assert.ok(!f.error && !f.rest, `a well-formed single message per frame: ${describeYFrame(f)}`);
    }
  });

  test(`y-websocket ${version}: a late joiner gets the full state, there when "synced" fires`, async (t) => {
    if (skip(t)) return;
    const name = uniqueDoc(`yws-late-${version}`);
    const [a, observer] = await Promise.all([
      openYws(WebsocketProvider, server.url, name),
      openYws(WebsocketProvider, server.url, name),
    ]);
    const content = 'existing content ✓ — ünïcödé';
    a.doc.transact(() => {
      a.doc.getText('default').insert(0, content);
      a.doc.getMap('meta').set('owner', 'alice');
    });
    a.doc.getArray('list').push(['one', 'two']);
    // The observer seeing it means the server has it.
    await waitFor(() => ytext(observer) === content && observer.doc.getArray('list').length === 2, {
      message: 'the observer to have A’s edits',
      describe: () => ywsState(observer),
    });

    const doc = new Y.Doc();
    let textAtSynced = null;
    const late = createYws(WebsocketProvider, server.url, name, { doc });
    late.on('sync', (state) => {
      if (state && textAtSynced === null) textAtSynced = doc.getText('default').toString();
    });
    await waitYSynced(late);
    assert.equal(textAtSynced, content, 'content must be applied when "sync" fires');
    assert.equal(doc.getMap('meta').get('owner'), 'alice');
    assert.deepEqual(doc.getArray('list').toJSON(), ['one', 'two']);

    // The late joiner edits, a second late joiner sees both.
    late.doc.getText('default').insert(0, '> ');
    await waitYText([a, observer], `> ${content}`);
    const second = await openYws(WebsocketProvider, server.url, name);
    assert.equal(ytext(second), `> ${content}`);
  });

  test(`y-websocket ${version}: awareness appears at the other client and is removed when it leaves`, async (t) => {
    if (skip(t)) return;
    const name = uniqueDoc(`yws-aw-${version}`);
    const [a, b] = await Promise.all([
      openYws(WebsocketProvider, server.url, name),
      openYws(WebsocketProvider, server.url, name),
    ]);
    const aId = a.doc.clientID;
    const bId = b.doc.clientID;
    a.awareness.setLocalStateField('user', { name: 'alice', color: '#f00' });
    b.awareness.setLocalStateField('user', { name: 'bob' });
    await waitFor(() => b.awareness.getStates().get(aId)?.user?.name === 'alice', {
      timeout: 5_000,
      message: 'B to see A’s awareness',
      describe: () => awarenessIds(b.awareness),
    });
    await waitFor(() => a.awareness.getStates().get(bId)?.user?.name === 'bob', {
      timeout: 5_000,
      message: 'A to see B’s awareness',
      describe: () => awarenessIds(a.awareness),
    });
    a.awareness.setLocalStateField('cursor', { anchor: 1, head: 4 });
    await waitFor(() => b.awareness.getStates().get(aId)?.cursor?.head === 4, {
      timeout: 5_000,
      message: 'B to see A’s cursor',
    });

    // A third client joining now gets both states from the server.
    const c = await openYws(WebsocketProvider, server.url, name);
    await waitFor(() => c.awareness.getStates().get(aId)?.user && c.awareness.getStates().get(bId)?.user, {
      timeout: 5_000,
      message: 'a joiner to receive the current awareness states',
      describe: () => awarenessIds(c.awareness),
    });

    // A leaves (the provider sends its null state, then closes).
    a.destroy();
    await waitFor(() => !b.awareness.getStates().has(aId) && !c.awareness.getStates().has(aId), {
      timeout: 5_000,
      message: 'B and C to drop A’s awareness after A left',
      describe: () => `B ${awarenessIds(b.awareness)} C ${awarenessIds(c.awareness)}`,
    });
    assert.equal(b.awareness.getLocalState()?.user?.name, 'bob', 'B’s own state is untouched');
  });

  test(`y-websocket ${version}: offline edits merge after reconnect`, async (t) => {
    if (skip(t)) return;
    const name = uniqueDoc(`yws-offline-${version}`);
    const [a, b] = await Promise.all([
      openYws(WebsocketProvider, server.url, name),
      openYws(WebsocketProvider, server.url, name),
    ]);
    a.doc.getText('default').insert(0, 'base');
    await waitYText(b, 'base');

    a.disconnect();
    await waitFor(() => !a.wsconnected, { timeout: 5_000, message: 'A to be disconnected' });
    a.doc.getText('default').insert(4, ' +A');
    a.doc.getMap('meta').set('offline', 'A');
    b.doc.getText('default').insert(0, 'B+ ');
    await waitYText(a, 'base +A'); // local only
    await quietPeriod(300);
    assert.equal(ytext(b), 'B+ base', 'nothing of A’s offline edit reached B while A was away');
    assert.equal(ytext(a), 'base +A', 'nothing of B’s edit reached A while A was away');

    a.connect();
    await waitYSynced(a);
    await waitYText([a, b], 'B+ base +A');
    await waitFor(() => b.doc.getMap('meta').get('offline') === 'A', { message: 'A’s offline map entry on B' });

    // Both keep editing on the new connection.
    a.doc.getText('default').insert(0, '[');
    b.doc.getText('default').insert(b.doc.getText('default').length, ']');
    await waitYText([a, b], '[B+ base +A]');
  });

  test(`y-websocket ${version} and @hocuspocus/provider converge on one document (one node)`, async (t) => {
    if (skip(t)) return;
    const name = uniqueDoc(`yws-mixed-${version}`);
    const hp = await openProvider({ url: server.url, name });
    hp.document.getText('default').insert(0, 'from hocuspocus');
    await waitSynced(hp);
    const yws = await openYws(WebsocketProvider, server.url, name);
    assert.equal(ytext(yws), 'from hocuspocus', 'y-websocket gets what the Hocuspocus provider wrote');

    yws.doc.getText('default').insert(0, 'from y-websocket, ');
    await waitText(hp, 'from y-websocket, from hocuspocus');
    // Concurrent edits from both.
    hp.document.getText('default').insert(0, '<hp>');
    yws.doc.getText('default').insert(0, '<yws>');
    await waitFor(
      () => text(hp) === ytext(yws) && text(hp).includes('<hp>') && text(hp).includes('<yws>'),
      { message: 'both clients to converge', describe: () => `hp ${JSON.stringify(text(hp))} yws ${ywsState(yws)}` },
    );
    yws.doc.getMap('meta').set('k', 'v');
    await waitFor(() => hp.document.getMap('meta').get('k') === 'v', { message: 'map entry on the Hocuspocus side' });
    await waitSynced(hp);

    // A fresh Hocuspocus provider and a fresh y-websocket client see the same document.
    const hp2 = await openProvider({ url: server.url, name });
    const yws2 = await openYws(WebsocketProvider, server.url, name);
    assert.equal(text(hp2), ytext(yws));
    assert.equal(ytext(yws2), ytext(yws));
  });
}

// ---------------------------------------------------------------------------------------------
// y-websocket 3.0.0 only
// ---------------------------------------------------------------------------------------------

test('y-websocket: the server drops the awareness of a client whose socket dies', async (t) => {
  if (skip(t)) return;
  const name = uniqueDoc('yws-aw-kill');
  const [a, b] = await Promise.all([
    openYws(V3.WebsocketProvider, server.url, name),
    openYws(V3.WebsocketProvider, server.url, name),
  ]);
  const aId = a.doc.clientID;
  a.awareness.setLocalStateField('user', { name: 'alice' });
  await waitFor(() => b.awareness.getStates().get(aId)?.user?.name === 'alice', {
    timeout: 5_000,
    message: 'B to see A’s awareness',
  });
  // No null state from A: the TCP socket is cut and A does not come back.
  a.shouldConnect = false;
  a.ws.terminate();
  await waitFor(() => !b.awareness.getStates().has(aId), {
    timeout: 5_000,
    message: 'B to drop A’s awareness (well before the 30 s awareness timeout)',
    describe: () => awarenessIds(b.awareness),
  });
});

test('y-websocket: awareness crosses between y-websocket and @hocuspocus/provider', async (t) => {
  if (skip(t)) return;
  const name = uniqueDoc('yws-aw-mixed');
  const hp = await openProvider({ url: server.url, name });
  const yws = await openYws(V3.WebsocketProvider, server.url, name);
  hp.setAwarenessField('user', { name: 'hocuspocus-user' });
  yws.awareness.setLocalStateField('user', { name: 'yws-user' });
  const hpId = hp.document.clientID;
  const ywsId = yws.doc.clientID;
  await waitFor(() => yws.awareness.getStates().get(hpId)?.user?.name === 'hocuspocus-user', {
    timeout: 5_000,
    message: 'the y-websocket client to see the Hocuspocus provider’s awareness',
    describe: () => awarenessIds(yws.awareness),
  });
  await waitFor(() => hp.awareness.getStates().get(ywsId)?.user?.name === 'yws-user', {
    timeout: 5_000,
    message: 'the Hocuspocus provider to see the y-websocket client’s awareness',
    describe: () => awarenessIds(hp.awareness),
  });
  yws.destroy();
  await waitFor(() => !hp.awareness.getStates().has(ywsId), {
    timeout: 5_000,
    message: 'the Hocuspocus provider to drop the y-websocket client’s awareness',
    describe: () => awarenessIds(hp.awareness),
  });
});

test('y-websocket: the room name is percent-decoded, so "team 1/ä.md" is the Hocuspocus document "team 1/ä.md"', async (t) => {
  if (skip(t)) return;
  // y-websocket appends the room to the URL as is; the URL parser percent-encodes the space and ä.
  const name = `${uniqueDoc('yws-name')} team 1/ä.md`;
  const hp = await openProvider({ url: server.url, name });
  hp.document.getText('default').insert(0, 'named');
  await waitSynced(hp);
  const yws = await openYws(V3.WebsocketProvider, server.url, name);
  assert.equal(ytext(yws), 'named');
  assert.ok(yws.ws.url.includes('%20') && yws.ws.url.includes('%C3%A4'), `encoded on the wire: ${yws.ws.url}`);
  yws.doc.getText('default').insert(5, '!');
  await waitText(hp, 'named!');
  // An explicitly encoded name is the same document (raw client: encodeURIComponent also encodes "/").
  const raw = await YRawClient.connect(server.url, name);
  raw.send(ySyncStep1());
  const step2 = await raw.waitFrame((f) => f.type === YM.Sync && f.sub === YSYNC.Step2, { message: 'SyncStep2' });
  const doc = new Y.Doc();
  Y.applyUpdate(doc, step2.payload);
  assert.equal(doc.getText('default').toString(), 'named!');
  doc.destroy();
});

test('y-websocket on node A and @hocuspocus/provider on node B converge (cluster through Redis)', async (t) => {
  if (skip(t)) return;
  const pg = startPostgres();
  let redis;
  const nodes = [];
  try {
    redis = await startRedis();
    for (const id of ['yws-node-a', 'yws-node-b']) {
      nodes.push(
        await startServer({
          env: {
            DATABASE_URL: pg.url,
            REDIS_URL: redis.url,
            ZEDI__SERVER__NODE_ID: id,
            ZEDI__CLUSTER__HEARTBEAT_MS: '500',
          },
        }),
      );
    }
    const [nodeA, nodeB] = nodes;
    const name = uniqueDoc('yws-cluster');
    const yws = await openYws(V3.WebsocketProvider, nodeA.url, name);
    const hp = await openProvider({ url: nodeB.url, name });
    // Each node subscribes to the relay within its block interval and shows no sign when it has.
    await sleep(300);

    yws.doc.getText('default').insert(0, 'A says hi');
    await waitText(hp, 'A says hi');
    hp.document.getText('default').insert(9, ', B answers');
    await waitYText(yws, 'A says hi, B answers');
    // Concurrent.
    yws.doc.getArray('log').push(['yws']);
    hp.document.getArray('log').push(['hp']);
    await waitFor(
      () => yws.doc.getArray('log').length === 2 && hp.document.getArray('log').length === 2,
      { message: 'both log entries on both nodes' },
    );
    assert.deepEqual(yws.doc.getArray('log').toJSON(), hp.document.getArray('log').toJSON());
    await waitSynced(hp);

    // A y-websocket client on node B and a Hocuspocus provider on node A see the same document.
    const ywsB = await openYws(V3.WebsocketProvider, nodeB.url, name);
    assert.equal(ytext(ywsB), 'A says hi, B answers');
    const hpA = await openProvider({ url: nodeA.url, name });
    assert.equal(text(hpA), 'A says hi, B answers');

    // Awareness crosses nodes too.
    yws.awareness.setLocalStateField('user', { name: 'yws-on-a' });
    await waitFor(() => [...hp.awareness.getStates().values()].some((s) => s.user?.name === 'yws-on-a'), {
      timeout: 10_000,
      message: 'the provider on B to see the y-websocket client’s awareness from A',
    });
  } finally {
    for (const node of nodes) await node.stop();
    redis?.kill();
    pg.destroy();
  }
});

test('y-websocket: a bad token is refused at the upgrade (401, 403 by policy) and gets no data', async (t) => {
  if (skip(t)) return;
  const auth = await authServer();
  const name = uniqueDoc('yws-badtoken');
  const writer = await openYws(V3.WebsocketProvider, auth.url, name, { token: rwToken() });
  writer.doc.getText('default').insert(0, 'secret content');
  const docUrl = `${auth.url}/${encodeURIComponent(name)}`;

  // The upgrade itself, raw: token in the query, or as the Sec-WebSocket-Protocol entry.
  const forged = signHs256('not-the-secret', { sub: 'mallory', exp: now() + 600 });
  const unsigned = `${forged.split('.').slice(0, 2).join('.')}.`;
  const expired = signHs256(HS_SECRET, { sub: 'late', exp: now() - 60 });
  for (const [label, token] of [
    ['bad signature', forged],
    ['missing signature', unsigned],
    ['expired', expired],
    ['garbage', 'not-a-jwt'],
  ]) {
    const outcome = await upgradeOutcome(`${docUrl}?token=${encodeURIComponent(token)}`);
    assert.equal(outcome.status, 401, `${label} token in ?token=: upgrade answered ${JSON.stringify(outcome)}`);
    assert.ok(!outcome.body.includes('secret content'), `${label}: no document data in the refusal`);
    const viaProtocol = await upgradeOutcome(docUrl, { protocols: [token] });
    assert.equal(viaProtocol.status, 401, `${label} token in Sec-WebSocket-Protocol: ${JSON.stringify(viaProtocol)}`);
  }
  // A valid token whose documents claim does not cover the document: 403.
  const other = signHs256(HS_SECRET, { sub: 'u', exp: now() + 600, 'zedi:documents': ['some-other-doc*'] });
  const denied = await upgradeOutcome(`${docUrl}?token=${other}`);
  assert.equal(denied.status, 403, `policy-denied token: ${JSON.stringify(denied)}`);
  const allowed = signHs256(HS_SECRET, { sub: 'u', exp: now() + 600, 'zedi:documents': [`${name.slice(0, 12)}*`] });
  assert.equal((await upgradeOutcome(`${docUrl}?token=${allowed}`)).status, 101, 'a covering documents claim is let in');
  assert.equal((await upgradeOutcome(`${docUrl}?token=${rwToken()}`)).status, 101, 'a good token is let in');
  const good = rwToken();
  const echoed = await upgradeOutcome(docUrl, { protocols: [good] });
  assert.deepEqual(echoed, { status: 101, protocol: good }, 'a good Sec-WebSocket-Protocol token is let in and named back');

  // A y-websocket client with the forged token never syncs while the good client writes on.
  const intruder = createYws(V3.WebsocketProvider, auth.url, name, { token: forged });
  await waitFor(() => intruder.errors().some((e) => e.includes('401')), {
    timeout: 5_000,
    message: 'the intruder’s upgrade to be refused with 401',
    describe: () => ywsState(intruder),
  });
  writer.doc.getText('default').insert(14, ', more of it');
  const probe = await openYws(V3.WebsocketProvider, auth.url, name, { token: rwToken() });
  await waitYText(probe, 'secret content, more of it');
  await quietPeriod(500);
  assert.equal(ytext(intruder), '', 'nothing of the document reached the refused client');
  assert.equal(intruder.synced, false);
  assert.equal(intruder.frames().length, 0, `no frame at all: ${intruder.frames().map(describeYFrame).join(' | ')}`);
  intruder.destroy();
});

test('y-websocket: the token in Sec-WebSocket-Protocol works like ?token= (provider `protocols`)', async (t) => {
  if (skip(t)) return;
  const auth = await authServer();
  const name = uniqueDoc('yws-subprotocol');
  const a = await openYws(V3.WebsocketProvider, auth.url, name, { protocols: [rwToken()] });
  const b = await openYws(V3.WebsocketProvider, auth.url, name, { token: rwToken() });
  a.doc.getText('default').insert(0, 'via subprotocol');
  await waitYText(b, 'via subprotocol');
  b.doc.getText('default').insert(0, '> ');
  await waitYText(a, '> via subprotocol');
});

test('y-websocket: without a token (auth on) the client is told "permission denied", gets no data, and is closed by the auth timeout (4408), not at once', async (t) => {
  if (skip(t)) return;
  const auth = await authServer();
  const name = uniqueDoc('yws-notoken');
  const writer = await openYws(V3.WebsocketProvider, auth.url, name, { token: rwToken() });
  writer.doc.getText('default').insert(0, 'secret content');
  const probe = await openYws(V3.WebsocketProvider, auth.url, name, { token: rwToken() });
  await waitYText(probe, 'secret content');

  // Raw: the upgrade cannot tell a y-websocket client from a Hocuspocus one without a token, so
  // the refusal comes after the first (sync) frame.
  const raw = await YRawClient.connect(auth.url, name);
  raw.send(ySyncStep1());
  const denied = await raw.waitFrame((f) => f.type === YM.Auth, { message: 'permission denied' });
  assert.equal(denied.sub, 0, `permission denied: ${describeYFrame(denied)}`);
  const closed = await raw.waitClose();
  // Not closed at once: y-websocket would reconnect in a tight loop (its backoff restarts after
  // every socket that opened). The auth timeout (1.5 s here, 30 s by default) closes it.
  assert.equal(closed.code, 4408, `closed ${JSON.stringify(closed)}`);
  assert.ok(
    raw.frames.every((f) => f.type !== YM.Sync || (f.sub === YSYNC.Step1 && f.payload.length <= 1)),
    `no document data: ${raw.describeFrames()}`,
  );

  // The provider: never synced, empty, and y-websocket logs the denial.
  const warnings = [];
  const originalWarn = console.warn;
  console.warn = (...args) => {
    warnings.push(args.map(String).join(' '));
  };
  try {
    const anonymous = createYws(V3.WebsocketProvider, auth.url, name);
    await waitFor(() => warnings.some((w) => w.startsWith('Permission denied to access')), {
      timeout: 5_000,
      message: 'y-websocket to report "Permission denied"',
      describe: () => ywsState(anonymous),
    });
    writer.doc.getText('default').insert(0, 'more ');
    await waitYText(probe, 'more secret content');
    await quietPeriod(3_000);
    const denials = warnings.filter((w) => w.startsWith('Permission denied to access')).length;
    assert.ok(denials <= 4, `one refused socket per auth timeout, not a reconnect loop: ${denials} in ~3 s`);
    assert.equal(ytext(anonymous), '', 'nothing of the document reached the client without a token');
    assert.equal(anonymous.synced, false);
    anonymous.destroy();
  } finally {
    console.warn = originalWarn;
  }
});

test('y-websocket: a read-only token syncs, its edits are not applied, and it gets "permission denied"', async (t) => {
  if (skip(t)) return;
  const auth = await authServer();
  const name = uniqueDoc('yws-readonly');
  const writer = await openYws(V3.WebsocketProvider, auth.url, name, { token: rwToken() });
  writer.doc.getText('default').insert(0, 'original');
  const check = await openYws(V3.WebsocketProvider, auth.url, name, { token: rwToken() });
  await waitYText(check, 'original');

  const warnings = [];
  const originalWarn = console.warn;
  console.warn = (...args) => {
    warnings.push(args.map(String).join(' '));
  };
  try {
    const reader = await openYws(V3.WebsocketProvider, auth.url, name, { token: roToken() });
    assert.equal(ytext(reader), 'original', 'the read-only client receives the content');

    reader.doc.getText('default').insert(0, 'vandalism ');
    reader.doc.getMap('meta').set('defaced', true);
    const deniedFrame = await waitFor(
      () => reader.frames().find((f) => f.type === YM.Auth),
      { timeout: 5_000, message: 'an auth (permission denied) frame at the read-only client', describe: () => ywsState(reader) },
    );
    assert.equal(deniedFrame.sub, 0, `permission denied is auth sub-type 0: ${describeYFrame(deniedFrame)}`);
    assert.ok(!deniedFrame.error && !deniedFrame.rest, `well formed: ${describeYFrame(deniedFrame)}`);
    assert.ok(typeof deniedFrame.reason === 'string', 'a reason string');
    await waitFor(() => warnings.some((w) => w.startsWith(`Permission denied to access ${reader.url}`)), {
      timeout: 5_000,
      message: 'y-websocket to report "Permission denied" through console.warn',
      describe: () => JSON.stringify(warnings),
    });

    await quietPeriod(500);
    assert.equal(ytext(writer), 'original', 'the read-only edit never reached a read-write client');
    assert.equal(writer.doc.getMap('meta').get('defaced'), undefined);
    const fresh = await openYws(V3.WebsocketProvider, auth.url, name, { token: rwToken() });
    assert.equal(ytext(fresh), 'original', 'the server’s document is unchanged');

    // The read-only client still receives edits.
    writer.doc.getText('default').insert(8, '!');
    await waitYText(reader, (s) => s.includes('original!'));
  } finally {
    console.warn = originalWarn;
  }
});

test('y-websocket: the document survives a restart of the daemon (same data dir)', async (t) => {
  if (skip(t)) return;
  const dataDir = makeDataDir();
  const name = uniqueDoc('yws-restart');
  const first = await startServer({ dataDir });
  const a = await openYws(V3.WebsocketProvider, first.url, name);
  const observer = await openYws(V3.WebsocketProvider, first.url, name);
  a.doc.transact(() => {
    a.doc.getText('default').insert(0, 'kept across restarts ✓');
    a.doc.getMap('meta').set('n', 1);
  });
  a.doc.getArray('list').push(['x']);
  await waitFor(() => ytext(observer) === 'kept across restarts ✓' && observer.doc.getArray('list').length === 1, {
    message: 'the server to have the edits (seen by the observer)',
  });
  a.destroy();
  observer.destroy();
  const exit = await first.stop('SIGTERM');
  assert.deepEqual(exit, { code: 0, signal: null }, 'a graceful shutdown exits with code 0');

  const second = await startServer({ dataDir });
  const fresh = await openYws(V3.WebsocketProvider, second.url, name);
  assert.equal(ytext(fresh), 'kept across restarts ✓');
  assert.equal(fresh.doc.getMap('meta').get('n'), 1);
  assert.deepEqual(fresh.doc.getArray('list').toJSON(), ['x']);
  const hp = await openProvider({ url: second.url, name });
  assert.equal(text(hp), 'kept across restarts ✓', 'the Hocuspocus provider reads the same stored document');
  await second.stop();
});

test('y-websocket raw frames: SyncStep1 first; [SyncStep1, awareness, update] in one frame are all handled', async (t) => {
  if (skip(t)) return;
  const name = uniqueDoc('yws-raw');
  const peer = await openYws(V3.WebsocketProvider, server.url, name);
  peer.doc.getText('default').insert(0, 'peer text');
  peer.awareness.setLocalStateField('user', { name: 'peer' });
  const peerId = peer.doc.clientID;
  // A first raw client confirms the server has the peer's edit before the real check.
  const warm = await YRawClient.connect(server.url, name);
  await waitFor(
    async () => {
      const since = warm.mark();
      warm.send(ySyncStep1());
      const f = await warm.waitFrame((x) => x.type === YM.Sync && x.sub === YSYNC.Step2, { since, timeout: 2_000 });
      const d = new Y.Doc();
      Y.applyUpdate(d, f.payload);
      const ok = d.getText('default').toString() === 'peer text';
      d.destroy();
      return ok;
    },
    { timeout: 5_000, interval: 100, message: 'the server to have the peer’s text' },
  );
  warm.destroy();

  const raw = await YRawClient.connect(server.url, name);
  // The raw client's awareness (its own client id) and an update of its own.
  const rawDoc = new Y.Doc();
  const rawAwareness = new awarenessProtocol.Awareness(rawDoc);
  try {
    rawAwareness.setLocalState({ user: { name: 'raw' } });
    const awarenessUpdate = awarenessProtocol.encodeAwarenessUpdate(rawAwareness, [rawDoc.clientID]);
    const scratch = new Y.Doc();
    scratch.getMap('raw').set('from', 'raw client');
    const update = Y.encodeStateAsUpdate(scratch);
    scratch.destroy();

    raw.send(concat(ySyncStep1(), yAwareness(awarenessUpdate), yUpdate(update)));

    const step2 = await raw.waitFrame((f) => f.type === YM.Sync && f.sub === YSYNC.Step2, {
      message: 'the SyncStep2 answer to the SyncStep1 at the head of the frame',
    });
    const first = raw.frames[0];
    assert.equal(first.type, YM.Sync, `the server's first message is a sync message: ${raw.describeFrames()}`);
    assert.equal(first.sub, YSYNC.Step1, `the server's first message is SyncStep1: ${raw.describeFrames()}`);
    for (const f of raw.frames) {
      assert.ok(f.isBinary && !f.error && !f.rest, `one whole binary message per frame: ${describeYFrame(f)}`);
    }
    Y.applyUpdate(rawDoc, step2.payload);
    assert.equal(rawDoc.getText('default').toString(), 'peer text', 'SyncStep2 carries the document');

    // The awareness (second message of the frame) reaches the peer.
    await waitFor(() => peer.awareness.getStates().get(rawDoc.clientID)?.user?.name === 'raw', {
      timeout: 5_000,
      message: 'the peer to see the raw client’s awareness',
      describe: () => awarenessIds(peer.awareness),
    });
    // The update (third message) reaches the peer.
    await waitFor(() => peer.doc.getMap('raw').get('from') === 'raw client', {
      timeout: 5_000,
      message: 'the peer to get the raw client’s update',
    });
    // The server sent the current awareness states on connect: the peer's is among them.
    await raw.waitFrame((f) => f.type === YM.Awareness && f.awareness?.some((e) => e.clientId === peerId && e.state?.user?.name === 'peer'), {
      message: 'the peer’s awareness state at the raw client',
    });

    // QueryAwareness (type 3) is answered with the states, the peer's included.
    const since = raw.mark();
    raw.send(yQueryAwareness());
    await raw.waitFrame((f) => f.type === YM.Awareness && f.awareness?.some((e) => e.clientId === peerId), {
      since,
      message: 'an awareness answer to QueryAwareness',
    });

    // An update from the peer is echoed to the raw client as a sync update.
    const sinceUpdate = raw.mark();
    peer.doc.getText('default').insert(9, '!');
    const echoed = await raw.waitFrame((f) => f.type === YM.Sync && f.sub === YSYNC.Update, {
      since: sinceUpdate,
      message: 'the peer’s update, relayed',
    });
    Y.applyUpdate(rawDoc, echoed.payload);
    assert.equal(rawDoc.getText('default').toString(), 'peer text!');
  } finally {
    rawAwareness.destroy();
    rawDoc.destroy();
  }
});
