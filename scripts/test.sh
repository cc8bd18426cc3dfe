#!/usr/bin/env bash
# The whole test suite, on a fresh machine of this kind or a laptop:
#   - Rust unit tests (protocol, awareness, config, stores, persistence, document rules),
#   - Rust integration tests that run the real daemon binary on free loopback ports,
#   - Node interop tests: the real @hocuspocus/provider, yjs and ws against the daemon.
# Tests that need PostgreSQL start their own throwaway cluster (scripts/pg-cluster.sh: initdb as
# the unprivileged postgres user, a free loopback port, fsync off, TLS on) and remove it after;
# cluster tests start their own redis-server instances (no persistence) the same way.
# It installs what is missing (npm packages from the committed lockfile) and leaves no process
# behind. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
cargo --version
node --version
npm --version

step "system packages (PostgreSQL and Redis servers for throwaway test instances, openssl for their TLS)"
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing packages: ${need[*]} (run as root or install them)" >&2
    exit 1
  fi
fi

step "moto (AWS API emulator for the CloudWatch tests), in a cached virtualenv"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/zedi-sync-tests"
moto_venv="$cache/moto-venv-5.2.5"
if ! "$moto_venv/bin/moto_server" --help >/dev/null 2>&1; then
  rm -rf "$moto_venv"
  python3 -m venv "$moto_venv"
  "$moto_venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
fi
export ZEDI_TEST_MOTO_SERVER="$moto_venv/bin/moto_server"

step "npm packages for the interop tests (exact versions from package-lock.json)"
# A copy of the lockfile that was installed tells whether node_modules is current.
if ! cmp -s tests/interop/package-lock.json tests/interop/node_modules/.zedi-installed-lock.json; then
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.zedi-installed-lock.json)
fi

step "build (debug; one build serves every test)"
# cargo says where the daemon binary is: CARGO_TARGET_DIR, a configured target-dir or --target
# put it somewhere other than target/debug. The Node interop tests and ops/checks.sh use it.
ZEDI_BIN=$(scripts/cargo-bin.sh zedi-sync --workspace --all-targets --locked)
# The load generator is its own crate; tests/it/bench_smoke.rs runs it. Already built just above.
ZEDI_BENCH_BIN=$(scripts/cargo-bin.sh zedi-bench --workspace --all-targets --locked)
export ZEDI_BIN ZEDI_BENCH_BIN
echo "zedi-sync binary: $ZEDI_BIN"

log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT
status=0

step "Lints (cargo fmt --check, cargo clippy --all-targets -D warnings)"
lint_passed=0
lint_failed=0
if cargo fmt --check; then lint_passed=$((lint_passed + 1)); else lint_failed=$((lint_failed + 1)); status=1; fi
if cargo clippy --all-targets --locked -- -D warnings; then
  lint_passed=$((lint_passed + 1))
else
  lint_failed=$((lint_failed + 1)); status=1
fi

step "Rust unit and integration tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast 2>&1 | tee "$log_dir/rust.log" || status=1
else
  cargo test --locked --no-fail-fast 2>&1 | tee "$log_dir/rust.log" || status=1
fi

step "Deployment checks (Dockerfile, Terraform, Prometheus rules, config consistency)"
ZEDI_OPS_TOOLS="$cache" ops/checks.sh 2>&1 | tee "$log_dir/ops.log" || status=1

step "Fuzzing (bounded: frame decoder, message handler, awareness; seed corpus from captured frames)"
fuzz_failed=0
fuzz/run.sh "${ZEDI_FUZZ_SECONDS:-40}" >"$log_dir/fuzz.log" 2>&1 || { status=1; fuzz_failed=1; }
grep -E '^==|Done [0-9]+ runs|ERROR|crash-|oom-' "$log_dir/fuzz.log" || true
if [ "$fuzz_failed" -ne 0 ]; then tail -n 40 "$log_dir/fuzz.log"; fi

step "Node interop tests (real @hocuspocus/provider against $ZEDI_BIN)"
(cd tests/interop && npm test) 2>&1 | tee "$log_dir/interop.log" || status=1

# One line for the whole suite, summed over the three runners.
rust_passed=$(grep -oE '[0-9]+ passed' "$log_dir/rust.log" | tail -n 1 | grep -oE '[0-9]+' || echo 0)
rust_failed=$(grep -oE '[0-9]+ failed' "$log_dir/rust.log" | tail -n 1 | grep -oE '[0-9]+' || echo 0)
ops_passed=$(tail -n 1 "$log_dir/ops.log" | grep -oE '^[0-9]+' || echo 0)
ops_failed=$(tail -n 1 "$log_dir/ops.log" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 0)
node_passed=$(grep -E '^# pass [0-9]+' "$log_dir/interop.log" | tail -n 1 | grep -oE '[0-9]+' || echo 0)
node_failed=$(grep -E '^# fail [0-9]+' "$log_dir/interop.log" | tail -n 1 | grep -oE '[0-9]+' || echo 0)
fuzz_passed=$(grep -cE '^Done [0-9]+ runs' "$log_dir/fuzz.log" || true)
passed=$((rust_passed + ops_passed + node_passed + fuzz_passed + lint_passed))
failed=$((rust_failed + ops_failed + node_failed + fuzz_failed + lint_failed))
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo
echo "suite: $passed passed, $failed failed"
exit "$status"
