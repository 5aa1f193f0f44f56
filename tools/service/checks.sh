#!/usr/bin/env bash
# The service test's checks, run INSIDE the guest that tools/service/test.sh booted with
# systemd as PID 1 after tools/service/setup.sh installed the package and saved
# /etc/iptables/rules.v4 and rules.v6 (guest.sh runs this once the boot is over). Each check prints
# "service: <check>: ok" or "service: <check>: FAILED: <why>"; every check runs even after
# a failure (the purge last), and the last line counts them. Exit status: failures, capped.
set -uo pipefail
# shellcheck disable=SC2317 # the checks are functions called through check()
cd "$(dirname "$0")/../.." || exit 125
py=/usr/bin/python3 # not a pyenv shim: each exec is slow under TCG
udp=tools/service/udp.py
rules=tools/service/rules.v4
rules6=tools/service/rules.v6
state=/var/lib/bpfilter-service-test
work="$(mktemp -d /run/service-test.XXXXXX)"
units=(bpfilter.socket bpfilter.service bpfilter-restore.service bpfilter-restore6.service)
passed=0
failed=0
ok() { echo "service: $1: ok${2:+ ($2)}"; passed=$((passed + 1)); }
bad() { echo "service: $1: FAILED: $2"; failed=$((failed + 1)); }
# check NAME DETAIL-IF-OK FUNCTION...: the function prints why it failed, on stdout.
check() {
  local name="$1" detail="$2" why
  shift 2
  if why="$("$@" 2>&1)"; then ok "$name" "${detail:-$why}"; else bad "$name" "${why:-exit $?}"; fi
}
# CLOCK_BOOTTIME in µs (centiseconds): systemd's monotonic timestamps, as the guest never sleeps.
now_us() { local up _; read -r up _ < /proc/uptime; echo $(( 10#${up/./} * 10000 )); }
prop() { systemctl show -P "$2" "$1"; }
# iptables-save without comments and counters, one rule per line.
normalise() { grep -v '^#' | sed -E 's/^\[[0-9]+:[0-9]+\] //; s/ \[[0-9]+:[0-9]+\]$//'; }
# Packets counted by the rule whose iptables-save -c line contains $1 (the first such rule),
# or by the policy of chain $1 when it starts with ':'. count6: the same for ip6tables-save.
count_in() { # SAVE-COMMAND PATTERN
  local line
  if [[ "$2" == :* ]]; then
    line="$("$1" -c -t filter | grep -m1 -F "$2 ")" || { echo missing; return; }
    line="${line##*[}"
  else
    line="$("$1" -c -t filter | grep -m1 -F -- "$2")" || { echo missing; return; }
    line="${line#[}"
  fi
  echo "${line%%:*}"
}
count() { count_in iptables-save "$1"; }
count6() { count_in ip6tables-save "$1"; }
# bpftool's netfilter links whose program is one of bpfilter's (name bpfltr_*), "ID:PROG" each.
bpfilter_links() {
  { bpftool -j prog show; echo; bpftool -j link show; echo; } | "$py" -c '
import json, sys
progs, links = [json.loads(l) for l in sys.stdin if l.strip()][:2]
names = {p["id"]: p.get("name", "") for p in progs}
for l in links:
    if l.get("type") in (10, "netfilter") and names.get(l.get("prog_id"), "").startswith("bpfltr_"):
        print(str(l["id"]) + ":" + names[l["prog_id"]])
'
}
bpfilter_progs() { bpftool -j prog show | "$py" -c '
import json, sys
print(" ".join(p["name"] for p in json.load(sys.stdin) if p.get("name", "").startswith("bpfltr_")))'
}

# -------------------------------------------------------------------------------------------
# The boot: the package's units started, the saved rules restored, before the network.
# -------------------------------------------------------------------------------------------
boot_state() {
  local s
  s="$(systemctl is-system-running)"
  [[ "$s" == running ]] && return 0
  echo "system $s; failed units: $(systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
  return 1
}
echo "service: boot: $(systemd-analyze 2>&1 | head -1)"
check "boot finished, no failed unit" "" boot_state

units_active() {
  local u s e bad=0
  for u in "${units[@]}"; do
    s="$(systemctl is-active "$u")"
    e="$(systemctl is-enabled "$u")"
    [[ "$s" == active && "$e" == enabled ]] || { echo -n "$u $s/$e; "; bad=1; }
  done
  return "$bad"
}
check "units enabled and active at boot" "${units[*]}" units_active

before_network() {
  local pre u t out=""
  pre="$(prop network-pre.target ActiveEnterTimestampMonotonic)"
  [[ "$pre" =~ ^[1-9][0-9]*$ ]] || { echo "network-pre.target never reached (timestamp '$pre')"; return 1; }
  for u in "${units[@]}"; do
    t="$(prop "$u" ActiveEnterTimestampMonotonic)"
    [[ "$t" =~ ^[1-9][0-9]*$ && "$t" -le "$pre" ]] \
      || { echo "$u active at ${t}us, network-pre.target at ${pre}us"; return 1; }
    out+="$u $(( (pre - t) / 1000 )) ms, "
  done
  echo "before network-pre.target: ${out%, }"
}
check "rules served before the network" "" before_network

# -------------------------------------------------------------------------------------------
# Plain `iptables` is bpfilter, through Debian's alternative.
# -------------------------------------------------------------------------------------------
alternative() { # GROUP: iptables or ip6tables
  local name link want
  for name in "$1" "$1-save" "$1-restore"; do
    link="$(readlink "/etc/alternatives/$name")"
    want="/usr/sbin/${name/$1/$1-bpfilter}"
    [[ "$link" == "$want" ]] || { echo "/etc/alternatives/$name -> $link, not $want"; return 1; }
    [[ "$(readlink -f "/usr/sbin/$name")" == /usr/sbin/bpfilter ]] \
      || { echo "/usr/sbin/$name resolves to $(readlink -f "/usr/sbin/$name")"; return 1; }
  done
  [[ "$(command -v "$1")" == "/usr/sbin/$1" ]] || { echo "$1 is $(command -v "$1")"; return 1; }
}
check "iptables alternative points at bpfilter" "/etc/alternatives/iptables -> /usr/sbin/iptables-bpfilter -> bpfilter" alternative iptables
check "ip6tables alternative points at bpfilter" "/etc/alternatives/ip6tables -> /usr/sbin/ip6tables-bpfilter -> bpfilter" alternative ip6tables

version() { # COMMAND
  local v
  v="$("$1" -V 2>&1)" || { echo "$1 -V failed: $v"; return 1; }
  [[ "$v" == *bpfilter* ]] || { echo "$1 -V: $v"; return 1; }
  echo "$v"
}
check "iptables -V names bpfilter" "" version iptables
check "ip6tables -V names bpfilter" "" version ip6tables

restored() { # SAVE-COMMAND RULES-FILE
  local got
  got="$("$1" 2>&1)" || { echo "$1 failed: $got"; return 1; }
  diff <(normalise < "$2") <(normalise <<< "$got") > "$work/restored.diff" \
    || { echo "$1 differs from /etc/iptables/${2##*/}:"; cat "$work/restored.diff"; return 1; }
  echo "$(grep -c '^-A' "$2") rules, chains $(grep '^:' "$2" | cut -d' ' -f1 | tr -d : | tr '\n' ' ')"
}
check "iptables-save prints the restored rules.v4" "" restored iptables-save "$rules"
check "ip6tables-save prints the restored rules.v6" "" restored ip6tables-save "$rules6"

attached() {
  local links progs tables
  links="$(bpfilter_links)" || return 1
  progs="$(bpfilter_progs)"
  [[ -n "$links" ]] || { echo "no netfilter link to a bpfltr_ program; programs: ${progs:-none}"; return 1; }
  [[ -d /sys/fs/bpf/bpfilter ]] || { echo "no /sys/fs/bpf/bpfilter"; return 1; }
  # Debian 12's bpftool (7.1) shows no protocol family for a netfilter link: the family is
  # told by the pins (filter, ip6-filter) and by the count, a link per hook and family.
  tables="$(cd /sys/fs/bpf/bpfilter && echo net*/filter net*/ip6-filter)"
  [[ "$tables" =~ ^net[0-9]+/filter\ net[0-9]+/ip6-filter$ ]] || { echo "pinned tables: $tables"; return 1; }
  (( $(grep -c . <<< "$links") == 6 )) || { echo "$(grep -c . <<< "$links") links, not 3 per family: $(echo "$links" | tr '\n' ' ')"; return 1; }
  echo "pinned $tables; links $(echo "$links" | tr '\n' ' ')programs: $progs"
}
check "bpftool shows bpfilter's programs attached (IPv4 and IPv6)" "" attached

# -------------------------------------------------------------------------------------------
# Real packets: a client namespace behind a veth pair sends to this (the init) namespace,
# whose INPUT the restored rules filter.
# -------------------------------------------------------------------------------------------
ip netns add svc-cli
ip link add bpft0 type veth peer name bpft1 netns svc-cli
ip addr add 10.77.0.1/24 dev bpft0
ip link set bpft0 up
ip -n svc-cli addr add 10.77.0.2/24 dev bpft1
ip -n svc-cli link set bpft1 up
ip -n svc-cli link set lo up
# IPv6 on the same link (nodad: usable at once; neighbour discovery passes rules.v6's ICMPv6 rule)
ip addr add fd77::1/64 dev bpft0 nodad
ip -n svc-cli addr add fd77::2/64 dev bpft1 nodad
cli() { ip netns exec svc-cli "$@"; }
# Waits for a receiver's .ready file (python starts in a second or so under TCG).
wait_file() {
  local i
  for (( i = 0; i < 200; i++ )); do [[ -e "$1" ]] && return 0; sleep 0.05; done
  return 1
}

N=40
packets() {
  local out=$work/phase1 res p recv distinct rest refused pingout want got
  rm -f "$work/stop1"
  "$py" "$udp" recv "$work/stop1" "$out" 5001 5002 5003 &
  wait_file "$out.ready" || { echo "the receiver did not start"; return 1; }
  for p in 5001 5002 5003; do cli "$py" "$udp" send 10.77.0.1 "$p" "$N" 200 > /dev/null; done
  refused="$(cli "$py" "$udp" probe 10.77.0.1 5004 3)"
  pingout="$(cli ping -c 3 -i 0.2 -W 2 10.77.0.1 2>&1 | grep 'packets transmitted')"
  touch "$work/stop1"
  wait
  res=""
  while read -r p recv distinct _ _ rest; do
    res+="$p:$distinct "
    case "$p" in
      5001) [[ "$distinct" == "$N" ]] || { echo "port 5001 (ACCEPT) received $distinct of $N (missing $rest)"; return 1; } ;;
      *) [[ "$recv" == 0 ]] || { echo "port $p (DROP) received $recv of $N"; return 1; } ;;
    esac
  done < "$out"
  [[ "$refused" == 3 ]] || { echo "port 5004 (REJECT): $refused of 3 probes refused by an ICMP error"; return 1; }
  [[ "$pingout" == *"3 received"* ]] || { echo "ping: $pingout"; return 1; }
  echo "received $res; REJECT 3/3 ICMP port unreachable; ping 3/3"
}
check "packets: accepted pass, dropped do not, REJECT answers" "" packets

counters() {
  local c5001 c5002 c5003 c5004 pol
  c5001="$(count 'udp --dport 5001 -j ACCEPT')"
  c5002="$(count 'udp --dport 5002 -j DROP')"
  c5003="$(count 'udp --dport 5003 -j LOG')"
  c5004="$(count 'udp --dport 5004 -j REJECT')"
  pol="$(count ':INPUT')"
  [[ "$c5001" == "$N" && "$c5002" == "$N" && "$c5003" == "$N" && "$c5004" == 3 ]] \
    || { echo "rule counters ACCEPT $c5001, DROP $c5002, LOG $c5003 (each $N expected), REJECT $c5004 (3 expected)"; return 1; }
  if [[ ! "$pol" =~ ^[0-9]+$ ]] || (( pol < N )); then
    echo "INPUT policy DROP counted $pol, at least $N expected"
    return 1
  fi
  # iptables -L -v -x -n shows the same numbers
  iptables -L svc-in -v -x -n | grep -qE "^ *$N +[0-9]+ +ACCEPT .* 10\\.77\\.0\\.2 .*dpt:5001" \
    || { echo "iptables -L -v -x -n disagrees:"; iptables -L svc-in -v -x -n; return 1; }
  echo "ACCEPT $c5001, DROP $c5002, LOG $c5003, REJECT $c5004, INPUT policy $pol"
}
check "counters count the packets (iptables-save -c, iptables -L -v -x -n)" "" counters

log_lines() {
  local n i
  # The daemon writes them from its ring buffer: give it a moment.
  for (( i = 0; i < 30; i++ )); do
    n="$(dmesg | grep -c 'svc-drop: IN=bpft0 .* DPT=5003 ')"
    (( n >= 1 )) && break
    sleep 0.1
  done
  (( n >= 1 )) || { echo "no 'svc-drop: ... DPT=5003' line in dmesg; its last lines:"; dmesg | tail -5; return 1; }
  echo "$n lines 'svc-drop: IN=bpft0 ... DPT=5003' in dmesg"
}
check "LOG lines reach the kernel log" "" log_lines

# The same over IPv6, against rules.v6: the ICMPv6 error comes from the daemon's AF_INET6 raw
# socket (which the unit's RestrictAddressFamilies= must allow).
packets6() {
  local out=$work/phase6 res p recv distinct rest refused pingout c5001 c5002 c5004
  rm -f "$work/stop6"
  "$py" "$udp" recv "$work/stop6" "$out" 5001 5002 &
  wait_file "$out.ready" || { echo "the receiver did not start"; return 1; }
  for p in 5001 5002; do cli "$py" "$udp" send fd77::1 "$p" "$N" 200 > /dev/null; done
  refused="$(cli "$py" "$udp" probe fd77::1 5004 3)"
  pingout="$(cli ping -6 -c 3 -i 0.2 -W 2 fd77::1 2>&1 | grep 'packets transmitted')"
  touch "$work/stop6"
  wait
  res=""
  while read -r p recv distinct _ _ rest; do
    res+="$p:$distinct "
    case "$p" in
      5001) [[ "$distinct" == "$N" ]] || { echo "port 5001 (ACCEPT) received $distinct of $N over IPv6 (missing $rest)"; return 1; } ;;
      *) [[ "$recv" == 0 ]] || { echo "port $p (DROP) received $recv of $N over IPv6"; return 1; } ;;
    esac
  done < "$out"
  [[ "$refused" == 3 ]] || { echo "port 5004 (REJECT): $refused of 3 probes refused by an ICMPv6 error"; return 1; }
  [[ "$pingout" == *"3 received"* ]] || { echo "ping -6: $pingout"; return 1; }
  c5001="$(count6 'udp --dport 5001 -j ACCEPT')"
  c5002="$(count6 'udp --dport 5002 -j DROP')"
  c5004="$(count6 'udp --dport 5004 -j REJECT')"
  [[ "$c5001" == "$N" && "$c5002" == "$N" && "$c5004" == 3 ]] \
    || { echo "ip6tables-save -c: ACCEPT $c5001, DROP $c5002 (each $N expected), REJECT $c5004 (3 expected)"; return 1; }
  echo "received $res; REJECT 3/3 ICMPv6 port unreachable; ping 3/3; counters ACCEPT $c5001, DROP $c5002, REJECT $c5004"
}
check "IPv6 packets: accepted pass, dropped do not, REJECT answers, counted" "" packets6

