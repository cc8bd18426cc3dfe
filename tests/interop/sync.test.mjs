// Document sync with the real @hocuspocus/provider: convergence, late joiners, many writers,
// a large document, SyncStatus acknowledgements, reconnects with offline edits.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before } from 'node:test';

import {
  cleanupAll,
  createProvider,
  openProvider,
  providerState,
  quietPeriod,
  sha256,
  sleep,
  startServer,
  test,
  text,
  trackingWebSocketClass,
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

test('two providers converge both ways (concurrent and sequential edits)', async () => {
  const name = uniqueDoc('converge');
  const [a, b] = await Promise.all([
    openProvider({ url: server.url, name }),
    openProvider({ url: server.url, name }),
  ]);

  // Concurrent edits, made before either side can see the other's.
  a.document.getText('default').insert(0, 'alpha ');
  b.document.getText('default').insert(0, 'beta ');
  await waitText([a, b], (s) => s.includes('alpha ') && s.includes('beta '));
  assert.equal(text(a), text(b));
  assert.equal(text(a).length, 'alpha beta '.length);

  // Sequential edits in each direction.
  const ta = a.document.getText('default');
  ta.insert(ta.length, '| from A');
  await waitText(b, (s) => s.endsWith('| from A'));
  const tb = b.document.getText('default');
  tb.insert(tb.length, ' | from B');
  await waitText(a, (s) => s.endsWith('| from A | from B'));

  // Other shared types travel too.
  a.document.getMap('meta').set('title', 'Converged');
  b.document.getArray('list').push([1, 2, 3]);
  await waitFor(() => b.document.getMap('meta').get('title') === 'Converged', { message: 'map entry on B' });
  await waitFor(() => a.document.getArray('list').length === 3, { message: 'array entries on A' });

  await Promise.all([waitSynced(a), waitSynced(b)]);
  assert.equal(text(a), text(b));
  assert.deepEqual(a.document.getArray('list').toJSON(), [1, 2, 3]);
});

test('a late joiner gets the existing content, already there when it is synced', async () => {
  const name = uniqueDoc('late');
  const a = await openProvider({ url: server.url, name });
  a.document.transact(() => {
    a.document.getText('default').insert(0, 'existing content ✓ — ünïcödé');
    a.document.getMap('meta').set('owner', 'alice');
  });
  await waitSynced(a);

  let textAtSynced = null;
  // Not openProvider: the callback reads `b`, which must exist before the provider syncs.
  const b = createProvider({
    url: server.url,
    name,
    onSynced: ({ state }) => {
      if (state && textAtSynced === null) textAtSynced = b.document.getText('default').toString();
    },
  });
  await waitSynced(b);
  assert.equal(textAtSynced, 'existing content ✓ — ünïcödé', 'content must be applied when "synced" fires');
  assert.equal(text(b), 'existing content ✓ — ünïcödé');
  assert.equal(b.document.getMap('meta').get('owner'), 'alice');

  // And a second late joiner after B edited.
  b.document.getText('default').insert(0, '> ');
  await waitSynced(b);
  const c = await openProvider({ url: server.url, name });
  assert.equal(text(c), '> existing content ✓ — ünïcödé');
  await waitText(a, '> existing content ✓ — ünïcödé');
});

test('20 concurrent writers converge to identical content with every insert', async () => {
  const name = uniqueDoc('twenty');
  const writers = await Promise.all(
    Array.from({ length: 20 }, () => openProvider({ url: server.url, name }, { timeout: 20_000 })),
  );

  const PER_WRITER = 5;
  await Promise.all(
    writers.map(async (w, i) => {
      for (let k = 0; k < PER_WRITER; k += 1) {
        await sleep(Math.floor(Math.random() * 30)); // pacing: writers interleave at random
        w.document.getArray('items').push([`w${i}:${k}`]);
        // Insert at a random marker boundary, so no insert ever splits another writer's marker.
        const t = w.document.getText('default');
        const s = t.toString();
        const boundaries = [0];
        for (let p = s.indexOf('>'); p !== -1; p = s.indexOf('>', p + 1)) boundaries.push(p + 1);
        t.insert(boundaries[Math.floor(Math.random() * boundaries.length)], `<${i}.${k}>`);
        const arr = w.document.getArray('shuffled');
        arr.insert(Math.floor(Math.random() * (arr.length + 1)), [`${i}.${k}`]);
      }
    }),
  );

  const expectedItems = [];
  for (let i = 0; i < 20; i += 1) for (let k = 0; k < PER_WRITER; k += 1) expectedItems.push(`w${i}:${k}`);
  const complete = (w) => {
    const items = w.document.getArray('items').toArray();
    return items.length === expectedItems.length;
  };
  await waitFor(() => writers.every(complete), {
    timeout: 30_000,
    message: 'all 20 writers to have all 100 items',
    describe: () => writers.map((w) => w.document.getArray('items').length).join(','),
  });
  await waitFor(
    () => {
      const snapshot = (w) =>
        JSON.stringify([w.document.getArray('items').toJSON(), w.document.getArray('shuffled').toJSON(), text(w)]);
      const first = snapshot(writers[0]);
      return writers.every((w) => snapshot(w) === first);
    },
    { timeout: 10_000, message: 'identical content on all 20 writers' },
  );
  assert.deepEqual([...writers[0].document.getArray('items').toArray()].sort(), [...expectedItems].sort());
  assert.equal(writers[0].document.getArray('shuffled').length, expectedItems.length);
  const finalText = text(writers[0]);
  let markersLength = 0;
  for (let i = 0; i < 20; i += 1) for (let k = 0; k < PER_WRITER; k += 1) markersLength += `<${i}.${k}>`.length;
  assert.equal(finalText.length, markersLength, 'no marker lost or split');
  for (let i = 0; i < 20; i += 1) {
    for (let k = 0; k < PER_WRITER; k += 1) assert.ok(finalText.includes(`<${i}.${k}>`), `text has <${i}.${k}>`);
  }
  await Promise.all(writers.map((w) => waitSynced(w, { timeout: 20_000 })));

  // A late joiner sees exactly the same thing.
  const late = await openProvider({ url: server.url, name });
  assert.equal(text(late), finalText);
  assert.deepEqual(late.document.getArray('items').toJSON(), writers[0].document.getArray('items').toJSON());
});

test('a 5 MB document inserted in one transaction syncs to a late joiner intact', async () => {
  const name = uniqueDoc('big');
  const SIZE = 5 * 1024 * 1024;
  // Pseudo-random printable text, so nothing along the way can shrink it to nothing.
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n';
  const raw = randomBytes(SIZE);
  let big = '';
  const CHUNK = 64 * 1024;
  for (let off = 0; off < SIZE; off += CHUNK) {
    big += Array.from(raw.subarray(off, off + CHUNK), (b) => alphabet[b & 63]).join('');
  }
  assert.equal(big.length, SIZE);

  const a = await openProvider({ url: server.url, name });
  a.document.transact(() => {
    a.document.getText('default').insert(0, big);
    a.document.getMap('meta').set('size', SIZE);
  });
  assert.ok(a.hasUnsyncedChanges);
  await waitSynced(a, { timeout: 60_000 });

  const b = await openProvider({ url: server.url, name }, { timeout: 60_000 });
  const got = text(b);
  assert.equal(got.length, SIZE, 'late joiner text length');
  assert.equal(sha256(got), sha256(big), 'late joiner text content');
  assert.equal(b.document.getMap('meta').get('size'), SIZE);

  // The document is still editable and small edits still flow both ways.
  b.document.getText('default').insert(0, 'HEAD:');
  await waitText(a, (s) => s.startsWith('HEAD:') && s.length === SIZE + 5, { timeout: 20_000 });
});

test('SyncStatus acknowledgements clear hasUnsyncedChanges', async () => {
  const name = uniqueDoc('syncstatus');
  const counts = [];
  const a = createProvider({ url: server.url, name, onUnsyncedChanges: ({ number }) => counts.push(number) });
  // The handshake counts as one unsynced change until the server acknowledged our SyncStep2.
  await waitSynced(a);
  assert.ok(counts.includes(1), `handshake counted (${counts})`);
  assert.equal(a.unsyncedChanges, 0);

  const b = await openProvider({ url: server.url, name });

  a.document.getText('default').insert(0, 'one');
  assert.equal(a.hasUnsyncedChanges, true, 'a local edit is unsynced until the server acks it');
  await waitFor(() => !a.hasUnsyncedChanges, {
    timeout: 5_000,
    message: 'hasUnsyncedChanges to become false after one edit',
    describe: () => providerState(a),
  });

  // Ten separate updates: ten acknowledgements are needed.
  for (let i = 0; i < 10; i += 1) a.document.getText('default').insert(0, `${i}`);
  assert.equal(a.unsyncedChanges, 10);
  await waitFor(() => !a.hasUnsyncedChanges, {
    timeout: 5_000,
    message: 'hasUnsyncedChanges to become false after ten edits',
    describe: () => providerState(a),
  });
  assert.equal(a.unsyncedChanges, 0);
  await waitText(b, '9876543210one');

  // And on the other side.
  b.document.getText('default').insert(0, 'B');
  assert.equal(b.hasUnsyncedChanges, true);
  await waitSynced(b, { timeout: 5_000 });
  await waitText(a, 'B9876543210one');
});

test('reconnect with offline edits (provider.disconnect / connect) merges both sides', async () => {
  const name = uniqueDoc('offline');
  const [a, b] = await Promise.all([
    openProvider({ url: server.url, name }),
    openProvider({ url: server.url, name }),
  ]);
  a.document.getText('default').insert(0, 'base.');
  await waitText(b, 'base.');

  a.disconnect();
  await waitFor(() => a.configuration.websocketProvider.status === 'disconnected', {
    timeout: 5_000,
    message: 'A to be disconnected',
  });
  a.document.getText('default').insert(5, ' A-offline.');
  b.document.getText('default').insert(0, 'B-online. ');
  await waitSynced(b);
  await quietPeriod(300);
  assert.ok(!text(b).includes('A-offline'), 'A was really offline');
  assert.ok(!text(a).includes('B-online'), 'A did not get B’s edit while offline');

  a.connect();
  await waitText([a, b], (s) => s.includes('A-offline') && s.includes('B-online'), { timeout: 15_000 });
  await Promise.all([waitSynced(a), waitSynced(b)]);
  assert.equal(text(a), text(b));
  assert.equal(text(a), 'B-online. base. A-offline.');
});

test('reconnect after the TCP socket is killed: automatic reconnect merges offline edits', async () => {
  const name = uniqueDoc('killsock');
  const { TrackedWebSocket, instances } = trackingWebSocketClass();
  const [a, b] = await Promise.all([
    openProvider({ url: server.url, name, WebSocketPolyfill: TrackedWebSocket }),
    openProvider({ url: server.url, name }),
  ]);
  a.document.getText('default').insert(0, 'base.');
  await waitText(b, 'base.');
  const identifierBefore = a.configuration.websocketProvider.identifier;
  const disconnects = [];
  a.on('disconnect', ({ event }) => disconnects.push(event?.code));

  // Kill the TCP connection (no close handshake), then edit on both sides at once.
  instances.at(-1).terminate();
  a.document.getText('default').insert(0, 'A-during-outage. ');
  b.document.getText('default').insert(5, ' B-during-outage.');

  await waitFor(() => disconnects.length > 0, { timeout: 5_000, message: 'A to notice the dead socket' });
  await waitText([a, b], (s) => s.includes('A-during-outage') && s.includes('B-during-outage'), {
    timeout: 20_000,
  });
  await Promise.all([waitSynced(a, { timeout: 10_000 }), waitSynced(b)]);
  assert.ok(a.configuration.websocketProvider.identifier > identifierBefore, 'A opened a new socket');
  assert.equal(text(a), text(b));
  assert.equal(text(a), 'A-during-outage. base. B-during-outage.');
});
