// Hostile Yjs updates seen from the real yjs and @hocuspocus/provider (finding 4 of the
// hostile-input review; tests/it/hostile_input.rs has all seven against our own client code).
//
// A ContentJSON item whose declared count disagrees with its strings: yrs reads one string more
// than declared and writes the item back with a count that matches, so a document holding it
// is served as `count 1, "x"`, which every yjs peer that loads the document then feeds to
// JSON.parse (SyntaxError): the late joiner's provider fails to apply its SyncStep2 and shows
// nothing. The daemon must refuse it: SyncStatus(0) then a CLOSE for that document on the
// attacker's connection, whose socket (and other documents) stay usable.

import assert from 'node:assert/strict';
import { after } from 'node:test';

import {
  MT,
  RawClient,
  SYNC,
  Y,
  cleanupAll,
  createProvider,
  makeDataDir,
  openProvider,
  providerState,
  recordSocketFrames,
  startServer,
  test,
  text,
  uniqueDoc,
  updateFrame,
  waitSynced,
  waitText,
} from './harness.mjs';

after(cleanupAll);

const hex = (s) => Uint8Array.from(s.match(/../g), (b) => Number.parseInt(b, 16));

// Client 942625, one struct under root "jsonroot": ContentJSON declaring 0 strings, then "x".
const JSON_COUNT_MISMATCH = hex('0101a1c439000201086a736f6e726f6f7400017800');

async function invalidUpdates(server) {
  const body = await (await fetch(`${server.httpUrl}/metrics`)).text();
  const prefix = 'zedi_protocol_errors_total{kind="invalid_update"} ';
  const line = body.split('\n').find((l) => l.startsWith(prefix));
  return line ? Number(line.slice(prefix.length)) : 0;
}

/** A fresh provider syncs and shows `expected`. */
async function lateJoinerSees(server, name, expected, when) {
  const late = createProvider({ url: server.url, name });
  try {
    await waitSynced(late, { timeout: 15_000 });
  } catch (error) {
    throw new Error(`a late joiner${when} never synced (its provider could not apply the document): ${error.message}`);
  }
  assert.equal(text(late), expected, `a late joiner${when} shows the honest text (${providerState(late)})`);
  late.destroy();
}

/** Client ids with structs or deletions in a Yjs update; throws when yjs cannot read it. */
function clientsOf(update) {
  const { structs, ds } = Y.decodeUpdate(update);
  return new Set([...structs.map((s) => s.id.client), ...ds.clients.keys()]);
}

test('a ContentJSON item with a wrong count is refused; late joiners still load the honest text, also after a restart', async () => {
  const dataDir = makeDataDir();
  let server = await startServer({ dataDir });
  const name = uniqueDoc('hostile-json');
  const [editor, watcher] = await Promise.all([
    openProvider({ url: server.url, name }),
    openProvider({ url: server.url, name }),
  ]);
  const before = 'honest text before the attack.';
  editor.document.getText('default').insert(0, before);
  await waitText(watcher, before);
  await waitSynced(editor);
  const invalidBefore = await invalidUpdates(server);
  const watcherFrames = recordSocketFrames(watcher.configuration.websocketProvider);

  const attacker = await RawClient.connect(server.url);
  await attacker.auth(name);
  await attacker.syncHandshake(name);
  const side = uniqueDoc('attackers-other-document');
  await attacker.auth(side);
  await attacker.syncHandshake(side);
  const since = attacker.mark();
  attacker.send(updateFrame(name, JSON_COUNT_MISMATCH));
  const answer = await attacker.waitFrame((f) => f.address === name && f.type === MT.SyncStatus, {
    since,
    timeout: 15_000,
    message: 'the answer to the hostile update',
  });

  // The honest editors carry on as if nothing happened.
  const expected = `${before} Honest edit after the attack.`;
  editor.document.getText('default').insert(before.length, ' Honest edit after the attack.');
  await waitText(watcher, expected);
  await waitSynced(editor);
  for (const p of [editor, watcher]) {
    assert.equal(p.configuration.websocketProvider.identifier, 1, 'the honest providers were not reconnected');
    assert.equal(p.configuration.websocketProvider.status, 'connected');
  }
  // What a user opening the document sees: the honest text, not an empty document.
  await lateJoinerSees(server, name, expected, '');

  // The refusal, as the attacker sees it.
  assert.equal(answer.sub, 0, `the hostile update is refused with SyncStatus(0) (frames: ${attacker.describeFrames(since)})`);
  await attacker.waitFrame((f) => f.address === name && f.type === MT.CLOSE, {
    since,
    timeout: 15_000,
    message: 'a CLOSE frame for the document',
  });
  assert.ok(attacker.isOpen, 'the attacker socket stays open');
  assert.ok((await invalidUpdates(server)) > invalidBefore, 'zedi_protocol_errors_total{kind="invalid_update"} grew');
  const sideDoc = new Y.Doc();
  sideDoc.getText('default').insert(0, 'side');
  const sideSince = attacker.mark();
  attacker.send(updateFrame(side, Y.encodeStateAsUpdate(sideDoc)));
  const sideAnswer = await attacker.waitFrame((f) => f.address === side && f.type === MT.SyncStatus, {
    since: sideSince,
    timeout: 15_000,
    message: "the answer on the attacker's other document",
  });
  assert.equal(sideAnswer.sub, 1, "the attacker's other document keeps working");

  // Nothing of it reached the watcher.
  watcherFrames.stop();
  const honestClients = new Set([editor.document.clientID, watcher.document.clientID]);
  for (const f of watcherFrames.filter((fr) => fr.type === MT.Sync && fr.sub === SYNC.Update)) {
    let clients;
    try {
      clients = clientsOf(f.payload);
    } catch (error) {
      assert.fail(`the watcher received an update yjs cannot read: ${error}`);
    }
    for (const client of clients) assert.ok(honestClients.has(client), `the watcher received content of client ${client}`);
  }

  // Nothing of it was stored: after a restart the document still loads.
  await server.stop('SIGTERM');
  server = await startServer({ dataDir });
  await lateJoinerSees(server, name, expected, ' after a restart');
  await server.stop();
});
