// Harness for the zedi-sync interop tests: start the server under test, create real
// @hocuspocus/provider clients and raw `ws` clients, wait with bounded loops, clean up everything.
//
// Environment:
//   ZEDI_BIN                 path of the zedi-sync binary (default: debug/zedi-sync in cargo's target
//                            directory, which honours CARGO_TARGET_DIR; scripts/test.sh sets it)
//   ZEDI_INTEROP_REFERENCE=1 run against the REAL @hocuspocus/server 4.7.0 instead (reference-server.mjs),
//                            installed on first use into ZEDI_REF_DIR (default <tmpdir>/hp-ref)
//   ZEDI_TEST_VERBOSE=1      forward the server's output live (otherwise only when a test fails)
//   ZEDI_INTEROP_NO_SKIP=1   in reference mode, also run the tests where the reference is known to differ

import { spawn, execFileSync, spawnSync as spawnSyncRaw } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test as nodeTest } from 'node:test';

import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider';
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import WebSocket from 'ws';
import * as Y from 'yjs';

export { HocuspocusProvider, HocuspocusProviderWebsocket, WebSocket, Y, encoding, decoding };

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REFERENCE = process.env.ZEDI_INTEROP_REFERENCE === '1';
export const VERBOSE = process.env.ZEDI_TEST_VERBOSE === '1';
const REF_DIR = process.env.ZEDI_REF_DIR || path.join(os.tmpdir(), 'hp-ref');
const REF_PACKAGES = [
  '@hocuspocus/server@4.7.0',
  '@hocuspocus/extension-database@4.7.0',
  'yjs@13.6.33',
];
const PROVIDER_VERSION = '4.8.0';

// Hocuspocus message types (see /work/shared/PROTOCOL.md).
export const MT = {
  Sync: 0,
  Awareness: 1,
  Auth: 2,
  QueryAwareness: 3,
  SyncReply: 4,
  Stateless: 5,
  BroadcastStateless: 6,
  CLOSE: 7,
  SyncStatus: 8,
  Ping: 9,
  Pong: 10,
};
export const SYNC = { Step1: 0, Step2: 1, Update: 2 };
export const AUTH = { Token: 0, PermissionDenied: 1, Authenticated: 2 };

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let docCounter = 0;
/** A document name unique to this run and this call. */
export function uniqueDoc(label = 'doc') {
  docCounter += 1;
  return `${label}-${process.pid}-${Date.now().toString(36)}-${docCounter}-${crypto
    .randomBytes(3)
    .toString('hex')}`;
}

/**
 * Poll `predicate` until it returns a truthy value. Bounded in time AND in iterations.
 * Returns the truthy value; throws with `message` (and `describe()` output) on timeout.
 */
export async function waitFor(predicate, { timeout = 10_000, interval = 20, message = 'condition', describe } = {}) {
  const deadline = Date.now() + timeout;
  const maxIterations = Math.ceil(timeout / interval) + 2;
  let lastError;
  for (let i = 0; i < maxIterations; i += 1) {
    try {
      const value = await predicate();
      if (value) return value;
      lastError = undefined;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) break;
    await sleep(interval);
  }
  let detail = '';
  if (describe) {
    try {
      detail = `\n  state: ${describe()}`;
    } catch (error) {
      detail = `\n  (describe failed: ${error})`;
    }
  }
  if (lastError) detail += `\n  last error: ${lastError?.stack || lastError}`;
  throw new Error(`timed out after ${timeout} ms waiting for ${message}${detail}`);
}

/** Resolve with the promise's value, or reject after `ms`. */
export function withTimeout(promise, ms, message = 'operation') {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${message}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** In reference mode, skip the test with a reason. Returns true when skipped. */
export function skipInReference(t, reason) {
  // ZEDI_INTEROP_NO_SKIP=1 runs these tests against the reference anyway, to see how it differs.
  if (!REFERENCE || process.env.ZEDI_INTEROP_NO_SKIP === '1') return false;
  t.skip(`reference server differs: ${reason}`);
  return true;
}

export const sha256 = (s) => crypto.createHash('sha256').update(s).digest('hex');

// ---------------------------------------------------------------------------------------------
// Process and resource tracking
// ---------------------------------------------------------------------------------------------

const liveChildren = new Set();
const dataDirs = new Set();
/** Clients (providers, sockets, raw clients) created since the last cleanupClients(). */
let clients = [];
/** Servers started since the last cleanupAll(). */
const servers = new Set();
/** Servers whose logs are dumped when the current test fails. */
let serversOfCurrentTest = new Set();

function killAllChildrenSync() {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  liveChildren.clear();
}
process.on('exit', () => {
  killAllChildrenSync();
  for (const dir of dataDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort
    }
  }
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    killAllChildrenSync();
    process.exit(130);
  });
}

