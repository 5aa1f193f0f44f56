# bpfilter: build, run, test, benchmark.
#
#   make            release build: target/release/bpfilter and target/release/libbpfilter.so
#   make run        build, then run the daemon in the foreground (root)
#   make test       install what the tests need, then run every test, privileged ones included
#   make bench      side-by-side benchmarks (see benches/)
#   make conformance  differential run against the kernel's iptables-legacy (full corpus)
#   make kernels    fetch Debian's kernels for the QEMU kernel matrix (cache outside the repo)
#   make matrix     the kernel matrix alone: the privileged suites inside each guest kernel
#   make fixtures   re-capture fixtures/ from the real iptables-legacy and the real kernel
#   make service    the Debian package on a real systemd in a QEMU guest (part of make test)
#   make install    install under PREFIX (/usr/local), DESTDIR honoured; `make uninstall` undoes it
#   make deb        target/debian/bpfilter_VERSION_ARCH.deb (docs/SERVICE.md)

CARGO    ?= cargo
RELEASE  := target/release
APT_PKGS := iptables ipset libelf-dev zlib1g-dev pkg-config nftables bpftool iproute2 util-linux iputils-ping gcc \
            qemu-system-x86 busybox-static kmod xz-utils zstd python3 systemd man-db
# Debian's kernels for the matrix are unpacked here (tools/kernels/fetch.sh)
export KERNEL_CACHE ?= /var/cache/bpfilter/kernels
SOCKET   ?= /run/bpfilter/bpfilter.sock

.PHONY: all build run test deps bpffs unit privileged bench fixtures conformance kernels matrix service install uninstall deb clean fmt

all: build

# The bpfilter executable is linked statically (a static PIE: glibc, libbpf, libelf and zlib in
# it). Every iptables command through bpfilter starts it before the legacy binary, and mapping
# and binding shared libraries at that start cost a tenth of `iptables -L` (0.27 of 2.8 ms, in
# page faults mostly). `cargo rustc` gives the flag to that link alone: the shared libraries
# (libbpfilter.so, libxt_capture.so) cannot be linked so.
build:
	$(CARGO) build --release --workspace --exclude bpfilter
	$(CARGO) rustc --release -p bpfilter --bin bpfilter -- -C target-feature=+crt-static

run: deps build
	$(RELEASE)/bpfilter daemon --socket $(SOCKET)

# Packages are installed only when missing, so that `make test` works on a fresh machine and
# costs nothing on a prepared one.
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@$(MAKE) --no-print-directory bpffs

bpffs:
	@mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

# Every test, unprivileged and privileged, on this machine's kernel, then the kernel matrix
# (tools/kernels/: the privileged suites inside QEMU guests running Debian's kernels), then the
# package under systemd. Privileged tests fail rather than skip under CI=true. The host's test
# executables run three at a time (tools/tests.sh): they mostly wait, and each has its own
# daemon, namespaces and xtables lock.
test: deps build
	./tools/tests.sh
	$(MAKE) --no-print-directory matrix
	$(MAKE) --no-print-directory service

# The package on a real systemd in a QEMU guest (tools/service/test.sh): boot-time restore
# (rules.v4, rules.v6), the iptables and ip6tables alternatives, restart under traffic and commands, purge.
service: deb kernels
	$(MAKE) --no-print-directory deb DEB_VERSION=$(VERSION)+upgrade
	./tools/service/test.sh

kernels:
	./tools/kernels/fetch.sh

matrix: deps build kernels
	./tools/kernels/matrix.sh

# Side-by-side data path and control plane (benches/netbench: RESULTS.md, plot.svg, README's
# Performance section; IPv4, then an IPv6 pass of about 1-2 minutes against ip6tables-legacy),
# then the criterion micro-benchmarks.
bench: deps build
	$(CARGO) run --release -p netbench -- --readme README.md
	$(CARGO) bench -p bpfilter

conformance: deps build
	$(CARGO) run --release -p conformance -- --full

fixtures: deps build
	./fixtures/capture.sh

