#!/usr/bin/env bash
# Makes a TESSERA_HOME holding software containers of the demo publisher, for the binding
# and example tests. Usage: scripts/licensed-home.sh BIN_DIR HOME_DIR
#
# Products (vendor 0x7E55, the demo publisher; its key is public and protects nothing):
#   1  "Demo Product"   features 0xff,  2 seats per process,  exclusive allowed
#   2  "Single Seat"    features 0xff,  1 seat per handle (a second acquire gets NO_SEAT)
#   3  "Basic Edition"  features 0x01, 10 seats per handle (feature 0x02 is missing)
set -euo pipefail

BIN=$(cd "$1" && pwd)
HOME_DIR=$2
mkdir -p "$HOME_DIR"
export TESSERA_HOME=$HOME_DIR
WORK=$(mktemp -d -t tessera-home.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
VENDOR=32341   # 0x7E55

"$BIN/tessera-vendor" keygen --demo --out "$WORK/demo.key" >/dev/null

activate() {
    "$BIN/tessera" activate request --vendor-id "$VENDOR" --out "$WORK/request.bin" >/dev/null
    "$BIN/tessera-vendor" activate --key "$WORK/demo.key" --request "$WORK/request.bin" \
        --out "$WORK/activation.bin" "$@" >/dev/null
    "$BIN/tessera" activate install "$WORK/activation.bin" >/dev/null
}

activate --product 1 --name "Demo Product" --features 0xff --quantity 2 --unit process --exclusive
activate --product 2 --name "Single Seat" --features 0xff --quantity 1 --unit handle
activate --product 3 --name "Basic Edition" --features 0x01 --quantity 10 --unit handle
