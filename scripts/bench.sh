#!/usr/bin/env bash
# Throughput benchmark of zedi-sync on this machine, for each store (embedded SQLite, PostgreSQL):
# builds release, starts the daemon on a free loopback port, runs zedi-bench against it, records
# the daemon's RSS before/after, stops everything it started, prints the results.
# JSON lines go to target/bench/results-<UTC time>.jsonl (daemon logs next to it).
#
#   scripts/bench.sh
# Knobs (environment): BENCH_WRITERS (1,10,100), BENCH_SECONDS (10), BENCH_WARMUP (2),
# BENCH_IN_FLIGHT (1), BENCH_STORES ("embedded postgres"), BENCH_EXTRA (more zedi-bench flags).
# Takes about 1.5 minutes after the build. Needs python3 and, for postgres, the PostgreSQL server
# binaries (scripts/pg-cluster.sh); everything listens on 127.0.0.1 only.
# Ramp, fan-out and the comparison with Hocuspocus: ops/bench/compare.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

WRITERS=${BENCH_WRITERS:-1,10,100}
SECS=${BENCH_SECONDS:-10}
WARMUP=${BENCH_WARMUP:-2}
IN_FLIGHT=${BENCH_IN_FLIGHT:-1}
STORES=${BENCH_STORES:-embedded postgres}
read -r -a EXTRA <<<"${BENCH_EXTRA:-}"

step() { printf '\n==> %s\n' "$*" >&2; }

step "build (release)"
# cargo says where the binaries are (CARGO_TARGET_DIR, a configured target-dir or --target move
# them); zedi-sync and zedi-bench are bins of one package and profile, so they share a directory.
# (Two steps: with set -e a failed build must stop here, which dirname "$(...)" would hide.)
SYNC_BIN=$(scripts/cargo-bin.sh zedi-sync --release --bins)
BIN=$(dirname "$SYNC_BIN")

OUT=$ROOT/target/bench
mkdir -p "$OUT"
RESULTS=$OUT/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl
WORK=$(mktemp -d /tmp/zedi-bench.XXXXXX)
chmod 755 "$WORK" # the throwaway PostgreSQL cluster below runs as the postgres user
DAEMON_PID=""
PG_DIR=""

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
  if [ -n "$PG_DIR" ]; then
    scripts/pg-cluster.sh destroy "$PG_DIR" || true
    PG_DIR=""
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

run_store() {
  local store=$1 port url
  port=$(free_port)
  # Benchmark settings: loopback is one client address (no per-IP cap) and the per-socket
  # message/byte rate limits are lifted (a closed-loop writer sends far more than 300 msg/s).
  local env=(PORT="$port" ZEDI__SERVER__HOST=127.0.0.1 ZEDI__LIMITS__MAX_CONNECTIONS_PER_IP=0
    ZEDI__LIMITS__MAX_MESSAGES_PER_SEC=1000000 ZEDI__LIMITS__MAX_MESSAGE_BURST=1000000
    ZEDI__LIMITS__MAX_BYTES_PER_SEC=1000000000)
  case $store in
    embedded)
      env+=(ZEDI__STORE__KIND=embedded ZEDI__STORE__PATH="$WORK/embedded/zedi-sync.db")
      ;;
    postgres)
      PG_DIR=$WORK/pg
      url=$(scripts/pg-cluster.sh start "$PG_DIR")
      env+=(ZEDI__STORE__KIND=postgres DATABASE_URL="$url")
      ;;
    *) echo "bench.sh: unknown store $store" >&2; return 2 ;;
  esac

  step "$store: daemon on 127.0.0.1:$port"
  env "${env[@]}" "$BIN/zedi-sync" >"$OUT/daemon-$store.log" 2>&1 &
  DAEMON_PID=$!
  local up=""
  for _ in $(seq 300); do # 30 s
    if curl -fsS --max-time 1 "http://127.0.0.1:$port/health" >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "bench.sh: daemon ($store) did not become healthy; log:" >&2
    tail -n 20 "$OUT/daemon-$store.log" >&2
    return 1
  fi
  local rss_before rss_after hwm
  rss_before=$(status_kb "$DAEMON_PID" VmRSS)

  step "$store: zedi-bench --writers $WRITERS --seconds $SECS --in-flight $IN_FLIGHT"
  "$BIN/zedi-bench" --url "ws://127.0.0.1:$port" --writers "$WRITERS" --seconds "$SECS" \
    --warmup "$WARMUP" --in-flight "$IN_FLIGHT" --store "$store" --server-pid "$DAEMON_PID" \
    --out "$RESULTS" "${EXTRA[@]}" >/dev/null

  rss_after=$(status_kb "$DAEMON_PID" VmRSS)
  hwm=$(status_kb "$DAEMON_PID" VmHWM)
  printf '{"daemon":{"store":"%s","rss_before_kb":%s,"rss_after_kb":%s,"rss_peak_kb":%s,"log_warn_error_lines":%s}}\n' \
    "$store" "${rss_before:-0}" "${rss_after:-0}" "${hwm:-0}" \
    "$(grep -cE ' (WARN|ERROR) ' "$OUT/daemon-$store.log" || true)" >>"$RESULTS"
  stop_daemon
  if [ -n "$PG_DIR" ]; then
    scripts/pg-cluster.sh destroy "$PG_DIR"
    PG_DIR=""
  fi
}

for store in $STORES; do
  run_store "$store"
done

step "results ($RESULTS)"
python3 - "$RESULTS" <<'EOF'
import json, sys
rows, daemons, machine = [], {}, None
for line in open(sys.argv[1]):
    d = json.loads(line)
    if "machine" in d: machine = d["machine"]
    elif "daemon" in d: daemons[d["daemon"]["store"]] = d["daemon"]
    else: rows.append(d)
if machine:
    print(f"{machine['cpu_model']} x{machine['cores']} cores, {machine['mem_total_mib']} MiB, "
          f"Linux {machine['kernel']}, {machine['rustc']}, zedi-sync {machine['server_version']}")
print(f"{'store':<9} {'writers':>7} {'acked/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
      f"{'errors':>6} {'bench%':>7} {'server%':>8}")
for r in rows:
    s = r.get("server_cpu_pct")
    print(f"{r['store']:<9} {r['writers']:>7} {r['acked_per_sec']:>9.1f} {r['p50_ms']:>8.2f} "
          f"{r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} {r['errors']:>6} {r['client_cpu_pct']:>7.1f} "
          f"{'-' if s is None else f'{s:.1f}':>8}")
for store, d in daemons.items():
    print(f"daemon RSS ({store}): {d['rss_before_kb']/1024:.1f} MiB before, "
          f"{d['rss_after_kb']/1024:.1f} MiB after, peak {d['rss_peak_kb']/1024:.1f} MiB; "
          f"{d['log_warn_error_lines']} WARN/ERROR log lines")
EOF
