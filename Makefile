# Tessera: the two set-up commands are `make demo` and `make test`.
# Installation directories, named and nested as the GNU coding standards have them (each can
# be given on the command line: `make install PREFIX=/opt/tessera DESTDIR=/tmp/stage`).
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
DATADIR ?= $(PREFIX)/share
DOCDIR  ?= $(DATADIR)/doc/tessera
# /usr's configuration lives in /etc (as meson and Debian have it), any other prefix's in
# PREFIX/etc.
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
# systemd reads units from /usr/local/lib/systemd/system and /usr/lib/systemd/system; units
# under another prefix are made known with `systemctl link`.
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
# Installed programs and libraries are stripped of their debug information (STRIP=true keeps
# it: `make install STRIP=true`).
STRIP   ?= strip
CARGO   ?= cargo
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
MAJOR   := $(firstword $(subst ., ,$(VERSION)))
REL     := target/release
# No discovery broadcasts onto the real network from tests (see .cargo/config.toml).
export TESSERA_DISCOVERY := off
# cargo on the real clock even when make runs under libfaketime (`faketime '+400 days' make
# test`): rustc cannot run under it; the test binaries still get the moved clock.
RCARGO  := scripts/real-clock $(CARGO)

.PHONY: all build demo test test-shifted-clock test-bindings test-packages model-check deps lint miri bench fuzz header install install-files install-lib install-tools install-server deb deb-files clean

all: build

## build: the library (cdylib, staticlib, rlib) and the binaries, optimized
build:
	$(RCARGO) build --release --quiet
	ln -sf libtessera.so $(REL)/libtessera.so.$(MAJOR)

## demo: a demo publisher, a software container in a temporary TESSERA_HOME, and the C
## quickstart acquiring a seat, encrypting, decrypting, releasing
demo: deps build
	scripts/demo.sh $(REL)

## deps: installs what the build and the tests need and is missing (apt-get)
deps:
	scripts/install-deps.sh

## test: every test suite, after installing what is missing; the Rust tests run again
## with the clock moved ahead and onto a month's last day (README, "Tests")
test: deps lint
	$(RCARGO) build --all-targets
	$(RCARGO) test
	scripts/test-shifted-clock.sh
	$(MAKE) miri
	$(MAKE) test-bindings
	scripts/test-packages.sh target/debug

## test-shifted-clock: the Rust test binaries under libfaketime, 400 days ahead and across
## a month's end
test-shifted-clock:
	scripts/test-shifted-clock.sh

## test-bindings: the Python (pytest) and C# (NUnit) suites against the debug library
test-bindings:
	scripts/test-python.sh target/debug
	scripts/test-csharp.sh target/debug

## test-packages: `make deb`, then the packages installed with dpkg into a fresh Debian root
## (debootstrap, cached under target/debootstrap/): the C quickstart built there against the
## installed -dev package, a demo publisher's container, and the installed server started
## from its unit's ExecStart line and answering. `make test` runs it on the debug build.
test-packages: deps
	$(MAKE) --no-print-directory build
	scripts/test-packages.sh $(REL)

## model-check: the nightly model check of seat counting (tests/model.rs): 100,000 cases
## of the server's seat table and store, 25,000 of the group committer, 1,000 of local
## seats with real processes, each compared step by step with a reference model (`make
## test` runs 2,000, 500 and 64); figures in docs/BENCHMARKS.md, "Model check"
MODEL_CASES         ?= 100000
MODEL_PROCESS_CASES ?= 1000
model-check:
	TESSERA_MODEL_CASES=$(MODEL_CASES) TESSERA_MODEL_PROCESS_CASES=$(MODEL_PROCESS_CASES) \
		$(RCARGO) test --test model -- --nocapture

