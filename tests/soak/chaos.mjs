// The chaos loop: a node, Redis or PostgreSQL restarted every chaosMin..chaosMax seconds, and
// the tabs of one document crashed at each event.

import { sleep } from '../interop/harness.mjs';
import { balancer } from './balancer.mjs';
import { Client, clients, live } from './clients.mjs';
import { nodes } from './nodes.mjs';
import { T0, between, log, opts, pick, rand, secs } from './options.mjs';
import { pg, problems, redis } from './processes.mjs';

export const chaosEvents = [];
export const drains = [];

/** Restarts something every chaosMin..chaosMax seconds while `active()`. */
export async function chaosLoop(active, editEnd) {
  const kinds = opts.kinds;
  let bag = [];
  const maxEvents = Math.ceil((opts.minutes * 60) / opts.chaosMin) + 1;
  for (let i = 0; i < maxEvents; i += 1) {
    const until = Date.now() + between(opts.chaosMin, opts.chaosMax) * 1000;
    while (active() && Date.now() < until) await sleep(Math.min(250, until - Date.now() + 1));
    if (!active()) return;
    if (bag.length === 0) bag = [...kinds].sort(() => rand() - 0.5); // every kind before a repeat
    const kind = bag.pop();
    try {
      await chaosEvent(kind, chaosEvents.length + 1);
    } catch (error) {
      problems.push(`chaos event ${kind} failed: ${error?.message || error}`);
      log(`!! chaos event ${kind} failed: ${error?.stack || error}`);
    }
    if (Date.now() > editEnd + 120_000) return; // bounded even if an event hung
  }
}

/** All the live editors of one random document close their tabs at the moment of the event. */
function crashTabs() {
  if (!opts.tabCrash) return null;
  const docs = [...new Set(live().map((c) => c.doc))];
  if (docs.length === 0) return null;
  const doc = pick(docs);
  const victims = live().filter((c) => c.doc === doc);
  victims.forEach((c) => c.crash());
  return { doc, count: victims.length, acked: victims.reduce((s, c) => s + c.acked, 0), pushed: victims.reduce((s, c) => s + c.pushed, 0) };
}

function replaceTabs(crash) {
  if (!crash) return;
  for (let i = 0; i < crash.count; i += 1) clients.push(new Client(crash.doc, balancer.url));
}

async function chaosEvent(kind, n) {
  const started = Date.now();
  let text;
  let crash = null;
  const tabs = () => (crash ? `; editors of d${crash.doc} crashed (${crash.count} clients, ${crash.acked}/${crash.pushed} acked)` : '');
  if (kind === 'node-kill' || kind === 'node-term') {
    const node = pick(nodes.filter((x) => x.running));
    if (!node) return;
    const signal = kind === 'node-kill' ? 'SIGKILL' : 'SIGTERM';
    const stopping = node.stop(signal, 30_000);
    crash = crashTabs();
    const exit = await stopping;
    const stoppedMs = Date.now() - started;
    if (kind === 'node-term') {
      drains.push({ node: node.id, ...exit });
      if (exit.code !== 0 || exit.forced) problems.push(`drain of ${node.id} ended ${JSON.stringify(exit)} (expected exit 0)`);
    }
    const down = between(500, 3_000);
    await sleep(down);
    await node.start();
    text =
      `${signal} ${node.id}` +
      (kind === 'node-term' ? ` (drained in ${secs(exit.ms)}, exit ${exit.code ?? exit.signal}${exit.forced ? ', FORCED' : ''})` : ` (gone after ${secs(stoppedMs)})`) +
      `; restarted after ${secs(down)} down, ready in ${secs(Date.now() - started - stoppedMs - down)}`;
  } else if (kind === 'redis') {
    await redis.kill();
    crash = crashTabs();
    const down = between(1_000, 5_000);
    await sleep(down);
    await redis.start();
    text = `Redis SIGKILL (data lost); restarted after ${secs(down)}, answering PING ${secs(Date.now() - started - down)} later`;
  } else {
    const r = await pg.stop();
    crash = crashTabs();
    const stoppedMs = Date.now() - started;
    if (r.code !== 0) log(`   pg-cluster.sh stop: exit ${r.code} ${r.stderr.trim()}`);
    const down = between(2_000, 8_000);
    await sleep(down);
    const rr = await pg.restart();
    if (rr.code !== 0) throw new Error(`pg-cluster.sh restart failed: ${rr.stderr.trim()}`);
    text = `PostgreSQL stop (fast, took ${secs(stoppedMs)}); down ${secs(down)}, restarted in ${secs(Date.now() - started - stoppedMs - down)}`;
  }
  chaosEvents.push({ kind, at: started - T0, crash });
  log(`chaos #${n}: ${text}${tabs()}`);
  if (crash) {
    await sleep(1_000);
    replaceTabs(crash);
  }
}
