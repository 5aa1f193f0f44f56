#!/usr/bin/env bash
# The host phase of `make test`: every test executable of the workspace, several at a time.
#
# Most of these tests wait (daemons starting, commands, packets between namespaces, grace
# periods), so running them one executable after another left this machine's two CPUs idle
# for most of the phase. Each test already isolates itself for running beside others: its
# own daemon, socket, bpffs folder, namespaces and xtables lock (tests/common); the one
# machine-wide setting tests change, net.netfilter.nf_log_all_netns, is held under a lock
# (test_support::kmsg::LogAllNetns). Inside an executable, tests still run one at a time,
# except those of modules named `in_namespace_pairs` (tests/real_rulesets.rs,
# tests/e2e_ipv6.rs): four at a time, in jobs of their own.
#
# Each job's output is kept and printed whole when it ends (target/host-tests/NAME.log), so
# that the log reads as one executable at a time. Any failure fails the phase, after every
# job has run. Doctests run first, alone: `cargo test --doc` may build the libraries again in
# its own feature set, and it once re-linked target/release/libbpfilter.so while a test's
# iptables was loading it ("cannot be preloaded": the test failed).
#
# Usage: tools/tests.sh [-j JOBS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=3
if [[ "${1:-}" == -j ]]; then
  jobs="$2"
  shift 2
fi
out=target/host-tests
rm -rf "$out"
mkdir -p "$out"

# name<TAB>directory<TAB>executable, for every test executable (cargo runs each in the folder
# of its package, and so does this).
cargo test --release --workspace --no-run --message-format=json 2>/dev/null | python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        kind = m["target"]["kind"][0]
        name = m["target"]["name"] if kind == "test" else kind + "." + m["target"]["name"]
        print(name, os.path.dirname(m["manifest_path"]), m["executable"], sep="\t")
' > "$out/executables"
[[ -s "$out/executables" ]] || { echo "tests: no test executables found" >&2; exit 1; }

# Jobs as name|directory|executable|arguments, the longest first (their usual length on this
# machine, in seconds), so that the last to start are short.
declare -A usual=(
  [reliability_faults]=84 [e2e_matches]=73 [bounded]=72 [datapath]=65 [reliability_netns]=64
  [pairs.real_rulesets]=48 [service]=39 [e2e_packets]=39 [bad_input]=38 [e2e_tables]=37
  [datapath6]=36 [fuzz_bounded]=36 [pairs.e2e_ipv6]=35 [reliability_load]=34 [privilege]=33
  [e2e_targets]=29 [e2e_commands]=29
)
joblist=()
while IFS=$'\t' read -r name dir exe; do
  joblist+=("$name|$dir|$exe|--test-threads=1 --skip in_namespace_pairs::")
  case "$name" in
    real_rulesets | e2e_ipv6)
      joblist+=("pairs.$name|$dir|$exe|--test-threads=4 in_namespace_pairs::") ;;
  esac
done < "$out/executables"
mapfile -t joblist < <(for j in "${joblist[@]}"; do
  printf '%s\t%s\n' "${usual[${j%%|*}]:-0}" "$j"
done | sort -t$'\t' -k1,1nr -s | cut -f2-)

failed=()
declare -A running=()
started=$(date +%s)

# Waits for one job to end; prints its log and notes a failure.
reap() {
  local pid rc name
  set +e
  wait -n -p pid
  rc=$?
  set -e
  name="${running[$pid]}"
  unset "running[$pid]"
  echo "== $name: status $rc after $(( $(date +%s) - ${starts[$name]} ))s"
  cat "$out/$name.log"
  (( rc == 0 )) || failed+=("$name")
}

declare -A starts=()
echo "== doctests"
cargo test --release --workspace --doc > "$out/doctests.log" 2>&1 || failed+=("doctests")
cat "$out/doctests.log"
for job in "${joblist[@]}"; do
  IFS='|' read -r name dir exe args <<< "$job"
  while (( ${#running[@]} >= jobs )); do reap; done
  starts[$name]=$(date +%s)
  # shellcheck disable=SC2086 # the arguments are words
  (cd "$dir" && exec "$exe" $args) > "$out/$name.log" 2>&1 &
  running[$!]="$name"
done
while (( ${#running[@]} )); do reap; done

echo "== host tests: doctests, then ${#joblist[@]} jobs, $jobs at a time, $(( $(date +%s) - started ))s"
if (( ${#failed[@]} )); then
  echo "== host tests FAILED: ${failed[*]}"
  exit 1
fi
