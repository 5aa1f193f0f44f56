#!/usr/bin/env bash
# The service test's image build: run by tools/kernels/guest.sh --setup, chrooted into the
# guest's root (RAM over the host's, read-only) before its systemd starts, as a Debian image
# build or an admin before a reboot would: no systemd is running, so the package's maintainer
# scripts enable the units offline and start nothing.
#   1. record what the purge must bring back (the iptables and ip6tables alternatives and their
#      links);
#   2. dpkg -i the package ($BPFILTER_SERVICE_DEB, from tools/service/test.sh);
#   3. save the rulesets where netfilter-persistent keeps them, /etc/iptables/rules.v4 and
#      rules.v6.
# Working directory: the repository (guest.sh keeps the caller's).
set -euo pipefail
deb="${BPFILTER_SERVICE_DEB:?set by tools/service/test.sh}"
state=/var/lib/bpfilter-service-test
mkdir -p "$state"

for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  readlink "/etc/alternatives/$name" > "$state/alt.$name" || echo none > "$state/alt.$name"
done
for group in iptables ip6tables; do
  update-alternatives --query "$group" | sed -n 's/^\(Status\|Value\): //p' > "$state/alt.query.$group"
  echo "setup: before: $group is $(<"$state/alt.$group") ($(tr '\n' ' ' < "$state/alt.query.$group" | sed 's/ $//'))"
done

t0=$EPOCHREALTIME
if ! dpkg -i "$deb" 2>&1 | sed 's/^/setup: dpkg: /'; then
  echo "setup: dpkg -i $deb failed" >&2
  exit 1
fi

echo "setup: dpkg -i took $(( (${EPOCHREALTIME/./} - ${t0/./}) / 1000 )) ms"
install -D -m 0640 tools/service/rules.v4 /etc/iptables/rules.v4
install -D -m 0640 tools/service/rules.v6 /etc/iptables/rules.v6
echo "setup: enabled offline: $(systemctl is-enabled bpfilter.socket bpfilter.service \
  bpfilter-restore.service bpfilter-restore6.service 2>&1 | tr '\n' ' ')"
echo "setup: /etc/iptables/rules.v4 and rules.v6 saved; the guest boots its systemd next"
