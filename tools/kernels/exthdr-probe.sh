#!/bin/bash
# What ip6_tables does with IPv6 extension headers longer than the packet (docs/KERNELS.md,
# "IPv6 extension headers longer than the packet"). Run as root on the host, or in the matrix:
#   tools/kernels/guest.sh 6.12 -- tools/kernels/exthdr-probe.sh
# Each case: one ip6tables-legacy rule in OUTPUT, then a counting rule; one packet sent to ::1
# through a raw socket. "rule,after" 1 1 = match, 0 1 = no match, 0 0 (send refused) = drop.
set -eu
NS=${PROBE_NS:-exthdr-probe-$$}
ip netns add "$NS"
trap 'ip netns del "$NS"' EXIT
ip -n "$NS" link set lo up
uname -r
send() {
    ip netns exec "$NS" python3 - "$1" <<'PY'
import socket, struct, sys
def ip6(nh, payload):
    a = socket.inet_pton(socket.AF_INET6, "::1")
    return struct.pack("!IHBB", 6 << 28, len(payload), nh, 64) + a + a + payload
pk = {
    # routing header (next 59) claiming 16 bytes, 8 present; the same, whole; cut at 2 bytes
    "rt_short": ip6(43, bytes([59, 1, 0, 0, 0, 0, 0, 0])),
    "rt_ok": ip6(43, bytes([59, 0, 0, 0, 0, 0, 0, 0])),
    "rt_cut": ip6(43, bytes([59, 0])),
    # hop-by-hop / destination options claiming 16 bytes, 8 present (next 59 or udp)
    "hbh_short": ip6(0, bytes([59, 1, 1, 4, 0, 0, 0, 0])),
    "hbh_short_udp": ip6(0, bytes([17, 1, 1, 4, 0, 0, 0, 0])),
    "hbh_ok": ip6(0, bytes([59, 0, 1, 4, 0, 0, 0, 0])),
    "dst_short": ip6(60, bytes([59, 1, 1, 4, 0, 0, 0, 0])),
    # hop-by-hop ending exactly at the end, then 2 bytes of udp
    "hbh_udp_cut": ip6(0, bytes([17, 0, 1, 4, 0, 0, 0, 0, 0, 1])),
    # hop-by-hop claiming 40 bytes, 8 present; 1 byte after the IPv6 header
    "ipv6h_short": ip6(0, bytes([59, 4, 0, 0, 0, 0, 0, 0])),
    "ipv6h_tiny": ip6(0, bytes([59])),
}
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(pk[sys.argv[1]], ("::1", 0))
PY
}
for case in "rt_short:-s ::/0" "rt_short:-m rt --rt-type 0" "rt_short:-m rt ! --rt-type 0" \
    "rt_ok:-m rt --rt-type 0" "rt_cut:-m rt --rt-type 0" "hbh_short:-m hbh" "hbh_ok:-m hbh" \
    "dst_short:-m dst" "ipv6h_short:-m ipv6header --header hop" \
    "ipv6h_tiny:-m ipv6header --header hop" "ipv6h_short:-m ipv6header --soft --header none" \
    "hbh_short:-p all" "hbh_short_udp:-p udp" "hbh_udp_cut:-p udp" "hbh_ok:-p all"; do
    name=${case%%:*}
    read -r -a m <<<"${case#*:}"
    ip netns exec "$NS" ip6tables-legacy -F OUTPUT
    ip netns exec "$NS" ip6tables-legacy -A OUTPUT "${m[@]}"
    ip netns exec "$NS" ip6tables-legacy -A OUTPUT
    sent=sent
    send "$name" 2>/dev/null || sent="send refused"
    c=$(ip netns exec "$NS" ip6tables-legacy -L OUTPUT -v -x -n | awk 'NR>2{printf "%s ", $1}')
    echo "$name [${case#*:}]: rule,after = $c($sent)"
done
