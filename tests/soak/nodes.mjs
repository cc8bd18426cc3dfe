// The zedi-sync nodes: started, stopped and restarted on their own ports.

import fs from 'node:fs';
import path from 'node:path';

import { sleep } from '../interop/harness.mjs';
import { BIN, LOG_LEVEL, log } from './options.mjs';
import { RUN_DIR, httpStatus, pg, poll, problems, redis, spawnTracked } from './processes.mjs';

export const nodes = [];

export class Node {
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
