#!/usr/bin/env node
// Soak / chaos run for zedi-sync (issue 9). Not part of CI: start it with scripts/soak.sh, which
// builds the daemon and installs the npm packages (those of tests/interop, reused from there).
//
//   node tests/soak/soak.mjs [--clients N] [--minutes M] [--nodes K] [--chaos-interval MIN-MAX]
//                            [--chaos-kinds LIST] [--rate R] [--seed S] [--no-tab-crash] [--keep]
//
// A throwaway PostgreSQL (scripts/pg-cluster.sh), a redis-server, K zedi-sync nodes and an
// ALB-like TCP balancer, all on 127.0.0.1. N real @hocuspocus/provider clients edit N/5 documents
// through the balancer while a chaos loop restarts a node (SIGKILL or SIGTERM drain), Redis or
// PostgreSQL every MIN-MAX seconds. Then everything heals and the run checks that nothing was lost
// and that everybody agrees. See tests/soak/README.md for what is checked and how.
//
// Every loop is bounded in count and time, a watchdog ends the run if it overstays, and every
// process started here is stopped on exit, failure and Ctrl-C.

// The parts, each in its own module beside this one: options.mjs (options, seeded randomness,
// log), processes.mjs (tracking and cleanup, PostgreSQL, Redis), nodes.mjs, balancer.mjs,
// clients.mjs, chaos.mjs, store.mjs (reading PostgreSQL) and checks.mjs (the checks, the summary).

// The harness first: it installs its own exit and signal handlers before the soak's own.
import { freePort, sleep } from '../interop/harness.mjs';

import fs from 'node:fs';

import { balancer, startBalancer } from './balancer.mjs';
import { chaosLoop } from './chaos.mjs';
import { check } from './checks.mjs';
import { Client, clients, live } from './clients.mjs';
import { Node, nodes } from './nodes.mjs';
import { BIN, DOCS, between, log, opts, secs } from './options.mjs';
import { RUN_DIR, markFinished, pg, poll, problems, redis } from './processes.mjs';

async function main() {
  const editMs = opts.minutes * 60_000;
  const budgetMs = editMs + 15 * 60_000;
  const watchdog = setTimeout(() => {
    log(`!! watchdog: the run exceeded ${secs(budgetMs)}; stopping (logs in ${RUN_DIR})`);
    process.exit(3);
  }, budgetMs);

  log(
    `soak: ${opts.clients} clients on ${DOCS} documents, ${opts.nodes} nodes, ${opts.minutes} min, ` +
      `${opts.rate} updates/s per client, chaos every ${opts.chaosMin}-${opts.chaosMax} s, seed ${opts.seed}`,
  );
  log(`binary ${BIN}; logs in ${RUN_DIR}`);
  if (!fs.existsSync(BIN)) throw new Error(`zedi-sync binary not found at ${BIN}`);

  await startEverything();
  for (let i = 0; i < opts.clients; i += 1) clients.push(new Client(i % DOCS, balancer.url));
  const allSynced = await poll(() => clients.every((c) => c.everSynced), { timeout: 60_000, interval: 100 });
  if (!allSynced) throw new Error(`clients did not sync at start: ${clients.filter((c) => !c.everSynced).map((c) => c.state()).join('; ')}`);
  log(`${clients.length} clients synced; editing for ${opts.minutes} min`);

  await editUnderChaos(editMs);
  const { sentAtStop, ackedAtStop } = await heal();

  // Clients of a document converge (bounded wait: the last relayed updates may still be in flight).
  const byDoc = (d) => live().filter((c) => c.doc === d);
  const content = (c) => JSON.stringify(c.array.toArray());
  const docsAgree = () => Array.from({ length: DOCS }, (_, d) => new Set(byDoc(d).map(content)).size <= 1).every(Boolean);
  await poll(docsAgree, { timeout: 30_000, interval: 200 });

  const results = await check({ sentAtStop, ackedAtStop });
  clearTimeout(watchdog);
  return results;
}

/** PostgreSQL, Redis, the nodes and the balancer in front of them. */
async function startEverything() {
  await pg.start();
  await redis.start();
  log(`PostgreSQL ${pg.url.replace(/:[^:@/]*@/, ':***@')}, Redis on port ${redis.port}`);
  const ids = Array.from({ length: opts.nodes }, (_, i) => `node-${String.fromCharCode(97 + i)}`);
  for (const id of ids) nodes.push(new Node(id, await freePort()));
  await Promise.all(nodes.map((n) => n.start()));
  await startBalancer(nodes);
  log(`nodes ${nodes.map((n) => `${n.id}:${n.port}`).join(' ')}; balancer ${balancer.url}`);
}

