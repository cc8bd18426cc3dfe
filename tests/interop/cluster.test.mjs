// The real provider against three zedi-sync nodes sharing a real PostgreSQL and a real Redis:
// clients split across nodes converge, and awareness crosses nodes.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import {
  REFERENCE,
  cleanupAll,
  openProvider,
  sleep,
  startPostgres,
  startRedis,
  startServer,
  test,
  text,
  uniqueDoc,
  waitFor,
  waitSynced,
} from './harness.mjs';

let pg;
let redis;
let nodes = [];

before(async () => {
  if (REFERENCE) return;
  pg = startPostgres();
  redis = await startRedis();
  for (const id of ['node-a', 'node-b', 'node-c']) {
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
});

after(async () => {
  await cleanupAll();
  redis?.kill();
  pg?.destroy();
});

test('cluster: providers on three nodes converge, awareness crosses nodes', async (t) => {
  if (REFERENCE) return t.skip('zedi-sync cluster only');
  const name = uniqueDoc('cluster');
  const providers = await Promise.all(nodes.map((n) => openProvider({ url: n.url, name })));
  // Each node subscribes to the relay within its block interval and shows no sign when it has.
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
