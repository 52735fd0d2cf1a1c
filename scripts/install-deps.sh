#!/usr/bin/env bash
# Installs what building and testing Tessera needs and this machine lacks (Debian).
# Idempotent: does nothing when everything is there.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have cc || need+=(gcc)
have c++ || need+=(g++)
have make || need+=(make)
have nm || need+=(binutils)
have readelf || need+=(binutils)
have pkg-config || need+=(pkg-config)
have fusermount3 || need+=(fuse3)   # the virtual dongle's mass-storage volume
have ip || need+=(iproute2)         # network namespaces for the license-server tests

if ((${#need[@]})); then
    echo "install-deps: installing ${need[*]}"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "install-deps: rustfmt and clippy are needed (rustup component add rustfmt clippy)" >&2
    rustup component add rustfmt clippy
fi
