// Starting the server under test: zedi-sync (or the reference Hocuspocus server), on a free
// loopback port, with its output kept for the log dump of a failing test.

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';

import { liveChildren, makeDataDir, servers, trackServer } from './tracking.mjs';
import { INTEROP_DIR, REF_DIR, REF_PACKAGES, REFERENCE, VERBOSE, sleep } from './util.mjs';

// ---------------------------------------------------------------------------------------------
// Starting the server under test
// ---------------------------------------------------------------------------------------------

/** A free TCP port on 127.0.0.1 (bind port 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function httpGet(url, timeoutMs) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

let referenceReady = false;
function ensureReferenceInstalled() {
  if (referenceReady) return;
  const pkgJson = path.join(REF_DIR, 'node_modules', '@hocuspocus', 'server', 'package.json');
  const dbJson = path.join(REF_DIR, 'node_modules', '@hocuspocus', 'extension-database', 'package.json');
  const version = (file) => {
    try {
      return JSON.parse(fs.readFileSync(file, 'utf8')).version;
    } catch {
      return null;
    }
  };
  if (version(pkgJson) !== '4.7.0' || version(dbJson) !== '4.7.0') {
    fs.mkdirSync(REF_DIR, { recursive: true });
    process.stderr.write(`# installing the reference Hocuspocus server into ${REF_DIR}\n`);
    execFileSync('npm', ['install', '--prefix', REF_DIR, '--no-audit', '--no-fund', '--save-exact', ...REF_PACKAGES], {
      stdio: ['ignore', 'ignore', 'inherit'],
      timeout: 300_000,
    });
  }
  referenceReady = true;
}

let cargoTargetDir = null;
// Cargo's target directory as cargo reports it: CARGO_TARGET_DIR or a configured target-dir
// move it away from ./target. Asked once; without cargo, ./target is the guess.
function targetDir() {
  if (cargoTargetDir === null) {
    try {
      const out = execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], {
        cwd: path.resolve(INTEROP_DIR, '../..'),
        stdio: ['ignore', 'pipe', 'ignore'],
        timeout: 60_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      cargoTargetDir = JSON.parse(out.toString('utf8')).target_directory;
    } catch {
      cargoTargetDir = path.resolve(INTEROP_DIR, '../../target');
    }
  }
  return cargoTargetDir;
}

function defaultBinary() {
  return process.env.ZEDI_BIN
    ? path.resolve(process.env.ZEDI_BIN)
    : path.join(targetDir(), 'debug', 'zedi-sync');
}

const MAX_LOG_BYTES = 256 * 1024;

/**
 * Start the server under test.
 * @param {{dataDir?: string, env?: Record<string,string>, port?: number}} [opts]
 * @returns {Promise<{url: string, port: number, dataDir: string, stop: (signal?: string) => Promise<{code: number|null, signal: string|null}>, kill: () => Promise<{code: number|null, signal: string|null}>, exited: boolean, exitInfo: any, logs: () => string, dumpLogs: (why: string) => void}>}
 */
export async function startServer({ dataDir, env = {}, port } = {}) {
  dataDir = dataDir || makeDataDir();
  port = port || (await freePort());
  const childEnv = {
    ...process.env,
    PORT: String(port),
    ZEDI__SERVER__HOST: '127.0.0.1',
    ZEDI__STORE__PATH: path.join(dataDir, 'zedi-sync.db'),
    ZEDI__LOG__LEVEL: 'warn',
    ...env,
  };

  let command;
  let args;
  if (REFERENCE) {
    ensureReferenceInstalled();
    command = process.execPath;
    args = [path.join(INTEROP_DIR, 'reference-server.mjs')];
    childEnv.ZEDI_REF_DIR = REF_DIR;
  } else {
    command = defaultBinary();
    args = [];
    if (!fs.existsSync(command)) {
      throw new Error(
        `zedi-sync binary not found at ${command}: build it (cargo build) or set ZEDI_BIN ` +
          '(or run against the reference server with ZEDI_INTEROP_REFERENCE=1)',
      );
    }
  }

  const child = spawn(command, args, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  liveChildren.add(child);

  let logText = '';
  const onOutput = (stream) => (chunk) => {
    const text = chunk.toString('utf8');
    logText += text;
    if (logText.length > MAX_LOG_BYTES) logText = logText.slice(-MAX_LOG_BYTES);
    if (VERBOSE) process.stderr.write(`[server:${port}${stream}] ${text}`);
  };
  child.stdout.on('data', onOutput(''));
  child.stderr.on('data', onOutput(':err'));

  let exitInfo = null;
  const exitPromise = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      liveChildren.delete(child);
      resolve(exitInfo);
    });
  });
  child.once('error', (error) => {
    logText += `\nspawn error: ${error}\n`;
  });

  const waitExit = async (ms) => {
    if (exitInfo) return exitInfo;
    let timer;
    const result = await Promise.race([
      exitPromise,
      new Promise((resolve) => {
        timer = setTimeout(() => resolve(null), ms);
      }),
    ]);
    clearTimeout(timer);
    return result;
  };

  const server = {
    url: `ws://127.0.0.1:${port}`,
    httpUrl: `http://127.0.0.1:${port}`,
    port,
    dataDir,
    pid: child.pid,
    get exited() {
      return exitInfo !== null;
    },
    get exitInfo() {
      return exitInfo;
    },
    logs: () => logText,
    dumpLogs(why) {
      if (VERBOSE) return; // already forwarded live
      process.stderr.write(
        `\n----- server ${REFERENCE ? '(reference) ' : ''}:${port} output (${why}) -----\n${logText || '(no output)'}\n` +
          `----- end of server :${port} output${exitInfo ? `, exited ${JSON.stringify(exitInfo)}` : ''} -----\n`,
      );
    },
    /** Send `signal`, wait for the exit (10 s), then SIGKILL (5 s more). */
    async stop(signal = 'SIGTERM') {
      if (exitInfo) {
        servers.delete(server);
        return exitInfo;
      }
      try {
        child.kill(signal);
      } catch {
        // gone
      }
      let result = await waitExit(10_000);
      if (!result) {
        server.killedAfterTimeout = true;
        try {
          child.kill('SIGKILL');
        } catch {
          // gone
        }
        result = await waitExit(5_000);
      }
      servers.delete(server);
      return result ?? { code: null, signal: 'unknown' };
    },
    kill() {
      return server.stop('SIGKILL');
    },
  };
  trackServer(server);

  // Readiness: GET /health until 200 with a JSON body (100 x 100 ms), failing fast if it exits.
  let lastProblem = 'no answer';
  for (let i = 0; i < 100; i += 1) {
    if (exitInfo) break;
    try {
      const res = await httpGet(`${server.httpUrl}/health`, 1_000);
      if (res.status === 200) {
        JSON.parse(res.body);
        return server;
      }
      lastProblem = `HTTP ${res.status}: ${res.body.slice(0, 200)}`;
    } catch (error) {
      lastProblem = String(error?.message || error);
    }
    await sleep(100);
  }
  server.dumpLogs('server did not become ready');
  await server.stop('SIGKILL');
  throw new Error(
    `server on port ${port} did not become ready (${exitInfo ? `exited ${JSON.stringify(exitInfo)}` : lastProblem})`,
  );
}
