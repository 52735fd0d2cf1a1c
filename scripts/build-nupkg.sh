#!/usr/bin/env bash
# Builds the C# binding's NuGet package with Debian's tools:
#   OUT_DIR/Tessera.VERSION.nupkg
#     lib/netstandard2.0/Tessera.dll (+ Tessera.xml, its doc comments)
#     runtimes/linux-x64/native/libtessera.so
# `make nupkg` passes target/release; scripts/test-nupkg.sh passes target/debug.
# Usage: scripts/build-nupkg.sh LIB_DIR OUT_DIR      (LIB_DIR holds libtessera.so)
#
# Tessera.dll is compiled by bindings/csharp/build.sh --library-only (Mono's mcs, no NUnit);
# the library is LIB_DIR's with its debug info stripped; `nuget pack` (Debian's nuget,
# NuGet 2.8 on Mono) packs them as bindings/csharp/Tessera.nuspec says, with Cargo.toml's
# version. Writes nothing into the work tree.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 LIB_DIR OUT_DIR" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LIB=$(cd "$1" && pwd)/libtessera.so
if [ ! -f "$LIB" ]; then
    echo "build-nupkg: $LIB is missing (cargo build --lib, or make build)" >&2
    exit 1
fi
for tool in nuget mcs strip; do
    command -v "$tool" >/dev/null || { echo "build-nupkg: $tool is missing (make deps)" >&2; exit 1; }
done
mkdir -p "$2"
OUT=$(cd "$2" && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)

WORK=$(mktemp -d -t tessera-nupkg.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# nuget keeps its settings and caches under HOME; none of the caller's.
export HOME="$WORK/home"
mkdir -p "$HOME" "$WORK/native" "$WORK/pack"

"$ROOT/bindings/csharp/build.sh" --library-only "$WORK/lib" >&2
strip --strip-debug -o "$WORK/native/libtessera.so" "$LIB"

# -NoPackageAnalysis: NuGet 2.8 predates netstandard and warns that lib/netstandard2.0 is
# not a framework name it knows; NuGet 3 and later (restore, dotnet) read it.
(cd "$WORK" && nuget pack "$ROOT/bindings/csharp/Tessera.nuspec" -BasePath "$WORK" \
    -OutputDirectory "$WORK/pack" -Properties version="$VERSION" \
    -NoPackageAnalysis -NonInteractive -Verbosity quiet) >&2
pkg="$WORK/pack/Tessera.$VERSION.nupkg"
if [ ! -f "$pkg" ]; then
    echo "build-nupkg: nuget pack made no $(basename "$pkg"):" "$WORK"/pack/* >&2
    exit 1
fi
mv "$pkg" "$OUT/"
echo "$OUT/$(basename "$pkg")"
