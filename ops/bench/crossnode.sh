#!/usr/bin/env bash
# Cross-node fan-out: three release daemons on one throwaway PostgreSQL and one redis-server,
# all on loopback, writers on node A, subscribers on A (single node) and then on B and C (through
# the Redis relay). Prints zedi-bench's figures and the machine. Usage:
#   ops/bench/crossnode.sh            (knobs: XN_DOCUMENTS=20 XN_SUBSCRIBERS=10 XN_RATE=5 XN_SECONDS=10)
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCS=${XN_DOCUMENTS:-20}
SUBS=${XN_SUBSCRIBERS:-10}
RATE=${XN_RATE:-5}
SECONDS_RUN=${XN_SECONDS:-10}

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; commit $(git rev-parse --short HEAD)"
SYNC_BIN=$(scripts/cargo-bin.sh zedi-sync --release --bins)
BENCH_BIN=$(scripts/cargo-bin.sh zedi-bench --release -p zedi-bench)
WORK=$(mktemp -d /tmp/zedi-crossnode.XXXXXX)
# The PostgreSQL cluster runs as the postgres user when started as root.
chmod 755 "$WORK"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/pg-cluster.sh destroy "$WORK/pg" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
PG_URL=$(scripts/pg-cluster.sh start "$WORK/pg")
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pids+=($!)
ports=()
for node in a b c; do
  port=$(free_port)
  env PORT="$port" ZEDI__SERVER__HOST=127.0.0.1 ZEDI__SERVER__NODE_ID="node-$node" \
    DATABASE_URL="$PG_URL" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
    ZEDI__LIMITS__MAX_CONNECTIONS_PER_IP=0 ZEDI__LIMITS__MAX_CONNECTIONS=0 \
    ZEDI__LIMITS__MAX_MESSAGES_PER_SEC=1000000 ZEDI__LIMITS__MAX_MESSAGE_BURST=1000000 \
    ZEDI__LIMITS__MAX_BYTES_PER_SEC=1000000000 ZEDI__LOG__LEVEL=warn \
    "$SYNC_BIN" >"$WORK/node-$node.log" 2>&1 &
  pids+=($!)
  ports+=("$port")
done
for port in "${ports[@]}"; do
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.1
  done
done
A=${ports[0]} B=${ports[1]} C=${ports[2]}
echo "== single node: writers and subscribers on A"
"$BENCH_BIN" --url "ws://127.0.0.1:$A" --scenario fanout --documents "$DOCS" --subscribers "$SUBS" --rate "$RATE" --seconds "$SECONDS_RUN"
echo "== cross-node: writers on A, subscribers on B and C"
"$BENCH_BIN" --url "ws://127.0.0.1:$A" --reader-urls "ws://127.0.0.1:$B,ws://127.0.0.1:$C" \
  --scenario fanout --documents "$DOCS" --subscribers "$SUBS" --rate "$RATE" --seconds "$SECONDS_RUN"
