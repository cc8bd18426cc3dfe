#!/usr/bin/env node
// Soak / chaos run for zedi-sync (issue 9). Not part of CI: start it with scripts/soak.sh, which
// builds the daemon and installs the npm packages (those of tests/interop, reused from there).
//
//   node tests/soak/soak.mjs [--clients N] [--minutes M] [--nodes K] [--chaos-interval MIN-MAX]
//                            [--chaos-kinds LIST] [--rate R] [--seed S] [--no-tab-crash] [--keep]
//
// A throwaway PostgreSQL (scripts/pg-cluster.sh), a redis-server, K zedi-sync nodes and an
// ALB-like TCP balancer, all on 127.0.0.1. N real @hocuspocus/provider clients edit N/5 documents
// through the balancer while a chaos loop restarts a node (SIGKILL or SIGTERM drain), Redis or
// PostgreSQL every MIN-MAX seconds. Then everything heals and the run checks that nothing was lost
// and that everybody agrees. See tests/soak/README.md for what is checked and how.
//
// Every loop is bounded in count and time, a watchdog ends the run if it overstays, and every
// process started here is stopped on exit, failure and Ctrl-C.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { HocuspocusProvider, WebSocket, Y, freePort, sleep, splice } from '../interop/harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const PG_SCRIPT = path.join(ROOT, 'scripts/pg-cluster.sh');

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

function usage(code) {
  process.stderr.write(
    'usage: soak.mjs [--clients N] [--minutes M] [--nodes K] [--chaos-interval MIN-MAX]\n' +
      '                [--chaos-kinds node-kill,node-term,redis,postgres] [--rate R] [--seed S]\n' +
      '                [--no-tab-crash] [--keep]\n',
  );
  process.exit(code);
}

function parseArgs(argv) {
  const o = { clients: 30, minutes: 5, nodes: 3, chaosMin: 10, chaosMax: 40, rate: 2, seed: null, tabCrash: true, keep: false };
  const KINDS = ['node-kill', 'node-term', 'redis', 'postgres'];
  o.kinds = KINDS;
  const num = (name, v, min, max) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max) {
      process.stderr.write(`soak: ${name} must be a number in [${min}, ${max}], got ${JSON.stringify(v)}\n`);
      usage(2);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => (inline !== undefined ? inline : argv[++i]);
    switch (flag) {
      case '--clients': o.clients = Math.round(num('--clients', value(), 1, 400)); break;
      case '--minutes': o.minutes = num('--minutes', value(), 0.1, 24 * 60); break;
      case '--nodes': o.nodes = Math.round(num('--nodes', value(), 1, 26)); break;
      case '--rate': o.rate = num('--rate', value(), 0.1, 50); break;
      case '--seed': o.seed = Math.round(num('--seed', value(), 0, 2 ** 31)); break;
      case '--chaos-interval': {
        const m = /^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$/.exec(String(value()));
        if (!m || Number(m[1]) < 1 || Number(m[2]) < Number(m[1])) {
          process.stderr.write('soak: --chaos-interval wants MIN-MAX seconds, e.g. 10-40\n');
          usage(2);
        }
        o.chaosMin = Number(m[1]);
        o.chaosMax = Number(m[2]);
        break;
      }
      case '--chaos-kinds': {
        o.kinds = String(value()).split(',').filter(Boolean);
        if (!o.kinds.length || o.kinds.some((k) => !KINDS.includes(k))) {
          process.stderr.write(`soak: --chaos-kinds wants a comma-separated subset of ${KINDS.join(',')}\n`);
          usage(2);
        }
        break;
      }
      case '--no-tab-crash': o.tabCrash = false; break;
      case '--keep': o.keep = true; break;
      case '-h': case '--help': usage(0); break;
      default:
        process.stderr.write(`soak: unknown argument ${a}\n`);
        usage(2);
    }
  }
  if (o.seed === null) o.seed = Math.floor(Math.random() * 2 ** 31);
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const BIN = path.resolve(process.env.ZEDI_BIN || path.join(ROOT, 'target/release/zedi-sync'));
const LOG_LEVEL = process.env.ZEDI_SOAK_LOG_LEVEL || 'info';
const DOCS = Math.max(1, Math.ceil(opts.clients / 5));
const RUN_ID = `${Date.now().toString(36)}${process.pid.toString(36)}`;
const docName = (d) => `soak-${RUN_ID}-d${d}`;

// Small seeded PRNG (mulberry32), so a run's choices can be replayed with --seed.
let rngState = opts.seed >>> 0;
function rand() {
  rngState = (rngState + 0x6d2b79f5) >>> 0;
  let t = rngState;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const between = (a, b) => a + (b - a) * rand();
const pick = (list) => list[Math.floor(rand() * list.length)];

const T0 = Date.now();
const stamp = () => `[${((Date.now() - T0) / 1000).toFixed(1).padStart(6)}s]`;
const log = (msg) => process.stdout.write(`${stamp()} ${msg}\n`);
const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;

// ---------------------------------------------------------------------------------------------
// Processes: everything started here is tracked and killed on exit, whatever the reason.
// ---------------------------------------------------------------------------------------------

const RUN_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'zedi-soak-'));
fs.chmodSync(RUN_DIR, 0o755); // the postgres user must reach the PostgreSQL dir inside
const PG_DIR = path.join(RUN_DIR, 'pg');
let pgCreated = false;
let finished = false;
const children = new Set();

function spawnTracked(cmd, args, options) {
  const child = spawn(cmd, args, options);
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.once('error', () => children.delete(child));
  return child;
}

