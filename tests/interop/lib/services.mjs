// Throwaway PostgreSQL and Redis, and a TCP splice for the load balancers of the drain suite.

import { spawn, spawnSync as spawnSyncRaw } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { freePort } from './daemon.mjs';
import { INTEROP_DIR, waitFor } from './util.mjs';

// ---------------------------------------------------------------------------------------------
// Throwaway PostgreSQL and Redis for the store / cluster / drain suites
// ---------------------------------------------------------------------------------------------

const PG_SCRIPT = path.resolve(INTEROP_DIR, '../../scripts/pg-cluster.sh');

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
