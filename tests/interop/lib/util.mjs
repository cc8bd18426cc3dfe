// Constants and small utilities of the interop harness: message types, bounded waits, names.

import crypto from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** tests/interop/, where the harness and the reference server live. */
export const INTEROP_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REFERENCE = process.env.ZEDI_INTEROP_REFERENCE === '1';
export const VERBOSE = process.env.ZEDI_TEST_VERBOSE === '1';
export const REF_DIR = process.env.ZEDI_REF_DIR || path.join(os.tmpdir(), 'hp-ref');
export const REF_PACKAGES = [
  '@hocuspocus/server@4.7.0',
  '@hocuspocus/extension-database@4.7.0',
  'yjs@13.6.33',
];
export const PROVIDER_VERSION = '4.8.0';

// Hocuspocus message types (see /work/shared/PROTOCOL.md).
export const MT = {
  Sync: 0,
  Awareness: 1,
  Auth: 2,
  QueryAwareness: 3,
  SyncReply: 4,
  Stateless: 5,
  BroadcastStateless: 6,
  CLOSE: 7,
  SyncStatus: 8,
  Ping: 9,
  Pong: 10,
};
export const SYNC = { Step1: 0, Step2: 1, Update: 2 };
export const AUTH = { Token: 0, PermissionDenied: 1, Authenticated: 2 };

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Waits out `ms` in which something must NOT happen (a denied client gets no content, a closed
 * document no frames): there is no event to wait for, only time for a wrong one to show.
 */
export const quietPeriod = (ms) => sleep(ms);

let docCounter = 0;
/** A document name unique to this run and this call. */
export function uniqueDoc(label = 'doc') {
  docCounter += 1;
  return `${label}-${process.pid}-${Date.now().toString(36)}-${docCounter}-${crypto
    .randomBytes(3)
    .toString('hex')}`;
}

/**
 * Poll `predicate` until it returns a truthy value. Bounded in time AND in iterations.
 * Returns the truthy value; throws with `message` (and `describe()` output) on timeout.
 */
export async function waitFor(predicate, { timeout = 10_000, interval = 20, message = 'condition', describe } = {}) {
  const deadline = Date.now() + timeout;
  const maxIterations = Math.ceil(timeout / interval) + 2;
  let lastError;
  for (let i = 0; i < maxIterations; i += 1) {
    try {
      const value = await predicate();
      if (value) return value;
      lastError = undefined;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) break;
    await sleep(interval);
  }
  let detail = '';
  if (describe) {
    try {
      detail = `\n  state: ${describe()}`;
    } catch (error) {
      detail = `\n  (describe failed: ${error})`;
    }
  }
  if (lastError) detail += `\n  last error: ${lastError?.stack || lastError}`;
  throw new Error(`timed out after ${timeout} ms waiting for ${message}${detail}`);
}

/** Resolve with the promise's value, or reject after `ms`. */
export function withTimeout(promise, ms, message = 'operation') {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${message}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** In reference mode, skip the test with a reason. Returns true when skipped. */
export function skipInReference(t, reason) {
  // ZEDI_INTEROP_NO_SKIP=1 runs these tests against the reference anyway, to see how it differs.
  if (!REFERENCE || process.env.ZEDI_INTEROP_NO_SKIP === '1') return false;
  t.skip(`reference server differs: ${reason}`);
  return true;
}

export const sha256 = (s) => crypto.createHash('sha256').update(s).digest('hex');