# A rule added with plain `ip6tables` goes to bpfilter, not to the kernel's ip6_tables: the
# daemon compiles the filter table, and ip6tables-legacy without the preload (the kernel's own
# view) shows no rule at all. ip6tables-legacy-save lists only the tables the kernel has, so
# asking does not create one.
ip6_served() {
  local out st kernel rule='-A INPUT -p udp -m udp --dport 5005 -j DROP'
  out="$(ip6tables -A INPUT -p udp --dport 5005 -j DROP 2>&1)" || { echo "ip6tables -A failed: $out"; return 1; }
  ip6tables-save | grep -qxF -- "$rule" || { echo "ip6tables-save lacks '$rule'"; return 1; }
  st="$(bpfilter status 2>&1)" || { echo "bpfilter status failed: $st"; return 1; }
  grep -qE '^  IPv6 \(bpfilter ip6tables\): compiled to BPF: ([a-z]+, )*filter[,;]' <<< "$st" \
    || { echo "bpfilter status does not list the ip6 filter table as compiled:"; echo "$st"; return 1; }
  kernel="$(env -u LD_PRELOAD ip6tables-legacy-save 2>&1)" || { echo "ip6tables-legacy-save failed: $kernel"; return 1; }
  ! grep -q '^-A' <<< "$kernel" || { echo "the kernel's ip6_tables has rules:"; grep '^-A' <<< "$kernel"; return 1; }
  out="$(ip6tables -D INPUT -p udp --dport 5005 -j DROP 2>&1)" || { echo "ip6tables -D failed: $out"; return 1; }
  echo "$(grep -F 'IPv6 (bpfilter ip6tables)' <<< "$st" | sed 's/^ *//'); the kernel's ip6_tables: no rule (its tables: $(paste -sd' ' /proc/net/ip6_tables_names 2>/dev/null | grep . || echo none))"
}
check "plain ip6tables is served by bpfilter, not the kernel's ip6_tables" "" ip6_served

