// Persistence across a restart of the server on the same data dir.

import assert from 'node:assert/strict';
import { after } from 'node:test';

import {
  cleanupAll,
  makeDataDir,
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

/** Write two documents through one server and wait until every change is acknowledged. */
async function writeDocuments(server, docs) {
  const writers = await Promise.all(docs.map((name) => openProvider({ url: server.url, name })));
  writers.forEach((w, i) => {
    w.document.transact(() => {
      w.document.getText('default').insert(0, `persisted text ${i} ✓`);
      w.document.getMap('meta').set('index', i);
    });
    // A second, separate update.
    w.document.getArray('list').push([`item-${i}`]);
  });
  await Promise.all(writers.map((w) => waitSynced(w)));
  return writers;
}

async function assertLoaded(server, docs) {
  for (const [i, name] of docs.entries()) {
    const fresh = await openProvider({ url: server.url, name });
    assert.equal(text(fresh), `persisted text ${i} ✓`, `text of ${name}`);
    assert.equal(fresh.document.getMap('meta').get('index'), i);
    assert.deepEqual(fresh.document.getArray('list').toJSON(), [`item-${i}`]);
  }
}

test('persistence: content survives SIGTERM and a restart on the same data dir', async () => {
  const dataDir = makeDataDir();
  const docs = [uniqueDoc('persist-term-1'), uniqueDoc('persist-term-2')];
  const first = await startServer({ dataDir });
  const writers = await writeDocuments(first, docs);

  const exit = await first.stop('SIGTERM');
  assert.ok(!first.killedAfterTimeout, 'the server exits by itself on SIGTERM (within 10 s)');
  assert.deepEqual(exit, { code: 0, signal: null }, 'a graceful shutdown exits with code 0');
  writers.forEach((w) => w.destroy());

  const second = await startServer({ dataDir });
  await assertLoaded(second, docs);
  // An unknown document is still empty.
  const other = await openProvider({ url: second.url, name: uniqueDoc('persist-never-written') });
  assert.equal(text(other), '');
  await second.stop();
});

test('persistence: acknowledged content survives SIGKILL', async (t) => {
  if (skipInReference(t, 'Hocuspocus only stores after a debounce (2 s), so SIGKILL right after the ack loses data'))
    return;
  const dataDir = makeDataDir();
  const docs = [uniqueDoc('persist-kill-1'), uniqueDoc('persist-kill-2')];
  const first = await startServer({ dataDir });
  const writers = await writeDocuments(first, docs);
  // Every change is acknowledged (SyncStatus): kill right away, no grace period.
  const exit = await first.kill();
  assert.equal(exit.signal, 'SIGKILL');
  writers.forEach((w) => w.destroy());

  const second = await startServer({ dataDir });
  await assertLoaded(second, docs);
  await second.stop();
});

test('persistence: a connected provider survives a restart on the same port and merges its offline edits', async (t) => {
  const dataDir = makeDataDir();
  const name = uniqueDoc('persist-reconnect');
  const first = await startServer({ dataDir });
  const closes = [];
  const a = await openProvider({
    url: first.url,
    name,
    onClose: ({ event }) => closes.push(event?.code),
  });
  a.document.getText('default').insert(0, 'before restart.');
  await waitSynced(a);

  await first.stop('SIGTERM');
  await waitFor(() => a.configuration.websocketProvider.status !== 'connected', {
    timeout: 5_000,
    message: 'A to notice the server is gone',
  });
  t.diagnostic(`provider close codes seen on shutdown: ${JSON.stringify(closes)}`);
  a.document.getText('default').insert(0, 'during downtime. ');
  assert.ok(a.hasUnsyncedChanges);

  const second = await startServer({ dataDir, port: first.port });
  // The provider reconnects by itself (backoff from 1 s) and syncs its offline edit.
  await waitSynced(a, { timeout: 20_000 });
  const b = await openProvider({ url: second.url, name });
  assert.equal(text(b), 'during downtime. before restart.');
  b.document.getText('default').insert(text(b).length, ' after.');
  await waitText(a, 'during downtime. before restart. after.');
});