/** Editing, chaos and a periodic status line, concurrently, for `editMs`. */
async function editUnderChaos(editMs) {
  const editEnd = Date.now() + editMs;
  let editing = true;
  const writer = (async () => {
    const tick = 20;
    for (let i = 0; i < Math.ceil(editMs / tick) + 100 && editing && Date.now() < editEnd; i += 1) {
      const now = Date.now();
      for (const c of clients) {
        if (c.crashed || !c.everSynced || now < c.nextAt) continue;
        c.push();
        c.nextAt = now + between(0.5, 1.5) * (1000 / opts.rate);
      }
      await sleep(tick);
    }
  })();
  const status = (async () => {
    for (let i = 0; i < Math.ceil(editMs / 15_000) + 1 && editing; i += 1) {
      const until = Math.min(editEnd, Date.now() + 15_000);
      while (editing && Date.now() < until) await sleep(Math.min(250, until - Date.now() + 1));
      if (!editing || Date.now() >= editEnd) break;
      clients.forEach((c) => c.sample());
      const l = live();
      const sent = clients.reduce((s, c) => s + c.pushed, 0);
      const acked = clients.reduce((s, c) => s + c.acked, 0);
      const connected = l.filter((c) => c.provider.isSynced).length;
      const unsynced = l.reduce((s, c) => s + c.provider.unsyncedChanges, 0);
      log(`   status: sent ${sent}, acked ${acked}, unsynced ${unsynced}, synced clients ${connected}/${l.length}, nodes up ${nodes.filter((n) => n.running).length}/${nodes.length}`);
    }
  })();
  const chaos = chaosLoop(() => editing && Date.now() < editEnd - 3_000, editEnd);

  await writer;
  editing = false;
  await status;
  log('editing stopped; waiting for the chaos event in progress to finish');
  await chaos;
}

/**
 * Brings PostgreSQL, Redis and every node up again and waits (bounded) until every live client
 * settled. Returns what was sent and acknowledged when editing stopped.
 */
async function heal() {
  log('healing: making sure PostgreSQL, Redis and every node are up');
  if (!pg.up) await pg.restart();
  if (!redis.running) await redis.start();
  for (const n of nodes) if (!n.running) await n.start();
  clients.forEach((c) => c.sample());
  const sentAtStop = clients.reduce((s, c) => s + c.pushed, 0);
  const ackedAtStop = clients.reduce((s, c) => s + c.acked, 0);

  const healStart = Date.now();
  const healTimeout = 180_000;
  let healed = false;
  for (let i = 0; i < healTimeout / 10_000 + 1; i += 1) {
    healed = await poll(() => live().every((c) => c.settled), { timeout: Math.min(10_000, healStart + healTimeout - Date.now()), interval: 100 });
    if (healed || Date.now() >= healStart + healTimeout) break;
    const stuck = live().filter((c) => !c.settled);
    log(`   still waiting for ${stuck.length} client(s): ${stuck.slice(0, 4).map((c) => c.state()).join('; ')}${stuck.length > 4 ? '; …' : ''}`);
  }
  clients.forEach((c) => c.sample());
  if (healed) log(`every live client settled (no unsynced changes) after ${secs(Date.now() - healStart)}`);
  else {
    const stuck = live().filter((c) => !c.settled);
    problems.push(`${stuck.length} client(s) never settled within ${secs(healTimeout)}: ${stuck.map((c) => c.state()).join('; ')}`);
    log(`!! ${stuck.length} client(s) never settled within ${secs(healTimeout)}`);
  }
  return { sentAtStop, ackedAtStop };
}

main()
  .then((ok) => {
    markFinished();
    if (ok && !opts.keep) {
      // The exit handler destroys PostgreSQL; the rest of the run dir goes with it afterwards.
      process.on('exit', () => fs.rmSync(RUN_DIR, { recursive: true, force: true }));
    }
    process.exit(ok ? 0 : 1);
  })
  .catch((error) => {
    markFinished();
    log(`!! soak aborted: ${error?.stack || error}`);
    for (const c of live()) {
      try {
        c.provider.destroy();
      } catch {
        // gone
      }
    }
    balancer?.close();
    process.stdout.write(`logs kept in ${RUN_DIR}\n`);
    process.exit(2);
  });
