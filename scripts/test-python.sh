#!/usr/bin/env bash
# The Python binding's checks against the library in BIN_DIR: the pytest suite, the Python
# quickstart, `pip install` of the package into a fresh venv, and the platform wheel with the
# library inside (scripts/test-wheel.sh). Run by `make test-bindings`.
# Usage: scripts/test-python.sh BIN_DIR      (e.g. target/debug)
#
# Makes a temporary licensed TESSERA_HOME (scripts/licensed-home.sh) and removes everything
# it made on exit, failed or not. Needs python3 with venv and pytest (scripts/install-deps.sh).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BIN_DIR" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "$1" && pwd)
if [ ! -f "$BIN/libtessera.so" ]; then
    echo "test-python: $BIN/libtessera.so is missing (cargo build --lib)" >&2
    exit 1
fi

WORK=$(mktemp -d -t tessera-python.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# No discovery broadcasts onto the network, no license server from the caller's environment.
export TESSERA_DISCOVERY=off
unset TESSERA_SERVERS PYTHONPATH
# Nothing written into the work tree (bytecode, pytest's cache).
export PYTHONDONTWRITEBYTECODE=1

step() { printf '\n== %s\n' "$*"; }

step "licensed TESSERA_HOME (products 1, 2, 3 of the demo publisher)"
"$ROOT/scripts/licensed-home.sh" "$BIN" "$WORK/home"
export TESSERA_HOME="$WORK/home"
export TESSERA_LIBRARY="$BIN/libtessera.so"
export TESSERA_BIN_DIR="$BIN"

cd "$ROOT"

step "pytest bindings/python/tests"
python3 -m pytest -q -p no:cacheprovider bindings/python/tests

step "examples/python/quickstart.py"
PYTHONPATH="$ROOT/bindings/python/src" python3 examples/python/quickstart.py

step "pip install ./bindings/python into a fresh venv"
python3 -m venv "$WORK/venv"
# pip builds a local directory in place (build/, *.egg-info); install from a copy of it so
# that nothing is written into the work tree.
mkdir -p "$WORK/src"
cp -r bindings/python "$WORK/src/python"
rm -rf "$WORK/src/python/build" "$WORK/src/python/src/"*.egg-info "$WORK/src/python/src/tessera/libtessera.so"*
"$WORK/venv/bin/python" -m pip install --quiet "$WORK/src/python"
# From outside the tree, with the library found through TESSERA_LIBRARY.
(
    cd "$WORK"
    "$WORK/venv/bin/python" - "$WORK/venv" <<'EOF'
import os
import sys
from pathlib import Path

import tessera

venv = Path(sys.argv[1]).resolve()
where = Path(tessera.__file__).resolve()
assert venv in where.parents, f"tessera imported from {where}, not from the venv {venv}"
assert (where.parent / "py.typed").is_file(), "py.typed is not installed"
assert tessera.library_path == os.environ["TESSERA_LIBRARY"], tessera.library_path
assert tessera.library_abi_version() == tessera.ABI_VERSION
print(f"import tessera: ok ({where.parent}, library {tessera.library_path}, {tessera.library_version()})")
EOF
)
"$WORK/venv/bin/python" examples/python/quickstart.py >/dev/null
echo "examples/python/quickstart.py on the installed package: ok"

step "the platform wheel (scripts/test-wheel.sh)"
"$ROOT/scripts/test-wheel.sh" "$BIN"

printf '\ntest-python: all Python checks passed\n'
