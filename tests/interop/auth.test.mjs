// Authentication and per-document authorization with the real provider: Cognito-style RS256
// tokens from a local JWKS endpoint serving freshly generated keys, HS256 tokens, a policy on
// claims, token refresh, and the Origin allow-list.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import { after, before } from 'node:test';

import {
  REFERENCE,
  RawClient,
  WebSocket,
  cleanupAll,
  createProvider,
  createSocket,
  freePort,
  openProvider,
  quietPeriod,
  sleep,
  startServer,
  test,
  text,
  uniqueDoc,
  waitFor,
  waitSynced,
  waitText,
} from './harness.mjs';

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

function newKey(kid) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  return { kid, privateKey, publicKey, jwk };
}

function signRs256(key, claims, { kid = key.kid } = {}) {
  const input = `${b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid }))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(crypto.sign('RSA-SHA256', Buffer.from(input), key.privateKey))}`;
}

function signHs256(secret, claims) {
  const input = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(crypto.createHmac('sha256', secret).update(input).digest())}`;
}

// The local JWKS endpoint (test code standing in for Cognito's).
const jwks = { keys: [], down: false, hits: 0, server: null, url: '' };
let issuer;
let server;
let k1;
const HS_SECRET = 'hs-test-secret';
const CLIENT = 'client-a';

function idToken(key, extra = {}) {
  return signRs256(key, { iss: issuer, aud: CLIENT, token_use: 'id', sub: 'user-1', exp: now() + 600, ...extra });
}

before(async () => {
  if (REFERENCE) return;
  k1 = newKey('k1');
  jwks.keys = [k1.jwk];
  const port = await freePort();
  jwks.server = http.createServer((req, res) => {
    jwks.hits += 1;
    if (jwks.down) {
      res.writeHead(503).end('down');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: jwks.keys }));
  });
  await new Promise((resolve) => jwks.server.listen(port, '127.0.0.1', resolve));
  jwks.url = `http://127.0.0.1:${port}/pool/.well-known/jwks.json`;
  issuer = `http://127.0.0.1:${port}/pool`;
  server = await startServer({
    env: {
      JWT_SECRET: HS_SECRET,
      ZEDI__AUTH__ISSUER: issuer,
      ZEDI__AUTH__JWKS_URL: jwks.url,
      ZEDI__AUTH__AUDIENCES: CLIENT,
      ZEDI__AUTH__LEEWAY_SECS: '0',
      ZEDI__AUTH__JWKS_MIN_REFRESH_INTERVAL_MS: '500',
      // Keys older than 1 s are refetched on use, so the stale-on-error path is exercised.
      ZEDI__AUTH__JWKS_MAX_AGE_SECS: '1',
      ZEDI__AUTH__REFRESH_GRACE_MS: '1500',
      ZEDI__AUTH__DOCUMENTS_CLAIM: 'zedi:documents',
      ZEDI__AUTH__READONLY_GROUPS: 'viewers',
      ALLOWED_ORIGINS: 'https://app.example',
    },
  });
});

after(async () => {
  await cleanupAll();
  jwks.server?.close();
});

/** Open a provider with `token` and wait for either outcome. */
async function attempt(name, token, options = {}) {
  const events = { failed: null, scope: null };
  const provider = createProvider({
    url: options.url ?? server.url,
    websocketProvider: options.websocketProvider,
    name,
    token,
    onAuthenticated: ({ scope }) => {
      events.scope = scope;
    },
    onAuthenticationFailed: ({ reason }) => {
      events.failed = reason;
    },
  });
  await waitFor(() => events.failed !== null || (events.scope !== null && provider.isSynced), {
    timeout: 10_000,
    message: `an auth outcome for ${name}`,
  });
  return { provider, events };
}

/** A document with content written by a trusted writer (HS256 service token). */
async function seeded(label, content) {
  const name = uniqueDoc(label);
  const writer = await openProvider({ url: server.url, name, token: signHs256(HS_SECRET, { sub: 'svc', exp: now() + 600 }) });
  writer.document.getText('default').insert(0, content);
  await waitSynced(writer);
  return { name, writer };
}

async function assertDenied(token, expectedReason) {
  const { name } = await seeded('denied', 'secret content');
  const { provider, events } = await attempt(name, token);
  assert.ok(events.failed, 'authentication failed');
  assert.match(events.failed, expectedReason);
  await quietPeriod(200);
  assert.equal(text(provider), '', 'nothing of the document reached the denied connection');
  assert.equal(provider.isSynced, false);
}

