#!/usr/bin/env bash
# The Debian packages on a fresh Debian: builds them (scripts/make-deb.sh), installs them
# with `dpkg -i` into a new bookworm root (debootstrap --variant=minbase, plus gcc and
# pkg-config), and there, with only the installed files:
#   - builds the C quickstart with `pkg-config --cflags --libs tessera` (libtessera-dev) and
#     runs it against a software container the installed tools made for a demo publisher;
#   - starts tessera-server with its installed unit's ExecStart line (no systemd in a chroot)
#     and checks that `tessera admin status` answers and that a client with no container of
#     its own gets a seat from it.
# The root runs in its own PID, mount and network namespaces (unshare): its mounts and
# processes end with it and its server listens on the namespace's loopback only.
#
# The root, once made, is kept as a tarball under target/debootstrap/ (a second run unpacks
# it in seconds); a root made by hand can be given as TESSERA_DEB_ROOT_TARBALL.
# Usage: scripts/test-packages.sh [target/release]   (as root: debootstrap, chroot, unshare)
set -euo pipefail
# On the real clock: under libfaketime moved ahead apt finds the package lists expired.
case "${LD_PRELOAD:-}" in *faketime*) exec "$(dirname "$0")/real-clock" "$0" "$@" ;; esac

# In the namespaces (the script calls itself): the root becomes the namespace's "/" by
# pivot_root (not a chroot, which the runtime refuses: a process root that is not a mount
# could hide a faked fingerprint, src/host/mounts.rs), with a proc, a sysfs, the device
# nodes, and a /dev/shm and /dev/pts of its own; then STEP runs there.
if [ "${1:-}" = --inside ]; then
    R=$2 STEP=$3
    [ "${4:-}" = --own-net ] && ip link set lo up
    mount --bind "$R" "$R"
    mount -t proc proc "$R/proc"
    mount -t sysfs sysfs "$R/sys"
    mount --bind /dev "$R/dev"
    mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
    mkdir -p "$R/.old-root"
    cd "$R"
    pivot_root . .old-root
    exec chroot . /bin/sh -c 'umount -l /.old-root && rmdir /.old-root && exec /bin/bash -euo pipefail "$0"' "$STEP"
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REL=$(cd "${1:-target/release}" && pwd)
SELF="$ROOT/scripts/test-packages.sh"
CACHE="$ROOT/target/debootstrap"
SUITE=bookworm
START=$(date +%s)
log() { printf 'test-packages: %s (%d s)\n' "$*" $(($(date +%s) - START)); }

if [ "$(id -u)" -ne 0 ]; then
    echo "test-packages: needs root (debootstrap, chroot, namespaces)" >&2
    exit 1
fi
for tool in debootstrap dpkg-deb dpkg-shlibdeps unshare; do
    command -v "$tool" >/dev/null || { echo "test-packages: $tool is missing (make deps)" >&2; exit 1; }
done

WORK=$(mktemp -d -t tessera-pkgtest.XXXXXX)
R="$WORK/root"
# The namespaces take their mounts with them; --one-file-system keeps rm off anything a
# mount left behind all the same.
trap 'rm -rf --one-file-system "$WORK"' EXIT

# run [--net] STEP: STEP (a script inside the root) in fresh namespaces; with --net on this
# machine's network (apt), else on a loopback of its own.
run() {
    if [ "$1" = --net ]; then
        unshare --fork --pid --mount --propagation private -- "$SELF" --inside "$R" "$2"
    else
        unshare --fork --pid --mount --net --propagation private -- "$SELF" --inside "$R" "$1" --own-net
    fi
}

