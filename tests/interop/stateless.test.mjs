// Stateless messages: relayed to the other connections of the same document only.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import {
  cleanupAll,
  createSocket,
  openProvider,
  quietPeriod,
  startServer,
  test,
  uniqueDoc,
  waitFor,
} from './harness.mjs';

let server;
before(async () => {
  server = await startServer();
});
after(cleanupAll);

function statelessInbox() {
  const inbox = [];
  return { inbox, onStateless: ({ payload }) => inbox.push(payload) };
}

test('stateless: A’s payload reaches B on the same document, not C/D on another document', async () => {
  const doc1 = uniqueDoc('sl-one');
  const doc2 = uniqueDoc('sl-two');
  const A = statelessInbox();
  const B = statelessInbox();
  const C = statelessInbox();
  const D = statelessInbox();
  const B2 = statelessInbox();
  // C on another document, own socket; D on another document sharing a socket with B2 (doc1).
  const shared = createSocket({ url: server.url });
  const [a, b, c, d, b2] = await Promise.all([
    openProvider({ url: server.url, name: doc1, onStateless: A.onStateless }),
    openProvider({ url: server.url, name: doc1, onStateless: B.onStateless }),
    openProvider({ url: server.url, name: doc2, onStateless: C.onStateless }),
    openProvider({ websocketProvider: shared, name: doc2, onStateless: D.onStateless }),
    openProvider({ websocketProvider: shared, name: doc1, onStateless: B2.onStateless }),
  ]);

  const payload = JSON.stringify({ op: 'cursor-jump', to: 42, who: 'Zoë ✓' });
  a.sendStateless(payload);
  await waitFor(() => B.inbox.length >= 1 && B2.inbox.length >= 1, {
    timeout: 3_000,
    message: 'B and B2 to receive A’s stateless payload',
    describe: () => JSON.stringify({ B: B.inbox, B2: B2.inbox }),
  });
  assert.deepEqual(B.inbox, [payload]);
  assert.deepEqual(B2.inbox, [payload]);

  // The other way round, and a second, larger payload.
  const big = 'x'.repeat(50_000);
  b.sendStateless('pong');
  b.sendStateless(big);
  await waitFor(() => A.inbox.length >= 2 && B2.inbox.length >= 3, {
    timeout: 3_000,
    message: 'A and B2 to receive B’s payloads',
    describe: () => JSON.stringify({ A: A.inbox.map((p) => p.slice(0, 20)), B2: B2.inbox.map((p) => p.slice(0, 20)) }),
  });
  assert.deepEqual(A.inbox, ['pong', big], 'in order, intact');
  assert.deepEqual(B2.inbox, [payload, 'pong', big]);

  // Give any misrouted frame time to arrive, then check nobody else got anything.
  await quietPeriod(400);
  assert.deepEqual(C.inbox, [], 'C (other document) must not receive doc1’s stateless');
  assert.deepEqual(D.inbox, [], 'D (other document, shared socket) must not receive doc1’s stateless');
  assert.deepEqual(A.inbox, ['pong', big], 'the sender does not get its own payload back');
  assert.deepEqual(B.inbox, [payload], 'the sender does not get its own payload back');

  // Stateless on doc2 reaches C but not D's socket-mate B2 or doc1's clients.
  d.sendStateless('for-doc2');
  await waitFor(() => C.inbox.length === 1, { timeout: 3_000, message: 'C to receive D’s payload' });
  assert.deepEqual(C.inbox, ['for-doc2']);
  await quietPeriod(200);
  assert.deepEqual(B2.inbox, [payload, 'pong', big]);
  assert.deepEqual(A.inbox, ['pong', big]);
});