process.on('exit', (code) => {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // gone
    }
  }
  if (pgCreated) {
    try {
      fs.copyFileSync(path.join(PG_DIR, 'server.log'), path.join(RUN_DIR, 'postgres.log'));
    } catch {
      // no log yet
    }
    spawnSync('bash', [PG_SCRIPT, 'destroy', PG_DIR], { stdio: 'ignore', timeout: 30_000 });
  }
  if (!finished) process.stdout.write(`soak: stopped early (exit ${code}); logs kept in ${RUN_DIR}\n`);
});
// The harness (imported above) exits with 130 on SIGINT/SIGTERM/SIGHUP; the 'exit' handler
// above then stops everything. Make sure that also holds if the harness changes.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    process.stdout.write(`\nsoak: ${signal}, stopping everything\n`);
    process.exit(130);
  });
}
process.on('unhandledRejection', (error) => {
  process.stdout.write(`soak: unhandled rejection: ${error?.stack || error}\n`);
  process.exit(1);
});

/** Run a command without blocking the event loop (the providers keep running). */
function run(cmd, args, { timeout = 60_000, env } = {}) {
  return new Promise((resolve) => {
    const child = spawnTracked(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    const out = [];
    const err = [];
    child.stdout.on('data', (c) => out.push(c));
    child.stderr.on('data', (c) => err.push(c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout: '', stderr: String(error) });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? -1 : 0), signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
  });
}

async function httpStatus(url, ms = 500) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(ms) });
    const body = await res.text();
    return { status: res.status, body };
  } catch (error) {
    return { status: 0, body: String(error?.message || error) };
  }
}

function redisPing(port, ms = 500) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let data = '';
    const done = (ok) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (c) => {
      data += c.toString('utf8');
      if (data.includes('\r\n')) done(data.startsWith('+PONG'));
    });
    sock.on('error', () => done(false));
  });
}

/** Poll `pred` every `interval` ms until truthy, at most `timeout` ms (and that many polls). */
async function poll(pred, { timeout, interval = 100 }) {
  const deadline = Date.now() + timeout;
  for (let i = 0; i < Math.ceil(timeout / interval) + 2; i += 1) {
    if (await pred()) return true;
    if (Date.now() >= deadline) break;
    await sleep(interval);
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL, Redis, nodes, balancer
// ---------------------------------------------------------------------------------------------

const pg = {
  url: null,
  up: false,
  async start() {
    pgCreated = true;
    const r = await run('bash', [PG_SCRIPT, 'start', PG_DIR], { timeout: 90_000 });
    if (r.code !== 0) throw new Error(`pg-cluster.sh start failed: ${r.stderr.trim()}`);
    this.url = r.stdout.trim();
    this.up = true;
  },
  async stop() {
    const r = await run('bash', [PG_SCRIPT, 'stop', PG_DIR], { timeout: 60_000 });
    this.up = false;
    return r;
  },
  async restart() {
    const r = await run('bash', [PG_SCRIPT, 'restart', PG_DIR], { timeout: 60_000 });
    if (r.code === 0) this.up = true;
    return r;
  },
  async query(sql, timeout = 60_000) {
    return run('psql', [this.url, '-X', '-q', '-A', '-t', '-F', '|', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
      timeout,
      env: { ...process.env, PGCONNECT_TIMEOUT: '5' },
    });
  },
};

const redis = {
  port: null,
  child: null,
  async start() {
    this.port = this.port || (await freePort());
    const fd = fs.openSync(path.join(RUN_DIR, 'redis.log'), 'a');
    this.child = spawnTracked(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { stdio: ['ignore', fd, fd] },
    );
    fs.closeSync(fd);
    if (!(await poll(() => redisPing(this.port), { timeout: 15_000, interval: 100 }))) {
      throw new Error(`redis-server on port ${this.port} did not answer PING`);
    }
  },
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await Promise.race([exited, sleep(5_000)]);
  },
  get running() {
    return this.child && this.child.exitCode === null && this.child.signalCode === null;
  },
};

const problems = []; // anything that makes the run fail, besides the final checks

class Node {
  constructor(id, port) {
    this.id = id;
    this.port = port;
    this.url = `ws://127.0.0.1:${port}`;
    this.httpUrl = `http://127.0.0.1:${port}`;
    this.logPath = path.join(RUN_DIR, `${id}.log`);
    this.child = null;
    this.exitInfo = null;
    this.expectExit = false;
    this.starts = 0;
  }

  get running() {
    return this.child !== null && this.exitInfo === null;
  }

  env() {
    // Soak defaults, then the caller's own ZEDI__* settings, then what must be ours.
    const passthrough = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('ZEDI__')));
    return {
      ...process.env,
      ZEDI__LOG__LEVEL: LOG_LEVEL,
      ZEDI__CLUSTER__LEASE_TTL_MS: '3000',
      ZEDI__CLUSTER__LEASE_RENEW_MS: '500',
      ZEDI__CLUSTER__HEARTBEAT_MS: '500',
      ZEDI__STORE__RETRY_MAX_MS: '500',
      ZEDI__STORE__COMPACT_AFTER_UPDATES: '200',
      ZEDI__SERVER__DRAIN_DELAY_MS: '500',
      ...passthrough,
      PORT: String(this.port),
      ZEDI__SERVER__HOST: '127.0.0.1',
      ZEDI__SERVER__NODE_ID: this.id,
      ZEDI__STORE__PATH: path.join(RUN_DIR, `${this.id}.db`),
      DATABASE_URL: pg.url,
      REDIS_URL: `redis://127.0.0.1:${redis.port}`,
    };
  }

  async start() {
    // A restart on the same port right after a kill may race the old socket: retry a few times.
    for (let attempt = 1; attempt <= 3; attempt += 1) {
      this.starts += 1;
      const fd = fs.openSync(this.logPath, 'a');
      fs.writeSync(fd, `\n===== soak: ${new Date().toISOString()} start #${this.starts} of ${this.id} on port ${this.port} =====\n`);
      const child = spawnTracked(BIN, [], { env: this.env(), stdio: ['ignore', fd, fd] });
      fs.closeSync(fd);
      this.child = child;
      this.exitInfo = null;
      this.expectExit = false;
      this.exitPromise = new Promise((resolve) => {
        child.once('exit', (code, signal) => {
          this.exitInfo = { code, signal };
          if (!this.expectExit) {
            problems.push(`${this.id} exited on its own (${JSON.stringify(this.exitInfo)})`);
            log(`!! ${this.id} exited on its own: ${JSON.stringify(this.exitInfo)} (see ${this.logPath})`);
          }
          resolve(this.exitInfo);
        });
        child.once('error', (error) => {
          this.exitInfo = { code: null, signal: null, error: String(error) };
          resolve(this.exitInfo);
        });
      });
      const ready = await poll(async () => this.exitInfo !== null || (await httpStatus(`${this.httpUrl}/health`)).status === 200, {
        timeout: 60_000,
        interval: 100,
      });
      if (ready && this.exitInfo === null) return;
      this.expectExit = true;
      if (this.exitInfo === null) await this.stop('SIGKILL');
      log(`   ${this.id} did not become ready (attempt ${attempt}/3): ${JSON.stringify(this.exitInfo)}`);
      await sleep(1_000);
    }
    throw new Error(`${this.id} did not start on port ${this.port} (see ${this.logPath})`);
  }

  /** Send `signal`; wait for the exit (`deadlineMs`), then SIGKILL. Returns {code, signal, ms, forced}. */
  async stop(signal, deadlineMs = 30_000) {
    if (!this.running) return { ...(this.exitInfo || {}), ms: 0, forced: false };
    this.expectExit = true;
    const started = Date.now();
    this.child.kill(signal);
    let info = await Promise.race([this.exitPromise, sleep(deadlineMs).then(() => null)]);
    let forced = false;
    if (!info) {
      forced = true;
      this.child.kill('SIGKILL');
      info = await Promise.race([this.exitPromise, sleep(5_000).then(() => null)]);
    }
    return { ...(info || { code: null, signal: 'unknown' }), ms: Date.now() - started, forced };
  }
}

