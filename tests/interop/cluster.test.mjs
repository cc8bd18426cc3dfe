// The real provider against three zedi-sync nodes sharing a real PostgreSQL and a real Redis:
// clients split across nodes converge, and awareness crosses nodes.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';

import {
  REFERENCE,
  cleanupAll,
  createProvider,
  freePort,
  sleep,
  startServer,
  test,
  text,
  uniqueDoc,
  waitFor,
  waitSynced,
} from './harness.mjs';

const SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../scripts/pg-cluster.sh');
let pgDir;
let redis;
let nodes = [];

before(async () => {
  if (REFERENCE) return;
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'zedi-pg-'));
  fs.chmodSync(parent, 0o755);
  pgDir = path.join(parent, 'pg');
  const r = spawnSync('bash', [SCRIPT, 'start', pgDir], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`pg-cluster.sh start failed: ${r.stderr}`);
  const pgUrl = r.stdout.trim();
  const redisPort = await freePort();
  redis = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  await waitFor(async () => spawnSync('redis-cli', ['-p', String(redisPort), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG', {
    timeout: 10_000,
    message: 'redis-server to start',
  });
  for (const id of ['node-a', 'node-b', 'node-c']) {
    nodes.push(
      await startServer({
        env: {
          DATABASE_URL: pgUrl,
          REDIS_URL: `redis://127.0.0.1:${redisPort}`,
          ZEDI__SERVER__NODE_ID: id,
          ZEDI__CLUSTER__HEARTBEAT_MS: '500',
        },
      }),
    );
  }
});

after(async () => {
  await cleanupAll();
  redis?.kill('SIGKILL');
  if (pgDir) {
    spawnSync('bash', [SCRIPT, 'destroy', pgDir]);
    fs.rmSync(path.dirname(pgDir), { recursive: true, force: true });
  }
});

test('cluster: providers on three nodes converge, awareness crosses nodes', async (t) => {
  if (REFERENCE) return t.skip('zedi-sync cluster only');
  const name = uniqueDoc('cluster');
  const providers = nodes.map((n) => createProvider({ url: n.url, name }));
  await Promise.all(providers.map((p) => waitSynced(p)));
  await sleep(300);
  providers.forEach((p, i) => p.document.getArray('log').push([`from-${i}`]));
  providers[0].document.getText('default').insert(0, 'shared text');
  await waitFor(() => providers.every((p) => p.document.getArray('log').length === 3 && text(p) === 'shared text'), {
    timeout: 10_000,
    message: 'all providers to see every edit',
    describe: () => providers.map((p) => JSON.stringify(p.document.getArray('log').toArray())).join(' | '),
  });
  const logs = providers.map((p) => JSON.stringify(p.document.getArray('log').toArray()));
  assert.ok(logs.every((l) => l === logs[0]), 'identical order on every node');
  await Promise.all(providers.map((p) => waitSynced(p)));

  providers[0].setAwarenessField('user', { name: 'alice-on-a' });
  await waitFor(
    () => [...providers[2].awareness.getStates().values()].some((s) => s.user?.name === 'alice-on-a'),
    { timeout: 10_000, message: 'C to see A’s awareness' },
  );
  const aId = providers[0].document.clientID;
  providers[0].destroy();
  await waitFor(() => !providers[1].awareness.getStates().has(aId), {
    timeout: 5_000,
    message: 'B to drop A’s awareness after A left',
  });
});