log "building the packages from $REL"
DEB_COMPRESS="-Zgzip -z1" "$ROOT/scripts/make-deb.sh" "$REL" "$WORK/debs"
DEBS=("$WORK"/debs/*.deb)
((${#DEBS[@]} == 4)) || { echo "test-packages: expected 4 packages, got ${DEBS[*]}" >&2; exit 1; }

# What the packages need from Debian, installed in the cached root beforehand.
deps=$(for d in "${DEBS[@]}"; do dpkg-deb -f "$d" Depends; done | tr ',' '\n' \
    | sed 's/|.*//; s/(.*//; s/ //g' | grep -v -e '^$' -e '^libtessera' -e '^tessera' | sort -u | tr '\n' ' ')
EXTRA="gcc libc6-dev pkg-config $deps"
# The mirror apt uses here (deb822 sources, else sources.list), else Debian's own.
MIRROR=${DEBOOTSTRAP_MIRROR:-$( { sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources
    sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' /etc/apt/sources.list; } 2>/dev/null \
    | grep -v security | sed -n 1p || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
key=$(printf '%s\n' "$SUITE" "$MIRROR" "$EXTRA" | sha256sum | cut -c1-12)
TARBALL=${TESSERA_DEB_ROOT_TARBALL:-$CACHE/$SUITE-minbase-$key.tar.gz}

mkdir -p "$R"
if [ ! -f "$TARBALL" ]; then
    log "no cached root: debootstrap --variant=minbase $SUITE from $MIRROR, then $EXTRA"
    unshare --mount --propagation private -- \
        debootstrap --variant=minbase "$SUITE" "$R" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -30 "$WORK/debootstrap.log" >&2; exit 1; }
    cp /etc/resolv.conf "$R/etc/resolv.conf"
    cat > "$R/root/prepare.sh" <<EOF
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $EXTRA >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/* /root/prepare.sh
EOF
    run --net /root/prepare.sh
    mkdir -p "$CACHE"
    rm -f "$CACHE/$SUITE"-minbase-*.tar.gz   # roots for other package lists
    tar -C "$R" --numeric-owner -I 'gzip -1' -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    log "root cached in $TARBALL ($(du -h "$TARBALL" | cut -f1))"
else
    tar -C "$R" --numeric-owner -xzf "$TARBALL"
    log "root unpacked from $TARBALL"
fi

mkdir -p "$R/root/debs"
cp "${DEBS[@]}" "$R/root/debs/"
cp "$ROOT/examples/c/quickstart.c" "$R/root/quickstart.c"
cp /etc/resolv.conf "$R/etc/resolv.conf"

# dpkg -i; only if Debian's packages changed since the root was cached does apt fetch
# what is missing.
cat > "$R/root/install.sh" <<'EOF'
if ! dpkg -i /root/debs/*.deb; then
    echo "dpkg -i: dependencies missing from the root; apt-get -f install"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -f -y -qq --no-install-recommends
fi
dpkg -s libtessera0 libtessera-dev tessera tessera-server | grep -c '^Status: install ok installed' | grep -qx 4
EOF
run --net /root/install.sh
log "packages installed"

cat > "$R/root/check.sh" <<'EOF'
cd /root
say() { printf '\n== %s\n' "$*"; }
expect() { grep -q -- "$1" "$2" || { echo "expected \"$1\" in $2:"; cat "$2"; exit 1; }; }

say "the installed files are where the packages put them"
for f in /usr/bin/tessera /usr/bin/tessera-vendor /usr/bin/tessera-dongle /usr/bin/tessera-server \
         /etc/tessera/server.toml /lib/systemd/system/tessera-server.service \
         /usr/include/tessera.h /usr/include/tessera.hpp; do
    [ -e "$f" ] || { echo "$f is missing"; exit 1; }
done
expect /etc/tessera/server.toml /var/lib/dpkg/info/tessera-server.conffiles

say "the C quickstart, built with pkg-config against libtessera-dev"
cc -std=c11 -Wall -Wextra -Werror quickstart.c -o quickstart $(pkg-config --cflags --libs tessera)
ldd ./quickstart > ldd.txt
cat ldd.txt
expect "libtessera.so.0 => /lib/.*-linux-gnu/libtessera.so.0\|libtessera.so.0 => /usr/lib/.*-linux-gnu/libtessera.so.0" ldd.txt

say "a demo publisher's software container, made with the installed tools"
tessera-vendor keygen --demo --out demo.key
tessera activate request --vendor-id 32341 --out request.bin
tessera-vendor activate --key demo.key --request request.bin --product 1 --name "Demo Product" \
    --features 0xff --quantity 2 --unit process --exclusive --days 365 --out activation.bin
tessera activate install activation.bin
tessera list | tee list.txt
expect "Demo Product" list.txt

say "the quickstart on the local container (/var/lib/tessera)"
./quickstart | tee local.txt
expect "quickstart: all steps succeeded" local.txt

say "tessera-server started as its unit starts it"
exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/tessera-server.service)
echo "ExecStart=$exec_start"
case "$exec_start" in /usr/bin/tessera-server" "*) ;; *) echo "unexpected ExecStart"; exit 1 ;; esac
$exec_start > server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
# Up when the admin API answers; a server that exits ends the wait, and 10 minutes is a
# hang guard, not a speed check.
tries=0
until tessera admin status > status.txt 2>&1; do
    kill -0 $server 2>/dev/null || { echo "tessera-server exited:"; cat server.log; exit 1; }
    tries=$((tries + 1))
    [ $tries -lt 3000 ] || { echo "tessera-server never answered:"; cat server.log status.txt; exit 1; }
    sleep 0.2
done
cat status.txt
expect "hosting: *1 container(s), 1 license(s)" status.txt

say "a client with no container of its own gets its seat from the server"
mkdir -p client-home
TESSERA_HOME=/root/client-home TESSERA_SERVERS=127.0.0.1 ./quickstart | tee network.txt
expect "quickstart: all steps succeeded" network.txt
tessera admin status > status2.txt
requests=$(sed -n 's/^requests: *\([0-9]*\).*/\1/p' status2.txt)
[ "${requests:-0}" -gt 0 ] || { echo "the server counted no request:"; cat status2.txt; exit 1; }

kill -TERM $server
wait $server || true
echo "packages: all checks passed"
EOF
run /root/check.sh
log "done"
