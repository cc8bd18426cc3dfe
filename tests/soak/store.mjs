// The store read straight from PostgreSQL, and a post-mortem dump of it.

import fs from 'node:fs';
import path from 'node:path';

import { Y, sleep } from '../interop/harness.mjs';
import { chaosEvents } from './chaos.mjs';
import { clients } from './clients.mjs';
import { DOCS, RUN_ID, T0, docName, log } from './options.mjs';
import { RUN_DIR, pg } from './processes.mjs';

let lastStoreRead = '';
export async function readStore() {
  const names = Array.from({ length: DOCS }, (_, d) => docName(d));
  const like = `soak-${RUN_ID}-d%`;
  const sql =
    `SELECT 's', name, encode(state, 'hex') FROM zedi_snapshots WHERE name LIKE '${like}' ` +
    `UNION ALL SELECT 'u', name, encode(data, 'hex') FROM zedi_updates WHERE name LIKE '${like}'`;
  let r;
  for (let attempt = 1; attempt <= 5; attempt += 1) {
    r = await pg.query(sql);
    if (r.code === 0) break;
    await sleep(1_000);
  }
  if (r.code !== 0) throw new Error(`reading the store failed: ${r.stderr.trim()}`);
  lastStoreRead = r.stdout;
  // Rows come in heap order (not seq order once compaction deleted rows), and seq order need not
  // be causal order either (nodes append concurrently). Applied row by row, yjs can then leave
  // structs "pending" for good (seen here: items wrongly reported missing), so merge each
  // document's rows into one update and apply that once.
  const parts = new Map(names.map((n) => [n, []]));
  let rows = 0;
  for (const line of r.stdout.split('\n')) {
    if (!line.trim()) continue;
    const [, name, hex] = line.split('|');
    if (!parts.has(name)) continue;
    parts.get(name).push(Buffer.from(hex, 'hex'));
    rows += 1;
  }
  const docs = new Map(names.map((n) => [n, new Y.Doc()]));
  for (const n of names) if (parts.get(n).length) Y.applyUpdate(docs.get(n), Y.mergeUpdates(parts.get(n)));
  // Yjs keeps an update whose predecessors are missing aside ("pending"), so one lost update
  // hides every later item that was appended after it: name the updates the store lacks.
  const labelOf = new Map(clients.map((c) => [c.provider.document.clientID, c]));
  const blocked = [];
  names.forEach((n, d) => {
    const pending = docs.get(n).store.pendingStructs;
    if (!pending) return;
    for (const [clientID, clock] of pending.missing) {
      const c = labelOf.get(clientID);
      blocked.push(
        c
          ? `d${d}: store lacks ${c.label}-${clock} (pushed ${(c.pushAt[clock] / 1000).toFixed(1)} s via ${c.nodeAt(c.pushAt[clock])}, ` +
              `${clock < c.acked ? `acked ${(c.ackAt[clock] / 1000).toFixed(1)} s` : 'not acked'}${c.crashed ? ', crashed tab' : ''}), later items wait on it`
          : `d${d}: store lacks clientID ${clientID} clock ${clock}`,
      );
    }
  });
  return { arrays: names.map((n) => docs.get(n).getArray('items').toArray()), rows, blocked };
}

/** For a post-mortem: the store's rows (no contents) and the chaos timeline, into the run dir. */
export async function dumpStore() {
  const like = `soak-${RUN_ID}-d%`;
  const r = await pg.query(
    `SELECT 'snapshot', name, fence, octet_length(state), updated_at FROM zedi_snapshots WHERE name LIKE '${like}' ` +
      `UNION ALL SELECT 'update seq=' || seq, name, NULL, octet_length(data), created_at FROM zedi_updates WHERE name LIKE '${like}' ` +
      `UNION ALL SELECT 'fence', name, issued, NULL, NULL FROM zedi_fences WHERE name LIKE '${like}' ORDER BY 5 NULLS FIRST`,
  );
  const rows = await pg.query(
    `SELECT 'snapshot', name, fence, encode(state, 'hex') FROM zedi_snapshots WHERE name LIKE '${like}' ` +
      `UNION ALL SELECT 'update', name, seq, encode(data, 'hex') FROM zedi_updates WHERE name LIKE '${like}' ORDER BY 1, 3`,
  );
  fs.writeFileSync(path.join(RUN_DIR, 'store-rows.txt'), rows.stdout);
  fs.writeFileSync(path.join(RUN_DIR, 'store-read.txt'), lastStoreRead);
  fs.writeFileSync(
    path.join(RUN_DIR, 'clients.json'),
    JSON.stringify(clients.map((c) => ({ label: c.label, doc: c.doc, clientID: c.provider.document.clientID, pushed: c.pushed, acked: c.acked, crashed: c.crashed, nodes: c.nodes, pushAt: c.pushAt, ackAt: c.ackAt }))),
  );
  const timeline = chaosEvents.map((e) => `chaos ${e.kind} at ${(e.at / 1000).toFixed(1)} s (${new Date(T0 + e.at).toISOString()})`);
  fs.writeFileSync(path.join(RUN_DIR, 'store-dump.txt'), `run started ${new Date(T0).toISOString()}\n${timeline.join('\n')}\n\n${r.stdout}${r.stderr}`);
  log(`store rows and chaos timeline written to ${path.join(RUN_DIR, 'store-dump.txt')}`);
}
