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
if [ ! -d tests/interop/node_modules ] || ! diff -q tests/interop/package-lock.json tests/interop/node_modules/.package-lock.json >/dev/null 2>&1; then
  # Copy of the lock inside node_modules tells whether an install is current.
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
fi

step "build (debug; one build serves every test)"
cargo build --all-targets --locked

step "Rust unit and integration tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi

step "Node interop tests (real @hocuspocus/provider against target/debug/zedi-sync)"
export ZEDI_BIN="$PWD/target/debug/zedi-sync"
(cd tests/interop && npm test)
