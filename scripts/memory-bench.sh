#!/usr/bin/env bash
# Memory benchmark of zedi-sync on this machine: for each allocator asked for, builds the release
# daemon with it, starts it on a free loopback port (embedded store in a throwaway directory),
# runs a memory scenario of zedi-bench against it (which samples /proc/PID/status: VmRSS, VmHWM),
# stops everything it started and prints the figures with the machine they were measured on.
# JSON lines go to target/bench/memory-<UTC time>.jsonl (daemon logs next to it).
#
#   scripts/memory-bench.sh                                    # churn, the default allocator
#   MEMBENCH_ALLOCATORS="jemalloc mimalloc system" scripts/memory-bench.sh
#
# Knobs (environment):
#   MEMBENCH_ALLOCATORS  allocator features to build and measure, in turn (default: "jemalloc",
#                        the default feature; "mimalloc" and "system" are the others). Each is one
#                        release build of the crate (dependencies stay cached).
#   MEMBENCH_SCENARIO    zedi-bench --scenario (default churn).
#   MEMBENCH_DOCUMENTS   documents loaded at once (default 150); MEMBENCH_DOC_KIB their encoded
#                        size (110); MEMBENCH_SETTLE seconds of samples after they unloaded (30).
#   MEMBENCH_BUDGET      limits.memory_budget_bytes of the daemon (default: config/default.toml).
#   MEMBENCH_LIFT_RATES  1: lift the per-socket rate limits for the attack too (churn always).
#   MEMBENCH_EXTRA       more zedi-bench flags, e.g. "--seconds 60" for the attack scenario:
#                        MEMBENCH_SCENARIO=attack MEMBENCH_EXTRA="--seconds 60" scripts/memory-bench.sh
#                        (every memory attack at once against the default 384 MiB budget while
#                        an honest editor types; prints peak RSS, sheds, the editor's acks).
# Takes about a minute per allocator after the build; needs python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ALLOCATORS=${MEMBENCH_ALLOCATORS:-jemalloc}
SCENARIO=${MEMBENCH_SCENARIO:-churn}
DOCUMENTS=${MEMBENCH_DOCUMENTS:-150}
DOC_KIB=${MEMBENCH_DOC_KIB:-110}
SETTLE=${MEMBENCH_SETTLE:-30}
BUDGET=${MEMBENCH_BUDGET:-}
read -r -a EXTRA <<<"${MEMBENCH_EXTRA:-}"

step() { printf '\n==> %s\n' "$*" >&2; }

OUT=$ROOT/target/bench
mkdir -p "$OUT"
RESULTS=$OUT/memory-$(date -u +%Y%m%dT%H%M%SZ).jsonl
WORK=$(mktemp -d /tmp/zedi-membench.XXXXXX)
DAEMON_PID=""

stop_daemon() {
  [ -n "$DAEMON_PID" ] || return 0
  if kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$DAEMON_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
  fi
  wait "$DAEMON_PID" 2>/dev/null || true
  DAEMON_PID=""
}

cleanup() {
  stop_daemon
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Builds first, all of them, so no build runs beside a measurement. cargo says where the
# binaries are (scripts/cargo-bin.sh); each allocator's daemon is copied aside because the next
# build with other features replaces it.
for alloc in $ALLOCATORS; do
  case $alloc in
    jemalloc | mimalloc | system) ;;
    *) echo "memory-bench.sh: unknown allocator $alloc (jemalloc, mimalloc, system)" >&2; exit 2 ;;
  esac
  step "build (release, allocator $alloc)"
  SYNC_BIN=$(scripts/cargo-bin.sh zedi-sync --release --bins --features "$alloc")
  cp "$SYNC_BIN" "$WORK/zedi-sync-$alloc"
  cp "$(dirname "$SYNC_BIN")/zedi-bench" "$WORK/zedi-bench"
done

