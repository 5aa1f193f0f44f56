#!/usr/bin/env bash
# The privileged suites of the kernel matrix, run INSIDE a guest (tools/kernels/guest.sh) on
# the host's build. Usage: suites.sh run|load|refusal
#   run      the probe, the datapath test-run suites of both families (every packet access the
#            kernel verifies, 10,000-rule loads, events; IPv6's extension-header walk), the
#            conntrack switch, the README quick start, the stateful/REJECT/LOG rules with
#            real packets against the kernel's iptables-legacy, and a bounded conformance run
#            (limit, owner and addrtype are loaded and run by the datapath test runs; their
#            real-packet tests run on the host, and so does tests/e2e_ipv6.rs, ip6tables with
#            real packets: three minutes under emulation would pass the guest's time limit)
#   load     the part of `run` that the verifier decides: the probe, the datapath test runs
#            of both families and the conntrack switch (the whole of `run` takes a guest of its
#            own for 7 minutes, more than CI can give a third kernel)
#   refusal  a kernel bpfilter cannot run on: the daemon must exit 69 with one line
#            naming what is missing, and iptables must print that line, not a kernel errno
# The test executables come from $BPFILTER_TESTS (name=path pairs, from matrix.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=target/release/bpfilter
exe() { # path of the test executable named $1
  local kv
  for kv in $BPFILTER_TESTS; do [[ "${kv%%=*}" == "$1" ]] && { echo "${kv#*=}"; return; }; done
  echo "suites: no test executable '$1' in BPFILTER_TESTS" >&2; exit 2
}
step() { echo "== $(uname -r) [$(date +%T)]: $*"; }

# What the verifier decides: the probe, the datapath test runs of both families, the conntrack
# switch.
verifier_suites() {
  step "probe"
  "$(exe bpfilter)" --test-threads=1 --nocapture --exact probe::tests::probe_running_kernel
  step "datapath test runs"
  "$(exe datapath)" --test-threads=1 --nocapture kernel_scale table_of_expectations jumps_gotos_returns \
    rule_runs_table runs_with_classes_table deep_inlined_return_from_cold_block \
    connection_state_without_an_entry \
    events_reach_the_ring_buffer a_full_ring_buffer_counts_its_losses log_with_every_flag_loads \
    limit_takes_credits_as_limit_mt limit_is_taken_in_the_kernels_order \
    addrtype_reads_the_namespaces_address_types owner_without_a_socket \
    mac_matches_nothing_off_ethernet 2>&1 \
    | sed -n '/MATRIX\|^test \|test result\|panicked\|assert/p'
  # (every match over the packet corpus and the random rulesets run on the host only: under
  # emulation they took three minutes, past what CI can give the matrix)
  step "IPv6 datapath test runs (the extension-header walk and its bound, chains, events, rule runs)"
  "$(exe datapath6)" --test-threads=1 chains_and_events events_carry_the_ipv6_packet \
    extension_header_bound ipv6_rule_runs_table 2>&1 \
    | sed -n '/MATRIX\|^test \|test result\|panicked\|assert/p'
  step "connection tracking turned on for a namespace (nftables ct expression, module autoload)"
  "$(exe conntrack_enable)" --test-threads=1
}

case "${1:-}" in
load)
  verifier_suites
  ;;
run)
  verifier_suites
  step "quick start with real packets (bpfilter against the kernel's iptables-legacy)"
  "$(exe e2e_packets)" --test-threads=1 packets_are_judged_and_counted_as_the_kernel_does
  step "connection state, REJECT and LOG with real packets (against the kernel's)"
  "$(exe e2e_targets)" --test-threads=1 stateful_rules_and_rejects_answer_as_the_kernel_does \
    log_lines_are_the_kernels
  step "recent lists: spin-locked map values, /proc/net/xt_recent through the preload (against the kernel's)"
  "$(exe e2e_matches)" --test-threads=1 recent_lists_act_as_the_kernels
  step "hashlimit tables: spin-locked hash map entries, buckets, rate match, hotdrops (against the kernel's)"
  "$(exe e2e_matches)" --test-threads=1 hashlimit_buckets_act_as_the_kernels
  step "tcpmss: the MSS option scan, hotdrops, non-first fragments as this kernel reads them (against the kernel's)"
  "$(exe e2e_matches)" --test-threads=1 tcpmss_matches_as_the_kernels
  step "bounded conformance"
  # a spread sample (every 12th ruleset): software emulation is ~60x slower than this machine
  target/release/conformance --bounded --random 6 --packets 40 --hand-packets 12 --every 12 --quiet
  ;;
refusal)
  step "the daemon refuses this kernel"
  sock=/run/bpfilter/matrix.sock
  set +e
  timeout 60 "$bin" daemon --socket "$sock" >/tmp/daemon.out 2>&1
  rc=$?
  set -e
  last="$(tail -1 /tmp/daemon.out)"
  echo "daemon exit status $rc: $last"
  # 69 (EX_UNAVAILABLE): the status bpfilter.service does not restart on
  [[ $rc -eq 69 ]] || { echo "FAIL: the daemon did not refuse with status 69"; exit 1; }
  [[ "$last" == *"cannot run bpfilter"*"needs Linux"* ]] || { echo "FAIL: unclear refusal"; exit 1; }
  step "iptables says why"
  set +e
  out="$("$bin" --socket "$sock" iptables -L 2>&1)"
  rc=$?
  set -e
  echo "iptables exit status $rc: $out"
  [[ $rc -ne 0 && "$out" == *"cannot run bpfilter"* && "$out" != *"wrong version"* ]] \
    || { echo "FAIL: iptables did not print the refusal"; exit 1; }
  "$(exe bpfilter)" --test-threads=1 --nocapture --exact probe::tests::probe_running_kernel
  ;;
*)
  echo "usage: suites.sh run|load|refusal" >&2; exit 2 ;;
esac
echo "== $(uname -r): suites passed"
