#!/usr/bin/env bash
# The C# NuGet package, as an app's author gets it: builds it from BIN_DIR's library
# (scripts/build-nupkg.sh, what `make nupkg` runs), checks its layout and its .nuspec (id,
# Cargo.toml's version), compiles bindings/csharp/Tests/Package/PackageApp.cs with mcs
# against lib/netstandard2.0/Tessera.dll of the extracted package and nothing else (no
# NUnit), lays the package's runtimes/linux-x64/native/libtessera.so beside it as NuGet's
# restore does, and runs it with no LD_LIBRARY_PATH: a licensed acquire, encrypt, decrypt
# and release against a software container made with the tools, with the package's own
# library. Run by scripts/test-csharp.sh (make test-bindings).
# Usage: scripts/test-nupkg.sh BIN_DIR      (e.g. target/debug)
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BIN_DIR" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "$1" && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)

WORK=$(mktemp -d -t tessera-nupkg-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export TESSERA_DISCOVERY=off
unset TESSERA_SERVERS LD_LIBRARY_PATH MONO_PATH

step() { printf '\n== %s\n' "$*"; }

step "scripts/build-nupkg.sh $1"
pkg=$("$ROOT/scripts/build-nupkg.sh" "$BIN" "$WORK/dist" 2>"$WORK/build.log") \
    || { cat "$WORK/build.log" >&2; echo "test-nupkg: build-nupkg.sh failed" >&2; exit 1; }
echo "$pkg"

step "the package's layout and .nuspec; the SDK-style project beside it"
python3 - "$pkg" "$VERSION" "$WORK/pkg" "$ROOT/bindings/csharp/Tessera/Tessera.csproj" <<'EOF_PY'
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

pkg, version, out, csproj = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
assert pkg.name == f"Tessera.{version}.nupkg", pkg.name
with zipfile.ZipFile(pkg) as z:
    names = set(z.namelist())
    z.extractall(out)
expected = {
    "Tessera.nuspec",
    "[Content_Types].xml",
    "_rels/.rels",
    "lib/netstandard2.0/Tessera.dll",
    "lib/netstandard2.0/Tessera.xml",
    "runtimes/linux-x64/native/libtessera.so",
}
core = {n for n in names if re.fullmatch(r"package/services/metadata/core-properties/\w+\.psmdcp", n)}
assert names == expected | core and len(core) == 1, sorted(names ^ expected)

def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]

meta = {local(e.tag): (e.text or "") for e in ET.parse(out / "Tessera.nuspec").getroot()[0]}
assert meta["id"] == "Tessera" and meta["version"] == version, meta
assert "dependencies" not in meta, "the package must not depend on anything"
types = {e.get("Extension"): e.get("ContentType") for e in ET.parse(out / "[Content_Types].xml").getroot()}
for ext in ("rels", "nuspec", "psmdcp", "dll", "so", "xml"):
    assert ext in types, f"[Content_Types].xml has no Default for .{ext}: {types}"
rels = [e.get("Target") for e in ET.parse(out / "_rels" / ".rels").getroot()]
assert "/Tessera.nuspec" in rels, rels

native = out / "runtimes/linux-x64/native/libtessera.so"
dyn = subprocess.run(["readelf", "-h", "-d", str(native)], capture_output=True, text=True, check=True)
assert "Advanced Micro Devices X86-64" in dyn.stdout and "DYN" in dyn.stdout, dyn.stdout[:400]
assert "Library soname: [libtessera.so.0]" in dyn.stdout
dll = (out / "lib/netstandard2.0/Tessera.dll").read_bytes()
assert dll[:2] == b"MZ" and b"nunit" not in dll.lower(), "Tessera.dll is no assembly, or names NUnit"

# The SDK-style project (not built here: Debian has no .NET SDK) targets netstandard2.0 and
# packs the native library where the .nuspec does.
project = ET.parse(csproj).getroot()
assert project.get("Sdk") == "Microsoft.NET.Sdk"
props = {local(e.tag): e.text for group in project.iter("PropertyGroup") for e in group}
assert props["TargetFramework"] == "netstandard2.0" and props["AssemblyName"] == "Tessera", props
packed = [e.get("PackagePath") for e in project.iter("None") if e.get("Pack") == "true"]
assert packed == ["runtimes/linux-x64/native/"], packed
print(f"{pkg.name}: {len(names)} entries, id Tessera, version {version}")
EOF_PY

step "an app compiled against lib/netstandard2.0/Tessera.dll alone"
mkdir "$WORK/app"
cp "$WORK/pkg/lib/netstandard2.0/Tessera.dll" "$WORK/app/"
# As NuGet's restore copies runtimes/<rid>/native/* into an app's output; Mono's DllImport
# looks beside the assembly.
cp "$WORK/pkg/runtimes/linux-x64/native/libtessera.so" "$WORK/app/"
mcs -nologo -warn:4 -warnaserror+ -target:exe -out:"$WORK/app/PackageApp.exe" \
    -r:"$WORK/app/Tessera.dll" "$ROOT/bindings/csharp/Tests/Package/PackageApp.cs"

step "a licensed TESSERA_HOME made with the tools"
"$ROOT/scripts/licensed-home.sh" "$BIN" "$WORK/home"
export TESSERA_HOME="$WORK/home"

step "the app: acquire, encrypt, decrypt, release with the package's library"
out=$(cd "$WORK" && mono "$WORK/app/PackageApp.exe" 2>&1) \
    || { echo "$out"; echo "test-nupkg: PackageApp.exe failed" >&2; exit 1; }
echo "$out"
grep -qx 'package app: ok' <<<"$out"

printf '\ntest-nupkg: ok\n'
