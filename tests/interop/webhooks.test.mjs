// Webhooks against a real local HTTP receiver written the way users of
// @hocuspocus/extension-webhook write theirs: it verifies X-Hocuspocus-Signature-256 with an
// HMAC-SHA256 over the raw body, then reads {event, payload}. Editors are the real
// @hocuspocus/provider (and a Tiptap-shaped Y.XmlFragment), on one node and on two.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import { after } from 'node:test';

import * as Y from 'yjs';

import {
  REFERENCE,
  cleanupAll,
  openProvider,
  sleep,
  startPostgres,
  startRedis,
  startServer,
  test,
  uniqueDoc,
  waitFor,
  waitSynced,
} from './harness.mjs';

const SECRET = 'webhook-test-secret';

let pg;
let redis;
after(async () => {
  await cleanupAll();
  redis?.kill();
  pg?.destroy();
});

const skip = (t) => {
  if (REFERENCE) {
    t.skip('zedi-sync webhooks (the reference server runs without the extension)');
    return true;
  }
  return false;
};

/**
 * A receiver on 127.0.0.1: records every request; `respond(request, index)` decides the status
 * (or returns 'hang' to answer only when released).
 */
async function startReceiver(respond = () => 200) {
  const received = [];
  const hanging = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const expected = `sha256=${crypto.createHmac('sha256', SECRET).update(raw).digest('hex')}`;
      const header = req.headers['x-hocuspocus-signature-256'] ?? '';
      const verified =
        header.length === expected.length && crypto.timingSafeEqual(Buffer.from(header), Buffer.from(expected));
      let body = null;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {}
      const entry = { method: req.method, contentType: req.headers['content-type'], verified, body };
      received.push(entry);
      const status = respond(entry, received.length - 1);
      if (status === 'hang') {
        hanging.push(res);
        return;
      }
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end('ok');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/hooks/zedi`,
    received,
    events: (event, documentName) =>
      received.filter((r) => r.body?.event === event && (!documentName || r.body.payload.documentName === documentName)),
    release: () => {
      for (const res of hanging.splice(0)) {
        res.writeHead(200);
        res.end('ok');
      }
    },
    close: () =>
      new Promise((resolve) => {
        for (const res of hanging.splice(0)) res.destroy();
        server.closeAllConnections?.();
        server.close(resolve);
      }),
  };
}

function webhookEnv(receiver, extra = {}) {
  return {
    ZEDI__WEBHOOKS__URL: receiver.url,
    ZEDI__WEBHOOKS__SECRET: SECRET,
    ZEDI__WEBHOOKS__EVENTS: 'connect,create,change,disconnect',
    ZEDI__WEBHOOKS__DEBOUNCE_MS: '400',
    ZEDI__WEBHOOKS__MAX_DEBOUNCE_MS: '4000',
    ZEDI__WEBHOOKS__RETRY_INITIAL_MS: '100',
    ZEDI__WEBHOOKS__RETRY_MAX_MS: '200',
    ZEDI__WEBHOOKS__TIMEOUT_MS: '1000',
    ...extra,
  };
}

/** Types `text` into a Tiptap-shaped document: one paragraph in the `default` fragment. */
function typeInto(provider, text) {
  const doc = provider.document;
  const fragment = doc.getXmlFragment('default');
  let paragraph = fragment.get(0);
  if (!paragraph) {
    doc.transact(() => {
      paragraph = new Y.XmlElement('paragraph');
      paragraph.insert(0, [new Y.XmlText()]);
      fragment.insert(0, [paragraph]);
    });
  }
  const textNode = paragraph.get(0);
  for (const ch of text) {
    textNode.insert(textNode.length, ch);
  }
}

const prosemirror = (text) => ({
  type: 'doc',
  content: [{ type: 'paragraph', content: [{ type: 'text', text }] }],
});

test('webhooks: create, connect, one debounced change per burst, disconnect; signed like the extension', async (t) => {
  if (skip(t)) return;
  const receiver = await startReceiver();
  t.after(() => receiver.close());
  const server = await startServer({ env: webhookEnv(receiver) });
  const name = uniqueDoc('hooked');
  // The v4 provider has no `parameters` option: query parameters go on its URL.
  const editor = await openProvider({ url: `${server.url}/?team=blue`, name });
  await waitFor(() => receiver.events('connect', name).length === 1, { message: 'connect', timeout: 10_000 });
  assert.equal(receiver.events('create', name).length, 1, 'create on the first load');
  const connect = receiver.events('connect', name)[0];
  assert.equal(connect.body.payload.requestParameters.team, 'blue');
  assert.ok(connect.body.payload.requestHeaders.host?.startsWith('127.0.0.1'), JSON.stringify(connect.body.payload));

  // A burst of keystrokes: one change, after the debounce, with the ProseMirror JSON.
  typeInto(editor, 'hello webhooks');
  await waitSynced(editor);
  await waitFor(() => receiver.events('change', name).length >= 1, { message: 'the change', timeout: 10_000 });
  await sleep(1_000);
  const changes = receiver.events('change', name);
  assert.equal(changes.length, 1, 'one change per burst');
  assert.deepEqual(changes[0].body.payload.document, { default: prosemirror('hello webhooks') });
  assert.equal(changes[0].body.payload.documentName, name);
  assert.equal(changes[0].body.payload.requestParameters.team, 'blue', 'the changing connection’s request');

  // A second burst, a second change.
  typeInto(editor, '!');
  await waitFor(() => receiver.events('change', name).length === 2, { message: 'the second change', timeout: 10_000 });
  assert.deepEqual(receiver.events('change', name)[1].body.payload.document, { default: prosemirror('hello webhooks!') });

  editor.destroy();
  await waitFor(() => receiver.events('disconnect', name).length === 1, { message: 'disconnect', timeout: 10_000 });
  assert.deepEqual(Object.keys(receiver.events('disconnect', name)[0].body.payload).sort(), [
    'context',
    'documentName',
    'requestHeaders',
    'requestParameters',
  ]);

  for (const request of receiver.received) {
    assert.equal(request.method, 'POST');
    assert.equal(request.contentType, 'application/json');
    assert.ok(request.verified, `signature verifies over the raw body: ${JSON.stringify(request.body)}`);
  }
});

test('webhooks: a failing receiver is retried, and a hanging one never slows editing', async (t) => {
  if (skip(t)) return;
  let mode = 'fail-twice';
  let failures = 0;
  const receiver = await startReceiver((entry) => {
    if (entry.body?.event !== 'change') return 200;
    if (mode === 'fail-twice' && failures < 2) {
      failures += 1;
      return 500;
    }
    return mode === 'hang' ? 'hang' : 200;
  });
  t.after(() => receiver.close());
  const server = await startServer({ env: webhookEnv(receiver, { ZEDI__WEBHOOKS__EVENTS: 'change' }) });
  const name = uniqueDoc('retried');
  const editor = await openProvider({ url: server.url, name });
  typeInto(editor, 'retry me');
  await waitSynced(editor);
  await waitFor(() => receiver.events('change', name).filter((r) => r.body).length === 3, {
    message: 'two failed attempts and the delivery',
    timeout: 15_000,
  });
  const attempts = receiver.events('change', name);
  assert.deepEqual(attempts[2].body, attempts[0].body, 'the same delivery, retried');

  // While the receiver holds every request open, edits are acknowledged as usual.
  mode = 'hang';
  typeInto(editor, ' and more');
  await waitFor(() => receiver.events('change', name).length === 4, { message: 'the hanging request', timeout: 10_000 });
  for (let i = 0; i < 20; i += 1) {
    typeInto(editor, '.');
    await waitSynced(editor, { timeout: 10_000 });
  }
  assert.equal(receiver.events('change', name).length >= 4, true);
  receiver.release();
});

test('webhooks: editors on two nodes, one change per burst (sent by the lease owner)', async (t) => {
  if (skip(t)) return;
  pg ??= startPostgres();
  redis ??= await startRedis();
  const receiver = await startReceiver();
  t.after(() => receiver.close());
  const nodes = [];
  for (const id of ['hook-a', 'hook-b']) {
    nodes.push(
      await startServer({
        env: webhookEnv(receiver, {
          DATABASE_URL: pg.url,
          REDIS_URL: redis.url,
          ZEDI__SERVER__NODE_ID: id,
          ZEDI__CLUSTER__HEARTBEAT_MS: '500',
          ZEDI__WEBHOOKS__EVENTS: 'change',
          ZEDI__WEBHOOKS__DEBOUNCE_MS: '800',
        }),
      }),
    );
  }
  const name = uniqueDoc('hooked-cluster');
  const [a, b] = await Promise.all(nodes.map((n) => openProvider({ url: n.url, name })));
  // Each node subscribes to the relay and takes (or not) the lease within its intervals.
  await sleep(1_000);
  typeInto(a, 'from a');
  await waitSynced(a);
  await waitFor(() => b.document.getXmlFragment('default').length === 1, { message: 'b sees a', timeout: 10_000 });
  const bText = b.document.getXmlFragment('default').get(0).get(0);
  bText.insert(bText.length, ' and b');
  await waitSynced(b);
  await waitFor(() => receiver.events('change', name).length >= 1, { message: 'the change', timeout: 15_000 });
  await sleep(2_000);
  const changes = receiver.events('change', name);
  assert.equal(changes.length, 1, `exactly one node sends the burst's change: ${changes.length}`);
  assert.deepEqual(changes[0].body.payload.document, { default: prosemirror('from a and b') });
});