# ---------------------------------------------------------------------------------------------
# Installation. PREFIX is where the files live when running, DESTDIR a staging root before it.
# The CLI finds the preload library at ../lib/bpfilter/libbpfilter.so from its own executable,
# and behaves as `bpfilter iptables[-save|-restore]` when called by the iptables-bpfilter names
# (or by iptables, iptables-save, iptables-restore through the alternative), as `bpfilter
# ip6tables[-save|-restore]` by the ip6tables-bpfilter names (or ip6tables... likewise).
# ---------------------------------------------------------------------------------------------
PREFIX      ?= /usr/local
DESTDIR     ?=
SBINDIR     := $(PREFIX)/sbin
PKGLIBDIR   := $(PREFIX)/lib/bpfilter
# systemd reads /usr/local/lib/systemd/system as well as /usr/lib/systemd/system.
UNITDIR     := $(PREFIX)/lib/systemd/system
MAN8DIR     := $(PREFIX)/share/man/man8
BASHCOMPDIR := $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  := $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR := $(PREFIX)/share/fish/vendor_completions.d
UNITS       := bpfilter.socket bpfilter.service bpfilter-restore.service bpfilter-restore6.service
IPT_NAMES   := iptables-bpfilter iptables-bpfilter-save iptables-bpfilter-restore \
               ip6tables-bpfilter ip6tables-bpfilter-save ip6tables-bpfilter-restore
# Generated at install time (units with their paths, man pages, completions).
GEN         := target/dist

