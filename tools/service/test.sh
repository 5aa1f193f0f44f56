#!/usr/bin/env bash
# The service test (issue 15): bpfilter's Debian package on a real systemd, in a QEMU guest.
#
#   tools/service/test.sh [kernel-name]      (default 6.12, a name of tools/kernels/matrix)
#
# One boot of tools/kernels/guest.sh --systemd (the host's systemd 252 as PID 1, the host's /
# read-only under a RAM overlay: nothing reaches the host's /etc, alternatives, bpffs or
# iptables). Before systemd starts, tools/service/setup.sh installs the package with dpkg -i,
# chrooted as an image build would (the postinst selects the iptables and ip6tables
# alternatives and enables the units offline), and saves tools/service/rules.v4 and rules.v6 as
# /etc/iptables/rules.v4 and rules.v6. Then tools/service/checks.sh, in the booted guest, checks
# (one "service: <check>: ok" line each):
#   - the boot: no failed unit; bpfilter.socket, bpfilter.service, bpfilter-restore.service and
#     bpfilter-restore6.service enabled and active, all four before network-pre.target;
#   - plain `iptables` and `ip6tables` through Debian's alternatives are bpfilter (the links,
#     `iptables -V`, `ip6tables -V`), and `iptables-save` prints rules.v4, `ip6tables-save`
#     rules.v6 (comments and counters aside); bpftool shows bpfilter's programs attached by
#     IPv4 and IPv6 netfilter links;
#   - real packets from a client namespace over a veth pair: the accepted flow arrives whole,
#     DROP, LOG-then-policy-DROP ports receive nothing, REJECT answers with ICMP port
#     unreachable, ping answers; counters (iptables-save -c and iptables -L -v -x -n) count
#     exactly what was sent; LOG's lines are in the kernel log; over IPv6 against rules.v6 the
#     same (accepted, dropped, REJECT's ICMPv6 errors, ping, ip6tables-save -c counters);
#   - a rule added with plain `ip6tables` is bpfilter's: `bpfilter status` lists the IPv6
#     filter table as compiled, and the kernel's ip6_tables (ip6tables-legacy-save without the
#     preload) holds no rule;
#   - `systemctl restart bpfilter.service` under two flows (an accepted one, and one whose
#     replies only conntrack's ESTABLISHED accepts): no packet lost; commands issued in loops
#     across the restart (iptables -w -A, iptables -w -L, bpfilter status) all succeed, some
#     of them while no daemon runs (the socket unit queues them); afterwards the rules are
#     rules.v4 plus the appended ones and the ACCEPT counter equals every packet sent;
#   - `systemd-analyze verify` of the units prints nothing; no error line in their journal;
#   - `dpkg -i` of the same build at a higher version: the daemon restarted, IPv4 and IPv6
#     rules, counters and both alternatives kept;
#   - `dpkg --purge bpfilter`: no bpfltr_ netfilter link or program, no /sys/fs/bpf/bpfilter,
#     no bpfilter_conntrack nftables table, no process, no unit; both alternatives and
#     `iptables -V`, `ip6tables -V` as before the install; the dropped port receives again over
#     IPv4 and IPv6.
# On a failure the journal of the bpfilter units is printed.
#
# Rules across reboots: this boot IS the reboot case. bpffs is empty when a kernel boots, so
# the rulesets that iptables-save and ip6tables-save show, attached before network-pre.target,
# can only come from bpfilter-restore.service and bpfilter-restore6.service reading
# /etc/iptables/rules.v4 and rules.v6 at boot; a second boot would prove nothing more.
#
# Needs: target/debian/bpfilter_*_amd64.deb (make deb; BPFILTER_SERVICE_DEB=PATH tests another
# package, outside /tmp), the kernel (make kernels), qemu-system-x86, busybox-static, systemd,
# bpftool, iproute2, iputils-ping, nftables, python3, man-db. Without them it skips, except
# under CI=true, where it fails. A run takes 2 to 4 minutes under TCG, the longer when other
# guests load the machine (8 minutes at most, then the guest is killed). Output also in
# target/service/test.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
kernel="${1:-6.12}"
cache="${KERNEL_CACHE:-/var/cache/bpfilter/kernels}"
log=target/service/test.log

skip() {
  if [[ "${CI:-}" == true ]]; then
    echo "service: FAILED: $* (CI=true never skips)" >&2
    exit 1
  fi
  echo "service: skipped: $*"
  exit 0
}

# The guest's /tmp is its own unless the run's directory is inside the host's /tmp (guest.sh
# keeps that one then): a package elsewhere under /tmp is out of the guest's reach.
outside_guest() { [[ "$1" == /tmp/* && "$PWD" != /tmp && "$PWD" != /tmp/* ]]; }
deb="${BPFILTER_SERVICE_DEB:-}"
if [[ -z "$deb" ]]; then
  # What `make deb` builds: the workspace's version (an upgrade test may leave others beside).
  version="$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
  deb="target/debian/bpfilter_${version}_amd64.deb"
  [[ -f "$deb" ]] || skip "no $deb (make deb)"
fi
[[ -f "$deb" ]] || skip "no package $deb"
deb="$(realpath "$deb")"
# The package the upgrade check installs over it: the same build at a higher version (make
# service builds it with DEB_VERSION=VERSION+upgrade).
upgrade="${BPFILTER_SERVICE_UPGRADE_DEB:-${deb%_*_*}_$(dpkg-deb -f "$deb" Version)+upgrade_amd64.deb}"
[[ -f "$upgrade" ]] || skip "no upgrade package $upgrade (make service builds it)"
upgrade="$(realpath "$upgrade")"
! outside_guest "$upgrade" || { echo "service: the guest cannot see $upgrade (under /tmp)" >&2; exit 2; }
! outside_guest "$deb" || { echo "service: the guest cannot see $deb (under /tmp)" >&2; exit 2; }
[[ -f "$cache/$kernel/vmlinuz" ]] || skip "kernel $kernel not in $cache (make kernels)"
for tool in qemu-system-x86_64 busybox; do
  command -v "$tool" > /dev/null || skip "$tool not installed"
done
[[ -x /lib/systemd/systemd ]] || skip "no systemd in /lib/systemd/systemd"
# man: systemd-analyze verify checks the units' Documentation=man: pages with it.
for tool in bpftool ip ping nft dpkg man; do
  command -v "$tool" > /dev/null || skip "$tool not installed"
done
[[ -x /usr/bin/python3 ]] || skip "no /usr/bin/python3"
if [[ -f target/release/bpfilter && target/release/bpfilter -nt "$deb" ]]; then
  echo "service: note: $deb is older than target/release/bpfilter (make deb to test this build)"
fi

mkdir -p "$(dirname "$log")"
echo "service: $(dpkg-deb -f "$deb" Package Version | paste -sd' ') ($deb) on kernel $kernel"
t0=$SECONDS
set +e
# 8 minutes is the budget (the guest is killed then): a run under load took 3.5 minutes.
tools/kernels/guest.sh --timeout 480 --systemd --setup tools/service/setup.sh \
  --env BPFILTER_SERVICE_DEB="$deb" --env BPFILTER_SERVICE_UPGRADE_DEB="$upgrade" --env CI="${CI:-}" \
  "$kernel" -- tools/service/checks.sh 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
echo "service: kernel $kernel: $(( SECONDS - t0 )) s in all, exit $rc (log $log)"
exit "$rc"
