// Documents at rest (documents.rest_after_ms): the real provider cannot tell. A document idle
// for the rest period keeps only its encoded state; providers that join it (fresh, or
// reconnecting with their own copy) sync, and the first edit brings the live document back and
// reaches every editor.

import assert from 'node:assert/strict';
import { after } from 'node:test';

import {
  Y,
  cleanupAll,
  openProvider,
  skipInReference,
  startServer,
  test,
  text,
  uniqueDoc,
  waitFor,
  waitSynced,
  waitText,
} from './harness.mjs';

after(cleanupAll);

async function metric(server, name) {
  const body = await (await fetch(`${server.httpUrl}/metrics`)).text();
  const line = body.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : undefined;
}

test('rest: providers join, reconnect to and edit a document at rest', async (t) => {
  if (skipInReference(t, 'documents at rest are zedi-sync only')) return;
  const server = await startServer({ env: { ZEDI__DOCUMENTS__REST_AFTER_MS: '300' } });
  const name = uniqueDoc('rest');
  const writer = await openProvider({ url: server.url, name });
  writer.document.transact(() => {
    writer.document.getText('default').insert(0, 'written before the rest ');
    writer.document.getMap('meta').set('title', 'notes');
  });
  await waitSynced(writer);

  // A second provider keeps its own copy and goes away while the document rests.
  const keptDoc = new Y.Doc();
  const reconnecting = await openProvider({ url: server.url, name, document: keptDoc });
  reconnecting.disconnect();

  await waitFor(async () => (await metric(server, 'zedi_documents_at_rest')) === 1, {
    message: 'the idle document at rest',
  });
  const fresh = await openProvider({ url: server.url, name });
  assert.equal(text(fresh), 'written before the rest ');
  assert.equal(fresh.document.getMap('meta').get('title'), 'notes');
  await reconnecting.connect();
  await waitSynced(reconnecting);
  assert.equal(text(reconnecting), 'written before the rest ');
  assert.equal(await metric(server, 'zedi_document_revivals_total'), 0, 'joining does not wake it');

  // An edit from the joiner wakes it and reaches everyone.
  fresh.document.getText('default').insert(0, 'after: ');
  await waitSynced(fresh);
  await waitText(writer, 'after: written before the rest ');
  await waitText(reconnecting, 'after: written before the rest ');
  assert.equal(await metric(server, 'zedi_document_revivals_total'), 1);
  [writer, fresh, reconnecting].forEach((p) => p.destroy());
  await server.stop();
});
