#!/usr/bin/env bash
# zedi-sync against the reference Hocuspocus 4.7.0 server (SQLite persistence) and a bare relay
# (`zedi-bench relay`: frames forwarded and acknowledged, no CRDT, no store: the physical limit),
# same generator, same machine, one server at a time: throughput (1 writer + N readers on one
# document), fan-out (K docs x S subscribers x R updates/s), ramp (C synced idle connections),
# docmem (RSS per open idle typed document) and joinstorm (J clients joining one large document
# at once), then the ratios. Each measurement gets a freshly started server.
#
#   ops/bench/compare.sh
# Knobs (environment): CMP_TARGETS ("hocuspocus embedded postgres relay"), CMP_SCENARIOS
# ("throughput fanout ramp docmem joinstorm"), CMP_SECONDS (10), CMP_READERS (10), CMP_IN_FLIGHT ("8 64 256 512":
# one throughput run each; the bar compares the best), CMP_FAN ("100 20": docs subscribers),
# CMP_FAN_RATES ("2 5 10 15 20 25 30": updates/s per document, one run each; the bar compares p99 at 5
# and the highest rate whose p99 stays under 10 ms), CMP_RAMP ("19900 200": connections
# documents; 20,000 cannot be reached here, see BENCHMARKS.md),
# CMP_DOCMEM_DOCS (100), CMP_DOCMEM_KIB (110), CMP_DOCMEM_IDLE (40 s), CMP_DOCMEM_SETTLE (10 s):
# docmem, RSS per open idle document; CMP_JOIN_CONNS (500), CMP_JOIN_KIB (500), CMP_JOIN_IDLE
# (40 s), CMP_JOIN_CONCURRENCY (all joiners at once): joinstorm (docmem and joinstorm skip
# the relay, which keeps no document; zedi-sync runs them with limits.memory_budget_bytes
# CMP_MEM_BUDGET, default 4 GiB),
# CMP_REF_DIR (/tmp/zedi-hocuspocus-ref: npm scratch folder, outside the repo).
# Everything listens on 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGETS=${CMP_TARGETS:-hocuspocus embedded postgres relay}
SCENARIOS=${CMP_SCENARIOS:-throughput fanout ramp docmem joinstorm}
SECS=${CMP_SECONDS:-10}
READERS=${CMP_READERS:-10}
IN_FLIGHT=${CMP_IN_FLIGHT:-8 64 256 512}
read -r FAN_DOCS FAN_SUBS <<<"${CMP_FAN:-100 20}"
FAN_RATES=${CMP_FAN_RATES:-2 5 10 15 20 25 30}
read -r RAMP_CONNS RAMP_DOCS <<<"${CMP_RAMP:-19900 200}"
DOCMEM_DOCS=${CMP_DOCMEM_DOCS:-100}
DOCMEM_KIB=${CMP_DOCMEM_KIB:-110}
DOCMEM_IDLE=${CMP_DOCMEM_IDLE:-40}
DOCMEM_SETTLE=${CMP_DOCMEM_SETTLE:-10}
JOIN_CONNS=${CMP_JOIN_CONNS:-500}
JOIN_KIB=${CMP_JOIN_KIB:-500}
JOIN_IDLE=${CMP_JOIN_IDLE:-40}
JOIN_CONCURRENCY=${CMP_JOIN_CONCURRENCY:-$JOIN_CONNS}
# limits.memory_budget_bytes of zedi-sync for docmem and joinstorm, which measure memory, not
# admission: the default budget (384 MiB) charges a document the bytes of every update applied
# since it was last encoded, ~3.7x the encoded size for keystroke-typed text, and turns new
# sockets away (503) at 80 % of it, before 100 documents of 110 KiB are all open.
MEM_BUDGET=${CMP_MEM_BUDGET:-4294967296}
SRV_BUDGET=""
REF=${CMP_REF_DIR:-/tmp/zedi-hocuspocus-ref}
# 20k connections need more than 20k descriptors on each side; raise as far as allowed.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "compare.sh: open-file limit $(ulimit -n)" >&2

step() { printf '\n==> %s\n' "$*" >&2; }

step "build (release)"
# cargo says where the binaries are (CARGO_TARGET_DIR, a configured target-dir or --target move
# them); zedi-sync and zedi-bench are bins of the workspace's default members, built with one
# profile, so they share a directory.
# (Two steps: with set -e a failed build must stop here, which dirname "$(...)" would hide.)
SYNC_BIN=$(scripts/cargo-bin.sh zedi-sync --release --bins)
BIN=$(dirname "$SYNC_BIN")

if [[ $TARGETS == *hocuspocus* ]] && ! [ -e "$REF/node_modules/better-sqlite3/build/Release/better_sqlite3.node" ]; then
  step "install @hocuspocus/server@4.7.0 + @hocuspocus/extension-sqlite@4 into $REF"
  mkdir -p "$REF"
  # npm 11 runs install scripts only for packages listed in allowScripts (better-sqlite3 builds
  # its native addon; without network access to GitHub it compiles SQLite: several minutes).
  echo '{"name":"zedi-hocuspocus-ref","private":true,"type":"module","allowScripts":{"better-sqlite3":true,"sqlite3":true}}' >"$REF/package.json"
  (cd "$REF" && timeout 1500 npm install --no-audit --no-fund @hocuspocus/server@4.7.0 '@hocuspocus/extension-sqlite@^4')
fi
[[ $TARGETS != *hocuspocus* ]] || cp ops/bench/hocuspocus-server.mjs "$REF/"