# -------------------------------------------------------------------------------------------
# systemctl restart bpfilter under traffic, with iptables commands issued meanwhile.
# -------------------------------------------------------------------------------------------
# Two flows, 100 packets/s each: client -> 5001 (accepted by its rule) and this namespace ->
# client:6001 and back (the replies accepted only as ESTABLISHED, by connection tracking).
# Commands: four loops from before the restart to after it, and a burst of three as soon as
# the old daemon is seen stopping: iptables -w -A (two loops, a new rule each; -w as Docker
# or ufw use it: the xtables lock serializes iptables-legacy), iptables -w -L / -S, bpfilter
# status. Each records "START_US END_US STATUS NAME ARG" in $work/cmds.
run_cmd() { # NAME ARG FUNCTION
  local t0 t1 rc
  t0="$(now_us)"
  "$3" "$2" > "$work/$1.$2.out" 2>&1
  rc=$?
  t1="$(now_us)"
  echo "$t0 $t1 $rc $1 $2" >> "$work/cmds"
}
cmd_loop() { # NAME FIRST-ARG FUNCTION: until restart.done exists, then once more
  local name="$1" i="$2" last=0
  while :; do
    [[ -e "$work/restart.done" ]] && last=1
    run_cmd "$name" "$i" "$3"
    i=$((i + 1))
    (( last )) && break
  done
}
append_rule() { iptables -w -A svc-in -p tcp --dport "$1" -j ACCEPT; }
list_rules() { iptables -w -L -n > /dev/null; }
save_rules() { iptables -w -S > /dev/null; }
daemon_status() { bpfilter status > /dev/null; }