/** Destroy every provider / socket / raw client created since the last call. */
export async function cleanupClients() {
  const toDestroy = clients.reverse();
  clients = [];
  for (const item of toDestroy) {
    try {
      await item.destroy();
    } catch {
      // destroying twice or a destroyed awareness: fine
    }
  }
  // Let close frames leave before the next test (bounded, tiny).
  await sleep(20);
}

/** Clients, then every server still running, then the data dirs. */
export async function cleanupAll() {
  await cleanupClients();
  for (const server of [...servers]) {
    try {
      await server.stop('SIGTERM');
    } catch {
      // stop() escalates to SIGKILL itself
    }
  }
  servers.clear();
  killAllChildrenSync();
  for (const dir of dataDirs) {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  dataDirs.clear();
}

/** A fresh temporary data dir, removed by cleanupAll() and at exit. */
export function makeDataDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zedi-interop-'));
  dataDirs.add(dir);
  return dir;
}

/**
 * Wrapper around node:test's `test` that prints the output of the servers used by the test
 * when it fails (or always with ZEDI_TEST_VERBOSE=1), and destroys its clients afterwards.
 */
export function test(name, options, fn) {
  if (typeof options === 'function') {
    fn = options;
    options = {};
  }
  return nodeTest(name, options, async (t) => {
    serversOfCurrentTest = new Set([...servers].filter((s) => !s.exited));
    try {
      await fn(t);
    } catch (error) {
      for (const server of serversOfCurrentTest) server.dumpLogs(`test "${name}" failed`);
      throw error;
    } finally {
      await cleanupClients();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Starting the server under test
// ---------------------------------------------------------------------------------------------

/** A free TCP port on 127.0.0.1 (bind port 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function httpGet(url, timeoutMs) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

let referenceReady = false;
function ensureReferenceInstalled() {
  if (referenceReady) return;
  const pkgJson = path.join(REF_DIR, 'node_modules', '@hocuspocus', 'server', 'package.json');
  const dbJson = path.join(REF_DIR, 'node_modules', '@hocuspocus', 'extension-database', 'package.json');
  const version = (file) => {
    try {
      return JSON.parse(fs.readFileSync(file, 'utf8')).version;
    } catch {
      return null;
    }
  };
  if (version(pkgJson) !== '4.7.0' || version(dbJson) !== '4.7.0') {
    fs.mkdirSync(REF_DIR, { recursive: true });
    process.stderr.write(`# installing the reference Hocuspocus server into ${REF_DIR}\n`);
    execFileSync('npm', ['install', '--prefix', REF_DIR, '--no-audit', '--no-fund', '--save-exact', ...REF_PACKAGES], {
      stdio: ['ignore', 'ignore', 'inherit'],
      timeout: 300_000,
    });
  }
  referenceReady = true;
}

let cargoTargetDir = null;
// Cargo's target directory as cargo reports it: CARGO_TARGET_DIR or a configured target-dir
// move it away from ./target. Asked once; without cargo, ./target is the guess.
function targetDir() {
  if (cargoTargetDir === null) {
    try {
      const out = execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], {
        cwd: path.resolve(HERE, '../..'),
        stdio: ['ignore', 'pipe', 'ignore'],
        timeout: 60_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      cargoTargetDir = JSON.parse(out.toString('utf8')).target_directory;
    } catch {
      cargoTargetDir = path.resolve(HERE, '../../target');
    }
  }
  return cargoTargetDir;
}

function defaultBinary() {
  return process.env.ZEDI_BIN
    ? path.resolve(process.env.ZEDI_BIN)
    : path.join(targetDir(), 'debug', 'zedi-sync');
}

const MAX_LOG_BYTES = 256 * 1024;

/**
 * Start the server under test.
 * @param {{dataDir?: string, env?: Record<string,string>, port?: number}} [opts]
 * @returns {Promise<{url: string, port: number, dataDir: string, stop: (signal?: string) => Promise<{code: number|null, signal: string|null}>, kill: () => Promise<{code: number|null, signal: string|null}>, exited: boolean, exitInfo: any, logs: () => string, dumpLogs: (why: string) => void}>}
 */
export async function startServer({ dataDir, env = {}, port } = {}) {
  dataDir = dataDir || makeDataDir();
  port = port || (await freePort());
  const childEnv = {
    ...process.env,
    PORT: String(port),
    ZEDI__SERVER__HOST: '127.0.0.1',
    ZEDI__STORE__PATH: path.join(dataDir, 'zedi-sync.db'),
    ZEDI__LOG__LEVEL: 'warn',
    ...env,
  };

  let command;
  let args;
  if (REFERENCE) {
    ensureReferenceInstalled();
    command = process.execPath;
    args = [path.join(HERE, 'reference-server.mjs')];
    childEnv.ZEDI_REF_DIR = REF_DIR;
  } else {
    command = defaultBinary();
    args = [];
    if (!fs.existsSync(command)) {
      throw new Error(
        `zedi-sync binary not found at ${command}: build it (cargo build) or set ZEDI_BIN ` +
          '(or run against the reference server with ZEDI_INTEROP_REFERENCE=1)',
      );
    }
  }

  const child = spawn(command, args, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  liveChildren.add(child);

  let logText = '';
  const onOutput = (stream) => (chunk) => {
    const text = chunk.toString('utf8');
    logText += text;
    if (logText.length > MAX_LOG_BYTES) logText = logText.slice(-MAX_LOG_BYTES);
    if (VERBOSE) process.stderr.write(`[server:${port}${stream}] ${text}`);
  };
  child.stdout.on('data', onOutput(''));
  child.stderr.on('data', onOutput(':err'));

  let exitInfo = null;
  const exitPromise = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      liveChildren.delete(child);
      resolve(exitInfo);
    });
  });
  child.once('error', (error) => {
    logText += `\nspawn error: ${error}\n`;
  });

  const waitExit = async (ms) => {
    if (exitInfo) return exitInfo;
    let timer;
    const result = await Promise.race([
      exitPromise,
      new Promise((resolve) => {
        timer = setTimeout(() => resolve(null), ms);
      }),
    ]);
    clearTimeout(timer);
    return result;
  };

  const server = {
    url: `ws://127.0.0.1:${port}`,
    httpUrl: `http://127.0.0.1:${port}`,
    port,
    dataDir,
    pid: child.pid,
    get exited() {
      return exitInfo !== null;
    },
    get exitInfo() {
      return exitInfo;
    },
    logs: () => logText,
    dumpLogs(why) {
      if (VERBOSE) return; // already forwarded live
      process.stderr.write(
        `\n----- server ${REFERENCE ? '(reference) ' : ''}:${port} output (${why}) -----\n${logText || '(no output)'}\n` +
          `----- end of server :${port} output${exitInfo ? `, exited ${JSON.stringify(exitInfo)}` : ''} -----\n`,
      );
    },
    /** Send `signal`, wait for the exit (10 s), then SIGKILL (5 s more). */
    async stop(signal = 'SIGTERM') {
      if (exitInfo) {
        servers.delete(server);
        return exitInfo;
      }
      try {
        child.kill(signal);
      } catch {
        // gone
      }
      let result = await waitExit(10_000);
      if (!result) {
        server.killedAfterTimeout = true;
        try {
          child.kill('SIGKILL');
        } catch {
          // gone
        }
        result = await waitExit(5_000);
      }
      servers.delete(server);
      return result ?? { code: null, signal: 'unknown' };
    },
    kill() {
      return server.stop('SIGKILL');
    },
  };
  servers.add(server);
  serversOfCurrentTest.add(server);

  // Readiness: GET /health until 200 with a JSON body (100 x 100 ms), failing fast if it exits.
  let lastProblem = 'no answer';
  for (let i = 0; i < 100; i += 1) {
    if (exitInfo) break;
    try {
      const res = await httpGet(`${server.httpUrl}/health`, 1_000);
      if (res.status === 200) {
        JSON.parse(res.body);
        return server;
      }
      lastProblem = `HTTP ${res.status}: ${res.body.slice(0, 200)}`;
    } catch (error) {
      lastProblem = String(error?.message || error);
    }
    await sleep(100);
  }
  server.dumpLogs('server did not become ready');
  await server.stop('SIGKILL');
  throw new Error(
    `server on port ${port} did not become ready (${exitInfo ? `exited ${JSON.stringify(exitInfo)}` : lastProblem})`,
  );
}

// ---------------------------------------------------------------------------------------------
// Providers
// ---------------------------------------------------------------------------------------------

function track(item) {
  clients.push(item);
  return item;
}

/**
 * A ws WebSocket subclass that remembers its instances, so a test can kill the TCP socket of
 * a provider (`lastSocket(ws).terminate()`).
 */
export function trackingWebSocketClass() {
  const instances = [];
  class TrackedWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      instances.push(this);
    }
  }
  return { TrackedWebSocket, instances };
}

