#!/usr/bin/env bash
# The Python platform wheel, as an app's author gets it: builds it from BIN_DIR's library
# (scripts/build-wheel.sh, what `make wheel` runs), checks its name, tag, version and
# contents, installs it with `pip install tessera-*.whl` into a fresh venv, and there, with
# no TESSERA_LIBRARY and no library path, acquires a seat of a software container made with
# the tools, encrypts, decrypts and releases, checking that the library loaded is the one
# inside the wheel. Run by scripts/test-python.sh (make test-bindings).
# Usage: scripts/test-wheel.sh BIN_DIR      (e.g. target/debug)
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BIN_DIR" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "$1" && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)

WORK=$(mktemp -d -t tessera-wheel-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export TESSERA_DISCOVERY=off PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset TESSERA_SERVERS TESSERA_LIBRARY LD_LIBRARY_PATH PYTHONPATH

step() { printf '\n== %s\n' "$*"; }

step "scripts/build-wheel.sh $1"
wheel=$("$ROOT/scripts/build-wheel.sh" "$BIN" "$WORK/dist" 2>"$WORK/build.log") \
    || { cat "$WORK/build.log" >&2; echo "test-wheel: build-wheel.sh failed" >&2; exit 1; }
echo "$wheel"

step "the wheel's name, tag, version and contents"
mkdir "$WORK/unpacked"
python3 - "$wheel" "$VERSION" "$WORK/unpacked" <<'EOF'
import re
import subprocess
import sys
import zipfile
from pathlib import Path

wheel, version, unpacked = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
m = re.fullmatch(r"tessera-(.+)-py3-none-manylinux_2_(\d+)_x86_64\.whl", wheel.name)
assert m, f"not a py3-none-manylinux_2_N_x86_64 wheel: {wheel.name}"
assert m.group(1) == version, f"wheel version {m.group(1)}, Cargo.toml {version}"
tag_minor = int(m.group(2))

with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    z.extractall(unpacked)
info = f"tessera-{version}.dist-info"
meta = (unpacked / info / "METADATA").read_text()
assert f"\nVersion: {version}\n" in meta, meta[:300]
wheel_file = (unpacked / info / "WHEEL").read_text()
assert "Root-Is-Purelib: false" in wheel_file, wheel_file
assert f"Tag: py3-none-manylinux_2_{tag_minor}_x86_64" in wheel_file, wheel_file
for need in ("tessera/__init__.py", "tessera/py.typed", "tessera/libtessera.so"):
    assert need in names, f"{need} is not in the wheel"

# Every library in the wheel needs only what manylinux allows or what the wheel carries,
# and no glibc symbol version newer than the tag says.
libs = sorted(p for p in unpacked.rglob("*.so*") if p.is_file())
carried = {p.name for p in libs}
manylinux = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
             "libgcc_s.so.1", "libstdc++.so.6", "ld-linux-x86-64.so.2"}
newest = 0
for lib in libs:
    dyn = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dyn.stdout)
    outside = [n for n in needed if n not in manylinux and n not in carried]
    assert not outside, f"{lib.name} needs {outside}, neither manylinux nor in the wheel"
    syms = subprocess.run(["objdump", "-T", str(lib)], capture_output=True, text=True, check=True)
    for minor in re.findall(r"GLIBC_2\.(\d+)", syms.stdout):
        newest = max(newest, int(minor))
assert newest <= tag_minor, f"the libraries need GLIBC_2.{newest}, the tag says 2.{tag_minor}"
print(f"{wheel.name}: {len(libs)} libraries, newest glibc symbol 2.{newest}, tag 2_{tag_minor}")
EOF

step "pip install $(basename "$wheel") into a fresh venv (no index, no TESSERA_LIBRARY)"
python3 -m venv "$WORK/app"
"$WORK/app/bin/python" -m pip install --quiet --no-index "$wheel"

step "a licensed TESSERA_HOME made with the tools"
"$ROOT/scripts/licensed-home.sh" "$BIN" "$WORK/home"
export TESSERA_HOME="$WORK/home"

step "acquire, encrypt, decrypt, release with the installed wheel"
# From outside the tree, so that nothing but the venv provides `tessera`.
(
    cd "$WORK"
    "$WORK/app/bin/python" - "$WORK/app" "$WORK/unpacked/tessera/libtessera.so" "$VERSION" <<'EOF'
import ctypes.util
import hashlib
import os
import sys
from pathlib import Path

import tessera

venv, packed, version = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), sys.argv[3]
assert "TESSERA_LIBRARY" not in os.environ and "LD_LIBRARY_PATH" not in os.environ
if ctypes.util.find_library("tessera"):
    print(f"note: the system has a libtessera too ({ctypes.util.find_library('tessera')})")

package = Path(tessera.__file__).resolve().parent
assert venv in package.parents, f"tessera imported from {package}, not from the venv {venv}"
assert tessera.__version__ == version, (tessera.__version__, version)
assert tessera.library_path == str(package / "libtessera.so"), tessera.library_path
assert tessera.library_abi_version() == tessera.ABI_VERSION

# The library mapped into this process is the wheel's, byte for byte, and the libraries
# auditwheel grafted are loaded from the wheel's tessera.libs.
maps = Path("/proc/self/maps").read_text().splitlines()
mapped = {line.split(None, 5)[5] for line in maps if len(line.split(None, 5)) == 6}
tesseras = {m for m in mapped if "libtessera" in os.path.basename(m)}
assert tesseras == {str(package / "libtessera.so")}, tesseras
digest = hashlib.sha256((package / "libtessera.so").read_bytes()).hexdigest()
assert digest == hashlib.sha256(packed.read_bytes()).hexdigest(), "not the wheel's library"
grafted = {m for m in mapped if "/tessera.libs/" in m}
assert any("libudev" in m for m in grafted), f"libudev not loaded from tessera.libs: {grafted}"
assert all(Path(m).parent.parent == package.parent for m in grafted), grafted

secret = b"what only a licensed app reads"
with tessera.Session(tessera.DEMO_VENDOR_ID, tessera.DEMO_PUBLISHER_KEY) as session:
    seat = session.acquire(tessera.DEMO_PRODUCT_CODE, features=0x1)
    info = seat.info
    assert info.product_code == tessera.DEMO_PRODUCT_CODE and info.seats_in_use >= 1, info
    assert info.source == tessera.Source.SOFTWARE, info
    sealed = seat.encrypt(secret)
    assert secret not in sealed and len(sealed) == len(secret) + tessera.CIPHERTEXT_OVERHEAD
    assert seat.decrypt(sealed) == secret
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    try:
        seat.decrypt(bytes(tampered))
        raise AssertionError("a tampered ciphertext decrypted")
    except tessera.TamperedError:
        pass
    seat.release()
    try:
        seat.encrypt(secret)
        raise AssertionError("a released seat encrypted")
    except tessera.InvalidHandleError:
        pass
print(f"wheel: licensed round trip ok with {tessera.library_path} ({tessera.library_version()})")
EOF
)
"$WORK/app/bin/python" "$ROOT/examples/python/quickstart.py" >/dev/null
echo "examples/python/quickstart.py on the installed wheel: ok"

printf '\ntest-wheel: ok\n'