install: build
	rm -rf $(GEN) && mkdir -p $(GEN)/man $(GEN)/units
	$(RELEASE)/bpfilter generate man $(GEN)/man
	$(RELEASE)/bpfilter generate completion bash >$(GEN)/bpfilter.bash
	$(RELEASE)/bpfilter generate completion zsh >$(GEN)/_bpfilter
	$(RELEASE)/bpfilter generate completion fish >$(GEN)/bpfilter.fish
	for u in $(UNITS); do sed 's|@sbindir@|$(SBINDIR)|g' dist/systemd/$$u.in >$(GEN)/units/$$u; done
	install -D -m 0755 $(RELEASE)/bpfilter $(DESTDIR)$(SBINDIR)/bpfilter
	for n in $(IPT_NAMES); do ln -sfn bpfilter $(DESTDIR)$(SBINDIR)/$$n; done
	install -D -m 0644 $(RELEASE)/libbpfilter.so $(DESTDIR)$(PKGLIBDIR)/libbpfilter.so
	for u in $(UNITS); do install -D -m 0644 $(GEN)/units/$$u $(DESTDIR)$(UNITDIR)/$$u; done
	install -D -m 0644 dist/systemd/netfilter-persistent.service.d/bpfilter.conf \
		$(DESTDIR)$(UNITDIR)/netfilter-persistent.service.d/bpfilter.conf
	install -d $(DESTDIR)$(MAN8DIR)
	install -m 0644 $(GEN)/man/*.8 $(DESTDIR)$(MAN8DIR)/
	install -D -m 0644 $(GEN)/bpfilter.bash $(DESTDIR)$(BASHCOMPDIR)/bpfilter
	install -D -m 0644 $(GEN)/_bpfilter $(DESTDIR)$(ZSHCOMPDIR)/_bpfilter
	install -D -m 0644 $(GEN)/bpfilter.fish $(DESTDIR)$(FISHCOMPDIR)/bpfilter.fish
	@# Installed on this system (not staged): offer bpfilter as the `iptables` and `ip6tables`
	@# alternatives, at the lowest priority so that the current choices stay until
	@# `update-alternatives --set`.
	@if [ -z "$(DESTDIR)" ] && command -v update-alternatives >/dev/null; then \
		for f in iptables ip6tables; do \
			echo "update-alternatives: registering $(SBINDIR)/$$f-bpfilter (not selected)"; \
			update-alternatives --install /usr/sbin/$$f $$f $(SBINDIR)/$$f-bpfilter 5 \
				--slave /usr/sbin/$$f-restore $$f-restore $(SBINDIR)/$$f-bpfilter-restore \
				--slave /usr/sbin/$$f-save $$f-save $(SBINDIR)/$$f-bpfilter-save; \
		done; \
	fi

# Removes what `install` put there (not the pins: `bpfilter flush --all` before, if wanted).
uninstall:
	@if [ -z "$(DESTDIR)" ] && command -v update-alternatives >/dev/null; then \
		update-alternatives --remove iptables $(SBINDIR)/iptables-bpfilter; \
		update-alternatives --remove ip6tables $(SBINDIR)/ip6tables-bpfilter; \
	fi
	rm -f $(DESTDIR)$(SBINDIR)/bpfilter $(addprefix $(DESTDIR)$(SBINDIR)/,$(IPT_NAMES))
	rm -f $(DESTDIR)$(PKGLIBDIR)/libbpfilter.so
	-rmdir $(DESTDIR)$(PKGLIBDIR)
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS))
	rm -f $(DESTDIR)$(UNITDIR)/netfilter-persistent.service.d/bpfilter.conf
	-rmdir $(DESTDIR)$(UNITDIR)/netfilter-persistent.service.d
	rm -f $(DESTDIR)$(MAN8DIR)/bpfilter.8 $(DESTDIR)$(MAN8DIR)/bpfilter-*.8
	rm -f $(DESTDIR)$(BASHCOMPDIR)/bpfilter $(DESTDIR)$(ZSHCOMPDIR)/_bpfilter \
		$(DESTDIR)$(FISHCOMPDIR)/bpfilter.fish

# ---------------------------------------------------------------------------------------------
# Debian package, with dpkg-deb alone (no cargo-deb: nothing to fetch from crates.io): a
# staging tree made by `make install DESTDIR=... PREFIX=/usr`, the maintainer scripts of
# dist/debian (iptables and ip6tables alternatives, units, purge), control from dist/debian/control.in.
# DEB_VERSION overrides the version (an upgrade test builds two).
# ---------------------------------------------------------------------------------------------
# Recursive (=): the shell runs only when a recipe needs the value.
VERSION      = $(shell sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
DEB_VERSION ?= $(VERSION)
DEB_ARCH     = $(shell dpkg --print-architecture)
DEB_DIR     := target/debian
DEB_STAGE   := $(DEB_DIR)/stage
DEB          = $(DEB_DIR)/bpfilter_$(DEB_VERSION)_$(DEB_ARCH).deb

deb: build
	rm -rf $(DEB_STAGE)
	$(MAKE) --no-print-directory install DESTDIR=$(CURDIR)/$(DEB_STAGE) PREFIX=/usr
	@# Debug info off (a release build carries it: 30 MB); the symbol table stays, so that a
	@# panic's backtrace still names functions.
	strip --strip-debug $(DEB_STAGE)/usr/sbin/bpfilter $(DEB_STAGE)/usr/lib/bpfilter/libbpfilter.so
	gzip -9n $(DEB_STAGE)/usr/share/man/man8/*.8
	install -D -m 0644 dist/debian/copyright $(DEB_STAGE)/usr/share/doc/bpfilter/copyright
	install -m 0644 docs/SERVICE.md $(DEB_STAGE)/usr/share/doc/bpfilter/SERVICE.md
	install -d -m 0755 $(DEB_STAGE)/DEBIAN
	for s in postinst prerm postrm; do install -m 0755 dist/debian/$$s $(DEB_STAGE)/DEBIAN/$$s; done
	cd $(DEB_STAGE) && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
		| xargs -0 md5sum >DEBIAN/md5sums
	size=$$(du -s -k --apparent-size --exclude=DEBIAN $(DEB_STAGE) | cut -f1); \
	sed -e 's|@VERSION@|$(DEB_VERSION)|' -e 's|@ARCH@|$(DEB_ARCH)|' -e "s|@INSTALLED_SIZE@|$$size|" \
		dist/debian/control.in >$(DEB_STAGE)/DEBIAN/control
	dpkg-deb --build --root-owner-group $(DEB_STAGE) $(DEB)
	@echo "built $(DEB)"

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
