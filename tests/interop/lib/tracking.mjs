// What the harness started (child processes, data dirs, servers, clients) and how it is all
// cleaned up, after each test and at exit; `test` wraps node:test to do it.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test as nodeTest } from 'node:test';

import { sleep } from './util.mjs';

// ---------------------------------------------------------------------------------------------
// Process and resource tracking
// ---------------------------------------------------------------------------------------------

export const liveChildren = new Set();
const dataDirs = new Set();
/** Clients (providers, sockets, raw clients) created since the last cleanupClients(). */
let clients = [];
/** Servers started since the last cleanupAll(). */
export const servers = new Set();
/** Servers whose logs are dumped when the current test fails. */
let serversOfCurrentTest = new Set();

export function killAllChildrenSync() {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  liveChildren.clear();
}
process.on('exit', () => {
  killAllChildrenSync();
  for (const dir of dataDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort
    }
  }
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    killAllChildrenSync();
    process.exit(130);
  });
}

/** Destroy every provider / socket / raw client created since the last call. */
export async function cleanupClients() {
  const toDestroy = clients.reverse();
  clients = [];
  for (const item of toDestroy) {
    try {
      await item.destroy();
    } catch {
      // destroying twice or a destroyed awareness: fine
    }
  }
  // Let close frames leave before the next test (bounded, tiny).
  await sleep(20);
}

/** Clients, then every server still running, then the data dirs. */
export async function cleanupAll() {
  await cleanupClients();
  for (const server of [...servers]) {
    try {
      await server.stop('SIGTERM');
    } catch {
      // stop() escalates to SIGKILL itself
    }
  }
  servers.clear();
  killAllChildrenSync();
  for (const dir of dataDirs) {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  dataDirs.clear();
}

/** A fresh temporary data dir, removed by cleanupAll() and at exit. */
export function makeDataDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zedi-interop-'));
  dataDirs.add(dir);
  return dir;
}

/**
 * Wrapper around node:test's `test` that prints the output of the servers used by the test
 * when it fails (or always with ZEDI_TEST_VERBOSE=1), and destroys its clients afterwards.
 */
export function test(name, options, fn) {
  if (typeof options === 'function') {
    fn = options;
    options = {};
  }
  return nodeTest(name, options, async (t) => {
    serversOfCurrentTest = new Set([...servers].filter((s) => !s.exited));
    try {
      await fn(t);
    } catch (error) {
      for (const server of serversOfCurrentTest) server.dumpLogs(`test "${name}" failed`);
      throw error;
    } finally {
      await cleanupClients();
    }
  });
}

/** Remembers a provider / socket / raw client (anything with `destroy()`) for cleanupClients(). */
export function track(item) {
  clients.push(item);
  return item;
}

/** Remembers a started server for cleanupAll() and for the log dump of a failing test. */
export function trackServer(server) {
  servers.add(server);
  serversOfCurrentTest.add(server);
}
