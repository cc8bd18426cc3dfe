// Bad input from a raw `ws` client: the offending socket is closed with the expected code, and
// normal providers on the same document are not disturbed and keep their content.

import assert from 'node:assert/strict';
import { after, before } from 'node:test';

import {
  MT,
  RawClient,
  Y,
  authFrame,
  broadcastStatelessFrame,
  cleanupAll,
  describeFrame,
  encoding,
  frame,
  openProvider,
  quietPeriod,
  skipInReference,
  startServer,
  test,
  text,
  uniqueDoc,
  updateFrame,
  waitSynced,
  waitText,
} from './harness.mjs';

let server;
before(async () => {
  server = await startServer();
});
after(cleanupAll);

/** Two providers on `name` with some content, plus everything they receive as stateless. */
async function healthyPair(srv, name) {
  const stateless = [];
  const onStateless = ({ payload }) => stateless.push(payload);
  const [p1, p2] = await Promise.all([
    openProvider({ url: srv.url, name, onStateless }),
    openProvider({ url: srv.url, name, onStateless }),
  ]);
  const content = `intact content of ${name.slice(0, 20)}`;
  p1.document.getText('default').insert(0, content);
  await waitText(p2, content);
  await Promise.all([waitSynced(p1), waitSynced(p2)]);
  return { srv, name, p1, p2, content, stateless };
}

/** The providers were not disturbed, still sync, and a fresh joiner gets exactly the content. */
async function assertStillWorking({ srv, name, p1, p2, content }) {
  for (const p of [p1, p2]) {
    assert.equal(p.configuration.websocketProvider.identifier, 1, 'the providers were not reconnected');
    assert.equal(p.configuration.websocketProvider.status, 'connected');
  }
  assert.equal(text(p1), content, 'content intact on p1');
  assert.equal(text(p2), content, 'content intact on p2');
  p2.document.getText('default').insert(content.length, ' +more');
  await waitText(p1, `${content} +more`);
  await waitSynced(p2);
  const fresh = await openProvider({ url: srv.url, name });
  assert.equal(text(fresh), `${content} +more`, 'a fresh provider loads the intact content');
}

async function expectClose(raw, code) {
  const info = await raw.waitClose({ timeout: 5_000 });
  assert.equal(info.code, code, `close code (reason ${JSON.stringify(info.reason)}; frames: ${raw.describeFrames()})`);
}

test('malformed frame [0xff] closes the socket with 4401', async () => {
  const pair = await healthyPair(server, uniqueDoc('bad-ff'));
  const raw = await RawClient.connect(server.url);
  raw.send(new Uint8Array([0xff]));
  await expectClose(raw, 4401);
  await assertStillWorking(pair);
});

test('truncated varString address closes the socket with 4401', async () => {
  const pair = await healthyPair(server, uniqueDoc('bad-trunc'));
  const raw = await RawClient.connect(server.url);
  await raw.auth(pair.name);
  // Claims a 40-byte address but carries only 3 bytes.
  raw.send(new Uint8Array([40, 0x61, 0x62, 0x63]));
  await expectClose(raw, 4401);
  await assertStillWorking(pair);
});

test('unknown message type 42 after auth closes the socket with 4205', async (t) => {
  if (skipInReference(t, 'Hocuspocus 4.7 only logs an unknown message type and keeps the socket')) return;
  const pair = await healthyPair(server, uniqueDoc('bad-type'));
  const raw = await RawClient.connect(server.url);
  await raw.auth(pair.name);
  raw.send(frame(pair.name, 42, (e) => encoding.writeVarString(e, 'junk')));
  await expectClose(raw, 4205);
  await assertStillWorking(pair);
});

test('undecodable Yjs update after auth is refused: SyncStatus 0 and CLOSE for that document, then 4205 on the third', async (t) => {
  if (skipInReference(t, 'y-protocols in Hocuspocus 4.7 logs and swallows an undecodable update; the socket stays open')) return;
  const pair = await healthyPair(server, uniqueDoc('bad-update'));
  const raw = await RawClient.connect(server.url);
  for (let attempt = 1; attempt <= 3; attempt += 1) {
    await raw.auth(pair.name);
    await raw.syncHandshake(pair.name);
    const since = raw.mark();
    // A Yjs v1 update that says 5 clients follow, then ends in the middle of a varUint.
    raw.send(updateFrame(pair.name, new Uint8Array([0x05, 0xff, 0xff])));
    const status = await raw.waitFrame((f) => f.address === pair.name && f.type === MT.SyncStatus, {
      since,
      message: `SyncStatus for refused update ${attempt}`,
    });
    assert.equal(status.sub, 0);
    if (attempt < 3) {
      // The document is closed for this socket only; the socket stays open.
      await raw.waitFrame((f) => f.address === pair.name && f.type === MT.CLOSE, {
        since,
        message: `CLOSE after refused update ${attempt}`,
      });
    }
  }
  // limits.max_refused_updates (3): the third refusal closes the socket.
  await expectClose(raw, 4205);
  await assertStillWorking(pair);
});