restart() {
  local before_pid after_pid c_before rc loops restart_pid window_lo window_hi sent
  rm -f "$work/stop2" "$work/restart.done" "$work/cmds"
  cli "$py" "$udp" echo 6001 "$work/stop2" &
  "$py" "$udp" recv "$work/stop2" "$work/phase2" 5001 &
  wait_file "$work/phase2.ready" || { echo "the receiver did not start"; return 1; }
  cli "$py" "$udp" stream 10.77.0.1 5001 100 "$work/stop2" > "$work/stream.sent" &
  "$py" "$udp" pingpong 10.77.0.2 6001 100 "$work/stop2" > "$work/pingpong" &
  sleep 1
  c_before="$(count 'udp --dport 5001 -j ACCEPT')"
  before_pid="$(prop bpfilter.service MainPID)"
  cmd_loop append 7001 append_rule &
  loops=($!)
  cmd_loop append2 7501 append_rule &
  loops+=($!)
  cmd_loop list 1 list_rules &
  loops+=($!)
  cmd_loop status 1 daemon_status &
  loops+=($!)
  sleep 0.3
  systemctl restart bpfilter.service > "$work/restart.out" 2>&1 &
  restart_pid=$!
  while kill -0 "$restart_pid" 2>/dev/null && [[ "$(systemctl is-active bpfilter.service)" == active ]]; do :; done
  run_cmd burst-append 7101 append_rule &
  loops+=($!)
  run_cmd burst-status 1 daemon_status &
  loops+=($!)
  run_cmd burst-save 1 save_rules &
  loops+=($!)
  wait "$restart_pid"
  rc=$?
  touch "$work/restart.done"
  after_pid="$(prop bpfilter.service MainPID)"
  # the loops' last commands, then a second of traffic on the new daemon
  wait "${loops[@]}"
  sleep 1
  touch "$work/stop2"
  wait
  # The window without a daemon serving: from the old one's stop to the new one's READY=1.
  window_lo="$(prop bpfilter.service ActiveExitTimestampMonotonic)"
  window_hi="$(prop bpfilter.service ActiveEnterTimestampMonotonic)"
  echo "$window_lo $window_hi" > "$work/window"
  (( rc == 0 )) || { echo "systemctl restart failed: $(cat "$work/restart.out")"; return 1; }
  [[ "$after_pid" != "$before_pid" && "$after_pid" != 0 ]] \
    || { echo "the daemon's pid did not change ($before_pid -> $after_pid)"; return 1; }
  sent="$(cat "$work/stream.sent")"
  echo "$sent $c_before" > "$work/restart.counts"
  read -r _ _ distinct _ _ missing < "$work/phase2"
  [[ "$distinct" == "$sent" && "$missing" == - ]] \
    || { echo "accepted flow: $distinct of $sent packets arrived (missing: $missing)"; return 1; }
  read -r psent preplied pmissing < "$work/pingpong"
  [[ "$psent" == "$preplied" ]] \
    || { echo "established flow: $preplied of $psent replies arrived (missing: $pmissing)"; return 1; }
  echo "$sent + $psent packets, none lost; daemon pid $before_pid -> $after_pid," \
    "$(( (window_hi - window_lo) / 1000 )) ms from the old one's stop to the new one's READY=1"
}
check "systemctl restart bpfilter under traffic: no accepted packet lost" "" restart

