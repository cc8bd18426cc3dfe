// Graceful drain with real providers: two nodes behind a tiny load balancer that, like the ALB,
// sends new connections only to nodes whose /health answers 200. Draining node A (SIGTERM)
// moves every provider to node B without losing anything the providers sent.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before } from 'node:test';

import {
  REFERENCE,
  cleanupAll,
  freePort,
  openProvider,
  sleep,
  splice,
  startPostgres,
  startRedis,
  startServer,
  test,
  uniqueDoc,
  waitFor,
  waitSynced,
} from './harness.mjs';

let pg;
let redis;
let env;
let balancer;

/** Routes each new TCP connection to the first backend whose /health is 200 (ALB-like). */
async function startBalancer(backends) {
  const port = await freePort();
  const sockets = new Set();
  const server = net.createServer(async (client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.pause();
    let target = null;
    for (const b of backends()) {
      try {
        const res = await fetch(`http://127.0.0.1:${b.port}/health`, { signal: AbortSignal.timeout(500) });
        if (res.status === 200) {
          target = b;
          break;
        }
      } catch {
        // down
      }
    }
    if (!target) {
      client.destroy();
      return;
    }
    splice(client, target.port, sockets);
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `ws://127.0.0.1:${port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

before(async () => {
  if (REFERENCE) return;
  pg = startPostgres();
  redis = await startRedis();
  env = {
    DATABASE_URL: pg.url,
    REDIS_URL: redis.url,
    ZEDI__CLUSTER__LEASE_RENEW_MS: '500',
    ZEDI__CLUSTER__LEASE_TTL_MS: '3000',
  };
});

after(async () => {
  balancer?.close();
  await cleanupAll();
  redis?.kill();
  pg?.destroy();
});

test('drain: SIGTERM moves providers to another node, nothing they sent is lost, exit 0', async (t) => {
  if (REFERENCE) return t.skip('zedi-sync drain only');
  const a = await startServer({ env: { ...env, ZEDI__SERVER__NODE_ID: 'node-a', ZEDI__SERVER__DRAIN_DELAY_MS: '1000' } });
  const b = await startServer({ env: { ...env, ZEDI__SERVER__NODE_ID: 'node-b' } });
  balancer = await startBalancer(() => [a, b]);
  const name = uniqueDoc('drain');
  const closes = [];
  const writers = await Promise.all(
    Array.from({ length: 3 }, () =>
      openProvider({ url: balancer.url, name, onClose: ({ event }) => closes.push(event?.code) }),
    ),
  );
  const health = async (s) => (await fetch(`${s.httpUrl}/health`)).status;
  assert.equal((await (await fetch(`${a.httpUrl}/health`)).json()).connections, 3, 'everyone starts on node A');

  let writing = true;
  const pushed = writers.map(() => 0);
  const loop = (async () => {
    for (let round = 0; round < 400 && writing; round += 1) {
      writers.forEach((w, i) => {
        w.document.getArray('log').push([`w${i}-${pushed[i]}`]);
        pushed[i] += 1;
      });
      await sleep(20); // pacing: a steady stream of edits across the drain
    }
  })();
  await sleep(500); // some writing on A before it drains
  const started = Date.now();
  const stopping = a.stop('SIGTERM');
  await waitFor(async () => (await health(a)) === 503, { timeout: 1_000, message: 'A’s /health to turn 503 at once' });
  const exit = await stopping;
  const drainMs = Date.now() - started;
  assert.deepEqual(exit, { code: 0, signal: null }, 'A exits 0');
  assert.ok(drainMs < 10_000, `drain took ${drainMs} ms`);
  assert.ok(closes.includes(4205), `providers were closed with 4205 (saw ${JSON.stringify(closes)})`);

  // The providers reconnect through the balancer to B and resync; then writing stops.
  await waitFor(async () => (await (await fetch(`${b.httpUrl}/health`)).json()).connections === 3, {
    timeout: 20_000,
    message: 'all three providers to reconnect to B',
  });
  await sleep(500); // some writing on B after the move
  writing = false;
  await loop;
  await Promise.all(writers.map((w) => waitSynced(w, { timeout: 20_000 })));
  const reader = await openProvider({ url: b.url, name });
  const present = new Set(reader.document.getArray('log').toArray());
  writers.forEach((_, i) => {
    for (let k = 0; k < pushed[i]; k += 1) assert.ok(present.has(`w${i}-${k}`), `w${i}-${k} lost across the drain`);
  });
  t.diagnostic(`drain took ${drainMs} ms; ${pushed.reduce((x, y) => x + y, 0)} updates, all present on B`);
  await b.stop();
});