test('empty document name closes the socket with 4205', async (t) => {
  if (skipInReference(t, 'Hocuspocus 4.7 accepts "" as a document name')) return;
  const pair = await healthyPair(server, uniqueDoc('bad-empty'));
  const raw = await RawClient.connect(server.url);
  raw.send(authFrame(''));
  await expectClose(raw, 4205);
  assert.ok(
    !raw.frames.some((f) => f.type === MT.Auth && f.sub === 2),
    `no Authenticated for "" (frames: ${raw.describeFrames()})`,
  );
  await assertStillWorking(pair);
});

test('over-long document name (10 000 chars) closes the socket with 4205', async (t) => {
  if (skipInReference(t, 'Hocuspocus 4.7 has no document name length limit')) return;
  const pair = await healthyPair(server, uniqueDoc('bad-long'));
  const raw = await RawClient.connect(server.url);
  const longName = `${pair.name}-${'x'.repeat(10_000)}`;
  raw.send(authFrame(longName));
  await expectClose(raw, 4205);
  assert.ok(
    !raw.frames.some((f) => f.type === MT.Auth && f.sub === 2),
    `no Authenticated for the long name (frames: ${raw.describeFrames()})`,
  );
  await assertStillWorking(pair);
});

test('BroadcastStateless (type 6) from a client gets that document CLOSEd, nothing is broadcast', async () => {
  const pair = await healthyPair(server, uniqueDoc('bad-bcast'));
  const raw = await RawClient.connect(server.url);
  await raw.auth(pair.name);
  await raw.syncHandshake(pair.name);
  const since = raw.mark();
  raw.send(broadcastStatelessFrame(pair.name, 'evil broadcast'));
  const close = await raw.waitFrame((f) => f.address === pair.name && f.type === MT.CLOSE, {
    since,
    timeout: 3_000,
    message: 'a CLOSE frame for the document',
  });
  assert.equal(typeof close.string, 'string');
  await quietPeriod(300);
  assert.deepEqual(pair.stateless, [], 'nothing was broadcast to the other connections');
  // The document is closed for the raw socket: the providers' edits no longer reach it.
  const afterClose = raw.mark();
  await assertStillWorking(pair);
  await quietPeriod(200);
  const leaked = raw.frames.slice(afterClose).filter((f) => f.address === pair.name && f.type === MT.Sync);
  assert.deepEqual(leaked.map(describeFrame), [], 'no Sync frames after the CLOSE');
});

test('a frame over the size limit closes the socket with 1009; one under the limit is applied', async () => {
  const limited = await startServer({ env: { ZEDI__LIMITS__MAX_FRAME_BYTES: '65536' } });
  const pair = await healthyPair(limited, uniqueDoc('bad-big'));
  const raw = await RawClient.connect(limited.url);
  await raw.auth(pair.name);
  await raw.syncHandshake(pair.name);

  // Under the limit: a real update from another Yjs doc, applied and acknowledged.
  const makeUpdate = (chars, fill) => {
    const d = new Y.Doc();
    d.getText('extra').insert(0, fill.repeat(chars));
    return Y.encodeStateAsUpdate(d);
  };
  const small = updateFrame(pair.name, makeUpdate(60_000, 's'));
  assert.ok(small.length < 65_536);
  let since = raw.mark();
  raw.send(small);
  const ack = await raw.waitFrame((f) => f.address === pair.name && f.type === MT.SyncStatus, {
    since,
    timeout: 5_000,
    message: 'SyncStatus for the update under the limit',
  });
  assert.equal(ack.sub, 1);
  await waitText([pair.p1, pair.p2], 's'.repeat(60_000), { field: 'extra' });

  // Over the limit.
  const big = updateFrame(pair.name, makeUpdate(100_000, 'B'));
  assert.ok(big.length > 65_536);
  since = raw.mark();
  raw.send(big);
  await expectClose(raw, 1009);
  await quietPeriod(200);
  assert.equal(text(pair.p1, 'extra'), 's'.repeat(60_000), 'the oversized update was not applied');
  await assertStillWorking(pair);
  await limited.stop();
});
