#!/usr/bin/env bash
# The whole test suite, on a fresh machine of this kind or a laptop:
#   - Rust unit tests (protocol, awareness, config, stores, persistence, document rules),
#   - Rust integration tests that run the real daemon binary on free loopback ports,
#   - Node interop tests: the real @hocuspocus/provider, yjs and ws against the daemon.
# It installs what is missing (npm packages from the committed lockfile) and leaves no process
# behind. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
cargo --version
node --version
npm --version

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
