// The final checks (tests/soak/README.md numbers them), the daemon log scan and the summary.

import fs from 'node:fs';
import path from 'node:path';

import { HocuspocusProvider, WebSocket, freePort, sleep } from '../interop/harness.mjs';
import { balancer } from './balancer.mjs';
import { chaosEvents, drains } from './chaos.mjs';
import { clients, live } from './clients.mjs';
import { Node, nodes } from './nodes.mjs';
import { DOCS, docName, log, opts, secs } from './options.mjs';
import { RUN_DIR, pg, poll, problems, redis } from './processes.mjs';
import { dumpStore, readStore } from './store.mjs';

const byDoc = (d) => live().filter((c) => c.doc === d);

/** Runs every check, stops everything, prints the summary; true when nothing failed. */
export async function check({ sentAtStop, ackedAtStop }) {
  const failures = [];
  const clientContent = checkClientsAgree(failures);
  await checkFreshReaders(failures, clientContent);

  // The store itself, read straight from PostgreSQL: no client or node memory can fill a hole.
  const store = await readStore();
  const storeSets = store.arrays.map((a) => new Set(a));
  for (const b of store.blocked) {
    failures.push(`(store) ${b}`);
    log(`!! ${b}`);
  }
  checkLiveItems(failures, clientContent, storeSets);
  const ackCounts = await checkAcknowledged(failures, storeSets);

  // Not a failure, for information: the store has exactly what the clients have?
  const storeDiff = [];
  for (let d = 0; d < DOCS; d += 1) {
    if (!clientContent[d]) continue;
    const atClients = new Set(clientContent[d]);
    const onlyStore = store.arrays[d].filter((x) => !atClients.has(x)).length;
    const onlyClients = clientContent[d].filter((x) => !storeSets[d].has(x)).length;
    if (onlyStore || onlyClients) storeDiff.push(`d${d}: ${onlyClients} only at clients, ${onlyStore} only in store`);
  }

  const finalStops = await stopAndCheckColdNode(failures, clientContent);
  const logs = scanDaemonLogs();
  const all = [...failures, ...problems];
  printSummary({ sentAtStop, ackedAtStop, ackCounts, store, storeDiff, finalStops, logs, all });
  return all.length === 0;
}

/** (1) all live clients of a document have identical content; returns each document's content. */
function checkClientsAgree(failures) {
  const clientContent = [];
  for (let d = 0; d < DOCS; d += 1) {
    const list = byDoc(d);
    const variants = new Map();
    for (const c of list) {
      const key = JSON.stringify(c.array.toArray());
      variants.set(key, [...(variants.get(key) || []), c.label]);
    }
    if (variants.size > 1) {
      failures.push(
        `(1) d${d}: ${variants.size} different contents among its ${list.length} clients: ` +
          [...variants.entries()].map(([k, labels]) => `${labels.join(',')}: ${JSON.parse(k).length} items`).join(' / '),
      );
    }
    clientContent.push(list.length ? list[0].array.toArray() : null);
  }
  log(`check 1: clients of each document identical: ${failures.length ? 'NO' : 'yes'}`);
  return clientContent;
}

/** (2) a fresh provider per document on every node sees the same content. */
async function checkFreshReaders(failures, clientContent) {
  const n2 = failures.length;
  const readers = [];
  for (let d = 0; d < DOCS; d += 1) {
    for (const node of nodes) {
      const p = new HocuspocusProvider({ url: node.url, name: docName(d), token: 'soak', WebSocketPolyfill: WebSocket });
      readers.push({ d, node, p });
    }
  }
  await poll(() => readers.every((r) => r.p.isSynced && r.p.unsyncedChanges === 0), { timeout: 30_000, interval: 100 });
  // The reader got the whole document in SyncStep2; allow a moment for nothing else to arrive.
  await poll(
    () => readers.every((r) => clientContent[r.d] === null || JSON.stringify(r.p.document.getArray('items').toArray()) === JSON.stringify(clientContent[r.d])),
    { timeout: 10_000, interval: 200 },
  );
  for (const r of readers) {
    if (!r.p.isSynced) {
      failures.push(`(2) fresh reader of d${r.d} on ${r.node.id} never synced`);
      continue;
    }
    const got = r.p.document.getArray('items').toArray();
    if (clientContent[r.d] && JSON.stringify(got) !== JSON.stringify(clientContent[r.d])) {
      const have = new Set(got);
      const missing = clientContent[r.d].filter((x) => !have.has(x));
      failures.push(`(2) fresh reader of d${r.d} on ${r.node.id}: ${got.length} items vs ${clientContent[r.d].length} at the clients; missing ${missing.length} (${missing.slice(0, 5).join(' ')})`);
    }
  }
  readers.forEach((r) => r.p.destroy());
  log(`check 2: fresh reader per document on each node sees the same: ${failures.length > n2 ? 'NO' : 'yes'} (${readers.length} readers)`);
}

