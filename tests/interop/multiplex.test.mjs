// Several documents on one HocuspocusProviderWebsocket: isolation, and per-document CLOSE.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import {
  MT,
  REFERENCE,
  RawClient,
  cleanupAll,
  closeFrame,
  createSocket,
  describeFrame,
  openProvider,
  quietPeriod,
  recordSocketFrames,
  startServer,
  test,
  text,
  uniqueDoc,
  waitFor,
  waitSynced,
  waitText,
} from './harness.mjs';

let server;
before(async () => {
  server = await startServer();
});
after(cleanupAll);

test('multiplexing: two documents on one socket stay isolated', async () => {
  const docA = uniqueDoc('mx-a');
  const docB = uniqueDoc('mx-b');
  const socket = createSocket({ url: server.url });
  const [pa, pb] = await Promise.all([
    openProvider({ websocketProvider: socket, name: docA }),
    openProvider({ websocketProvider: socket, name: docB }),
  ]);

  pa.document.getText('default').insert(0, 'content of A');
  pb.document.getText('default').insert(0, 'content of B');
  await Promise.all([waitSynced(pa), waitSynced(pb)]);

  // A third client on doc-a only sees doc-a's content.
  const x = await openProvider({ url: server.url, name: docA });
  assert.equal(text(x), 'content of A');
  // And one on doc-b only doc-b's.
  const y = await openProvider({ url: server.url, name: docB });
  assert.equal(text(y), 'content of B');

  // Edits from outside reach the right provider on the shared socket, and only that one.
  x.document.getText('default').insert(0, 'X> ');
  y.document.getText('default').insert(0, 'Y> ');
  await waitText(pa, 'X> content of A');
  await waitText(pb, 'Y> content of B');
  await quietPeriod(200);
  assert.equal(text(pa), 'X> content of A');
  assert.equal(text(pb), 'Y> content of B');
  assert.equal(text(x), 'X> content of A');
  assert.equal(text(y), 'Y> content of B');
  assert.equal(socket.identifier, 1, 'one socket the whole time');
});

test('per-document CLOSE: destroy() on a multiplexed socket detaches that document only', async () => {
  const docA = uniqueDoc('close-a');
  const docB = uniqueDoc('close-b');
  const socket = createSocket({ url: server.url });
  const disconnects = [];
  socket.on('disconnect', ({ event }) => disconnects.push(event?.code));
  const [pa, pb, xa, xb] = await Promise.all([
    openProvider({ websocketProvider: socket, name: docA }),
    openProvider({ websocketProvider: socket, name: docB }),
    openProvider({ url: server.url, name: docA }),
    openProvider({ url: server.url, name: docB }),
  ]);
  pb.setAwarenessField('user', { name: 'pb' });
  const pbId = pb.document.clientID;
  await waitFor(() => xb.awareness.getStates().get(pbId)?.user?.name === 'pb', {
    timeout: 5_000,
    message: 'xb to see pb’s awareness',
  });

  const frames = recordSocketFrames(socket);
  pb.destroy();

  // The server answers the CLOSE for doc-b on the same socket.
  const closeAnswer = await waitFor(() => frames.find((f) => f.address === docB && f.type === MT.CLOSE), {
    timeout: 3_000,
    message: 'a CLOSE frame for doc-b from the server',
    describe: () => frames.map(describeFrame).join(' | '),
  });
  assert.equal(closeAnswer.string, 'provider_initiated', 'CLOSE reason as Hocuspocus sends it');
  const closeIndex = frames.indexOf(closeAnswer);
  // pb's awareness is gone for the others.
  await waitFor(() => !xb.awareness.getStates().has(pbId), {
    timeout: 3_000,
    message: 'xb to lose pb’s awareness',
  });

  // doc-b is no longer sent to this socket; doc-a keeps syncing both ways.
  xb.document.getText('default').insert(0, 'b-after-close');
  await waitSynced(xb);
  xa.document.getText('default').insert(0, 'a-after-close');
  await waitText(pa, 'a-after-close');
  pa.document.getText('default').insert(0, '+pa ');
  await waitText(xa, '+pa a-after-close');
  await quietPeriod(300);
  // zedi-sync answers CLOSE only after everything it owed the attachment (including the echo
  // of pb's awareness removal sent by destroy() just before its CLOSE): nothing for doc-b may
  // follow. The reference server is only checked for the absence of real content.
  const ownRemovalEcho = (f) =>
    REFERENCE && f.type === MT.Awareness && f.awareness?.every((e) => e.clientId === pbId && e.state === null);
  const docBAfterClose = frames.slice(closeIndex + 1).filter((f) => f.address === docB && !ownRemovalEcho(f));
  assert.deepEqual(docBAfterClose.map(describeFrame), [], 'no doc-b frames after the CLOSE');
  assert.equal(text(pb), '', 'the destroyed provider got nothing');
  assert.deepEqual(disconnects, [], 'the socket stayed up');
  assert.equal(socket.status, 'connected');
  assert.equal(socket.identifier, 1);

  // The same document can be opened again on the same socket.
  const pb2 = await openProvider({ websocketProvider: socket, name: docB });
  assert.equal(text(pb2), 'b-after-close');
  frames.stop();
});

test('raw CLOSE (type 7): answered with CLOSE, socket stays open, document can be re-opened', async () => {
  const doc = uniqueDoc('raw-close');
  const watcher = await openProvider({ url: server.url, name: doc });
  watcher.document.getText('default').insert(0, 'hello');
  await waitSynced(watcher);

  const raw = await RawClient.connect(server.url);
  await raw.auth(doc);
  await raw.syncHandshake(doc);
  let since = raw.mark();
  raw.send(closeFrame(doc));
  const answer = await raw.waitFrame((f) => f.address === doc && f.type === MT.CLOSE, {
    since,
    timeout: 3_000,
    message: 'the server’s CLOSE answer',
  });
  assert.equal(answer.string, 'provider_initiated', 'CLOSE reason as Hocuspocus sends it');

  // Updates for the closed document no longer reach this socket.
  since = raw.mark();
  watcher.document.getText('default').insert(5, ' world');
  await waitSynced(watcher);
  await quietPeriod(300);
  const leaked = raw.frames.slice(since).filter((f) => f.address === doc && f.type === MT.Sync);
  assert.deepEqual(leaked.map(describeFrame), [], 'no Sync frames for a closed document');
  assert.ok(raw.isOpen, 'a per-document CLOSE does not close the socket');

  // Re-open it on the same socket.
  await raw.auth(doc);
  const step2 = await raw.syncHandshake(doc);
  assert.ok(step2.payload.length > 2, 'SyncStep2 carries the content');
});
