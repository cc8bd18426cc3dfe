#!/usr/bin/env bash
# Soak / chaos run (not part of CI). Real @hocuspocus/provider clients edit through an
# ALB-like balancer in front of K zedi-sync nodes sharing a throwaway PostgreSQL and a redis-server,
# while nodes (kill -9 or graceful drain), Redis and PostgreSQL are restarted at random; then it
# checks that nothing acknowledged was lost and that everybody converged. Exit 0 = pass.
#
#   scripts/soak.sh [--clients N] [--minutes M] [--nodes K]       (defaults: 30, 5, 3)
#                   [--chaos-interval MIN-MAX] [--chaos-kinds LIST] [--rate R] [--seed S]
#                   [--no-tab-crash] [--keep]
#
# ZEDI_BIN=/path/to/zedi-sync skips the release build. Everything listens on 127.0.0.1 only and
# every process is stopped at the end, on failure and on Ctrl-C. Details: tests/soak/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

for a in "$@"; do
  case "$a" in -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
done

missing=()
command -v node >/dev/null 2>&1 || missing+=(node)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v psql >/dev/null 2>&1 || missing+=(psql)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(initdb)
if [ ${#missing[@]} -gt 0 ]; then
  echo "soak.sh: missing ${missing[*]} (scripts/test.sh lists the system packages it needs)" >&2
  exit 2
fi

if [ -n "${ZEDI_BIN:-}" ]; then
  [ -x "$ZEDI_BIN" ] || { echo "soak.sh: ZEDI_BIN=$ZEDI_BIN is not an executable" >&2; exit 2; }
  ZEDI_BIN=$(cd "$(dirname "$ZEDI_BIN")" && pwd)/$(basename "$ZEDI_BIN")
else
  echo "==> cargo build --release --bin zedi-sync"
  # cargo says where the binary is (CARGO_TARGET_DIR or a configured target-dir move it).
  ZEDI_BIN=$(scripts/cargo-bin.sh zedi-sync --release --locked --bin zedi-sync)
fi
export ZEDI_BIN

# The soak reuses the interop tests' npm packages: installed (npm ci, exact versions from their
# lockfile) only when one of them is missing or at another version.
npm_current() {
  (cd tests/interop && node -e '
    const fs = require("fs");
    const deps = JSON.parse(fs.readFileSync("package.json", "utf8")).dependencies;
    for (const [name, want] of Object.entries(deps)) {
      const got = JSON.parse(fs.readFileSync(`node_modules/${name}/package.json`, "utf8")).version;
      if (got !== want) process.exit(1);
    }' 2>/dev/null)
}
if ! npm_current; then
  echo "==> npm ci (tests/interop)"
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
fi

# exec: Ctrl-C reaches node directly, which stops every process it started.
exec node tests/soak/soak.mjs "$@"
