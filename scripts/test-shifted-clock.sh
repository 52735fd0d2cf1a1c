#!/usr/bin/env bash
# Runs the unit and integration test binaries again with the clock moved, so that a test
# which depends on the day it runs on fails the day it is written, not weeks later.
#
#   scripts/test-shifted-clock.sh                  both shifts below
#   scripts/test-shifted-clock.sh '+400 days'      one shift: a moment as date(1) reads it,
#   scripts/test-shifted-clock.sh '2027-02-28 23:59:30 UTC'   relative or absolute
#
# The shifts:
#   +400 days              a year and more ahead: expiries, delegations and months of logs
#                          computed from a fixed date instead of from `now` fail here;
#   <last day> 23:59:30    the last half minute of the last day of a month (the month after
#                          next), ticking on into the next month while the tests run: month
#                          boundaries and "days in this month" arithmetic.
# Run under libfaketime itself (`faketime '+400 days' make test`), the shifts start from the
# moved clock: the passes run 800 days ahead and at the end of a month 400 days ahead.
#
# The binaries are built first without the shift (cargo itself never runs under a shifted
# clock); then each one runs under libfaketime, two at a time. Child processes the tests
# start (the server, the virtual dongle, the C examples) inherit the shifted clock.
# The monotonic clock is left alone (FAKETIME_DONT_FAKE_MONOTONIC): timeouts and leases
# measure intervals, and a shifted monotonic clock only slows libfaketime down.
#
# Tests that cannot run under a shifted clock are listed in SKIP below with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."

# libfaketime itself, preloaded directly: the `faketime` wrapper keys a named semaphore by
# its pid and refuses to start when a killed run left one behind ("sem_open: File exists").
# A relative offset needs no state shared between the processes.
preload=$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -1)
[ -n "$preload" ] || {
    echo "test-shifted-clock: libfaketime is missing (scripts/install-deps.sh installs faketime)" >&2
    exit 1
}

# name -> why it cannot run under a shifted clock. Each entry is passed to the test binary
# as `--skip NAME` and printed, never skipped silently.
declare -A SKIP=(
)

if (($#)); then
    shifts=("$@")
else
    first=$(date -u +%Y-%m-01)
    last_day=$(date -u -d "$first +3 months -1 day" +%F)
    shifts=('+400 days' "$last_day 23:59:30 UTC")
fi
# Every shift is checked before anything runs.
for spec in "${shifts[@]}"; do
    date -u -d "$spec" >/dev/null 2>&1 || {
        echo "test-shifted-clock: '$spec' is not a moment date(1) can read" >&2
        exit 2
    }
done
cargo() { scripts/real-clock cargo "$@"; }

# The test executables, built now (a no-op when `cargo build --all-targets` ran before).
mapfile -t bins < <(cargo test --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])
')
((${#bins[@]})) || { echo "test-shifted-clock: no test binaries" >&2; exit 1; }
# The shared library the C tests load, built now too: the tests' own `cargo build --lib`
# (tests/common) is then a no-op.
cargo build --lib --quiet
# The binaries run here directly, not through cargo, so they miss the toolchain rustup gives
# cargo's children: a cargo they start would pick a dependency's rust-toolchain file.
if [ -z "${RUSTUP_TOOLCHAIN:-}" ] && command -v rustup >/dev/null; then
    RUSTUP_TOOLCHAIN=$(scripts/real-clock rustup show active-toolchain | cut -d' ' -f1)
    export RUSTUP_TOOLCHAIN
fi

skip_args=()
for name in "${!SKIP[@]}"; do
    echo "test-shifted-clock: not under a shifted clock: $name (${SKIP[$name]})"
    skip_args+=(--skip "$name")
done

# Two binaries at a time, each in a mount namespace of its own: a dongle's mass-storage
# volume is found through the mount table, so a runtime in one binary (`tessera list` in the
# CLI tests) would otherwise open the volume another binary's dongle test mounted, and the
# dongle, used by two hosts, rightly locks both out. Without namespaces (not root), one at
# a time, as `cargo test` runs them.
if unshare --mount --propagation private true 2>/dev/null; then
    jobs=2 isolate='unshare --mount --propagation private'
else
    jobs=1 isolate=
fi
export TESSERA_DISCOVERY=off FAKETIME_DONT_FAKE_MONOTONIC=1
logs=$(mktemp -d -t tessera-shifted.XXXXXX)
# libfaketime gives every process that inherits no FAKETIME_SHARED a semaphore and a shared
# memory object named by its pid, and a process that exec()s (env, the test binaries) never
# removes them. Those the passes leave are removed at the end; a stale one whose pid comes
# round again is why tests drop privileges with tests/common::as_nobody.
stamp="$logs/stamp"
touch "$stamp"
trap 'find /dev/shm -maxdepth 1 \( -name "sem.faketime_sem_*" -o -name "faketime_shm_*" \) -user "$(id -u)" -newer "$stamp" -delete 2>/dev/null; rm -rf "$logs"' EXIT
status=0
for spec in "${shifts[@]}"; do
    # Each shift becomes one offset from the real clock, taken when the pass begins: with an
    # absolute time ('@TIME') every process libfaketime starts would begin at TIME again (a
    # server the tests start later would run behind them); one offset gives all one clock.
    real_now=$(env -u LD_PRELOAD -u FAKETIME date +%s)
    shift="+$(($(date -u -d "$spec" +%s) - real_now))s"
    echo "test-shifted-clock: the clock at '$spec' (now $(LD_PRELOAD=$preload FAKETIME=$shift date -u '+%F %T UTC'))"
    start=$SECONDS
    # One log per binary; a failing binary's log is printed whole.
    printf '%s\n' "${bins[@]}" | xargs -P "$jobs" -I{} bash -c '
        log="$1/$(basename "$2").log"
        if $3 env LD_PRELOAD="$4" FAKETIME="$5" "$2" -q "${@:6}" >"$log" 2>&1; then echo ok >>"$log.rc"; else echo fail >>"$log.rc"; fi
    ' _ "$logs" {} "$isolate" "$preload" "$shift" "${skip_args[@]}"
    passed=0 failed=0
    for bin in "${bins[@]}"; do
        log="$logs/$(basename "$bin").log"
        line=$(grep -E '^test result: ' "$log" | tail -1 || true)
        p=$(sed -n 's/.* \([0-9]*\) passed.*/\1/p' <<<"$line")
        f=$(sed -n 's/.* \([0-9]*\) failed.*/\1/p' <<<"$line")
        passed=$((passed + ${p:-0}))
        failed=$((failed + ${f:-0}))
        if [ "$(cat "$log.rc")" != ok ]; then
            status=1
            [ -n "$line" ] || failed=$((failed + 1))   # died before its summary
            echo "--- $(basename "$bin") under '$spec' failed:"
            cat "$log"
        fi
        rm -f "$log" "$log.rc"
    done
    echo "test-shifted-clock: '$spec': $passed passed, $failed failed in $((SECONDS - start)) s"
done
exit $status
