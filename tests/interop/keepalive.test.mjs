// Keep-alive: idle connections stay up; v4 one-byte Ping/Pong; silent sockets time out.
//
// The server runs with a short heartbeat (zedi-sync's ZEDI__TIMEOUTS__PING_INTERVAL_MS=500 and
// ZEDI__TIMEOUTS__IDLE_MS=2500), so a few seconds of idling cross the idle timeout several times.
// The reference server ignores both (no Ping, 60 s idle timeout).

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import {
  MT,
  REFERENCE,
  RawClient,
  cleanupAll,
  openProvider,
  quietPeriod,
  recordSocketFrames,
  skipInReference,
  sleep,
  startServer,
  syncStep1Frame,
  test,
  uniqueDoc,
  waitText,
} from './harness.mjs';

const IDLE_MS = 2_500;
let server;
before(async () => {
  server = await startServer({
    env: { ZEDI__TIMEOUTS__PING_INTERVAL_MS: '500', ZEDI__TIMEOUTS__IDLE_MS: String(IDLE_MS) },
  });
});
after(cleanupAll);

test('an idle provider connection stays up past the idle timeout (it answers one-byte Pings)', async (t) => {
  const name = uniqueDoc('idle');
  const [a, b] = await Promise.all([
    openProvider({ url: server.url, name }),
    openProvider({ url: server.url, name }),
  ]);
  a.setAwarenessField('user', { name: 'idle-alice' });
  const socket = a.configuration.websocketProvider;
  const frames = recordSocketFrames(socket);
  const disconnects = [];
  socket.on('disconnect', ({ event }) => disconnects.push(event?.code));

  await sleep(2 * IDLE_MS); // no edits at all

  frames.stop();
  const pings = frames.filter((f) => f.ping);
  t.diagnostic(`one-byte Pings received by the idle provider in ${2 * IDLE_MS} ms: ${pings.length}`);
  assert.deepEqual(disconnects, [], 'no disconnect while idle');
  assert.equal(socket.status, 'connected');
  assert.equal(socket.identifier, 1, 'still the first socket');
  if (!REFERENCE) assert.ok(pings.length >= 2, 'the server pings a v4 provider');
  // And it still works.
  b.document.getText('default').insert(0, 'after idle');
  await waitText(a, 'after idle');
  a.document.getText('default').insert(0, '> ');
  await waitText(b, '> after idle');
});

test('a raw client that only answers one-byte Pings stays connected past the idle timeout', async (t) => {
  const name = uniqueDoc('idle-raw');
  // autoPong: false, so WebSocket-level pings go unanswered: only the one-byte Pong keeps it alive.
  const raw = await RawClient.connect(server.url, { answerPings: true, autoPong: false });
  await raw.auth(name); // announces provider version 4.8.0
  await raw.syncHandshake(name);
  await sleep(IDLE_MS + 1_500); // past the idle timeout: the test is that nothing closes it
  t.diagnostic(`one-byte Pings received by the raw client: ${raw.pingsReceived}`);
  for (const f of raw.frames.filter((fr) => fr.ping)) {
    assert.equal(f.length, 1, 'Ping is exactly one byte');
    assert.equal(f.isBinary, true, 'Ping is a binary frame');
  }
  assert.ok(raw.isOpen, `still open (close: ${JSON.stringify(raw.closeInfo)})`);
  if (!REFERENCE) assert.ok(raw.pingsReceived >= 2, 'the server sent one-byte Pings');
  const step2 = await raw.syncHandshake(name);
  assert.equal(step2.type, MT.Sync);
});

test('a silent raw client is closed with 4408 after the idle timeout', async (t) => {
  if (skipInReference(t, 'Hocuspocus 4.7 has a fixed 60 s idle timeout')) return;
  const name = uniqueDoc('idle-silent');
  const raw = await RawClient.connect(server.url, { answerPings: false, autoPong: false });
  await raw.auth(name);
  await raw.syncHandshake(name);
  const t0 = Date.now();
  const info = await raw.waitClose({ timeout: IDLE_MS + 3_000 });
  assert.equal(info.code, 4408, `close code (reason ${JSON.stringify(info.reason)})`);
  assert.ok(Date.now() - t0 >= IDLE_MS - 1_000, 'not closed long before the idle timeout');
});

test('a raw client sending a one-byte Pong (0x0A) is not disconnected', async (t) => {
  if (skipInReference(t, 'Hocuspocus 4.7 reads 0x0A as a document name length and closes the socket with 4401'))
    return;
  const name = uniqueDoc('pong');
  const watcher = await openProvider({ url: server.url, name });
  const raw = await RawClient.connect(server.url);
  await raw.auth(name);
  await raw.syncHandshake(name);
  raw.send(new Uint8Array([MT.Pong]));
  raw.send(new Uint8Array([MT.Pong]));
  await quietPeriod(1_000);
  assert.ok(raw.isOpen, `still open after unsolicited Pongs (close: ${JSON.stringify(raw.closeInfo)})`);
  // The socket still works for its document.
  const since = raw.mark();
  raw.send(syncStep1Frame(name));
  await raw.waitFrame((f) => f.address === name && f.type === MT.Sync, { since, message: 'a Sync answer' });
  watcher.document.getText('default').insert(0, 'still routed');
  await raw.waitFrame((f) => f.address === name && f.type === MT.Sync && f.sub === 2, {
    since,
    message: 'the watcher’s update on the raw socket',
  });
});