## miri: the unit tests of the handle table and of the library's unsafe code that Miri can
## run (docs/TESTING.md lists every unsafe block and where it is checked), on nightly, in
## target/miri. A lean build (--no-default-features: no server, TPM or FUSE crates) keeps
## a cold run short. Wholly on the real clock, even under `faketime ... make test`: Miri
## runs the tests isolated, on a clock of its own, and scripts/real-clock's test runner
## would take the place of Miri's.
MIRI_TESTS := ffi:: dongle::msd::tests::an_aligned_buffer
miri:
	env -u LD_PRELOAD -u FAKETIME $(CARGO) +nightly miri test --lib --no-default-features -- $(MIRI_TESTS)

lint:
	$(RCARGO) fmt --check
	$(RCARGO) clippy --all-targets --quiet -- -D warnings

## bench: criterion benches (figures go to docs/BENCHMARKS.md by hand, with the machine)
bench: deps
	$(CARGO) bench --bench runtime

## fuzz: every cargo-fuzz target (fuzz/) for FUZZ_SECONDS (default 60) each, under
## AddressSanitizer (FUZZ_SANITIZER=none is faster); needs nightly, installs cargo-fuzz if
## missing. Not part of `make test` (its seeds and regressions are: tests/fuzz_corpus.rs).
fuzz:
	scripts/fuzz.sh

## header: regenerates include/tessera.h with the pinned cbindgen
header:
	TESSERA_BLESS_HEADER=1 $(CARGO) test --quiet --test header header_is_fresh

## install: library (with its soname links), headers, pkg-config file and CMake package
## config, the tools (tessera, tessera-vendor, tessera-server, tessera-dongle), the server's
## systemd unit and configuration, under PREFIX (DESTDIR for staging), stripped.
## install-files installs what REL holds already (in three parts: install-lib, install-tools,
## install-server).
CMAKEDIR ?= $(LIBDIR)/cmake/Tessera
MINOR   := $(word 2,$(subst ., ,$(VERSION)))
PTR_BYTES := $(shell echo $$(( $$(getconf LONG_BIT) / 8 )))
TOOLS   := tessera tessera-vendor tessera-server tessera-dongle
# The CMake config finds the library and headers relative to itself (a movable tree), and
# so does the pkg-config file (relative to ${pcfiledir}).
LIB_REL := $(shell realpath -m --relative-to=$(CMAKEDIR) $(LIBDIR))
INC_REL := $(shell realpath -m --relative-to=$(CMAKEDIR) $(INCDIR))
PC_PREFIX_REL := $(shell realpath -m --relative-to=$(LIBDIR)/pkgconfig $(PREFIX))
PC_LIB_REL := $(shell realpath -m --relative-to=$(LIBDIR)/pkgconfig $(LIBDIR))
PC_INC_REL := $(shell realpath -m --relative-to=$(LIBDIR)/pkgconfig $(INCDIR))
SUBST   := -e 's|@PREFIX@|$(PREFIX)|g; s|@LIBDIR@|$(LIBDIR)|g; s|@INCDIR@|$(INCDIR)|g' \
           -e 's|@BINDIR@|$(BINDIR)|g; s|@SYSCONFDIR@|$(SYSCONFDIR)|g; s|@DOCDIR@|$(DOCDIR)|g' \
           -e 's|@VERSION@|$(VERSION)|g; s|@MAJOR@|$(MAJOR)|g; s|@MINOR@|$(MINOR)|g' \
           -e 's|@PC_PREFIX_REL@|$(PC_PREFIX_REL)|g; s|@PC_LIB_REL@|$(PC_LIB_REL)|g; s|@PC_INC_REL@|$(PC_INC_REL)|g' \
           -e 's|@LIB_REL@|$(LIB_REL)|g; s|@INC_REL@|$(INC_REL)|g; s|@SIZEOF_VOID_P@|$(PTR_BYTES)|g'

# Built first, then installed (also under make -j).
install: build
	$(MAKE) --no-print-directory install-files

install-files: install-lib install-tools install-server
	@echo "installed libtessera $(VERSION) and the tools under $(DESTDIR)$(PREFIX)"

