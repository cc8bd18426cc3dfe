#!/usr/bin/env bash
# Builds with cargo and prints the absolute path of one binary target's executable, as cargo
# itself reports it. Scripts ask cargo instead of assuming target/debug/NAME, because
# CARGO_TARGET_DIR, CARGO_BUILD_TARGET_DIR, a target-dir in .cargo/config.toml, --target or a
# custom --profile all move the binary elsewhere.
#
#   scripts/cargo-bin.sh NAME [cargo build arguments...]
#   ZEDI_BIN=$(scripts/cargo-bin.sh zedi-sync --locked)             # debug
#   BIN=$(scripts/cargo-bin.sh zedi-sync --release --bins)          # release
#
# Build progress and diagnostics go to stderr as usual; stdout holds only the path. A unit that
# is already fresh is not rebuilt (cargo still reports its artifact), so this is cheap after a
# build with the same arguments. Exits non-zero when the build fails or NAME was not built.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
  echo "usage: scripts/cargo-bin.sh NAME [cargo build arguments...]" >&2
  exit 2
fi
name=$1
shift

# json-render-diagnostics: cargo's artifact messages as JSON lines on stdout, compiler messages
# rendered for humans on stderr. The bin's own executable is the artifact of kind "bin" built
# without the test profile (--all-targets also builds the bin's unit-test harness, under deps/).
cargo build --message-format=json-render-diagnostics "$@" | python3 -c '
import json, sys
name = sys.argv[1]
found = None
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") != "compiler-artifact":
        continue
    target = msg.get("target", {})
    if target.get("name") == name and "bin" in target.get("kind", []) \
            and not msg.get("profile", {}).get("test") and msg.get("executable"):
        found = msg["executable"]
if not found:
    sys.exit("cargo-bin.sh: cargo built no binary named " + name)
print(found)
' "$name"
