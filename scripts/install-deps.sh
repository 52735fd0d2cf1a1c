#!/usr/bin/env bash
# Installs what building and testing Tessera needs and this machine lacks (Debian).
# Idempotent: does nothing when everything is there.
set -euo pipefail
# apt-get on the real clock: under libfaketime moved ahead it finds the package lists expired.
case "${LD_PRELOAD:-}" in *faketime*) exec "$(dirname "$0")/real-clock" "$0" "$@" ;; esac

need=()
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
have() { command -v "$1" >/dev/null 2>&1; }
have cc || need+=(gcc)
have c++ || need+=(g++)
have make || need+=(make)
have nm || need+=(binutils)
have readelf || need+=(binutils)
have pkg-config || need+=(pkg-config)
pkg-config --exists libudev 2>/dev/null || need+=(libudev-dev)   # libusb (rusb) and the static library
have fusermount3 || need+=(fuse3)   # the virtual dongle's mass-storage volume
have ip || need+=(iproute2)         # network namespaces for the license-server tests
have faketime || need+=(faketime)   # the tests again under a shifted clock (test-shifted-clock.sh)
have cmake || need+=(cmake)         # the install test's find_package(Tessera)
have mcs || need+=(mono-mcs)        # the C# binding and example
have mono || need+=(mono-runtime)
have nunit-console || need+=(nunit-console)
pkg-config --exists nunit 2>/dev/null || need+=(libnunit-cil-dev)   # nunit.framework.dll for mcs
have nuget || need+=(nuget)          # make nupkg: nuget pack of the C# binding (scripts/build-nupkg.sh)
have python3 || need+=(python3 python3-venv python3-pip)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)   # fresh venvs (test-python.sh, build-wheel.sh)
have chromium || need+=(chromium)           # the admin page test (tests/admin_browser.rs)
have chromedriver || need+=(chromium-driver)
have swtpm || need+=(swtpm swtpm-tools)   # a software TPM 2.0 for the TPM-anchored containers' tests
pkg-config --exists tss2-esys 2>/dev/null || need+=(libtss2-dev)   # tss-esapi links the TSS2 ESAPI
have protoc || need+=(protobuf-compiler)   # etcd-client compiles etcd's gRPC protocol files,
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)   # which import these
have etcd || need+=(etcd-server)           # the license-server pool's tests start their own etcd
have etcdctl || need+=(etcd-client)
have openssl || need+=(openssl)          # the pool's TLS test makes its CA and certificates
have dpkg-shlibdeps || need+=(dpkg-dev)   # make deb: the packages' Depends
have debootstrap || need+=(debootstrap)   # the packages' test installs them in a fresh root
have unshare || need+=(util-linux)         # ... run in namespaces of its own

if ((${#need[@]})); then
    echo "install-deps: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# pytest for the Python binding: pip where Python allows it, else Debian's package.
if ! python3 -c 'import pytest' >/dev/null 2>&1; then
    echo "install-deps: installing pytest"
    python3 -m pip install -q pytest 2>/dev/null \
        || { DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pytest; }
fi

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "install-deps: rustfmt and clippy are needed (rustup component add rustfmt clippy)" >&2
    rustup component add rustfmt clippy
fi

# Miri (`make miri`) runs on nightly with the standard library's source.
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "install-deps: installing Miri (nightly toolchain, components miri and rust-src)"
    if rustup toolchain list | grep -q '^nightly'; then
        rustup component add miri rust-src --toolchain nightly
    else
        rustup toolchain install nightly --profile minimal --component miri,rust-src
    fi
fi