/** A HocuspocusProviderWebsocket (one socket that providers can share). */
export function createSocket({ url, ...options }) {
  const socket = new HocuspocusProviderWebsocket({
    url,
    WebSocketPolyfill: WebSocket,
    ...options,
  });
  return track({ socket, destroy: () => socket.destroy() }).socket;
}

/**
 * A HocuspocusProvider. With `websocketProvider` it is attached to that shared socket,
 * otherwise it gets its own socket (like `new HocuspocusProvider({ url, name })`).
 */
export function createProvider({ url, name, websocketProvider, document, token = null, ...options }) {
  const doc = document || new Y.Doc();
  let provider;
  if (websocketProvider) {
    provider = new HocuspocusProvider({ websocketProvider, name, document: doc, token, ...options });
    provider.attach();
  } else {
    provider = new HocuspocusProvider({
      url,
      name,
      document: doc,
      token,
      WebSocketPolyfill: WebSocket,
      ...options,
    });
  }
  track({ destroy: () => provider.destroy() });
  return provider;
}

export const text = (provider, field = 'default') => provider.document.getText(field).toString();

/** Describe a provider's state for timeout messages. */
export function providerState(provider, field = 'default') {
  const t = text(provider, field);
  return JSON.stringify({
    name: provider.configuration.name,
    status: provider.configuration.websocketProvider.status,
    authenticated: provider.isAuthenticated,
    synced: provider.isSynced,
    unsynced: provider.unsyncedChanges,
    text: t.length > 200 ? `${t.slice(0, 200)}… (${t.length} chars)` : t,
  });
}

