#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) one after another, each from its committed
# seed corpus (fuzz/corpus/<target>/, read only) plus what earlier runs found
# (fuzz/corpus-run/<target>/, git-ignored). `make fuzz` calls this; see docs/FUZZING.md.
#
#   FUZZ_SECONDS    seconds per target (default 60)
#   FUZZ_SANITIZER  address (default), none (about 3x faster: pure safe Rust), memory, ...
#   FUZZ_RUNS       stop a target after this many executions (default: time only)
#   FUZZ_UNTIL      a Unix time: each target gets an equal share of what is left until then
#                   (instead of FUZZ_SECONDS); a target that reaches FUZZ_RUNS early leaves
#                   its time to the next ones
#   FUZZ_TARGETS    the targets to run (default: all)
#   FUZZ_LOG_DIR    write each target's libFuzzer output to <dir>/<target>.log
#
# Needs the nightly toolchain (libFuzzer's instrumentation); installs cargo-fuzz if missing.
# A crash stops the run: the input is in fuzz/artifacts/<target>/; minimize it with
# `cargo +nightly fuzz tmin <target> <input>`, fix the bug, and commit the input under
# fuzz/regressions/<target>/ (tests/fuzz_corpus.rs replays it in every `make test`).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_PER=${FUZZ_SECONDS:-60}
SANITIZER=${FUZZ_SANITIZER:-address}
TARGETS=${FUZZ_TARGETS:-$(ls fuzz_targets | sed 's/\.rs$//')}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# One build of every target first, so that the time per target is fuzzing time.
cargo +nightly fuzz build -s "$SANITIZER"

# The server_request target keeps its server's state in a directory of its own process
# (statics are never dropped); removed when the run ends, however it ends.
cleanup() { rm -rf "${TMPDIR:-/tmp}"/tessera-fuzz-server-*; }
trap cleanup EXIT

set -- $TARGETS
left=$#
for t in "$@"; do
    secs=$SECONDS_PER
    if [ -n "${FUZZ_UNTIL:-}" ]; then
        secs=$(( (FUZZ_UNTIL - $(date +%s)) / left ))
        [ "$secs" -ge 10 ] || secs=10
    fi
    left=$((left - 1))
    mkdir -p "corpus-run/$t"
    args=(-max_total_time="$secs" -timeout=10 -print_final_stats=1)
    [ -n "${FUZZ_RUNS:-}" ] && args+=(-runs="$FUZZ_RUNS")
    echo "fuzz: $t for ${secs}s${FUZZ_RUNS:+ or $FUZZ_RUNS runs} (sanitizer: $SANITIZER)"
    cmd=(cargo +nightly fuzz run -s "$SANITIZER" "$t" "corpus-run/$t" "corpus/$t" -- "${args[@]}")
    if [ -n "${FUZZ_LOG_DIR:-}" ]; then
        mkdir -p "$FUZZ_LOG_DIR"
        "${cmd[@]}" > "$FUZZ_LOG_DIR/$t.log" 2>&1
        grep -E '^#[0-9]+ +DONE|^stat::number_of_executed_units|^stat::average_exec_per_sec' \
            "$FUZZ_LOG_DIR/$t.log" || true
    else
        "${cmd[@]}"
    fi
done
echo "fuzz: every target ran without a crash"
