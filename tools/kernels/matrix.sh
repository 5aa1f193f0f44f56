#!/usr/bin/env bash
# The kernel matrix of `make test`: boots each kernel of tools/kernels/matrix under QEMU
# (tools/kernels/guest.sh) and runs tools/kernels/suites.sh there against the host's build.
# Guests run two at a time: each emulates its CPUs on one host thread (guest.sh's
# `thread=single`), so two guests use this machine's two CPUs where one used half of them.
# Each guest's output goes to its log, printed whole when it ends. Logs and a summary go to
# target/kernel-matrix/. Any failure fails the run.
# Usage: matrix.sh [kernel-name...]   (default: every kernel of the matrix)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
out=target/kernel-matrix
mkdir -p "$out"
"$here/fetch.sh"

# The test executables the suites run, as name=path (cargo names them with a hash).
tests="$(cargo test --release --no-run --message-format=json -p bpfilter --lib \
           --test datapath --test datapath6 --test e2e_packets --test conntrack_enable --test e2e_targets \
           --test e2e_matches 2>/dev/null \
         | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"] + "=" + m["executable"])
' | tr '\n' ' ')"
[[ "$tests" == *datapath=* ]] || { echo "matrix: test executables not found" >&2; exit 1; }

want=("$@")
summary="$out/summary.txt"
: > "$summary"
failed=0
names=()
declare -A modes starts ends rcs=() running=()
# Two guests at a time, in the matrix's order: a third on two CPUs slowed all three past twice
# their time (three runs that take 7 minutes two at a time passed 14 together).
max_guests=2
reap() {
  local pid rc
  set +e
  wait -n -p pid
  rc=$?
  set -e
  rcs[${running[$pid]}]=$rc
  ends[${running[$pid]}]=$(date +%s)
  unset "running[$pid]"
}
while read -r name _ mode; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  if (( ${#want[@]} )) && [[ " ${want[*]} " != *" $name "* ]]; then continue; fi
  while (( ${#running[@]} >= max_guests )); do reap; done
  log="$out/$name.log"
  echo "== kernel $name: $mode (log $log), started"
  names+=("$name")
  modes[$name]=$mode
  starts[$name]=$(date +%s)
  # A run takes 8-10 minutes beside another; a hung guest must not eat the CI budget (30
  # minutes in all).
  "$here/guest.sh" --timeout 900 --console "$out/$name.console" --env CI="${CI:-}" \
    --env BPFILTER_TESTS="$tests" --env RUST_BACKTRACE=1 \
    "$name" -- tools/kernels/suites.sh "$mode" > "$log" 2>&1 &
  running[$!]=$name
done < "$here/matrix"
while (( ${#running[@]} )); do reap; done
for name in "${names[@]}"; do
  rc=${rcs[$name]}
  log="$out/$name.log"
  secs=$(( ${ends[$name]} - ${starts[$name]} ))
  echo "== kernel $name: ${modes[$name]}, ended after ${secs}s with status $rc"
  cat "$log"
  release="$(cat "${KERNEL_CACHE:-/var/cache/bpfilter/kernels}/$name/release")"
  strategy="$(sed -n 's/.*strategy: \([a-z]*\).*/\1/p' "$log" | head -1)"
  if (( rc == 0 )); then
    verdict=passed
  else
    verdict="FAILED (exit $rc)"
    failed=1
    # what the guest's kernel said (an oops, a hung task) decides between our bug and its
    echo "== kernel $name: the end of its console ($out/$name.console)"
    tail -n 80 "$out/$name.console" 2>/dev/null || true
  fi
  echo "$name $release ${modes[$name]}: $verdict in ${secs}s${strategy:+, strategy $strategy}" >> "$summary"
  grep -ho 'MATRIX .*' "$log" | sed "s/^MATRIX /  /" >> "$summary" || true
done
echo "== kernel matrix"
cat "$summary"
exit $failed