/** (3) every item a live client pushed is present, at the clients and in the store. */
function checkLiveItems(failures, clientContent, storeSets) {
  const n3 = failures.length;
  let liveItems = 0;
  for (const c of live()) {
    const atClients = new Set(clientContent[c.doc] || []);
    const missingClients = [];
    const missingStore = [];
    for (let k = 0; k < c.pushed; k += 1) {
      const item = `${c.label}-${k}`;
      liveItems += 1;
      if (!atClients.has(item)) missingClients.push(item);
      if (!storeSets[c.doc].has(item)) missingStore.push(item);
    }
    if (missingClients.length) failures.push(`(3) ${c.label}@d${c.doc}: ${missingClients.length} of its ${c.pushed} items missing at the clients: ${missingClients.slice(0, 6).join(' ')}`);
    if (missingStore.length) failures.push(`(3) ${c.label}@d${c.doc}: ${missingStore.length} of its ${c.pushed} items missing in the store: ${missingStore.slice(0, 6).join(' ')}`);
  }
  log(`check 3: every item pushed by a live client present (clients and store): ${failures.length > n3 ? 'NO' : 'yes'} (${liveItems} items)`);
}

/**
 * (4) every acknowledged item (first `acked` items of each client, crashed ones included) is in
 * the store. Returns the counts the summary gives.
 */
async function checkAcknowledged(failures, storeSets) {
  const missingAcked = [];
  const n = { acked: 0, found: 0, crashedAcked: 0, crashedFound: 0, crashedUnacked: 0, crashedUnackedFound: 0 };
  for (const c of clients) {
    const missing = [];
    for (let k = 0; k < c.acked; k += 1) {
      if (storeSets[c.doc].has(`${c.label}-${k}`)) n.found += 1;
      else missing.push(`${c.label}-${k}`);
    }
    n.acked += c.acked;
    if (c.crashed) {
      n.crashedAcked += c.acked;
      n.crashedFound += c.acked - missing.length;
      for (let k = c.acked; k < c.pushed; k += 1) {
        n.crashedUnacked += 1;
        if (storeSets[c.doc].has(`${c.label}-${k}`)) n.crashedUnackedFound += 1;
      }
    }
    if (missing.length) {
      const crashInfo = c.crashed ? ' (crashed tab)' : '';
      const ks = missing.map((m) => Number(m.slice(m.lastIndexOf('-') + 1)));
      const range = (arr) => `${(Math.min(...ks.map((k) => arr[k])) / 1000).toFixed(1)}-${(Math.max(...ks.map((k) => arr[k])) / 1000).toFixed(1)} s`;
      missingAcked.push(...missing.map((m) => ({ doc: c.doc, item: m })));
      failures.push(
        `(4) ${c.label}@d${c.doc}${crashInfo}: ${missing.length} of its ${c.acked} ACKNOWLEDGED items missing in the store: ` +
          `${missing.slice(0, 6).join(' ')}${missing.length > 6 ? ' …' : ''} (pushed ${range(c.pushAt)}, acked ${range(c.ackAt)})`,
      );
    }
  }
  if (n.found !== n.acked) failures.push(`(4) acknowledged ${n.acked}, found in the store ${n.found}`);
  log(`check 4: acknowledged items found in the store: ${n.found}/${n.acked} ${n.found === n.acked ? '(all)' : 'MISMATCH'}`);
  if (missingAcked.length) await explainMissingAcked(failures, missingAcked);
  return n;
}

/** Late (acknowledged before durable) or never? Read again a little later, and keep a dump. */
async function explainMissingAcked(failures, missingAcked) {
  const activity = await pg.query(
    "SELECT pid, state, now() - xact_start AS xact_age, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
  );
  fs.writeFileSync(path.join(RUN_DIR, 'pg-activity.txt'), activity.stdout + activity.stderr);
  const open = activity.stdout.trim().split('\n').filter(Boolean);
  log(`   ${open.length} open transaction(s) in PostgreSQL right now${open.length ? `: ${open.slice(0, 3).join(' ; ')}` : ''}`);
  await sleep(5_000);
  const again = await readStore();
  const late = missingAcked.filter((m) => again.arrays[m.doc].includes(m.item)).length;
  failures.push(`(4) 5 s later, ${late} of the ${missingAcked.length} missing acknowledged items had appeared in the store`);
  await dumpStore();
}

/**
 * Stops everything, noting how the nodes exit; then (5) a node started now, with nothing in
 * memory, loads from the store what the clients have (the daemon, not node memory or a client,
 * is the source here). Returns how every node exited.
 */