run_allocator() {
  local alloc=$1 port
  port=$(free_port)
  # Loopback is one client address (no per-address cap). For churn the per-socket rate limits
  # are lifted because the writers fill their documents faster than a person types; the attack
  # meets the production rate limits, as a real attacker would (MEMBENCH_LIFT_RATES=1 lifts them
  # there too: attackers then push at loopback speed and the figure is about CPU, not memory).
  local env=(PORT="$port" ZEDI__SERVER__HOST=127.0.0.1 ZEDI__LIMITS__MAX_CONNECTIONS_PER_IP=0
    ZEDI__STORE__KIND=embedded ZEDI__STORE__PATH="$WORK/$alloc/zedi-sync.db")
  if [ "$SCENARIO" != attack ] || [ "${MEMBENCH_LIFT_RATES:-0}" = 1 ]; then
    env+=(ZEDI__LIMITS__MAX_MESSAGES_PER_SEC=1000000 ZEDI__LIMITS__MAX_MESSAGE_BURST=1000000
      ZEDI__LIMITS__MAX_BYTES_PER_SEC=1000000000)
  fi
  [ -z "$BUDGET" ] || env+=(ZEDI__LIMITS__MEMORY_BUDGET_BYTES="$BUDGET")

  step "$alloc: daemon on 127.0.0.1:$port"
  env "${env[@]}" "$WORK/zedi-sync-$alloc" >"$OUT/memory-daemon-$alloc.log" 2>&1 &
  DAEMON_PID=$!
  local up=""
  for _ in $(seq 300); do # 30 s
    if curl -fsS --max-time 1 "http://127.0.0.1:$port/health" >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "memory-bench.sh: daemon ($alloc) did not become healthy; log:" >&2
    tail -n 20 "$OUT/memory-daemon-$alloc.log" >&2
    return 1
  fi

  step "$alloc: zedi-bench --scenario $SCENARIO --documents $DOCUMENTS --doc-kib $DOC_KIB"
  local line
  line=$("$WORK/zedi-bench" --url "ws://127.0.0.1:$port" --scenario "$SCENARIO" \
    --server-pid "$DAEMON_PID" --documents "$DOCUMENTS" --doc-kib "$DOC_KIB" \
    --settle "$SETTLE" --out "$WORK/machine.jsonl" "${EXTRA[@]}")
  # One line per allocator in the results, labelled; the machine line once.
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["allocator"]=sys.argv[2]; print(json.dumps(d))' \
    "$line" "$alloc" >>"$RESULTS"
  stop_daemon
}

for alloc in $ALLOCATORS; do
  run_allocator "$alloc"
done
head -n 1 "$WORK/machine.jsonl" | cat - "$RESULTS" >"$RESULTS.tmp" && mv "$RESULTS.tmp" "$RESULTS"

step "results ($RESULTS)"
python3 - "$RESULTS" <<'EOF'
import json, sys
machine, rows = None, []
for line in open(sys.argv[1]):
    d = json.loads(line)
    if "machine" in d: machine = d["machine"]
    else: rows.append(d)
if machine:
    print(f"{machine['cpu_model']} x{machine['cores']} cores, {machine['mem_total_mib']} MiB, "
          f"Linux {machine['kernel']}, {machine['rustc']}, zedi-sync {machine['server_version']}")
mib = lambda kb: "-" if kb is None else f"{kb / 1024:.1f}"
print(f"{'allocator':<10} {'scenario':<8} {'docs':>5} {'KiB/doc':>8} {'baseline':>9} {'loaded':>8} "
      f"{'peak':>8} {'after':>8} {'after/base':>10} {'RSS/enc B':>9} {'anon base→after':>16}  (MiB)")
for r in rows:
    if r.get("scenario") == "attack":
        print(f"{r['allocator']:<10} attack {r['seconds']} s: peak RSS {r['peak_rss_mib']:.1f} MiB "
              f"(VmHWM {r['vm_hwm_mib']:.1f}), budget peak {r['peak_budget_used_mib']:.1f} MiB, "
              f"after {r.get('after_settle_rss_mib', 0):.1f} MiB, daemon alive: {r['daemon_alive']}")
        print(f"    sheds: {json.dumps(r['sheds'])}")
        print(f"    attackers: {json.dumps(r['attackers'])}")
        print(f"    honest editor: {json.dumps(r['honest'])}")
        continue
    print(f"{r['allocator']:<10} {r['scenario']:<8} {r.get('documents_filled', '-'):>5} "
          f"{r.get('doc_encoded_bytes_avg', 0) / 1024:>8.1f} {mib(r.get('rss_baseline_kb')):>9} "
          f"{mib(r.get('rss_loaded_kb')):>8} {mib(r.get('rss_peak_kb')):>8} "
          f"{mib(r.get('rss_after_settle_kb')):>8} {r.get('after_over_baseline') or '-':>10} "
          f"{r.get('rss_per_encoded_byte') or '-':>9} "
          f"{mib(r.get('anon_baseline_kb')) + '→' + mib(r.get('anon_after_settle_kb')):>16}")
    for n in r.get("notes", []):
        print(f"    note: {n}")
EOF