install-lib:
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(CMAKEDIR)
	install -m 0755 $(REL)/libtessera.so $(DESTDIR)$(LIBDIR)/libtessera.so.$(VERSION)
	$(STRIP) --strip-unneeded $(DESTDIR)$(LIBDIR)/libtessera.so.$(VERSION)
	ln -sf libtessera.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libtessera.so.$(MAJOR)
	ln -sf libtessera.so.$(MAJOR) $(DESTDIR)$(LIBDIR)/libtessera.so
	install -m 0644 $(REL)/libtessera.a $(DESTDIR)$(LIBDIR)/libtessera.a
	$(STRIP) --strip-debug $(DESTDIR)$(LIBDIR)/libtessera.a
	install -m 0644 include/tessera.h $(DESTDIR)$(INCDIR)/tessera.h
	install -m 0644 include/tessera.hpp $(DESTDIR)$(INCDIR)/tessera.hpp
	sed $(SUBST) tessera.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/tessera.pc
	sed $(SUBST) cmake/TesseraConfig.cmake.in > $(DESTDIR)$(CMAKEDIR)/TesseraConfig.cmake
	sed $(SUBST) cmake/TesseraConfigVersion.cmake.in > $(DESTDIR)$(CMAKEDIR)/TesseraConfigVersion.cmake

install-tools:
	install -d $(DESTDIR)$(BINDIR)
	for t in $(TOOLS); do \
		install -m 0755 $(REL)/$$t $(DESTDIR)$(BINDIR)/$$t && $(STRIP) $(DESTDIR)$(BINDIR)/$$t || exit 1; \
	done

# The server's unit, configuration and documentation (its program: install-tools).
install-server:
	install -d $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSCONFDIR)/tessera $(DESTDIR)$(DOCDIR)
	sed $(SUBST) systemd/tessera-server.service.in > $(DESTDIR)$(SYSTEMDUNITDIR)/tessera-server.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/tessera-server.service
	@# An existing configuration is the admin's: never overwritten (the new one goes beside it).
	if [ -e $(DESTDIR)$(SYSCONFDIR)/tessera/server.toml ]; then \
		install -m 0644 systemd/server.toml $(DESTDIR)$(SYSCONFDIR)/tessera/server.toml.new; \
	else \
		install -m 0644 systemd/server.toml $(DESTDIR)$(SYSCONFDIR)/tessera/server.toml; \
	fi
	install -m 0644 docs/SERVER.md $(DESTDIR)$(DOCDIR)/SERVER.md

## deb: Debian packages (libtessera0, libtessera-dev, tessera, tessera-server) in target/deb,
## built with dpkg-deb from trees staged by `make install-files` (scripts/make-deb.sh)
deb: build
	$(MAKE) --no-print-directory deb-files

deb-files:
	scripts/make-deb.sh $(REL) target/deb

clean:
	$(CARGO) clean

## wheel: the Python binding's platform wheel, libtessera inside, in target/packages
## (tessera-VERSION-py3-none-manylinux_2_N_x86_64.whl; README, "Python"). PKG_LIB is the
## directory of the library to package: target/release (built first) unless given, e.g.
## `make wheel PKG_LIB=target/debug`. Tested by scripts/test-wheel.sh (make test-bindings).
## nupkg: the C# binding's NuGet package, Tessera.VERSION.nupkg in target/packages
## (Tessera.dll for netstandard2.0, libtessera.so for linux-x64; README, "C#"), with
## Debian's nuget. Tested by scripts/test-nupkg.sh (make test-bindings).
PKG_LIB ?= $(REL)
PKG_OUT ?= target/packages
.PHONY: wheel nupkg
wheel: $(if $(filter $(REL),$(PKG_LIB)),build)
	scripts/build-wheel.sh $(PKG_LIB) $(PKG_OUT)
nupkg: $(if $(filter $(REL),$(PKG_LIB)),build)
	scripts/build-nupkg.sh $(PKG_LIB) $(PKG_OUT)
