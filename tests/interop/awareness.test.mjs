// Awareness: states travel between providers, disappear promptly when a socket closes,
// and QueryAwareness is answered with the current states.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import {
  MT,
  RawClient,
  cleanupAll,
  createProvider,
  openProvider,
  queryAwarenessFrame,
  skipInReference,
  startServer,
  test,
  trackingWebSocketClass,
  uniqueDoc,
  waitFor,
} from './harness.mjs';

let server;
before(async () => {
  server = await startServer();
});
after(cleanupAll);

const stateOf = (provider, clientId) => provider.awareness.getStates().get(clientId);
const clientIds = (provider) => JSON.stringify([...provider.awareness.getStates().keys()]);

/** Record when `observer` sees `clientId` removed from its awareness. */
function watchRemoval(observer, clientId) {
  const seen = { at: null };
  observer.awareness.on('change', ({ removed }) => {
    if (seen.at === null && removed.includes(clientId)) seen.at = Date.now();
  });
  return seen;
}

async function pairWithStates(name, optionsA = {}) {
  const [a, b] = await Promise.all([
    openProvider({ url: server.url, name, ...optionsA }),
    openProvider({ url: server.url, name }),
  ]);
  a.setAwarenessField('user', { name: 'alice', color: '#f00' });
  b.setAwarenessField('user', { name: 'bob' });
  const aId = a.document.clientID;
  const bId = b.document.clientID;
  await waitFor(() => stateOf(b, aId)?.user?.name === 'alice', {
    timeout: 5_000,
    message: 'B to see A’s awareness state',
    describe: () => clientIds(b),
  });
  await waitFor(() => stateOf(a, bId)?.user?.name === 'bob', {
    timeout: 5_000,
    message: 'A to see B’s awareness state',
    describe: () => clientIds(a),
  });
  return { a, b, aId, bId };
}

test('awareness: B sees A’s state, and loses it promptly when A disconnects (close handshake)', async () => {
  const { a, b, aId } = await pairWithStates(uniqueDoc('aw-close'));
  assert.deepEqual(stateOf(b, aId), { user: { name: 'alice', color: '#f00' } });

  // A later change of A's state reaches B too.
  a.setAwarenessField('cursor', { anchor: 3, head: 5 });
  await waitFor(() => stateOf(b, aId)?.cursor?.head === 5, { timeout: 5_000, message: 'B to see A’s cursor' });

  const removal = watchRemoval(b, aId);
  const t0 = Date.now();
  a.disconnect(); // closes the socket; the provider sends no awareness removal itself
  await waitFor(() => !b.awareness.getStates().has(aId), {
    timeout: 3_000,
    message: 'B to lose A’s awareness within 3 s of A’s socket closing',
    describe: () => clientIds(b),
  });
  assert.ok(removal.at !== null && removal.at - t0 < 3_000);
  // B's own state is untouched.
  assert.equal(b.awareness.getLocalState()?.user?.name, 'bob');
});

test('awareness: A’s state is removed promptly when A’s TCP socket dies without a close frame', async () => {
  const { TrackedWebSocket, instances } = trackingWebSocketClass();
  // A long reconnect delay, so A stays away for the whole test.
  const { b, aId } = await pairWithStates(uniqueDoc('aw-kill'), {
    WebSocketPolyfill: TrackedWebSocket,
    delay: 60_000,
  });
  const removal = watchRemoval(b, aId);
  const t0 = Date.now();
  instances.at(-1).terminate();
  await waitFor(() => !b.awareness.getStates().has(aId), {
    timeout: 3_000,
    message: 'B to lose A’s awareness within 3 s of A’s socket dying',
    describe: () => clientIds(b),
  });
  assert.ok(removal.at !== null && removal.at - t0 < 3_000);
});

test('awareness: provider.destroy() removes the state for the others', async () => {
  const { a, b, aId } = await pairWithStates(uniqueDoc('aw-destroy'));
  a.destroy();
  await waitFor(() => !b.awareness.getStates().has(aId), {
    timeout: 3_000,
    message: 'B to lose A’s awareness after A.destroy()',
    describe: () => clientIds(b),
  });
});

test('awareness: a new joiner gets the current states right away', async () => {
  const name = uniqueDoc('aw-join');
  const { aId, bId } = await pairWithStates(name);
  const c = createProvider({ url: server.url, name });
  await waitFor(
    () => stateOf(c, aId)?.user?.name === 'alice' && stateOf(c, bId)?.user?.name === 'bob',
    { timeout: 5_000, message: 'C to see A’s and B’s states', describe: () => clientIds(c) },
  );
});

test('QueryAwareness (type 3) is answered with the current awareness states', async (t) => {
  if (skipInReference(t, 'Hocuspocus 4.7 passes no reply callback for QueryAwareness, so it never answers it')) return;
  const name = uniqueDoc('aw-query');
  const { aId, bId } = await pairWithStates(name);

  const raw = await RawClient.connect(server.url);
  await raw.auth(name);
  await raw.syncHandshake(name);
  const since = raw.mark();
  raw.send(queryAwarenessFrame(name));
  const answer = await raw.waitFrame(
    (f) =>
      f.address === name &&
      f.type === MT.Awareness &&
      f.awareness?.some((e) => e.clientId === aId) &&
      f.awareness?.some((e) => e.clientId === bId),
    { since, timeout: 3_000, message: 'an Awareness frame with A’s and B’s states' },
  );
  const a = answer.awareness.find((e) => e.clientId === aId);
  const b = answer.awareness.find((e) => e.clientId === bId);
  assert.deepEqual(a.state, { user: { name: 'alice', color: '#f00' } });
  assert.deepEqual(b.state, { user: { name: 'bob' } });
  assert.ok(raw.isOpen, 'the socket stays open');
});
