# anamon: build the release agents, install them with the kickstart snippets
# (and, when updates-img builds, updates images) into a Cobbler server tree.
#
#   make                      agents for every architecture this machine can build
#   make install DESTDIR=/x   agents and images under /x, the snippets beside
#                             them and the anamon-cobbler command that
#                             switches Cobbler's snippets to them
#   make check                the snippet tests (ci/snippets/test)
#   make install BUILD=no     install what target/ holds; runs no cargo
#   make install-receiver     anamon-receiver, its systemd unit and sysusers
#                             file, and the Apache snippet (not enabled)
#   make dist                 target/dist/anamon-VERSION.tar.gz (sources and
#                             vendored crates: builds offline) and
#                             anamon-VERSION-binaries.tar.gz (everything built,
#                             as installed, with SHA256SUMS)
#   make rpm                  source and binary RPMs (packaging/anamon.spec)
#                             in target/rpm/, built from the dist tarball
#
# Cobbler's paths are fixed by Cobbler, not by PREFIX: override COBBLER_WWW
# for distributions that serve it elsewhere (openSUSE: /srv/www/cobbler).
# The snippets are never installed over Cobbler's own (its package owns
# pre_anamon and post_anamon): they go to ANAMON_SNIPPETS, and
# `anamon-cobbler enable` switches Cobbler's to them, keeping Cobbler's in
# ANAMON_STATE.

PREFIX            ?= /usr/local
BINDIR            ?= $(PREFIX)/bin
DATADIR           ?= $(PREFIX)/share
COBBLER_SNIPPETS  ?= /var/lib/cobbler/snippets
COBBLER_WWW       ?= /var/www/cobbler
COBBLER_MISC      ?= $(COBBLER_WWW)/misc
ANAMON_SNIPPETS   ?= $(DATADIR)/anamon/snippets
ANAMON_STATE      ?= /var/lib/anamon-cobbler
INSTALL           ?= install
SBINDIR           ?= $(PREFIX)/sbin
UNITDIR           ?= /etc/systemd/system
SYSUSERSDIR       ?= /usr/lib/sysusers.d
DOCDIR            ?= $(PREFIX)/share/doc/anamon
# Manual pages are made from each command's own --help by help2man
# (packaging/man), so they never disagree with the program.
MANDIR            ?= $(DATADIR)/man
# Set by packages for a Cobbler server: the Apache snippet goes into
# Apache's configuration directory (else only to DOCDIR), and the receiver's
# settings file (OPTIONS for the unit: loopback, Cobbler's names) is
# installed there.
APACHE_CONFDIR    ?=
RECEIVER_SYSCONFIG ?=
# Extra cargo flags (packages build with --frozen: vendored, offline).
CARGOFLAGS        ?=
# The receiver is built static (musl) so one build runs on any Linux server.
RECEIVER_TARGET   ?= x86_64-unknown-linux-musl
CARGO             ?= cargo
BUILD             ?= yes

# Installer architecture names (as the snippets ask for them) and the Rust
# target each is built with.
ARCHES        := x86_64 i686 i586 aarch64 ppc64le ppc64 s390x
triple_x86_64  := x86_64-unknown-linux-musl
triple_i686    := i686-unknown-linux-musl
triple_i586    := i586-unknown-linux-musl
triple_aarch64 := aarch64-unknown-linux-musl
triple_ppc64le := powerpc64le-unknown-linux-musl
triple_ppc64   := powerpc64-unknown-linux-musl
triple_s390x   := s390x-unknown-linux-musl

# Targets rustup ships no std for (i586 and powerpc64le musl: its download
# answers 404; s390x musl is tier 3, never built): cargo builds std from the
# rust-src component (-Z build-std, which stable cargo accepts only under
# RUSTC_BOOTSTRAP=1), and the agent links against the C runtime that
# ci/cross/runtime assembles from Debian's musl-dev and rust-src's libunwind.
BUILD_STD := i586-unknown-linux-musl powerpc64le-unknown-linux-musl s390x-unknown-linux-musl
# STRICT=yes: a target that cannot be built here fails make instead of being
# skipped (ci/test builds every architecture).
STRICT    ?= no