OUT=$ROOT/target/bench
mkdir -p "$OUT"
RESULTS=$OUT/compare-$(date -u +%Y%m%dT%H%M%SZ).jsonl
WORK=$(mktemp -d /tmp/zedi-compare.XXXXXX)
chmod 755 "$WORK"
SRV_PID=""
PG_DIR=""

stop_server() {
  [ -n "$SRV_PID" ] || return 0
  kill -TERM "$SRV_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SRV_PID" 2>/dev/null || true
  wait "$SRV_PID" 2>/dev/null || true
  SRV_PID=""
}
cleanup() {
  stop_server
  if [ -n "$PG_DIR" ]; then scripts/pg-cluster.sh destroy "$PG_DIR" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start_server() { # $1 target, $2 port; sets SRV_PID
  local t=$1 port=$2
  case $t in
    hocuspocus)
      (cd "$REF" && exec node hocuspocus-server.mjs "$port" "$WORK/hocuspocus.sqlite") >"$OUT/server-$t.log" 2>&1 &
      ;;
    embedded|postgres)
      # Benchmark settings: loopback is one address (no per-IP cap), and the per-socket message
      # and byte rate limits are lifted (one writer sends far more than a typist's 300 msg/s).
      local env=(PORT="$port" ZEDI__SERVER__HOST=127.0.0.1 ZEDI__LIMITS__MAX_CONNECTIONS_PER_IP=0
        ZEDI__LIMITS__MAX_CONNECTIONS=0 ZEDI__LIMITS__MAX_MESSAGES_PER_SEC=1000000
        ZEDI__LIMITS__MAX_MESSAGE_BURST=1000000 ZEDI__LIMITS__MAX_BYTES_PER_SEC=1000000000)
      [ -z "$SRV_BUDGET" ] || env+=(ZEDI__LIMITS__MEMORY_BUDGET_BYTES="$SRV_BUDGET")
      if [ "$t" = embedded ]; then
        env+=(ZEDI__STORE__KIND=embedded ZEDI__STORE__PATH="$WORK/embedded/zedi-sync.db")
      else
        PG_DIR=$WORK/pg
        env+=(ZEDI__STORE__KIND=postgres DATABASE_URL="$(scripts/pg-cluster.sh start "$PG_DIR")")
      fi
      env "${env[@]}" "$BIN/zedi-sync" >"$OUT/server-$t.log" 2>&1 &
      ;;
    relay)
      "$BIN/zedi-bench" relay --host 127.0.0.1 --port "$port" >"$OUT/server-$t.log" 2>&1 &
      ;;
    *) echo "compare.sh: unknown target $t (hocuspocus, embedded, postgres, relay)" >&2; return 1 ;;
  esac
  SRV_PID=$!
  for _ in $(seq 300); do # 30 s
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.5)" 2>/dev/null; then return 0; fi
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "compare.sh: $t did not start; log:" >&2; tail -n 20 "$OUT/server-$t.log" >&2; return 1
}

measure() { # $1 target, $2 scenario, $3 parameter (in-flight or rate)
  local t=$1 s=$2 v=${3:-} port
  port=$(free_port)
  case $s in docmem|joinstorm) SRV_BUDGET=$MEM_BUDGET ;; *) SRV_BUDGET="" ;; esac
  start_server "$t" "$port"
  local common=(--url "ws://127.0.0.1:$port" --store "$t" --server-pid "$SRV_PID" --out "$RESULTS")
  step "$t: $s $v"
  case $s in
    throughput) "$BIN/zedi-bench" "${common[@]}" --writers 1 --readers "$READERS" \
                  --in-flight "$v" --seconds "$SECS" --warmup 2 >/dev/null ;;
    fanout) "$BIN/zedi-bench" "${common[@]}" --scenario fanout --documents "$FAN_DOCS" \
              --subscribers "$FAN_SUBS" --rate "$v" --seconds "$SECS" --warmup 2 >/dev/null ;;
    ramp) sleep 1 # let the runtime settle before the "before" RSS
          "$BIN/zedi-bench" "${common[@]}" --scenario ramp --connections "$RAMP_CONNS" \
            --documents "$RAMP_DOCS" --hold 5 --setup-timeout 180 >/dev/null ;;
    docmem) "$BIN/zedi-bench" "${common[@]}" --scenario docmem --documents "$DOCMEM_DOCS" \
              --doc-kib "$DOCMEM_KIB" --idle "$DOCMEM_IDLE" --settle "$DOCMEM_SETTLE" \
              --unload-timeout 60 --setup-timeout 300 >/dev/null ;;
    joinstorm) "$BIN/zedi-bench" "${common[@]}" --scenario joinstorm --connections "$JOIN_CONNS" \
                 --concurrency "$JOIN_CONCURRENCY" --doc-kib "$JOIN_KIB" --idle "$JOIN_IDLE" \
                 --setup-timeout 300 >/dev/null ;;
  esac
  stop_server
  if [ -n "$PG_DIR" ]; then scripts/pg-cluster.sh destroy "$PG_DIR"; PG_DIR=""; fi
}

run_target() {
  local t=$1 s v
  for s in $SCENARIOS; do
    case $s in
      throughput) for v in $IN_FLIGHT; do measure "$t" "$s" "$v"; done ;;
      fanout) for v in $FAN_RATES; do measure "$t" "$s" "$v"; done ;;
      # The relay keeps no document: nothing to hold in memory, nothing for a joiner to sync.
      docmem|joinstorm) if [ "$t" = relay ]; then step "relay: $s skipped (no document kept)"
                        else measure "$t" "$s"; fi ;;
      *) measure "$t" "$s" ;;
    esac
  done
}

for t in $TARGETS; do run_target "$t"; done

step "results ($RESULTS)"
python3 ops/bench/report.py "$RESULTS"
