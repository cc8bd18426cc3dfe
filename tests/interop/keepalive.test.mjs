// Keep-alive: idle connections stay up; v4 one-byte Ping/Pong.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import {
  MT,
  RawClient,
  cleanupAll,
  createProvider,
  recordSocketFrames,
  skipInReference,
  sleep,
  startServer,
  syncStep1Frame,
  test,
  uniqueDoc,
  waitSynced,
  waitText,
} from './harness.mjs';

let server;
before(async () => {
  server = await startServer();
});
after(cleanupAll);

test('an idle provider connection stays up (and answers one-byte Pings)', async (t) => {
  const name = uniqueDoc('idle');
  const a = createProvider({ url: server.url, name });
  const b = createProvider({ url: server.url, name });
  await Promise.all([waitSynced(a), waitSynced(b)]);
  a.setAwarenessField('user', { name: 'idle-alice' });
  const socket = a.configuration.websocketProvider;
  const frames = recordSocketFrames(socket);
  const disconnects = [];
  socket.on('disconnect', ({ event }) => disconnects.push(event?.code));

  await sleep(5_000); // no edits at all

  frames.stop();
  const pings = frames.filter((f) => f.ping).length;
  t.diagnostic(`one-byte Pings received by the idle provider in 5 s: ${pings}`);
  assert.deepEqual(disconnects, [], 'no disconnect while idle');
  assert.equal(socket.status, 'connected');
  assert.equal(socket.identifier, 1, 'still the first socket');
  // And it still works.
  b.document.getText('default').insert(0, 'after idle');
  await waitText(a, 'after idle');
  a.document.getText('default').insert(0, '> ');
  await waitText(b, '> after idle');
});

test('a raw client that answers Pings stays connected while idle', async (t) => {
  const name = uniqueDoc('idle-raw');
  const raw = await RawClient.connect(server.url, { answerPings: true });
  await raw.auth(name);
  await raw.syncHandshake(name);
  await sleep(3_000);
  t.diagnostic(`one-byte Pings received by the raw client in 3 s: ${raw.pingsReceived}`);
  for (const f of raw.frames.filter((fr) => fr.ping)) {
    assert.equal(f.length, 1, 'Ping is exactly one byte');
    assert.equal(f.isBinary, true, 'Ping is a binary frame');
  }
  assert.ok(raw.isOpen, `still open (close: ${JSON.stringify(raw.closeInfo)})`);
  const step2 = await raw.syncHandshake(name);
  assert.equal(step2.type, MT.Sync);
});

test('a raw client sending a one-byte Pong (0x0A) is not disconnected', async (t) => {
  if (skipInReference(t, 'Hocuspocus 4.7 reads 0x0A as a document name length and closes the socket with 4401'))
    return;
  const name = uniqueDoc('pong');
  const watcher = createProvider({ url: server.url, name });
  await waitSynced(watcher);
  const raw = await RawClient.connect(server.url);
  await raw.auth(name);
  await raw.syncHandshake(name);
  raw.send(new Uint8Array([MT.Pong]));
  raw.send(new Uint8Array([MT.Pong]));
  await sleep(1_500);
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