# Architectures an updates image is for: the ext2 image serves the loaders of
# RHEL 4-6 (x86 only among our builds), the cpio image dracut installers
# (RHEL 7+: no 32-bit x86 any more; s390x and ppc64 builds need RHEL 7's
# kernel, see README). Only agents that were built go in.
EXT2_ARCHES := x86_64 i686 i586
CPIO_ARCHES := x86_64 aarch64 ppc64le ppc64 s390x

TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# Where the images are built before installation.
IMAGE_DIR  := $(TARGET_DIR)/anamon-images
SYSROOT    := $(shell rustc --print sysroot 2>/dev/null)


# ARCH=TRIPLE words for the shell loops below.
ARCH_TRIPLES := $(foreach a,$(ARCHES),$(a)=$(triple_$(a)))

.PHONY: all agents images install receiver install-receiver check clean

all: agents images

# Two cargo builds, each for several targets at once (cargo then runs the
# targets' final LTO links side by side): the targets with a downloaded std,
# then, under RUSTC_BOOTSTRAP=1, those whose std is built from source (kept
# apart so that the others are built exactly as on any stable toolchain).
# A target that cannot be built here is skipped with a message, so `make`
# works on machines with only some targets; a build that fails fails make
# (and leaves target/ alone). BUILD=no runs no cargo and uses what target/
# holds (ci/snippets/test does, so that it never compiles).
agents:
ifeq ($(BUILD),no)
	@echo "make: BUILD=no: using the agents already in $(TARGET_DIR)"
else
	@set -e; skip() { echo "make: skipping anamon.$$arch: $$*"; [ "$(STRICT)" != yes ] || exit 1; }; \
	plain=; std=; \
	for at in $(ARCH_TRIPLES); do \
	  arch=$${at%%=*}; t=$${at#*=}; \
	  case " $(BUILD_STD) " in \
	  *" $$t "*) \
	    if [ ! -d "$(SYSROOT)/lib/rustlib/src/rust/library" ]; then \
	      skip "std for $$t is built from source: rustup component add rust-src"; continue; fi; \
	    rc=0; rt=$$(ci/cross/runtime $$t) || rc=$$?; \
	    if [ $$rc = 3 ]; then skip "no C runtime for $$t (see above)"; continue; fi; \
	    [ $$rc = 0 ] || { echo "make: ci/cross/runtime $$t failed"; exit 1; }; \
	    echo "make: building anamon.$$arch ($$t, std from rust-src)"; \
	    std="$$std --target $$t"; \
	    export "CARGO_TARGET_$$(echo $$t | tr a-z- A-Z_)_RUSTFLAGS=-C link-self-contained=no -L native=$$rt -C link-arg=$$rt/crt1.o" ;; \
	  *) \
	    if [ ! -d "$(SYSROOT)/lib/rustlib/$$t/lib" ]; then \
	      skip "Rust target $$t is not installed (rustup target add $$t)"; continue; fi; \
	    echo "make: building anamon.$$arch ($$t)"; \
	    plain="$$plain --target $$t" ;; \
	  esac; \
	done; \
	if [ -z "$$plain$$std" ]; then echo "make: no Rust musl target is installed: no agents"; exit 0; fi; \
	if [ -n "$$plain" ]; then \
	  $(CARGO) build $(CARGOFLAGS) --quiet --release $$plain -p anamon || { echo "make: the build of$$plain failed"; exit 1; }; fi; \
	if [ -n "$$std" ]; then \
	  RUSTC_BOOTSTRAP=1 $(CARGO) build $(CARGOFLAGS) --quiet --release $$std -Z build-std=std,panic_abort -p anamon || \
	    { echo "make: the build of$$std failed"; exit 1; }; fi
endif

