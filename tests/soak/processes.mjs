// Everything the soak starts is tracked and killed on exit, whatever the reason; PostgreSQL and
// Redis; bounded waits.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { freePort, sleep } from '../interop/harness.mjs';
import { PG_SCRIPT } from './options.mjs';

export const RUN_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'zedi-soak-'));
fs.chmodSync(RUN_DIR, 0o755); // the postgres user must reach the PostgreSQL dir inside
const PG_DIR = path.join(RUN_DIR, 'pg');
let pgCreated = false;
let finished = false;
/** The run came to its end (passed, failed or aborted): the exit handler need not say it stopped early. */
export function markFinished() {
  finished = true;
}
const children = new Set();

export function spawnTracked(cmd, args, options) {
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

export async function httpStatus(url, ms = 500) {
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
export async function poll(pred, { timeout, interval = 100 }) {
  const deadline = Date.now() + timeout;
  for (let i = 0; i < Math.ceil(timeout / interval) + 2; i += 1) {
    if (await pred()) return true;
    if (Date.now() >= deadline) break;
    await sleep(interval);
  }
  return false;
}

export const pg = {
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

export const redis = {
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

export const problems = []; // anything that makes the run fail, besides the final checks
