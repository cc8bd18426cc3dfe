// The REAL Hocuspocus server (4.7.0), started by harness.mjs when ZEDI_INTEROP_REFERENCE=1, so the
// interop tests can be checked against the implementation zedi-sync replaces.
//
// It takes the same environment as zedi-sync (PORT, ZEDI__SERVER__HOST, ZEDI__STORE__PATH,
// ZEDI__LIMITS__MAX_FRAME_BYTES) and needs ZEDI_REF_DIR: a scratch directory OUTSIDE the repository
// where `@hocuspocus/server@4.7.0` and `@hocuspocus/extension-database@4.7.0` are installed
// (harness.mjs installs them there on first use). Nothing of it is a dependency of this package.
//
// Persistence: the whole state of every document (Y.encodeStateAsUpdate) in one JSON file next to
// the store path, rewritten atomically on every (debounced) onStoreDocument.
// Stateless: relayed to the other connections of the same document.
// GET /health answers 200 JSON like zedi-sync.

import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const refDir = process.env.ZEDI_REF_DIR;
if (!refDir) {
  console.error('reference-server: ZEDI_REF_DIR is not set');
  process.exit(2);
}
const load = (pkg, file) =>
  import(pathToFileURL(path.join(refDir, 'node_modules', pkg, file)).href);

const { Server } = await load('@hocuspocus/server', 'dist/hocuspocus-server.esm.js');
const { Database } = await load(
  '@hocuspocus/extension-database',
  'dist/hocuspocus-database.esm.js',
);

const port = Number(process.env.PORT);
const host = process.env.ZEDI__SERVER__HOST || '127.0.0.1';
const storePath = process.env.ZEDI__STORE__PATH;
const maxFrame = process.env.ZEDI__LIMITS__MAX_FRAME_BYTES
  ? Number(process.env.ZEDI__LIMITS__MAX_FRAME_BYTES)
  : undefined;
const quietLogs = (process.env.ZEDI__LOG__LEVEL || 'warn') !== 'debug';

const jsonPath = `${storePath}.reference.json`;
/** @type {Record<string, string>} document name -> base64 Yjs update */
let stored = {};
try {
  stored = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
} catch {
  stored = {};
}
const persist = () => {
  const tmp = `${jsonPath}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(stored));
  fs.renameSync(tmp, jsonPath);
};

const server = new Server({
  port,
  address: host,
  quiet: quietLogs,
  websocketOptions: maxFrame ? { maxPayload: maxFrame } : undefined,
  extensions: [
    new Database({
      fetch: async ({ documentName }) =>
        stored[documentName] ? new Uint8Array(Buffer.from(stored[documentName], 'base64')) : null,
      store: async ({ documentName, state }) => {
        stored[documentName] = Buffer.from(state).toString('base64');
        persist();
      },
    }),
  ],
  async onStateless({ payload, document, connection }) {
    document.broadcastStateless(payload, (other) => other !== connection);
  },
  async onRequest({ request, response }) {
    if (request.url === '/health' || request.url?.startsWith('/health?')) {
      response.writeHead(200, { 'Content-Type': 'application/json' });
      response.end(JSON.stringify({ status: 'ok', reference: 'hocuspocus-4.7.0' }));
      // An empty rejection stops the default handler without logging anything.
      throw null;
    }
  },
});

await server.listen();