concurrent() {
  local lo hi n_all n_in n_flight fails
  [[ -s "$work/cmds" && -s "$work/window" ]] || { echo "the restart check did not run the commands"; return 1; }
  read -r lo hi < "$work/window"
  n_all="$(wc -l < "$work/cmds")"
  n_in="$(awk -v lo="$lo" -v hi="$hi" '$1 >= lo && $1 <= hi' "$work/cmds" | wc -l)"
  # Commands that may have had a request open with the old daemon when it was told to stop.
  n_flight="$(awk -v lo="$lo" '$1 < lo && $2 > lo' "$work/cmds" | wc -l)"
  fails="$(awk -v lo="$lo" -v hi="$hi" '$3 != 0 {
    print "  " $0, ($1 < lo ? "(in flight when the old daemon was stopped)" : $1 <= hi ? "(issued while no daemon served)" : "(issued after the new daemon was ready)") }' "$work/cmds")"
  if [[ -n "$fails" ]]; then
    echo "commands failed (the old daemon told to stop at ${lo} us, the new one ready at ${hi} us; start_us end_us status name arg):"
    echo "$fails"
    awk '$3 != 0 {print $4 "." $5}' "$work/cmds" | while read -r f; do sed "s/^/    $f: /" "$work/$f.out"; done
    return 1
  fi
  (( n_in >= 1 )) || { echo "no command was issued while no daemon served (of $n_all; window ${lo}-${hi} us)"; return 1; }
  echo "$n_all commands, $n_flight in flight when the old daemon was stopped, $n_in issued" \
    "in the $(( (hi - lo) / 1000 )) ms before the new one was ready; all succeeded"
}
check "commands during the restart wait and succeed" "" concurrent

