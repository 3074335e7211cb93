#!/usr/bin/env bash
# Build one fuzz target with coverage instrumentation on the stable toolchain and run it
# under libFuzzer.
#
#   fuzz/run.sh TARGET SECONDS|RUNS [LIBFUZZER_FLAG...]
#
#   TARGET  hub_json | hub_msgpack | handshake | envelope | pg_notification | pg_row
#           (or "build" to only build every target, or "all" to run each target in turn)
#   30s     run for 30 seconds        (libFuzzer -max_total_time=30)
#   1000000 run one million inputs    (libFuzzer -runs=1000000)
#
# An input that takes more than 10 s counts as a hang (-timeout=10), like a crash.
# The committed corpus fuzz/corpus/TARGET is replayed first and grows in place; inputs
# that crash are written to fuzz/artifacts/TARGET/. Extra arguments go to libFuzzer
# (e.g. -jobs=2, -max_len=8192, -only_ascii=1). FUZZ_CORPUS_READONLY=1 runs from a
# scratch copy of the corpus, leaving the committed one as it is (what CI does).
set -euo pipefail
cd "$(dirname "$0")"

targets=(hub_json hub_msgpack handshake envelope pg_notification pg_row)
usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
[ $# -ge 1 ] || usage
target=$1
shift

host=$(rustc -vV | sed -n 's/^host: //p')
# Sanitizer coverage through stable codegen flags (what cargo-fuzz passes, minus the
# nightly-only -Zsanitizer): 8-bit edge counters and the PC table for libFuzzer's
# coverage feedback, comparison tracing so it can solve magic values. `--cfg fuzzing`
# marks the build; debug assertions and overflow checks come from the release profile.
# An explicit --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="${RUSTFLAGS:-} --cfg fuzzing \
 -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target}"

build() {
    cargo build --locked --release --target "$host" "$@"
}

case "$target" in
build)
    build --bins
    exit 0
    ;;
all)
    [ $# -ge 1 ] || usage
    build --bins
    for t in "${targets[@]}"; do "$0" "$t" "$@"; done
    exit 0
    ;;
esac
printf '%s\n' "${targets[@]}" | grep -qx "$target" || { echo "unknown target $target" >&2; usage; }
[ $# -ge 1 ] || usage
amount=$1
shift
case "$amount" in
*s) limit=(-max_total_time="${amount%s}") ;;
*[!0-9]* | '') usage ;;
*) limit=(-runs="$amount") ;;
esac

build --bin "$target"
bin="$CARGO_TARGET_DIR/$host/release/$target"
corpus="corpus/$target"
mkdir -p "$corpus" "artifacts/$target"
if [ "${FUZZ_CORPUS_READONLY:-0}" = 1 ]; then
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    cp -a "$corpus/." "$scratch/"
    corpus=$scratch
fi
"$bin" "${limit[@]}" -timeout=10 -artifact_prefix="artifacts/$target/" \
    -print_final_stats=1 "$@" "$corpus"