# anamon-updates.img: ext2, for `updates=` on RHEL 4-6 (agent at
# /tmp/updates/anamon/anamon.ARCH). anamon-updates.cpio.gz: gzip newc cpio,
# for `inst.updates=` on RHEL 7+ (agent at /usr/libexec/anamon/anamon.ARCH).
# The updates-img tool is another crate of this workspace: when it does not
# build (yet), there are simply no images.
images: agents
	@set -e; tool=$(TARGET_DIR)/release/updates-img; \
	rm -f $(IMAGE_DIR)/anamon-updates.img $(IMAGE_DIR)/anamon-updates.cpio.gz; \
	if [ "$(BUILD)" != no ] && ! $(CARGO) build $(CARGOFLAGS) --quiet --release -p updates-img; then \
	  echo "make: updates-img does not build: no updates images"; exit 0; fi; \
	if [ ! -x "$$tool" ]; then echo "make: no updates-img tool: no updates images"; exit 0; fi; \
	mkdir -p $(IMAGE_DIR); \
	for fmt in ext2 cpio; do \
	  if [ $$fmt = ext2 ]; then arches="$(EXT2_ARCHES)"; out=$(IMAGE_DIR)/anamon-updates.img; \
	  else arches="$(CPIO_ARCHES)"; out=$(IMAGE_DIR)/anamon-updates.cpio.gz; fi; \
	  args=; \
	  for at in $(ARCH_TRIPLES); do \
	    arch=$${at%%=*}; bin=$(TARGET_DIR)/$${at#*=}/release/anamon; \
	    case " $$arches " in *" $$arch "*) ;; *) continue ;; esac; \
	    if [ -f "$$bin" ]; then args="$$args --agent $$arch=$$bin"; fi; \
	  done; \
	  rm -f "$$out"; \
	  if [ -z "$$args" ]; then echo "make: no agent for $$out: not built"; continue; fi; \
	  if "$$tool" --format $$fmt --out "$$out" $$args; then echo "make: built $$out"; \
	  else echo "make: updates-img failed for $$out: not installed"; rm -f "$$out"; fi; \
	done

