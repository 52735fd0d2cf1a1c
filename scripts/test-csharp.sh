#!/usr/bin/env bash
# The C# binding's tests: builds bindings/csharp (Tessera.dll, the NUnit tests, the
# quickstart) into a temporary directory, makes a licensed TESSERA_HOME, runs the NUnit suite
# against BIN_DIR/libtessera.so with nunit-console, then the C# quickstart, then the .nupkg
# (scripts/test-nupkg.sh).
# Usage: scripts/test-csharp.sh BIN_DIR      (make test-bindings passes target/debug)
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BIN_DIR" >&2
    exit 2
fi
BIN=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$BIN/libtessera.so" ]; then
    echo "test-csharp: $BIN/libtessera.so is missing (cargo build --lib)" >&2
    exit 1
fi
for tool in mono mcs nunit-console cc; do
    command -v "$tool" >/dev/null || { echo "test-csharp: $tool is missing (make deps)" >&2; exit 1; }
done

WORK=$(mktemp -d -t tessera-csharp.XXXXXX)
# Servers the tests start write their pids here, so that even a crashed test run leaves
# none behind; every temporary file of the run lives under $WORK.
cleanup() {
    if [ -f "$WORK/pids" ]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$WORK/pids"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/tmp"
export TMPDIR="$WORK/tmp"
export TESSERA_TEST_PIDFILE="$WORK/pids"

# No discovery broadcasts onto the network; no license server unless a test starts one.
export TESSERA_DISCOVERY=off
unset TESSERA_SERVERS

echo "== build (bindings/csharp/build.sh)"
(cd "$WORK" && "$ROOT/bindings/csharp/build.sh" "$WORK/out")   # mono_crash.* files, if any, stay in WORK

echo "== licensed TESSERA_HOME (products 1, 2, 3 of the demo publisher)"
"$ROOT/scripts/licensed-home.sh" "$BIN" "$WORK/home"
export TESSERA_HOME="$WORK/home"
export TESSERA_ROOT="$ROOT"
export TESSERA_BIN_DIR="$BIN"
# Mono's DllImport("tessera") finds libtessera.so here.
export LD_LIBRARY_PATH="$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "== NUnit (nunit-console)"
# nunit-console exits with the number of failed and errored tests (negative for its own
# errors); the result file is checked as well, so a run that fails is never taken as green.
status=0
(cd "$WORK" && nunit-console -nologo -noshadow -labels -xml="$WORK/results.xml" "$WORK/out/Tessera.Tests.dll") || status=$?
if [ "$status" -ne 0 ]; then
    echo "test-csharp: nunit-console exited with $status" >&2
    exit 1
fi
summary=$(grep -o '<test-results [^>]*>' "$WORK/results.xml" || true)
total=$(sed -n 's/.* total="\([0-9]*\)".*/\1/p' <<<"$summary")
bad=0
for attr in errors failures not-run inconclusive ignored skipped invalid; do
    n=$(sed -n "s/.* $attr=\"\\([0-9]*\\)\".*/\\1/p" <<<"$summary")
    bad=$((bad + ${n:-0}))
done
if [ -z "$total" ] || [ "$total" -eq 0 ] || [ "$bad" -ne 0 ]; then
    echo "test-csharp: NUnit results are not all green: $summary" >&2
    exit 1
fi
echo "test-csharp: $total NUnit tests passed"

echo "== examples/csharp/Quickstart.cs"
out=$(cd "$WORK" && mono "$WORK/out/Quickstart.exe") || { echo "$out"; echo "test-csharp: Quickstart.exe failed" >&2; exit 1; }
echo "$out"
grep -qx 'quickstart: all steps succeeded' <<<"$out"

echo "== the NuGet package (scripts/test-nupkg.sh)"
"$ROOT/scripts/test-nupkg.sh" "$BIN"

echo "test-csharp: ok"
