// The real provider against zedi-sync on a real PostgreSQL (a throwaway cluster per file, made
// by scripts/pg-cluster.sh): durability across kill -9, counted, and a database outage.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import {
  REFERENCE,
  cleanupAll,
  makeDataDir,
  openProvider,
  sleep,
  startPostgres,
  startServer,
  test,
  uniqueDoc,
  waitFor,
  waitSynced,
} from './harness.mjs';

let pg;
before(() => {
  if (REFERENCE) return;
  pg = startPostgres();
});
after(async () => {
  await cleanupAll();
  pg?.destroy();
});

const pgEnv = () => ({ DATABASE_URL: pg.url, ZEDI__STORE__RETRY_MAX_MS: '300', ZEDI__STORE__CONNECT_TIMEOUT_MS: '1000' });
const items = (p) => p.document.getArray('log').toArray();

test('postgres: every acknowledged update survives kill -9 mid-stream (counted)', async (t) => {
  if (REFERENCE) return t.skip('needs zedi-sync and its PostgreSQL store');
  const dataDir = makeDataDir();
  const name = uniqueDoc('pg-kill');
  const server = await startServer({ dataDir, env: pgEnv() });
  const writers = await Promise.all(Array.from({ length: 5 }, () => openProvider({ url: server.url, name })));

  // Each writer pushes one item per update, as fast as timers allow, for about a second.
  const pushed = writers.map(() => 0);
  for (let round = 0; round < 60; round += 1) {
    writers.forEach((w, i) => {
      w.document.getArray('log').push([`w${i}-${pushed[i]}`]);
      pushed[i] += 1;
    });
    await sleep(15); // pacing: many small updates, as a typist makes
  }
  // Acks arrive in submission order per connection and a batch commits as a whole, so the
  // first (pushed - unsynced) items of each writer are durable. Read the counters and kill at
  // once: later acks could only add to what must be there.
  const acked = writers.map((w, i) => pushed[i] - w.unsyncedChanges);
  const exit = await server.kill();
  assert.equal(exit.signal, 'SIGKILL');
  t.diagnostic(`pushed ${JSON.stringify(pushed)}, acknowledged before the kill ${JSON.stringify(acked)}`);
  assert.ok(acked.reduce((a, b) => a + b, 0) > 0, 'some updates were acknowledged before the kill');
  writers.forEach((w) => w.destroy());

  const second = await startServer({ dataDir, env: pgEnv() });
  const reader = await openProvider({ url: second.url, name });
  const present = new Set(items(reader));
  writers.forEach((_, i) => {
    for (let k = 0; k < acked[i]; k += 1) {
      assert.ok(present.has(`w${i}-${k}`), `acknowledged update w${i}-${k} is missing after kill -9`);
    }
  });
  await second.stop();
});

test('postgres: stopped mid-editing then restarted, nothing acknowledged is lost and clients converge', async (t) => {
  if (REFERENCE) return t.skip('needs zedi-sync and its PostgreSQL store');
  const dataDir = makeDataDir();
  const name = uniqueDoc('pg-outage');
  const server = await startServer({ dataDir, env: pgEnv() });
  const editors = await Promise.all(Array.from({ length: 3 }, () => openProvider({ url: server.url, name })));
  editors.forEach((e, i) => e.document.getArray('log').push([`before-${i}`]));
  await Promise.all(editors.map((e) => waitSynced(e)));

  pg.stop();
  // Editing goes on: every editor sees every edit, live, from the server's memory.
  for (let round = 0; round < 10; round += 1) {
    editors.forEach((e, i) => e.document.getArray('log').push([`during-${i}-${round}`]));
    await sleep(20); // pacing: edits spread over the outage
  }
  await waitFor(() => editors.every((e) => items(e).length === 33), {
    timeout: 10_000,
    message: 'every editor to see all 33 items while PostgreSQL is down',
    describe: () => editors.map((e) => items(e).length).join(', '),
  });
  assert.ok(editors.every((e) => e.hasUnsyncedChanges), 'nothing is acknowledged while the database is down');
  const health = await (await fetch(`${server.httpUrl}/health`)).json();
  assert.equal(health.store, 'degraded');

  pg.restart();
  await Promise.all(editors.map((e) => waitSynced(e, { timeout: 20_000 })));
  const converged = JSON.stringify(items(editors[0]));
  editors.forEach((e) => assert.equal(JSON.stringify(items(e)), converged, 'editors converged'));

  await server.kill();
  editors.forEach((e) => e.destroy());
  const second = await startServer({ dataDir, env: pgEnv() });
  const reader = await openProvider({ url: second.url, name });
  assert.equal(JSON.stringify(items(reader)), converged, 'the store holds exactly what the editors converged to');
  await second.stop();
});