install: all
	$(INSTALL) -d $(DESTDIR)$(ANAMON_SNIPPETS) $(DESTDIR)$(COBBLER_MISC) $(DESTDIR)$(SBINDIR) \
	  $(DESTDIR)$(ANAMON_STATE)/kept $(DESTDIR)$(ANAMON_STATE)/installed
	$(INSTALL) -m 644 snippets/pre_anamon snippets/post_anamon snippets/preseed_early_anamon snippets/preseed_late_anamon $(DESTDIR)$(ANAMON_SNIPPETS)/
	sed -e 's#@COBBLER_SNIPPETS@#$(COBBLER_SNIPPETS)#' -e 's#@ANAMON_SNIPPETS@#$(ANAMON_SNIPPETS)#' \
	  -e 's#@STATE_DIR@#$(ANAMON_STATE)#' snippets/anamon-cobbler >$(DESTDIR)$(SBINDIR)/anamon-cobbler
	chmod 755 $(DESTDIR)$(SBINDIR)/anamon-cobbler
	$(INSTALL) -d $(DESTDIR)$(MANDIR)/man8
	packaging/man $(DESTDIR)$(SBINDIR)/anamon-cobbler 8 "switch Cobbler's pre_anamon and post_anamon to anamon's" \
	  $(DESTDIR)$(MANDIR)/man8/anamon-cobbler.8.gz
	@set -e; for at in $(ARCH_TRIPLES); do \
	  arch=$${at%%=*}; t=$${at#*=}; \
	  bin=$(TARGET_DIR)/$$t/release/anamon; \
	  if [ -f "$$bin" ]; then \
	    echo "$(INSTALL) -m 755 $$bin $(DESTDIR)$(COBBLER_MISC)/anamon.$$arch"; \
	    $(INSTALL) -m 755 "$$bin" "$(DESTDIR)$(COBBLER_MISC)/anamon.$$arch"; \
	  else echo "make: anamon.$$arch not built, not installed"; fi; \
	done
	@set -e; for img in anamon-updates.img anamon-updates.cpio.gz; do \
	  if [ -f $(IMAGE_DIR)/$$img ]; then \
	    echo "$(INSTALL) -m 644 $(IMAGE_DIR)/$$img $(DESTDIR)$(COBBLER_MISC)/$$img"; \
	    $(INSTALL) -m 644 $(IMAGE_DIR)/$$img $(DESTDIR)$(COBBLER_MISC)/$$img; \
	  fi; \
	done
	@if [ -x $(TARGET_DIR)/release/updates-img ]; then \
	  $(INSTALL) -d $(DESTDIR)$(BINDIR); \
	  echo "$(INSTALL) -m 755 $(TARGET_DIR)/release/updates-img $(DESTDIR)$(BINDIR)/updates-img"; \
	  $(INSTALL) -m 755 $(TARGET_DIR)/release/updates-img $(DESTDIR)$(BINDIR)/updates-img; \
	  $(INSTALL) -d $(DESTDIR)$(MANDIR)/man1; \
	  packaging/man $(TARGET_DIR)/release/updates-img 1 "build an updates image that carries the anamon agent" \
	    $(DESTDIR)$(MANDIR)/man1/updates-img.1.gz; \
	fi

receiver:
ifneq ($(BUILD),no)
	$(CARGO) build $(CARGOFLAGS) --quiet --release --target $(RECEIVER_TARGET) -p anamon-receiver
endif

# The unit names the binary where SBINDIR puts it. The Apache snippet goes
# to the docs, and to APACHE_CONFDIR when that is set: proxying is the
# admin's choice (see receiver/README.md), a package's for a Cobbler server.
install-receiver: receiver
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(DOCDIR)
	$(INSTALL) -m 755 $(TARGET_DIR)/$(RECEIVER_TARGET)/release/anamon-receiver $(DESTDIR)$(SBINDIR)/anamon-receiver
	sed 's#/usr/local/sbin/anamon-receiver#$(SBINDIR)/anamon-receiver#' \
	  receiver/systemd/anamon-receiver.service >$(DESTDIR)$(UNITDIR)/anamon-receiver.service
	chmod 644 $(DESTDIR)$(UNITDIR)/anamon-receiver.service
	$(INSTALL) -m 644 receiver/systemd/anamon-receiver.sysusers $(DESTDIR)$(SYSUSERSDIR)/anamon-receiver.conf
	$(INSTALL) -m 644 receiver/apache/anamon-receiver.conf receiver/README.md $(DESTDIR)$(DOCDIR)/
	$(INSTALL) -d $(DESTDIR)$(DOCDIR)/prometheus
	$(INSTALL) -m 644 receiver/prometheus/anamon-receiver.rules.yml \
	  receiver/prometheus/anamon-receiver.rules.test.yml $(DESTDIR)$(DOCDIR)/prometheus/
	$(INSTALL) -d $(DESTDIR)$(MANDIR)/man8
	packaging/man $(TARGET_DIR)/$(RECEIVER_TARGET)/release/anamon-receiver 8 "store installer logs sent with XML-RPC upload_log_data, safely" \
	  $(DESTDIR)$(MANDIR)/man8/anamon-receiver.8.gz
	@if [ -n "$(APACHE_CONFDIR)" ]; then set -x; \
	  $(INSTALL) -d $(DESTDIR)$(APACHE_CONFDIR); \
	  $(INSTALL) -m 644 receiver/apache/anamon-receiver.conf $(DESTDIR)$(APACHE_CONFDIR)/anamon-receiver.conf; fi
	@if [ -n "$(RECEIVER_SYSCONFIG)" ]; then set -x; \
	  $(INSTALL) -d $(DESTDIR)$(dir $(RECEIVER_SYSCONFIG)); \
	  $(INSTALL) -m 644 receiver/systemd/anamon-receiver.sysconfig $(DESTDIR)$(RECEIVER_SYSCONFIG); fi

check:
	ci/snippets/test

# Only what this Makefile made; `cargo clean` is for the whole workspace.
clean:
	rm -rf $(IMAGE_DIR)

# Packages (packaging/README.md). SOURCE_DATE_EPOCH (default: the last
# commit's time) fixes every timestamp, so two runs give byte-identical
# tarballs and RPM payloads.
.PHONY: dist rpm
dist:
	packaging/dist

rpm:
	packaging/rpm
