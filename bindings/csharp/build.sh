#!/usr/bin/env bash
# Builds the C# binding with Mono's mcs: Tessera.dll, the NUnit test assembly
# Tessera.Tests.dll (with SeatHolder.exe, a child process of its tests), and
# examples/csharp/Quickstart.exe, all into OUT_DIR, warnings as errors.
# With --library-only, Tessera.dll (and Tessera.xml) alone: no NUnit needed or referenced
# (scripts/build-nupkg.sh packs it).
# Usage: bindings/csharp/build.sh [--library-only] OUT_DIR
set -euo pipefail

LIBRARY_ONLY=0
if [ "${1:-}" = --library-only ]; then
    LIBRARY_ONLY=1
    shift
fi
if [ $# -ne 1 ]; then
    echo "usage: $0 [--library-only] OUT_DIR" >&2
    exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)

for tool in mcs pkg-config; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing (make deps)" >&2; exit 1; }
done
NUNIT=$(pkg-config --libs nunit 2>/dev/null | tr ' ' '\n' | grep 'nunit\.framework\.dll$' || true)
if [ -z "$NUNIT" ] && [ "$LIBRARY_ONLY" -eq 0 ]; then
    echo "build.sh: nunit.framework not found by 'pkg-config --libs nunit' (apt-get install libnunit-cil-dev)" >&2
    exit 1
fi

# The assembly version comes from Cargo.toml, never typed by hand.
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
GEN=$(mktemp -d -t tessera-cs-build.XXXXXX)
trap 'rm -rf "$GEN"' EXIT
printf '[assembly: System.Reflection.AssemblyVersion("%s.0")]\n' "$VERSION" > "$GEN/Version.g.cs"

MCS=(mcs -nologo -debug -warn:4 -warnaserror+)

# The binding: unsafe only for the fixed char arrays of tessera_seat_details; -doc makes every
# public member's missing doc comment an error too.
"${MCS[@]}" -target:library -unsafe -doc:"$OUT/Tessera.xml" -out:"$OUT/Tessera.dll" \
    "$HERE"/Tessera/*.cs "$GEN/Version.g.cs"
if [ "$LIBRARY_ONLY" -eq 1 ]; then
    echo "build.sh: Tessera.dll in $OUT"
    exit 0
fi

"${MCS[@]}" -target:library -unsafe -out:"$OUT/Tessera.Tests.dll" -r:"$OUT/Tessera.dll" "$NUNIT" \
    "$HERE"/Tests/*.cs

"${MCS[@]}" -target:exe -out:"$OUT/Quickstart.exe" -r:"$OUT/Tessera.dll" \
    "$ROOT/examples/csharp/Quickstart.cs"

# A child process of the tests: holds a seat until its stdin closes (Tests/AcquireWaitTests.cs).
"${MCS[@]}" -target:exe -out:"$OUT/SeatHolder.exe" -r:"$OUT/Tessera.dll" "$HERE/Tests/Holder/SeatHolder.cs"

echo "build.sh: Tessera.dll, Tessera.Tests.dll, SeatHolder.exe and Quickstart.exe in $OUT"