/** Wait until the provider is authenticated, synced and has no unacknowledged changes. */
export function waitSynced(provider, { timeout = 10_000 } = {}) {
  return waitFor(() => provider.isAuthenticated && provider.isSynced && !provider.hasUnsyncedChanges, {
    timeout,
    message: `provider "${provider.configuration.name}" to be synced with no unsynced changes`,
    describe: () => providerState(provider),
  });
}

/** Wait until every provider's Y.Text `field` equals `expected` (or satisfies it, if a function). */
export function waitText(providers, expected, { field = 'default', timeout = 10_000 } = {}) {
  const list = Array.isArray(providers) ? providers : [providers];
  const ok = typeof expected === 'function' ? expected : (s) => s === expected;
  return waitFor(() => list.every((p) => ok(text(p, field))), {
    timeout,
    message: `text "${field}" to be ${typeof expected === 'function' ? 'as expected' : JSON.stringify(expected)}`,
    describe: () => list.map((p) => providerState(p, field)).join('\n    '),
  });
}

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

// ---------------------------------------------------------------------------------------------
// Throwaway PostgreSQL and Redis for the store / cluster / drain suites
// ---------------------------------------------------------------------------------------------

const PG_SCRIPT = path.resolve(HERE, '../../scripts/pg-cluster.sh');

/**
 * A throwaway PostgreSQL (scripts/pg-cluster.sh) in its own temp dir. Returns
 * `{ url, stop(), restart(), destroy() }`; `destroy` also removes the folder.
 */
/**
 * Joins a paused client socket to a new connection to 127.0.0.1:`port` in both directions (the
 * load balancers of the drain test and the soak run); either side closing closes the other.
 * Both sockets are kept in `sockets` while open, so their owner can destroy them at the end.
 */
export function splice(client, port, sockets) {
  const upstream = net.connect(port, '127.0.0.1');
  sockets.add(upstream);
  upstream.on('close', () => {
    sockets.delete(upstream);
    client.destroy();
  });
  client.on('close', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
  client.on('error', () => upstream.destroy());
  client.pipe(upstream);
  upstream.pipe(client);
  client.resume();
}

export function startPostgres() {
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'zedi-pg-'));
  fs.chmodSync(parent, 0o755); // the server runs as the postgres user, which must reach it
  const dir = path.join(parent, 'pg');
  const run = (command) => {
    const r = spawnSyncChecked('bash', [PG_SCRIPT, command, dir]);
    return r.stdout.trim();
  };
  const url = run('start');
  return {
    url,
    stop: () => run('stop'),
    restart: () => run('restart'),
    destroy: () => {
      try {
        run('destroy');
      } finally {
        fs.rmSync(parent, { recursive: true, force: true });
      }
    },
  };
}

function spawnSyncChecked(cmd, args) {
  const r = spawnSyncRaw(cmd, args, { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r;
}

/** A redis-server on a free loopback port without persistence. Returns `{ url, port, kill() }`. */
export async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  await waitFor(() => spawnSyncRaw('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG', {
    timeout: 10_000,
    message: 'redis-server to start',
  });
  return { url: `redis://127.0.0.1:${port}`, port, kill: () => child.kill('SIGKILL') };
}
