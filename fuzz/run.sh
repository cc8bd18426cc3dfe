#!/usr/bin/env bash
# Fuzzes the pure protocol code (frame decoder, awareness table, document rules) with cargo-fuzz /
# libFuzzer.
#
#   fuzz/run.sh [SECONDS] [TARGET...]   each target runs for SECONDS (default 60); all targets
#                                       unless some are named, e.g. for one long run:
#   fuzz/run.sh 3600 update_sequence
#
# Targets: frame_decode, message_handler, update_sequence, awareness_apply, ywebsocket_frame
# (fuzz/fuzz_targets/;
# fuzz/README.md says what each generates and checks). The seed corpus of frame_decode,
# message_handler and awareness_apply is written from the captured frames in tests/fixtures/ by
# fuzz/seed_corpus.py; a target with a directory under fuzz/seeds/ (committed seeds, e.g. the
# known crashers: update_sequence) also reads that one.
# libFuzzer adds what it finds to fuzz/corpus/<target>/ (gitignored). A crash leaves its input in
# fuzz/artifacts/<target>/; replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>`.
# Builds go to fuzz/target (gitignored), never to the main target dir.
set -euo pipefail

seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(frame_decode message_handler update_sequence awareness_apply ywebsocket_frame)
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# cargo-fuzz passes nightly-only flags to rustc (-Zsanitizer=address, sancov passes). These
# machines have a single stable toolchain and no other can be fetched, so RUSTC_BOOTSTRAP=1 lets
# the stable compiler accept those flags (the sanitizer runtimes ship with stable rust-std). It is
# set for the fuzz build only; the project's own build and tests never use it.
export RUSTC_BOOTSTRAP=1
# yrs reserves capacity from lengths found in the input with `try_reserve`. With glibc an
# impossible size just fails and yrs returns an error; ASan would abort instead. Make ASan behave
# like production: a refused allocation returns null (an infallible allocation still aborts).
# For the same reason libFuzzer's per-malloc limit is lifted (an untouched multi-GB reservation
# costs address space, not memory) while the RSS limit still catches memory really used.
# Known, reported in the closing notes: a few bytes of update can make yrs reserve gigabytes.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

python3 fuzz/seed_corpus.py

status=0
for target in "${targets[@]}"; do
    corpora=("fuzz/corpus/$target")
    mkdir -p "fuzz/corpus/$target"
    if [ -d "fuzz/seeds/$target" ]; then
        corpora+=("fuzz/seeds/$target")
    fi
    case "$target" in
        # Structured input: a few hundred bytes make 8 updates. libFuzzer's default of growing the
        # length limit slowly from a few bytes kept it below one useful sequence for minutes
        # (side by side on the unfixed yrs: the known use-after-free not found in 7 min with
        # it, found in 2 s without it; fuzz/README.md).
        update_sequence) limits=(-max_len=512 -len_control=0) ;;
        *) limits=(-max_len=65536) ;;
    esac
    echo "== fuzzing $target for ${seconds}s"
    if ! cargo fuzz run "$target" "${corpora[@]}" -- -max_total_time="$seconds" "${limits[@]}" -malloc_limit_mb=1000000 -rss_limit_mb=2048 -print_final_stats=1; then
        echo "!! $target failed: see fuzz/artifacts/$target/" >&2
        status=1
    fi
done
exit "$status"