kept() {
  local sent c_before c_after ok_rules failed_rules want got rest extra missing
  [[ -s "$work/restart.counts" ]] || { echo "the restart check did not finish"; return 1; }
  read -r sent c_before < "$work/restart.counts"
  c_after="$(count 'udp --dport 5001 -j ACCEPT')"
  rule() { awk -v ok="$1" '$4 ~ /append/ && ($3 == 0) == ok {print "-A svc-in -p tcp -m tcp --dport " $5 " -j ACCEPT"}' "$work/cmds" | sort; }
  ok_rules="$(rule 1)"
  failed_rules="$(rule 0)"
  # Exactly: phase one's packets and every packet of the stream, none counted twice or lost.
  if (( c_after != N + sent )); then
    echo "the ACCEPT rule counted $c_after after the restart ($c_before before it), $((N + sent)) packets arrived" \
      "${failed_rules:+(an iptables -A failed around the restart: iptables-legacy carries the counters over to a new table with SO_SET_ADD_COUNTERS after SO_SET_REPLACE, and a command cut between the two loses them)}"
    return 1
  fi
  # The rules: rules.v4's, in order, then those iptables -A reported appended, in the order the
  # xtables lock let them run (compared as a set). A command that failed may or may not have
  # replaced the table before it failed, as with the kernel's tables.
  want="$(normalise < "$rules" | sed '/^COMMIT$/d')"
  got="$(iptables-save | normalise | sed '/^COMMIT$/d')"
  diff <(echo "$want") <(head -n "$(echo "$want" | wc -l)" <<< "$got") > "$work/kept.diff" \
    || { echo "rules after the restart do not start with rules.v4's:"; cat "$work/kept.diff"; return 1; }
  rest="$(tail -n +"$(( $(echo "$want" | wc -l) + 1 ))" <<< "$got" | sort)"
  missing="$(comm -23 <(echo "$ok_rules") <(echo "$rest") | grep .)"
  extra="$(comm -13 <(echo "$ok_rules") <(echo "$rest") | comm -23 - <(echo "$failed_rules") | grep .)"
  [[ -z "$missing$extra" ]] \
    || { echo "after rules.v4's, missing: ${missing:-none}; unexpected: ${extra:-none}"; return 1; }
  echo "ACCEPT counter $c_before before, $c_after after = $N + $sent sent; rules.v4 + $(echo "$ok_rules" | grep -c .) appended rules"
}
check "rules and counters kept across the restart" "" kept