const skip = (t) => (REFERENCE ? (t.skip('zedi-sync auth only'), true) : false);

test('auth: a valid Cognito id token (RS256 via JWKS) gets read-write', async (t) => {
  if (skip(t)) return;
  const { name } = await seeded('valid', 'hello');
  const { provider, events } = await attempt(name, idToken(k1));
  assert.equal(events.scope, 'read-write');
  assert.equal(text(provider), 'hello');
  provider.document.getText('default').insert(5, ' world');
  await waitSynced(provider);
});

test('auth: access tokens are checked on client_id, and HS256 service tokens work', async (t) => {
  if (skip(t)) return;
  const { name } = await seeded('access', 'x');
  const access = signRs256(k1, { iss: issuer, client_id: CLIENT, token_use: 'access', exp: now() + 600 });
  assert.equal((await attempt(name, access)).events.scope, 'read-write');
  const otherClient = signRs256(k1, { iss: issuer, client_id: 'client-b', token_use: 'access', exp: now() + 600 });
  await assertDenied(otherClient, /wrong audience/);
  const hs = signHs256(HS_SECRET, { sub: 'svc', exp: now() + 600 });
  assert.equal((await attempt(name, hs)).events.scope, 'read-write');
});

test('auth: expired, wrong issuer, wrong audience, bad signature, alg none and HS/RS confusion are denied', async (t) => {
  if (skip(t)) return;
  await assertDenied(idToken(k1, { exp: now() - 60 }), /expired/);
  await assertDenied(idToken(k1, { iss: 'https://evil.example/pool' }), /wrong issuer/);
  await assertDenied(idToken(k1, { aud: 'client-b' }), /wrong audience/);
  const impostor = newKey('k1'); // same kid, different key
  await assertDenied(idToken(impostor), /bad signature/);
  const none = `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${b64url(
    JSON.stringify({ iss: issuer, aud: CLIENT, exp: now() + 600 }),
  )}.`;
  await assertDenied(none, /permission-denied/);
  // HS256 "signed" with the RSA public key as the HMAC secret: the classic confusion attack.
  const publicPem = k1.publicKey.export({ format: 'pem', type: 'spki' });
  await assertDenied(signHs256(publicPem, { iss: issuer, aud: CLIENT, exp: now() + 600 }), /bad signature/);
  await assertDenied('', /no token/);
  const metrics = await (await fetch(`${server.httpUrl}/metrics`)).text();
  for (const result of ['expired', 'wrong_issuer', 'wrong_audience', 'bad_signature', 'missing_token']) {
    assert.match(metrics, new RegExp(`zedi_auth_results_total\\{result="${result}"\\} [1-9]`), result);
  }
  assert.ok(!metrics.includes(idToken(k1).split('.')[2]), 'no token material in metrics');
});

test('auth: key rotation (new kid appears, old one removed) and a flood of unknown kids', async (t) => {
  if (skip(t)) return;
  const k2 = newKey('k2');
  jwks.keys = [k2.jwk]; // Cognito rotated: k1 is gone
  await sleep(600); // past the refresh rate limit
  const { name } = await seeded('rotation', 'rotated');
  const { events } = await attempt(name, idToken(k2));
  assert.equal(events.scope, 'read-write', 'a token with the new kid is accepted after a refresh');
  await sleep(600); // past the refresh rate limit again, so k1's absence is looked up
  await assertDenied(idToken(k1), /unknown signing key/);

  // Made-up kids: at most one JWKS request per refresh interval, however many tokens arrive.
  await sleep(600); // a fresh refresh interval, so the count below starts from zero
  const before = jwks.hits;
  const attempts = [];
  for (let i = 0; i < 20; i += 1) {
    const bogus = newKey(`bogus-${i}`);
    attempts.push(attempt(uniqueDoc('flood'), idToken(bogus)));
  }
  const results = await Promise.all(attempts);
  assert.ok(results.every((r) => r.events.failed), 'every bogus kid is refused');
  assert.ok(jwks.hits - before <= 2, `JWKS hit ${jwks.hits - before} times for 20 unknown kids`);
  k1 = k2; // later tests sign with the current key
});

