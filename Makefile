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

CARGO    ?= cargo
RELEASE  := target/release
APT_PKGS := iptables ipset libelf-dev zlib1g-dev pkg-config nftables bpftool iproute2 util-linux iputils-ping gcc \
            qemu-system-x86 busybox-static kmod xz-utils zstd python3
# Debian's kernels for the matrix are unpacked here (tools/kernels/fetch.sh)
export KERNEL_CACHE ?= /var/cache/bpfilter/kernels
SOCKET   ?= /run/bpfilter/bpfilter.sock

.PHONY: all build run test deps bpffs unit privileged bench fixtures conformance kernels matrix install clean fmt

all: build

build:
	$(CARGO) build --release --workspace

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
# (tools/kernels/: the privileged suites inside QEMU guests running Debian's kernels).
# Privileged tests fail rather than skip under CI=true.
test: deps build
	$(CARGO) test --release --workspace --no-fail-fast -- --test-threads=1
	$(MAKE) --no-print-directory matrix

kernels:
	./tools/kernels/fetch.sh

matrix: deps build kernels
	./tools/kernels/matrix.sh

# Side-by-side data path and control plane (benches/netbench: RESULTS.md, plot.svg, README's
# Performance section), then the criterion micro-benchmarks.
bench: deps build
	$(CARGO) run --release -p netbench -- --readme README.md
	$(CARGO) bench -p bpfilter

conformance: deps build
	$(CARGO) run --release -p conformance -- --full

fixtures: deps build
	./fixtures/capture.sh

install: build
	install -m 0755 $(RELEASE)/bpfilter /usr/local/sbin/bpfilter
	install -m 0644 $(RELEASE)/libbpfilter.so /usr/local/lib/libbpfilter.so

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