/** ALB-like balancer: each new TCP connection goes to a random node whose /health is 200. */
async function startBalancer(nodes) {
  const port = await freePort();
  const sockets = new Set();
  const routed = Object.fromEntries(nodes.map((n) => [n.id, 0]));
  const portToNode = new Map(); // client-side port of a routed connection -> node id
  let refused = 0;
  const server = net.createServer(async (client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    client.pause();
    const candidates = nodes.filter((n) => n.running).sort(() => rand() - 0.5);
    let target = null;
    for (const n of candidates) {
      if ((await httpStatus(`${n.httpUrl}/health`, 500)).status === 200) {
        target = n;
        break;
      }
    }
    if (!target || client.destroyed) {
      refused += 1;
      client.destroy();
      return;
    }
    routed[target.id] += 1;
    const key = client.remotePort;
    portToNode.set(key, target.id);
    client.on('close', () => setTimeout(() => portToNode.delete(key), 60_000).unref());
    splice(client, target.port, sockets);
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `ws://127.0.0.1:${port}`,
    routed,
    nodeOf: (localPort) => portToNode.get(localPort) ?? '?',
    get refused() {
      return refused;
    },
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

let nextClientNumber = 0;

class Client {
  constructor(doc, url) {
    this.label = `c${nextClientNumber}`;
    nextClientNumber += 1;
    this.doc = doc;
    this.pushed = 0;
    this.acked = 0;
    this.pushAt = []; // ms since start, per item
    this.ackAt = []; // ms since start at which item k was first counted as acknowledged
    // `acked` = pushed - unsyncedChanges is exact only while the provider's counter tracks this
    // connection's updates one for one: after a (re)connect the provider resets the counter to 1
    // (the handshake), so it is trusted again only once it reached 0 on the new connection.
    this.clean = false;
    this.opens = 0;
    this.closes = 0;
    this.nodes = []; // [{at, node}] one per connection
    this.everSynced = false;
    this.crashed = false;
    this.nextAt = Date.now() + between(0, 1000 / opts.rate);
    this.provider = new HocuspocusProvider({
      url,
      name: docName(doc),
      token: 'soak',
      WebSocketPolyfill: WebSocket,
    });
    const p = this.provider;
    p.on('open', () => {
      this.opens += 1;
      this.clean = false;
      const ws = p.configuration.websocketProvider.webSocket;
      const node = balancer?.nodeOf(ws?._socket?.localPort) ?? '?';
      this.nodes.push({ at: Date.now() - T0, node });
    });
    p.on('close', () => {
      this.closes += 1;
      this.clean = false;
    });
    p.on('synced', () => {
      this.everSynced = true;
      this.sample();
    });
    p.on('unsyncedChanges', () => this.sample());
    this.array = p.document.getArray('items');
  }

  sample() {
    const p = this.provider;
    if (this.crashed || !p.isSynced || !p.isAuthenticated) return;
    if (!this.clean) {
      if (p.unsyncedChanges !== 0) return;
      this.clean = true;
    }
    const acked = this.pushed - p.unsyncedChanges;
    if (acked > this.acked) {
      const now = Date.now() - T0;
      for (let k = this.acked; k < acked; k += 1) this.ackAt[k] = now;
      this.acked = acked;
    }
  }

  push() {
    const item = `${this.label}-${this.pushed}`;
    this.pushAt[this.pushed] = Date.now() - T0;
    this.pushed += 1; // before the push: the provider counts the update inside push()
    this.array.push([item]);
  }

  get settled() {
    const p = this.provider;
    return p.isSynced && p.isAuthenticated && p.unsyncedChanges === 0;
  }

  /** The editor's tab dies: whatever was acknowledged must survive without this client. */
  crash() {
    this.sample();
    this.crashed = true;
    try {
      this.provider.destroy();
    } catch {
      // already gone
    }
  }

  /** The node this client was connected to at `at` (ms since start). */
  nodeAt(at) {
    let node = '?';
    for (const n of this.nodes) if (n.at <= at) node = n.node;
    return node;
  }

  state() {
    const p = this.provider;
    return `${this.label}@d${this.doc} status=${p.configuration.websocketProvider.status} auth=${p.isAuthenticated} synced=${p.isSynced} unsynced=${p.unsyncedChanges} pushed=${this.pushed} acked=${this.acked} opens=${this.opens}`;
  }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

const nodes = [];
const clients = []; // every client ever created, crashed ones included
let balancer = null;
const chaosEvents = [];
const drains = [];

const live = () => clients.filter((c) => !c.crashed);

async function main() {
  const editMs = opts.minutes * 60_000;
  const budgetMs = editMs + 15 * 60_000;
  const watchdog = setTimeout(() => {
    log(`!! watchdog: the run exceeded ${secs(budgetMs)}; stopping (logs in ${RUN_DIR})`);
    process.exit(3);
  }, budgetMs);

  log(
    `soak: ${opts.clients} clients on ${DOCS} documents, ${opts.nodes} nodes, ${opts.minutes} min, ` +
      `${opts.rate} updates/s per client, chaos every ${opts.chaosMin}-${opts.chaosMax} s, seed ${opts.seed}`,
  );
  log(`binary ${BIN}; logs in ${RUN_DIR}`);
  if (!fs.existsSync(BIN)) throw new Error(`zedi-sync binary not found at ${BIN}`);

  await pg.start();
  await redis.start();
  log(`PostgreSQL ${pg.url.replace(/:[^:@/]*@/, ':***@')}, Redis on port ${redis.port}`);
  const ids = Array.from({ length: opts.nodes }, (_, i) => `node-${String.fromCharCode(97 + i)}`);
  for (const id of ids) nodes.push(new Node(id, await freePort()));
  await Promise.all(nodes.map((n) => n.start()));
  balancer = await startBalancer(nodes);
  log(`nodes ${nodes.map((n) => `${n.id}:${n.port}`).join(' ')}; balancer ${balancer.url}`);

  for (let i = 0; i < opts.clients; i += 1) clients.push(new Client(i % DOCS, balancer.url));
  const allSynced = await poll(() => clients.every((c) => c.everSynced), { timeout: 60_000, interval: 100 });
  if (!allSynced) throw new Error(`clients did not sync at start: ${clients.filter((c) => !c.everSynced).map((c) => c.state()).join('; ')}`);
  log(`${clients.length} clients synced; editing for ${opts.minutes} min`);

  // --- editing, chaos and periodic status, concurrently ---
  const editEnd = Date.now() + editMs;
  let editing = true;
  const writer = (async () => {
    const tick = 20;
    for (let i = 0; i < Math.ceil(editMs / tick) + 100 && editing && Date.now() < editEnd; i += 1) {
      const now = Date.now();
      for (const c of clients) {
        if (c.crashed || !c.everSynced || now < c.nextAt) continue;
        c.push();
        c.nextAt = now + between(0.5, 1.5) * (1000 / opts.rate);
      }
      await sleep(tick);
    }
  })();
  const status = (async () => {
    for (let i = 0; i < Math.ceil(editMs / 15_000) + 1 && editing; i += 1) {
      const until = Math.min(editEnd, Date.now() + 15_000);
      while (editing && Date.now() < until) await sleep(Math.min(250, until - Date.now() + 1));
      if (!editing || Date.now() >= editEnd) break;
      clients.forEach((c) => c.sample());
      const l = live();
      const sent = clients.reduce((s, c) => s + c.pushed, 0);
      const acked = clients.reduce((s, c) => s + c.acked, 0);
      const connected = l.filter((c) => c.provider.isSynced).length;
      const unsynced = l.reduce((s, c) => s + c.provider.unsyncedChanges, 0);
      log(`   status: sent ${sent}, acked ${acked}, unsynced ${unsynced}, synced clients ${connected}/${l.length}, nodes up ${nodes.filter((n) => n.running).length}/${nodes.length}`);
    }
  })();
  const chaos = chaosLoop(() => editing && Date.now() < editEnd - 3_000, editEnd);

  await writer;
  editing = false;
  await status;
  log('editing stopped; waiting for the chaos event in progress to finish');
  await chaos;

  // --- heal ---
  log('healing: making sure PostgreSQL, Redis and every node are up');
  if (!pg.up) await pg.restart();
  if (!redis.running) await redis.start();
  for (const n of nodes) if (!n.running) await n.start();
  clients.forEach((c) => c.sample());
  const sentAtStop = clients.reduce((s, c) => s + c.pushed, 0);
  const ackedAtStop = clients.reduce((s, c) => s + c.acked, 0);

  const healStart = Date.now();
  const healTimeout = 180_000;
  let healed = false;
  for (let i = 0; i < healTimeout / 10_000 + 1; i += 1) {
    healed = await poll(() => live().every((c) => c.settled), { timeout: Math.min(10_000, healStart + healTimeout - Date.now()), interval: 100 });
    if (healed || Date.now() >= healStart + healTimeout) break;
    const stuck = live().filter((c) => !c.settled);
    log(`   still waiting for ${stuck.length} client(s): ${stuck.slice(0, 4).map((c) => c.state()).join('; ')}${stuck.length > 4 ? '; …' : ''}`);
  }
  clients.forEach((c) => c.sample());
  if (healed) log(`every live client settled (no unsynced changes) after ${secs(Date.now() - healStart)}`);
  else {
    const stuck = live().filter((c) => !c.settled);
    problems.push(`${stuck.length} client(s) never settled within ${secs(healTimeout)}: ${stuck.map((c) => c.state()).join('; ')}`);
    log(`!! ${stuck.length} client(s) never settled within ${secs(healTimeout)}`);
  }

  // Clients of a document converge (bounded wait: the last relayed updates may still be in flight).
  const byDoc = (d) => live().filter((c) => c.doc === d);
  const content = (c) => JSON.stringify(c.array.toArray());
  const docsAgree = () => Array.from({ length: DOCS }, (_, d) => new Set(byDoc(d).map(content)).size <= 1).every(Boolean);
  await poll(docsAgree, { timeout: 30_000, interval: 200 });

  const results = await check({ sentAtStop, ackedAtStop });
  clearTimeout(watchdog);
  return results;
}

/** Restarts something every chaosMin..chaosMax seconds while `active()`. */
async function chaosLoop(active, editEnd) {
  const kinds = opts.kinds;
  let bag = [];
  const maxEvents = Math.ceil((opts.minutes * 60) / opts.chaosMin) + 1;
  for (let i = 0; i < maxEvents; i += 1) {
    const until = Date.now() + between(opts.chaosMin, opts.chaosMax) * 1000;
    while (active() && Date.now() < until) await sleep(Math.min(250, until - Date.now() + 1));
    if (!active()) return;
    if (bag.length === 0) bag = [...kinds].sort(() => rand() - 0.5); // every kind before a repeat
    const kind = bag.pop();
    try {
      await chaosEvent(kind, chaosEvents.length + 1);
    } catch (error) {
      problems.push(`chaos event ${kind} failed: ${error?.message || error}`);
      log(`!! chaos event ${kind} failed: ${error?.stack || error}`);
    }
    if (Date.now() > editEnd + 120_000) return; // bounded even if an event hung
  }
}

/** All the live editors of one random document close their tabs at the moment of the event. */
function crashTabs() {
  if (!opts.tabCrash) return null;
  const docs = [...new Set(live().map((c) => c.doc))];
  if (docs.length === 0) return null;
  const doc = pick(docs);
  const victims = live().filter((c) => c.doc === doc);
  victims.forEach((c) => c.crash());
  return { doc, count: victims.length, acked: victims.reduce((s, c) => s + c.acked, 0), pushed: victims.reduce((s, c) => s + c.pushed, 0) };
}

function replaceTabs(crash) {
  if (!crash) return;
  for (let i = 0; i < crash.count; i += 1) clients.push(new Client(crash.doc, balancer.url));
}

async function chaosEvent(kind, n) {
  const started = Date.now();
  let text;
  let crash = null;
  const tabs = () => (crash ? `; editors of d${crash.doc} crashed (${crash.count} clients, ${crash.acked}/${crash.pushed} acked)` : '');
  if (kind === 'node-kill' || kind === 'node-term') {
    const node = pick(nodes.filter((x) => x.running));
    if (!node) return;
    const signal = kind === 'node-kill' ? 'SIGKILL' : 'SIGTERM';
    const stopping = node.stop(signal, 30_000);
    crash = crashTabs();
    const exit = await stopping;
    const stoppedMs = Date.now() - started;
    if (kind === 'node-term') {
      drains.push({ node: node.id, ...exit });
      if (exit.code !== 0 || exit.forced) problems.push(`drain of ${node.id} ended ${JSON.stringify(exit)} (expected exit 0)`);
    }
    const down = between(500, 3_000);
    await sleep(down);
    await node.start();
    text =
      `${signal} ${node.id}` +
      (kind === 'node-term' ? ` (drained in ${secs(exit.ms)}, exit ${exit.code ?? exit.signal}${exit.forced ? ', FORCED' : ''})` : ` (gone after ${secs(stoppedMs)})`) +
      `; restarted after ${secs(down)} down, ready in ${secs(Date.now() - started - stoppedMs - down)}`;
  } else if (kind === 'redis') {
    await redis.kill();
    crash = crashTabs();
    const down = between(1_000, 5_000);
    await sleep(down);
    await redis.start();
    text = `Redis SIGKILL (data lost); restarted after ${secs(down)}, answering PING ${secs(Date.now() - started - down)} later`;
  } else {
    const r = await pg.stop();
    crash = crashTabs();
    const stoppedMs = Date.now() - started;
    if (r.code !== 0) log(`   pg-cluster.sh stop: exit ${r.code} ${r.stderr.trim()}`);
    const down = between(2_000, 8_000);
    await sleep(down);
    const rr = await pg.restart();
    if (rr.code !== 0) throw new Error(`pg-cluster.sh restart failed: ${rr.stderr.trim()}`);
    text = `PostgreSQL stop (fast, took ${secs(stoppedMs)}); down ${secs(down)}, restarted in ${secs(Date.now() - started - stoppedMs - down)}`;
  }
  chaosEvents.push({ kind, at: started - T0, crash });
  log(`chaos #${n}: ${text}${tabs()}`);
  if (crash) {
    await sleep(1_000);
    replaceTabs(crash);
  }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

let lastStoreRead = '';
async function readStore() {
  const names = Array.from({ length: DOCS }, (_, d) => docName(d));
  const like = `soak-${RUN_ID}-d%`;
  const sql =
    `SELECT 's', name, encode(state, 'hex') FROM zedi_snapshots WHERE name LIKE '${like}' ` +
    `UNION ALL SELECT 'u', name, encode(data, 'hex') FROM zedi_updates WHERE name LIKE '${like}'`;
  let r;
  for (let attempt = 1; attempt <= 5; attempt += 1) {
    r = await pg.query(sql);
    if (r.code === 0) break;
    await sleep(1_000);
  }
  if (r.code !== 0) throw new Error(`reading the store failed: ${r.stderr.trim()}`);
  lastStoreRead = r.stdout;
  // Rows come in heap order (not seq order once compaction deleted rows), and seq order need not
  // be causal order either (nodes append concurrently). Applied row by row, yjs can then leave
  // structs "pending" for good (seen here: items wrongly reported missing), so merge each
  // document's rows into one update and apply that once.
  const parts = new Map(names.map((n) => [n, []]));
  let rows = 0;
  for (const line of r.stdout.split('\n')) {
    if (!line.trim()) continue;
    const [, name, hex] = line.split('|');
    if (!parts.has(name)) continue;
    parts.get(name).push(Buffer.from(hex, 'hex'));
    rows += 1;
  }
  const docs = new Map(names.map((n) => [n, new Y.Doc()]));
  for (const n of names) if (parts.get(n).length) Y.applyUpdate(docs.get(n), Y.mergeUpdates(parts.get(n)));
  // Yjs keeps an update whose predecessors are missing aside ("pending"), so one lost update
  // hides every later item that was appended after it: name the updates the store lacks.
  const labelOf = new Map(clients.map((c) => [c.provider.document.clientID, c]));
  const blocked = [];
  names.forEach((n, d) => {
    const pending = docs.get(n).store.pendingStructs;
    if (!pending) return;
    for (const [clientID, clock] of pending.missing) {
      const c = labelOf.get(clientID);
      blocked.push(
        c
          ? `d${d}: store lacks ${c.label}-${clock} (pushed ${(c.pushAt[clock] / 1000).toFixed(1)} s via ${c.nodeAt(c.pushAt[clock])}, ` +
              `${clock < c.acked ? `acked ${(c.ackAt[clock] / 1000).toFixed(1)} s` : 'not acked'}${c.crashed ? ', crashed tab' : ''}), later items wait on it`
          : `d${d}: store lacks clientID ${clientID} clock ${clock}`,
      );
    }
  });
  return { arrays: names.map((n) => docs.get(n).getArray('items').toArray()), rows, blocked };
}

/** For a post-mortem: the store's rows (no contents) and the chaos timeline, into the run dir. */
async function dumpStore() {
  const like = `soak-${RUN_ID}-d%`;
  const r = await pg.query(
    `SELECT 'snapshot', name, fence, octet_length(state), updated_at FROM zedi_snapshots WHERE name LIKE '${like}' ` +
      `UNION ALL SELECT 'update seq=' || seq, name, NULL, octet_length(data), created_at FROM zedi_updates WHERE name LIKE '${like}' ` +
      `UNION ALL SELECT 'fence', name, issued, NULL, NULL FROM zedi_fences WHERE name LIKE '${like}' ORDER BY 5 NULLS FIRST`,
  );
  const rows = await pg.query(
    `SELECT 'snapshot', name, fence, encode(state, 'hex') FROM zedi_snapshots WHERE name LIKE '${like}' ` +
      `UNION ALL SELECT 'update', name, seq, encode(data, 'hex') FROM zedi_updates WHERE name LIKE '${like}' ORDER BY 1, 3`,
  );
  fs.writeFileSync(path.join(RUN_DIR, 'store-rows.txt'), rows.stdout);
  fs.writeFileSync(path.join(RUN_DIR, 'store-read.txt'), lastStoreRead);
  fs.writeFileSync(
    path.join(RUN_DIR, 'clients.json'),
    JSON.stringify(clients.map((c) => ({ label: c.label, doc: c.doc, clientID: c.provider.document.clientID, pushed: c.pushed, acked: c.acked, crashed: c.crashed, nodes: c.nodes, pushAt: c.pushAt, ackAt: c.ackAt }))),
  );
  const timeline = chaosEvents.map((e) => `chaos ${e.kind} at ${(e.at / 1000).toFixed(1)} s (${new Date(T0 + e.at).toISOString()})`);
  fs.writeFileSync(path.join(RUN_DIR, 'store-dump.txt'), `run started ${new Date(T0).toISOString()}\n${timeline.join('\n')}\n\n${r.stdout}${r.stderr}`);
  log(`store rows and chaos timeline written to ${path.join(RUN_DIR, 'store-dump.txt')}`);
}

async function check({ sentAtStop, ackedAtStop }) {
  const failures = [];
  const byDoc = (d) => live().filter((c) => c.doc === d);

  // (1) all live clients of a document have identical content
  const clientContent = [];
  for (let d = 0; d < DOCS; d += 1) {
    const list = byDoc(d);
    const variants = new Map();
    for (const c of list) {
      const key = JSON.stringify(c.array.toArray());
      variants.set(key, [...(variants.get(key) || []), c.label]);
    }
    if (variants.size > 1) {
      failures.push(
        `(1) d${d}: ${variants.size} different contents among its ${list.length} clients: ` +
          [...variants.entries()].map(([k, labels]) => `${labels.join(',')}: ${JSON.parse(k).length} items`).join(' / '),
      );
    }
    clientContent.push(list.length ? list[0].array.toArray() : null);
  }
  log(`check 1: clients of each document identical: ${failures.length ? 'NO' : 'yes'}`);

  // (2) a fresh provider per document on every node sees the same content
  const n2 = failures.length;
  const readers = [];
  for (let d = 0; d < DOCS; d += 1) {
    for (const node of nodes) {
      const p = new HocuspocusProvider({ url: node.url, name: docName(d), token: 'soak', WebSocketPolyfill: WebSocket });
      readers.push({ d, node, p });
    }
  }
  await poll(() => readers.every((r) => r.p.isSynced && r.p.unsyncedChanges === 0), { timeout: 30_000, interval: 100 });
  // The reader got the whole document in SyncStep2; allow a moment for nothing else to arrive.
  await poll(
    () => readers.every((r) => clientContent[r.d] === null || JSON.stringify(r.p.document.getArray('items').toArray()) === JSON.stringify(clientContent[r.d])),
    { timeout: 10_000, interval: 200 },
  );
  for (const r of readers) {
    if (!r.p.isSynced) {
      failures.push(`(2) fresh reader of d${r.d} on ${r.node.id} never synced`);
      continue;
    }
    const got = r.p.document.getArray('items').toArray();
    if (clientContent[r.d] && JSON.stringify(got) !== JSON.stringify(clientContent[r.d])) {
      const have = new Set(got);
      const missing = clientContent[r.d].filter((x) => !have.has(x));
      failures.push(`(2) fresh reader of d${r.d} on ${r.node.id}: ${got.length} items vs ${clientContent[r.d].length} at the clients; missing ${missing.length} (${missing.slice(0, 5).join(' ')})`);
    }
  }
  readers.forEach((r) => r.p.destroy());
  log(`check 2: fresh reader per document on each node sees the same: ${failures.length > n2 ? 'NO' : 'yes'} (${readers.length} readers)`);

  // The store itself, read straight from PostgreSQL: no client or node memory can fill a hole.
  const store = await readStore();
  const storeSets = store.arrays.map((a) => new Set(a));
  for (const b of store.blocked) {
    failures.push(`(store) ${b}`);
    log(`!! ${b}`);
  }

  // (3) every item a live client pushed is present, at the clients and in the store
  const n3 = failures.length;
  let liveItems = 0;
  for (const c of live()) {
    const atClients = new Set(clientContent[c.doc] || []);
    const missingClients = [];
    const missingStore = [];
    for (let k = 0; k < c.pushed; k += 1) {
      const item = `${c.label}-${k}`;
      liveItems += 1;
      if (!atClients.has(item)) missingClients.push(item);
      if (!storeSets[c.doc].has(item)) missingStore.push(item);
    }
    if (missingClients.length) failures.push(`(3) ${c.label}@d${c.doc}: ${missingClients.length} of its ${c.pushed} items missing at the clients: ${missingClients.slice(0, 6).join(' ')}`);
    if (missingStore.length) failures.push(`(3) ${c.label}@d${c.doc}: ${missingStore.length} of its ${c.pushed} items missing in the store: ${missingStore.slice(0, 6).join(' ')}`);
  }
  log(`check 3: every item pushed by a live client present (clients and store): ${failures.length > n3 ? 'NO' : 'yes'} (${liveItems} items)`);

  // (4) every acknowledged item (first `acked` items of each client, crashed ones included) is in the store
  const n4 = failures.length;
  const missingAcked = [];
  let acked = 0;
  let found = 0;
  let crashedAcked = 0;
  let crashedFound = 0;
  let crashedUnacked = 0;
  let crashedUnackedFound = 0;
  for (const c of clients) {
    const missing = [];
    for (let k = 0; k < c.acked; k += 1) {
      if (storeSets[c.doc].has(`${c.label}-${k}`)) found += 1;
      else missing.push(`${c.label}-${k}`);
    }
    acked += c.acked;
    if (c.crashed) {
      crashedAcked += c.acked;
      crashedFound += c.acked - missing.length;
      for (let k = c.acked; k < c.pushed; k += 1) {
        crashedUnacked += 1;
        if (storeSets[c.doc].has(`${c.label}-${k}`)) crashedUnackedFound += 1;
      }
    }
    if (missing.length) {
      const crashInfo = c.crashed ? ' (crashed tab)' : '';
      const ks = missing.map((m) => Number(m.slice(m.lastIndexOf('-') + 1)));
      const range = (arr) => `${(Math.min(...ks.map((k) => arr[k])) / 1000).toFixed(1)}-${(Math.max(...ks.map((k) => arr[k])) / 1000).toFixed(1)} s`;
      missingAcked.push(...missing.map((m) => ({ doc: c.doc, item: m })));
      failures.push(
        `(4) ${c.label}@d${c.doc}${crashInfo}: ${missing.length} of its ${c.acked} ACKNOWLEDGED items missing in the store: ` +
          `${missing.slice(0, 6).join(' ')}${missing.length > 6 ? ' …' : ''} (pushed ${range(c.pushAt)}, acked ${range(c.ackAt)})`,
      );
    }
  }
  if (found !== acked) failures.push(`(4) acknowledged ${acked}, found in the store ${found}`);
  log(`check 4: acknowledged items found in the store: ${found}/${acked} ${found === acked ? '(all)' : 'MISMATCH'}`);
  if (missingAcked.length) {
    // Late (acknowledged before durable) or never? Read again a little later, and keep a dump.
    const activity = await pg.query(
      "SELECT pid, state, now() - xact_start AS xact_age, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
    );
    fs.writeFileSync(path.join(RUN_DIR, 'pg-activity.txt'), activity.stdout + activity.stderr);
    const open = activity.stdout.trim().split('\n').filter(Boolean);
    log(`   ${open.length} open transaction(s) in PostgreSQL right now${open.length ? `: ${open.slice(0, 3).join(' ; ')}` : ''}`);
    await sleep(5_000);
    const again = await readStore();
    const late = missingAcked.filter((m) => again.arrays[m.doc].includes(m.item)).length;
    failures.push(`(4) 5 s later, ${late} of the ${missingAcked.length} missing acknowledged items had appeared in the store`);
    await dumpStore();
  }

  // Not a failure, for information: the store has exactly what the clients have?
  const storeDiff = [];
  for (let d = 0; d < DOCS; d += 1) {
    if (!clientContent[d]) continue;
    const atClients = new Set(clientContent[d]);
    const onlyStore = store.arrays[d].filter((x) => !atClients.has(x)).length;
    const onlyClients = clientContent[d].filter((x) => !storeSets[d].has(x)).length;
    if (onlyStore || onlyClients) storeDiff.push(`d${d}: ${onlyClients} only at clients, ${onlyStore} only in store`);
  }

  // --- stop everything, noting how the nodes exit ---
  clients.filter((c) => !c.crashed).forEach((c) => c.provider.destroy());
  balancer.close();
  const finalStops = await Promise.all(nodes.map(async (n) => ({ id: n.id, ...(await n.stop('SIGTERM', 30_000)) })));
  for (const s of finalStops) if (s.code !== 0 || s.forced) problems.push(`final SIGTERM of ${s.id} ended ${JSON.stringify(s)} (expected exit 0)`);

  // (5) a node started now, with nothing in memory, loads from the store what the clients have
  // (the daemon, not node memory or a client, is the source here).
  const n5 = failures.length;
  const cold = new Node('node-cold', await freePort());
  nodes.push(cold);
  await cold.start();
  const coldReaders = Array.from({ length: DOCS }, (_, d) => ({
    d,
    p: new HocuspocusProvider({ url: cold.url, name: docName(d), token: 'soak', WebSocketPolyfill: WebSocket }),
  }));
  await poll(() => coldReaders.every((r) => r.p.isSynced && r.p.unsyncedChanges === 0), { timeout: 30_000, interval: 100 });
  for (const r of coldReaders) {
    const got = r.p.document.getArray('items').toArray();
    if (!r.p.isSynced) failures.push(`(5) reader of d${r.d} on a freshly started node never synced`);
    else if (clientContent[r.d] && JSON.stringify(got) !== JSON.stringify(clientContent[r.d])) {
      const have = new Set(got);
      const missing = clientContent[r.d].filter((x) => !have.has(x));
      failures.push(`(5) d${r.d} loaded by a freshly started node: ${got.length} items vs ${clientContent[r.d].length} at the clients; missing ${missing.length} (${missing.slice(0, 5).join(' ')})`);
    }
    r.p.destroy();
  }
  const coldStop = await cold.stop('SIGTERM', 30_000);
  finalStops.push({ id: cold.id, ...coldStop });
  if (coldStop.code !== 0 || coldStop.forced) problems.push(`SIGTERM of ${cold.id} ended ${JSON.stringify(coldStop)} (expected exit 0)`);
  log(`check 5: a freshly started node loads the same content from the store: ${failures.length > n5 ? 'NO' : 'yes'}`);
  await redis.kill();

  // Daemon log scan
  const logScan = [];
  let panics = 0;
  let errors = 0;
  for (const n of nodes) {
    const lines = fs.readFileSync(n.logPath, 'utf8').split('\n');
    for (const line of lines) {
      if (/panicked|RUST_BACKTRACE/.test(line)) {
        panics += 1;
        if (logScan.length < 6) logScan.push(`${n.id}: ${line.slice(0, 220)}`);
      } else if (/\bERROR\b|"level":"ERROR"/.test(line)) errors += 1;
    }
  }
  if (panics) problems.push(`${panics} panic line(s) in the daemon logs`);

  // --- summary ---
  const sent = clients.reduce((s, c) => s + c.pushed, 0);
  const ackedFinal = clients.reduce((s, c) => s + c.acked, 0);
  const reconnects = clients.reduce((s, c) => s + Math.max(0, c.opens - 1), 0);
  const kinds = chaosEvents.reduce((m, e) => ({ ...m, [e.kind]: (m[e.kind] || 0) + 1 }), {});
  const crashes = chaosEvents.filter((e) => e.crash);
  const all = [...failures, ...problems];
  process.stdout.write(
    [
      '',
      `===== soak summary (seed ${opts.seed}; ${opts.clients} clients, ${DOCS} documents, ${opts.nodes} nodes, ${opts.minutes} min) =====`,
      `updates sent ${sent} (at stop of editing ${sentAtStop}); acknowledged ${ackedFinal} (at stop ${ackedAtStop}); acknowledged found in store ${found}/${acked}`,
      `store: ${store.rows} rows (snapshots + log) for ${DOCS} documents${storeDiff.length ? `; differs from clients: ${storeDiff.join('; ')}` : ', same items as the clients'}`,
      `chaos events ${chaosEvents.length}: ${Object.entries(kinds).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}; drains ${drains.map((d) => `${d.node} exit ${d.code ?? d.signal} in ${secs(d.ms)}`).join(', ') || 'none'}`,
      `tab crashes ${crashes.length} (${crashes.reduce((s, e) => s + e.crash.count, 0)} clients): acknowledged items present ${crashedFound}/${crashedAcked}; unacknowledged ones present ${crashedUnackedFound}/${crashedUnacked} (may be lost)`,
      `reconnects ${reconnects}; balancer routed ${Object.entries(balancer.routed).map(([k, v]) => `${k}:${v}`).join(' ')}, refused ${balancer.refused}`,
      `daemon logs: ${panics} panic line(s), ${errors} ERROR line(s); final SIGTERM exits ${finalStops.map((s) => `${s.id}:${s.code ?? s.signal}`).join(' ')}`,
      ...logScan.map((l) => `   ${l}`),
      ...all.map((f) => `FAIL ${f}`),
      all.length ? `RESULT: FAIL (${all.length} problem(s)); logs kept in ${RUN_DIR}` : `RESULT: PASS${opts.keep ? `; logs in ${RUN_DIR}` : ''}`,
      '',
    ].join('\n'),
  );
  return all.length === 0;
}

main()
  .then((ok) => {
    finished = true;
    if (ok && !opts.keep) {
      // The exit handler destroys PostgreSQL; the rest of the run dir goes with it afterwards.
      process.on('exit', () => fs.rmSync(RUN_DIR, { recursive: true, force: true }));
    }
    process.exit(ok ? 0 : 1);
  })
  .catch((error) => {
    finished = true;
    log(`!! soak aborted: ${error?.stack || error}`);
    for (const c of live()) {
      try {
        c.provider.destroy();
      } catch {
        // gone
      }
    }
    balancer?.close();
    process.stdout.write(`logs kept in ${RUN_DIR}\n`);
    process.exit(2);
  });