test('auth: with the JWKS endpoint down, cached keys keep working', async (t) => {
  if (skip(t)) return;
  const { name } = await seeded('jwks-down', 'cached');
  assert.equal((await attempt(name, idToken(k1))).events.scope, 'read-write'); // cache warm
  jwks.down = true;
  try {
    await sleep(1_200); // the cached set is now older than max age: a refresh is due and fails
    const hitsBefore = jwks.hits;
    const { events, provider } = await attempt(name, idToken(k1));
    assert.equal(events.scope, 'read-write');
    assert.equal(text(provider), 'cached');
    assert.ok(jwks.hits > hitsBefore, 'a refresh was attempted against the down endpoint');
    await assertDenied(idToken(newKey('never-seen')), /unknown signing key|unavailable/);
  } finally {
    jwks.down = false;
  }
});

test('auth: read-only scope (group claim): edits are refused, reading and awareness work', async (t) => {
  if (skip(t)) return;
  const { name, writer } = await seeded('readonly', 'original');
  const { provider, events } = await attempt(name, idToken(k1, { 'cognito:groups': ['viewers'] }));
  assert.equal(events.scope, 'readonly');
  assert.equal(text(provider), 'original');
  // The provider reports synced on the server's SyncStep2; the ack of its own SyncStep2 comes
  // one round trip later, so wait for it rather than race it.
  await waitFor(() => !provider.hasUnsyncedChanges, { timeout: 5_000, message: 'the handshake to be acknowledged' });
  provider.document.getText('default').insert(0, 'vandalism ');
  await quietPeriod(500);
  assert.equal(text(writer), 'original', 'a read-only edit never reaches others');
  assert.ok(provider.hasUnsyncedChanges, 'the edit was answered SyncStatus(0)');
  provider.setAwarenessField('user', { name: 'viewer' });
  await waitFor(() => [...writer.awareness.getStates().values()].some((s) => s.user?.name === 'viewer'), {
    message: 'the viewer’s awareness to reach the writer',
  });
  writer.document.getText('default').insert(8, '!');
  await waitFor(() => text(provider).includes('original!'), { message: 'the viewer to receive edits' });
});

test('auth: claim-based allow/deny per document on one multiplexed socket', async (t) => {
  if (skip(t)) return;
  const allowed = await seeded('allowed', 'open content');
  const secret = await seeded('secret', 'classified');
  const token = idToken(k1, { 'zedi:documents': [`${allowed.name.slice(0, 10)}*`] });
  const socket = createSocket({ url: server.url });
  const a = await attempt(allowed.name, token, { websocketProvider: socket });
  const s = await attempt(secret.name, token, { websocketProvider: socket });
  assert.equal(a.events.scope, 'read-write');
  assert.match(s.events.failed, /not allowed/);
  secret.writer.document.getText('default').insert(0, 'more ');
  allowed.writer.document.getText('default').insert(0, 'fresh ');
  await waitText(a.provider, 'fresh open content');
  await quietPeriod(300);
  assert.equal(text(s.provider), '', 'nothing of the denied document reached the shared socket');
  assert.equal(socket.status, 'connected');
});

test('auth: an expiring token is refreshed through the provider, a stale one loses the document', async (t) => {
  if (skip(t)) return;
  const { name, writer } = await seeded('refresh', 'base');
  let issued = 0;
  const fresh = await openProvider({
    url: server.url,
    name,
    token: () => {
      issued += 1;
      return idToken(k1, { exp: now() + 2 });
    },
  });
  const failures = [];
  const stale = await openProvider({
    url: server.url,
    name,
    token: idToken(k1, { exp: now() + 2 }),
    onAuthenticationFailed: ({ reason }) => failures.push(reason),
  });
  await waitFor(() => issued >= 2, { timeout: 6_000, message: 'the server to ask for a fresh token' });
  await waitFor(() => failures.length > 0, { timeout: 8_000, message: 'the stale connection to lose the document' });
  assert.match(failures[0], /expired/);
  writer.document.getText('default').insert(4, '+after');
  await waitText(fresh, 'base+after');
  await quietPeriod(300);
  assert.equal(text(stale), 'base', 'the expired connection gets nothing more');
});

test('auth: Origin allow-list is checked at the upgrade', async (t) => {
  if (skip(t)) return;
  const status = (origin) =>
    new Promise((resolve) => {
      const ws = new WebSocket(server.url, origin ? { origin } : {});
      ws.on('open', () => {
        ws.close();
        resolve(101);
      });
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode));
      ws.on('error', () => {});
    });
  assert.equal(await status('https://evil.example'), 403);
  assert.equal(await status('https://app.example'), 101);
  assert.equal(await status(null), 101, 'non-browser clients send no Origin');
  const raw = await RawClient.connect(server.url);
  raw.destroy();
});