async function stopAndCheckColdNode(failures, clientContent) {
  clients.filter((c) => !c.crashed).forEach((c) => c.provider.destroy());
  balancer.close();
  const finalStops = await Promise.all(nodes.map(async (n) => ({ id: n.id, ...(await n.stop('SIGTERM', 30_000)) })));
  for (const s of finalStops) if (s.code !== 0 || s.forced) problems.push(`final SIGTERM of ${s.id} ended ${JSON.stringify(s)} (expected exit 0)`);

  const n5 = failures.length;
  const cold = new Node('node-cold', await freePort());
  nodes.push(cold);
  await cold.start();
  const coldReaders = Array.from({ length: DOCS }, (_, d) => ({
    d,
    p: new HocuspocusProvider({ url: cold.url, name: docName(d), token: 'soak', WebSocketPolyfill: WebSocket }),
  }));
  await poll(() => coldReaders.every((r) => r.p.isSynced && r.p.unsyncedChanges === 0), { timeout: 30_000, interval: 100 });
  for (const r of coldReaders) {
    const got = r.p.document.getArray('items').toArray();
    if (!r.p.isSynced) failures.push(`(5) reader of d${r.d} on a freshly started node never synced`);
    else if (clientContent[r.d] && JSON.stringify(got) !== JSON.stringify(clientContent[r.d])) {
      const have = new Set(got);
      const missing = clientContent[r.d].filter((x) => !have.has(x));
      failures.push(`(5) d${r.d} loaded by a freshly started node: ${got.length} items vs ${clientContent[r.d].length} at the clients; missing ${missing.length} (${missing.slice(0, 5).join(' ')})`);
    }
    r.p.destroy();
  }
  const coldStop = await cold.stop('SIGTERM', 30_000);
  finalStops.push({ id: cold.id, ...coldStop });
  if (coldStop.code !== 0 || coldStop.forced) problems.push(`SIGTERM of ${cold.id} ended ${JSON.stringify(coldStop)} (expected exit 0)`);
  log(`check 5: a freshly started node loads the same content from the store: ${failures.length > n5 ? 'NO' : 'yes'}`);
  await redis.kill();
  return finalStops;
}

/** Panic and ERROR lines in every node's log; a panic is a problem. */
function scanDaemonLogs() {
  const logScan = [];
  let panics = 0;
  let errors = 0;
  for (const n of nodes) {
    const lines = fs.readFileSync(n.logPath, 'utf8').split('\n');
    for (const line of lines) {
      if (/panicked|RUST_BACKTRACE/.test(line)) {
        panics += 1;
        if (logScan.length < 6) logScan.push(`${n.id}: ${line.slice(0, 220)}`);
      } else if (/\bERROR\b|"level":"ERROR"/.test(line)) errors += 1;
    }
  }
  if (panics) problems.push(`${panics} panic line(s) in the daemon logs`);
  return { logScan, panics, errors };
}

function printSummary({ sentAtStop, ackedAtStop, ackCounts, store, storeDiff, finalStops, logs, all }) {
  const { acked, found, crashedAcked, crashedFound, crashedUnacked, crashedUnackedFound } = ackCounts;
  const { logScan, panics, errors } = logs;
  const sent = clients.reduce((s, c) => s + c.pushed, 0);
  const ackedFinal = clients.reduce((s, c) => s + c.acked, 0);
  const reconnects = clients.reduce((s, c) => s + Math.max(0, c.opens - 1), 0);
  const kinds = chaosEvents.reduce((m, e) => ({ ...m, [e.kind]: (m[e.kind] || 0) + 1 }), {});
  const crashes = chaosEvents.filter((e) => e.crash);
  process.stdout.write(
    [
      '',
      `===== soak summary (seed ${opts.seed}; ${opts.clients} clients, ${DOCS} documents, ${opts.nodes} nodes, ${opts.minutes} min) =====`,
      `updates sent ${sent} (at stop of editing ${sentAtStop}); acknowledged ${ackedFinal} (at stop ${ackedAtStop}); acknowledged found in store ${found}/${acked}`,
      `store: ${store.rows} rows (snapshots + log) for ${DOCS} documents${storeDiff.length ? `; differs from clients: ${storeDiff.join('; ')}` : ', same items as the clients'}`,
      `chaos events ${chaosEvents.length}: ${Object.entries(kinds).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}; drains ${drains.map((d) => `${d.node} exit ${d.code ?? d.signal} in ${secs(d.ms)}`).join(', ') || 'none'}`,
      `tab crashes ${crashes.length} (${crashes.reduce((s, e) => s + e.crash.count, 0)} clients): acknowledged items present ${crashedFound}/${crashedAcked}; unacknowledged ones present ${crashedUnackedFound}/${crashedUnacked} (may be lost)`,
      `reconnects ${reconnects}; balancer routed ${Object.entries(balancer.routed).map(([k, v]) => `${k}:${v}`).join(' ')}, refused ${balancer.refused}`,
      `daemon logs: ${panics} panic line(s), ${errors} ERROR line(s); final SIGTERM exits ${finalStops.map((s) => `${s.id}:${s.code ?? s.signal}`).join(' ')}`,
      ...logScan.map((l) => `   ${l}`),
      ...all.map((f) => `FAIL ${f}`),
      all.length ? `RESULT: FAIL (${all.length} problem(s)); logs kept in ${RUN_DIR}` : `RESULT: PASS${opts.keep ? `; logs in ${RUN_DIR}` : ''}`,
      '',
    ].join('\n'),
  );
}