# -------------------------------------------------------------------------------------------
# The units as systemd reads them; the journal of this boot.
# -------------------------------------------------------------------------------------------
verify() {
  local out
  out="$(systemd-analyze verify /usr/lib/systemd/system/bpfilter*.service \
    /usr/lib/systemd/system/bpfilter.socket 2>&1)" || { echo "exit $?: $out"; return 1; }
  [[ -z "$out" ]] || { echo "$out"; return 1; }
  echo "$(cd /usr/lib/systemd/system && echo bpfilter*) clean"
}
check "systemd-analyze verify" "" verify

journal_errors() {
  local out
  out="$(journalctl -b -q --no-pager -p err "${units[@]/#/-u}")"
  [[ -z "$out" ]] || { echo "error lines:"; echo "$out"; return 1; }
  echo "no error-level line from ${units[*]}"
}
check "journal: no errors from the units" "" journal_errors

# -------------------------------------------------------------------------------------------
# dpkg -i of a newer version: postinst restarts the daemon, which adopts the pinned rules and
# counters; the administrator's alternative stands.
# -------------------------------------------------------------------------------------------
upgrade() {
  local deb="${BPFILTER_SERVICE_UPGRADE_DEB:-}" pid_before pid_after before after c_before c_after out v
  local before6 after6 c6_before c6_after
  [[ -n "$deb" && -f "$deb" ]] || { echo "no upgrade package (BPFILTER_SERVICE_UPGRADE_DEB=$deb)"; return 1; }
  pid_before="$(prop bpfilter.service MainPID)"
  before="$(iptables-save | normalise)"
  before6="$(ip6tables-save | normalise)"
  c_before="$(count 'udp --dport 5001 -j ACCEPT')"
  c6_before="$(count6 'udp --dport 5001 -j ACCEPT')"
  out="$(dpkg -i "$deb" 2>&1)" || { echo "dpkg -i $deb failed: $out"; return 1; }
  v="$(dpkg-query -W -f '${Version}' bpfilter)"
  [[ "$deb" == *"_${v}_"* ]] || { echo "installed version $v, not the package's"; return 1; }
  systemctl is-active --quiet bpfilter.service || { echo "bpfilter.service not active after the upgrade"; return 1; }
  pid_after="$(prop bpfilter.service MainPID)"
  [[ "$pid_after" != 0 && "$pid_after" != "$pid_before" ]] \
    || { echo "the daemon was not restarted (pid $pid_before -> $pid_after)"; return 1; }
  after="$(iptables-save | normalise)"
  [[ "$after" == "$before" ]] || { echo "rules changed:"; diff <(echo "$before") <(echo "$after"); return 1; }
  c_after="$(count 'udp --dport 5001 -j ACCEPT')"
  (( c_after == c_before )) || { echo "ACCEPT counter $c_before before, $c_after after"; return 1; }
  after6="$(ip6tables-save | normalise)"
  [[ "$after6" == "$before6" ]] || { echo "IPv6 rules changed:"; diff <(echo "$before6") <(echo "$after6"); return 1; }
  c6_after="$(count6 'udp --dport 5001 -j ACCEPT')"
  [[ "$c6_after" == "$c6_before" ]] || { echo "IPv6 ACCEPT counter $c6_before before, $c6_after after"; return 1; }
  [[ "$(readlink /etc/alternatives/iptables)" == /usr/sbin/iptables-bpfilter ]] \
    || { echo "the alternative changed: $(readlink /etc/alternatives/iptables)"; return 1; }
  [[ "$(readlink /etc/alternatives/ip6tables)" == /usr/sbin/ip6tables-bpfilter ]] \
    || { echo "the ip6tables alternative changed: $(readlink /etc/alternatives/ip6tables)"; return 1; }
  echo "version $v, daemon pid $pid_before -> $pid_after, rules and counters kept (IPv4 $c_after, IPv6 $c6_after)," \
    "iptables and ip6tables still bpfilter"
}
check "package upgrade: daemon restarted, IPv4 and IPv6 rules and counters kept" "" upgrade

# -------------------------------------------------------------------------------------------
# dpkg --purge: nothing attached, the alternative and iptables as before the install.
# -------------------------------------------------------------------------------------------
purge_out="$(dpkg --purge bpfilter 2>&1)"
purge_rc=$?
purged() {
  local i links progs name want got left
  (( purge_rc == 0 )) || { echo "dpkg --purge bpfilter failed ($purge_rc): $purge_out"; return 1; }
  # Programs go once their links and pins are gone (after an RCU grace period).
  for (( i = 0; i < 30; i++ )); do
    links="$(bpfilter_links)"
    progs="$(bpfilter_progs)"
    [[ -z "$links$progs" ]] && break
    sleep 0.1
  done
  [[ -z "$links" ]] || { echo "netfilter links still attached: $links"; return 1; }
  [[ -z "$progs" ]] || { echo "bpfilter programs still loaded: $progs"; return 1; }
  [[ ! -e /sys/fs/bpf/bpfilter ]] || { echo "/sys/fs/bpf/bpfilter remains: $(ls /sys/fs/bpf/bpfilter)"; return 1; }
  ! nft list tables 2>/dev/null | grep -q bpfilter || { echo "nftables table left: $(nft list tables | grep bpfilter)"; return 1; }
  ! pgrep -x bpfilter > /dev/null || { echo "a bpfilter process still runs: $(pgrep -ax bpfilter)"; return 1; }
  got="$(systemctl list-units --all --no-legend --plain 'bpfilter*' | awk '$3 != "inactive" || $2 != "not-found"')"
  [[ -z "$got" ]] || { echo "units left loaded: $got"; return 1; }
  left=""
  for name in /run/bpfilter /etc/iptables/rules.v4 /etc/iptables/rules.v6 /var/lib/bpfilter /usr/lib/bpfilter /usr/sbin/*bpfilter*; do
    [[ ! -e "$name" ]] || left+="$name "
  done
  echo "no bpfltr_ link or program, no /sys/fs/bpf/bpfilter, no bpfilter_conntrack table, no process, no unit${left:+; left: ${left% }}"
}
check "dpkg --purge: nothing attached" "" purged

restored_alternative() { # GROUP: iptables or ip6tables
  local name want got q
  for name in "$1" "$1-save" "$1-restore"; do
    want="$(<"$state/alt.$name")"
    got="$(readlink "/etc/alternatives/$name" || echo none)"
    [[ "$got" == "$want" ]] || { echo "/etc/alternatives/$name -> $got, was $want before the install"; return 1; }
  done
  q="$(update-alternatives --query "$1" | sed -n 's/^\(Status\|Value\): //p')"
  [[ "$q" == "$(<"$state/alt.query.$1")" ]] \
    || { echo "update-alternatives: ${q//$'\n'/ }, was $(tr '\n' ' ' < "$state/alt.query.$1")"; return 1; }
  got="$("$1" -V 2>&1)"
  [[ "$got" != *bpfilter* ]] || { echo "$1 -V still names bpfilter: $got"; return 1; }
  echo "$1 -> $(<"$state/alt.$1") (${q//$'\n'/ }); $1 -V: $got"
}
check "dpkg --purge: iptables alternative as before the install" "" restored_alternative iptables
check "dpkg --purge: ip6tables alternative as before the install" "" restored_alternative ip6tables

unfiltered() {
  local out=$work/phase3 p recv distinct
  rm -f "$work/stop3"
  "$py" "$udp" recv "$work/stop3" "$out" 5002 &
  wait_file "$out.ready" || { echo "the receiver did not start"; return 1; }
  cli "$py" "$udp" send 10.77.0.1 5002 10 200 > /dev/null
  cli "$py" "$udp" send fd77::1 5002 10 200 > /dev/null
  touch "$work/stop3"
  wait
  read -r p recv distinct _ < "$out"
  [[ "$distinct" == 10 && "$recv" == 20 ]] \
    || { echo "port 5002: $recv datagrams ($distinct distinct) of 10 over IPv4 and 10 over IPv6 received after the purge"; return 1; }
  echo "port 5002, dropped before, receives 10 of 10 over IPv4 and 10 of 10 over IPv6"
}
check "dpkg --purge: packets no longer filtered" "" unfiltered

if (( failed )); then
  echo "service: the journal of the bpfilter units (this boot):"
  journalctl -b -u 'bpfilter*' --no-pager
fi
echo "service: $passed passed, $failed failed (checks: $SECONDS s)"
exit $(( failed > 100 ? 100 : failed ))
