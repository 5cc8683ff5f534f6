#!/usr/bin/env bash
# The fuzz targets of fuzz/ (parsers that face untrusted bytes), coverage-guided, on the
# stable toolchain:
#
#   scripts/fuzz.sh [--smoke] [--time SECONDS] [TARGET...]
#
# Each target runs for --time seconds (default 300; --smoke: 15, what scripts/test.sh runs in
# CI). The targets are built with libFuzzer's coverage instrumentation through rustc's stable
# `-C passes`/`-C llvm-args` flags (no sanitizer: that needs nightly, and `cargo +nightly fuzz`
# still works from fuzz/ for it), for the host triple so build scripts stay uninstrumented.
# The corpus grows in $HUTCH_TEST_CACHE/fuzz-corpus/TARGET across runs, seeded from
# fuzz/seeds/TARGET; a crash leaves its input in $HUTCH_TEST_CACHE/fuzz-crashes/ (replay it:
# the same binary with the file as its argument) and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
CACHE=${HUTCH_TEST_CACHE:-/var/cache/hutch-test}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

SECONDS_EACH=300
TARGETS=()
while [ $# -gt 0 ]; do
    case $1 in
        --smoke) SECONDS_EACH=15 ;;
        --time) SECONDS_EACH=$2; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) TARGETS+=("$1") ;;
    esac
    shift
done
if [ ${#TARGETS[@]} -eq 0 ]; then
    mapfile -t TARGETS < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^hutch-fuzz$')
fi

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
TARGET_DIR="$CACHE/fuzz-target"
step "build the fuzz targets (${TARGETS[*]})"
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
    cargo build --release --locked --manifest-path fuzz/Cargo.toml --target "$TRIPLE" \
    --target-dir "$TARGET_DIR" $(printf -- '--bin %s ' "${TARGETS[@]}")

mkdir -p "$CACHE/fuzz-crashes"
failed=()
for t in "${TARGETS[@]}"; do
    step "fuzz $t for ${SECONDS_EACH}s"
    corpus="$CACHE/fuzz-corpus/$t"
    mkdir -p "$corpus"
    seeds=()
    if [ -d "fuzz/seeds/$t" ]; then seeds=("fuzz/seeds/$t"); fi
    if ! "$TARGET_DIR/$TRIPLE/release/$t" -max_total_time="$SECONDS_EACH" -max_len=65536 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$CACHE/fuzz-crashes/$t-" \
        "$corpus" "${seeds[@]}" 2>"$CACHE/fuzz-$t.log"; then
        tail -n 40 "$CACHE/fuzz-$t.log" >&2
        failed+=("$t")
    else
        grep -E '^(#[0-9]+\s+DONE|stat::number_of_executed_units)' "$CACHE/fuzz-$t.log" >&2 || true
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]} (inputs in $CACHE/fuzz-crashes/)" >&2
    exit 1
fi
echo "fuzzing: no crash in ${TARGETS[*]}" >&2
