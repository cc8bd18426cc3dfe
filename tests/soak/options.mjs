// The soak's options, its seeded random choices, its clock and its log lines.

import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '../..');
export const PG_SCRIPT = path.join(ROOT, 'scripts/pg-cluster.sh');

function usage(code) {
  process.stderr.write(
    'usage: soak.mjs [--clients N] [--minutes M] [--nodes K] [--chaos-interval MIN-MAX]\n' +
      '                [--chaos-kinds node-kill,node-term,redis,postgres] [--rate R] [--seed S]\n' +
      '                [--no-tab-crash] [--keep]\n',
  );
  process.exit(code);
}

function parseArgs(argv) {
  const o = { clients: 30, minutes: 5, nodes: 3, chaosMin: 10, chaosMax: 40, rate: 2, seed: null, tabCrash: true, keep: false };
  const KINDS = ['node-kill', 'node-term', 'redis', 'postgres'];
  o.kinds = KINDS;
  const num = (name, v, min, max) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max) {
      process.stderr.write(`soak: ${name} must be a number in [${min}, ${max}], got ${JSON.stringify(v)}\n`);
      usage(2);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => (inline !== undefined ? inline : argv[++i]);
    switch (flag) {
      case '--clients': o.clients = Math.round(num('--clients', value(), 1, 400)); break;
      case '--minutes': o.minutes = num('--minutes', value(), 0.1, 24 * 60); break;
      case '--nodes': o.nodes = Math.round(num('--nodes', value(), 1, 26)); break;
      case '--rate': o.rate = num('--rate', value(), 0.1, 50); break;
      case '--seed': o.seed = Math.round(num('--seed', value(), 0, 2 ** 31)); break;
      case '--chaos-interval': {
        const m = /^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$/.exec(String(value()));
        if (!m || Number(m[1]) < 1 || Number(m[2]) < Number(m[1])) {
          process.stderr.write('soak: --chaos-interval wants MIN-MAX seconds, e.g. 10-40\n');
          usage(2);
        }
        o.chaosMin = Number(m[1]);
        o.chaosMax = Number(m[2]);
        break;
      }
      case '--chaos-kinds': {
        o.kinds = String(value()).split(',').filter(Boolean);
        if (!o.kinds.length || o.kinds.some((k) => !KINDS.includes(k))) {
          process.stderr.write(`soak: --chaos-kinds wants a comma-separated subset of ${KINDS.join(',')}\n`);
          usage(2);
        }
        break;
      }
      case '--no-tab-crash': o.tabCrash = false; break;
      case '--keep': o.keep = true; break;
      case '-h': case '--help': usage(0); break;
      default:
        process.stderr.write(`soak: unknown argument ${a}\n`);
        usage(2);
    }
  }
  if (o.seed === null) o.seed = Math.floor(Math.random() * 2 ** 31);
  return o;
}

export const opts = parseArgs(process.argv.slice(2));
export const BIN = path.resolve(process.env.ZEDI_BIN || path.join(ROOT, 'target/release/zedi-sync'));
export const LOG_LEVEL = process.env.ZEDI_SOAK_LOG_LEVEL || 'info';
export const DOCS = Math.max(1, Math.ceil(opts.clients / 5));
export const RUN_ID = `${Date.now().toString(36)}${process.pid.toString(36)}`;
export const docName = (d) => `soak-${RUN_ID}-d${d}`;

// Small seeded PRNG (mulberry32), so a run's choices can be replayed with --seed.
let rngState = opts.seed >>> 0;
export function rand() {
  rngState = (rngState + 0x6d2b79f5) >>> 0;
  let t = rngState;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
export const between = (a, b) => a + (b - a) * rand();
export const pick = (list) => list[Math.floor(rand() * list.length)];

export const T0 = Date.now();
const stamp = () => `[${((Date.now() - T0) / 1000).toFixed(1).padStart(6)}s]`;
export const log = (msg) => process.stdout.write(`${stamp()} ${msg}\n`);
export const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;
