#!/usr/bin/env bash
# The main job on an embedded default: the demo publisher activates a software container
# in a temporary TESSERA_HOME, and the C quickstart acquires a seat, encrypts, decrypts and
# releases. Usage: scripts/demo.sh [target/release]
set -euo pipefail

BIN=$(cd "${1:-target/release}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d -t tessera-demo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export TESSERA_HOME="$WORK/home"
VENDOR=32341   # 0x7E55, the demo publisher

step() { printf '\n== %s\n' "$*"; }

step "publisher: the demo key (public, insecure: for examples only)"
"$BIN/tessera-vendor" keygen --demo --out "$WORK/demo.key"

step "end user: what this machine is"
"$BIN/tessera" info

step "end user: activation request for vendor $VENDOR"
"$BIN/tessera" activate request --vendor-id "$VENDOR" --out "$WORK/request.bin"

step "publisher: activation with a license for product 1 (2 seats per process)"
"$BIN/tessera-vendor" activate --key "$WORK/demo.key" --request "$WORK/request.bin" \
    --product 1 --name "Demo Product" --features 0xff --quantity 2 --unit process \
    --exclusive --days 365 --out "$WORK/activation.bin"

step "end user: install the activation"
"$BIN/tessera" activate install "$WORK/activation.bin"
"$BIN/tessera" list

step "the protected app: examples/c/quickstart.c"
mkdir -p "$WORK/lib"
cp "$BIN/libtessera.so" "$WORK/lib/libtessera.so"
ln -sf libtessera.so "$WORK/lib/libtessera.so.0"
cc -std=c11 -Wall -Wextra -Wpedantic -Werror -I"$ROOT/include" \
    "$ROOT/examples/c/quickstart.c" -o "$WORK/quickstart" \
    -L"$WORK/lib" -ltessera -Wl,-rpath,"$WORK/lib"
"$WORK/quickstart"

step "publisher: the same ciphertext format opens with the publisher's tool"
printf 'a file only licensed users can read\n' > "$WORK/plain.txt"
"$BIN/tessera-vendor" encrypt-file --key "$WORK/demo.key" --product 1 "$WORK/plain.txt" "$WORK/plain.tsx"
"$BIN/tessera-vendor" decrypt-file --key "$WORK/demo.key" "$WORK/plain.tsx" "$WORK/back.txt"
cmp "$WORK/plain.txt" "$WORK/back.txt"
echo "decrypt-file: round trip matches"

printf '\ndemo: done (TESSERA_HOME %s removed)\n' "$TESSERA_HOME"
