#!/usr/bin/env bash
# Debian packages from the built tree, with dpkg-deb: `make install-files` stages everything
# under /usr (Debian's directories), and each package takes its part of the stage:
#
#   libtessera0      the shared library (libtessera.so.0 and the file it points to)
#   libtessera-dev   headers, the libtessera.so link, libtessera.a, tessera.pc, CMake config
#   tessera          tessera, tessera-vendor, tessera-dongle
#   tessera-server   tessera-server, its systemd unit, /etc/tessera/server.toml (a conffile)
#
# Depends come from dpkg-shlibdeps (the libraries each ELF file needs, with the versions
# their symbols need). Usage: scripts/make-deb.sh [target/release] [target/deb]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REL=$(cd "${1:-target/release}" && pwd)
OUT=$(mkdir -p "${2:-target/deb}" && cd "${2:-target/deb}" && pwd)
cd "$ROOT"

VERSION=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
DEBVERSION="$VERSION-1"
ARCH=$(dpkg-architecture -qDEB_HOST_ARCH)
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
MAINTAINER=${DEB_MAINTAINER:-Tessera maintainers <maintainers@tessera.invalid>}
HOMEPAGE=${DEB_HOMEPAGE:-https://github.com/tessera-licensing/tessera}
# dpkg-deb's compression (xz, as Debian's archive has it; tests take gzip: faster to build).
COMPRESS=${DEB_COMPRESS:--Zxz}
# Reproducible: the dates in the packages are the last commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

first=$(git log --reverse --format=%cd --date=format:%Y 2>/dev/null | sed -n 1p)
last=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
YEARS=${first:-$last}; [ "$YEARS" = "$last" ] || YEARS="$YEARS-$last"

WORK=$(mktemp -d -t tessera-deb.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/stage"
LIB="usr/lib/$MULTIARCH"

make -s --no-print-directory install-files REL="$REL" DESTDIR="$STAGE" PREFIX=/usr \
    LIBDIR="/usr/lib/$MULTIARCH" SYSCONFDIR=/etc SYSTEMDUNITDIR=/lib/systemd/system \
    DOCDIR=/usr/share/doc/tessera-server >/dev/null

# dpkg-shlibdeps reads debian/control from its working directory.
mkdir -p "$WORK/shlibs/debian"
printf 'Source: tessera\n\nPackage: tessera\nArchitecture: any\n' > "$WORK/shlibs/debian/control"
shlibdeps() { # ELF files (absolute) -> "libc6 (>= 2.34), ..."
    local deps
    deps=$(cd "$WORK/shlibs" && dpkg-shlibdeps -O -xlibtessera0 "$@" 2>"$WORK/shlibs/err" \
        | sed -n 's/^shlibs:Depends=//p')
    if [ -z "$deps" ]; then
        echo "make-deb: dpkg-shlibdeps found no dependencies for $*" >&2
        cat "$WORK/shlibs/err" >&2
        return 1
    fi
    echo "$deps"
}

# move PKG PATH...: PATH (relative to the stage) into PKG's tree.
move() {
    local pkg=$1; shift
    for p in "$@"; do
        mkdir -p "$WORK/$pkg/$(dirname "$p")"
        mv "$STAGE/$p" "$WORK/$pkg/$p"
    done
}

# docs PKG: copyright and changelog, as Debian policy wants them in every package.
docs() {
    local d="$WORK/$1/usr/share/doc/$1"
    mkdir -p "$d"
    cat > "$d/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tessera
Source: $HOMEPAGE

Files: *
Copyright: $YEARS the Tessera authors
License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
    printf '%s (%s) unstable; urgency=medium\n\n  * Built from the Tessera source tree (make deb).\n\n -- %s  %s\n' \
        "$1" "$DEBVERSION" "$MAINTAINER" "$(date -R -u -d "@$SOURCE_DATE_EPOCH")" \
        | gzip -9n > "$d/changelog.Debian.gz"
}

# control PKG SECTION DEPENDS [FIELD: VALUE lines] < description
control() {
    local pkg=$1 section=$2 depends=$3; shift 3
    mkdir -p "$WORK/$pkg/DEBIAN"
    {
        echo "Package: $pkg"
        echo "Version: $DEBVERSION"
        echo "Architecture: $ARCH"
        echo "Maintainer: $MAINTAINER"
        echo "Installed-Size: $(du -sk --exclude=DEBIAN "$WORK/$pkg" | cut -f1)"
        [ -n "$depends" ] && echo "Depends: $depends"
        for f in "$@"; do echo "$f"; done
        echo "Section: $section"
        echo "Priority: optional"
        echo "Homepage: $HOMEPAGE"
        cat   # Description: summary, then the extended description (" "-indented)
    } > "$WORK/$pkg/DEBIAN/control"
    (cd "$WORK/$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' \
        | sort -z | xargs -0 -r md5sum) > "$WORK/$pkg/DEBIAN/md5sums"
}

build() {
    find "$WORK/$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    dpkg-deb --root-owner-group $COMPRESS --build "$WORK/$1" "$OUT/${1}_${DEBVERSION}_$ARCH.deb" >/dev/null
    echo "make-deb: $OUT/${1}_${DEBVERSION}_$ARCH.deb"
}

rm -f "$OUT"/*.deb

# libtessera0
move libtessera0 "$LIB/libtessera.so.$VERSION" "$LIB/libtessera.so.0"
chmod 0644 "$WORK/libtessera0/$LIB/libtessera.so.$VERSION"   # Debian policy 8.1
docs libtessera0
deps=$(shlibdeps "$WORK/libtessera0/$LIB/libtessera.so.$VERSION")
control libtessera0 libs "$deps" \
    "Multi-Arch: same" <<'EOF'
Description: Tessera licensing runtime (shared library)
 Tessera is a licensing runtime for software publishers: a protected
 application acquires a seat of a product from a USB dongle, a software
 container activated for this machine, or a license server, and encrypts
 and decrypts its data with keys that never leave the container.
 .
 This package holds the C-ABI shared library, libtessera.so.0.
EOF
echo "libtessera 0 libtessera0 (>= $VERSION)" > "$WORK/libtessera0/DEBIAN/shlibs"
echo "activate-noawait ldconfig" > "$WORK/libtessera0/DEBIAN/triggers"
build libtessera0

# libtessera-dev
move libtessera-dev "$LIB/libtessera.so" "$LIB/libtessera.a" "$LIB/pkgconfig" "$LIB/cmake" \
    usr/include
docs libtessera-dev
control libtessera-dev libdevel "libtessera0 (= $DEBVERSION)" \
    "Suggests: libudev-dev, libtss2-dev" "Multi-Arch: same" <<'EOF'
Description: Tessera licensing runtime (development files)
 Tessera is a licensing runtime for software publishers: a protected
 application acquires a seat of a product from a USB dongle, a software
 container activated for this machine, or a license server.
 .
 This package holds the C header tessera.h, the C++ header tessera.hpp, the
 static library (linking it needs libudev-dev and libtss2-dev), the
 pkg-config file and the CMake package configuration (find_package(Tessera)).
EOF
build libtessera-dev

# tessera
move tessera usr/bin/tessera usr/bin/tessera-vendor usr/bin/tessera-dongle
docs tessera
deps=$(shlibdeps "$WORK"/tessera/usr/bin/*)
control tessera utils "$deps" \
    "Recommends: fuse3" <<'EOF'
Description: command-line tools of the Tessera licensing runtime
 Tessera is a licensing runtime for software publishers.
 .
 tessera: host identity, activation, the containers and licenses on this
 machine, license-server administration. tessera-vendor: the publisher's
 tool (keys, licenses, activation, dongle programming, file encryption).
 tessera-dongle: the virtual USB dongle (its mass-storage mode needs fuse3).
EOF
build tessera

# tessera-server
move tessera-server usr/bin/tessera-server lib/systemd/system/tessera-server.service \
    etc/tessera/server.toml usr/share/doc/tessera-server/SERVER.md
docs tessera-server
deps=$(shlibdeps "$WORK/tessera-server/usr/bin/tessera-server")
control tessera-server net "$deps" \
    "Recommends: tessera" <<'EOF'
Description: Tessera licensing runtime (license server)
 Tessera is a licensing runtime for software publishers.
 .
 tessera-server counts seats for clients on the network, for the software
 containers and dongles of its machine. It comes with a systemd unit
 (tessera-server.service, not enabled on installation) and its
 configuration, /etc/tessera/server.toml.
EOF
echo /etc/tessera/server.toml > "$WORK/tessera-server/DEBIAN/conffiles"
cat > "$WORK/tessera-server/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
# The unit is not enabled: the server needs a container first (docs/SERVER.md).
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
EOF
cat > "$WORK/tessera-server/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
EOF
chmod 0755 "$WORK/tessera-server/DEBIAN/postinst" "$WORK/tessera-server/DEBIAN/postrm"
build tessera-server

# Nothing staged is left out of a package.
left=$(find "$STAGE" -type f -o -type l)
if [ -n "$left" ]; then
    echo "make-deb: staged but in no package:" >&2
    echo "$left" >&2
    exit 1
fi
