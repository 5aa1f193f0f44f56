#!/usr/bin/env bash
# The kernel matrix of `make test`: boots each kernel of tools/kernels/matrix under QEMU
# (tools/kernels/guest.sh) and runs tools/kernels/suites.sh there against the host's build.
# Guests run one after another (TCG is slow; two at once only share the same two CPUs).
# Logs and a summary go to target/kernel-matrix/. Any failure fails the run.
# Usage: matrix.sh [kernel-name...]   (default: every kernel of the matrix)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
out=target/kernel-matrix
mkdir -p "$out"
"$here/fetch.sh"

# The test executables the suites run, as name=path (cargo names them with a hash).
tests="$(cargo test --release --no-run --message-format=json -p bpfilter --lib \
           --test datapath --test e2e_packets --test conntrack_enable --test e2e_targets --test e2e_matches 2>/dev/null \
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
while read -r name _ mode; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  if (( ${#want[@]} )) && [[ " ${want[*]} " != *" $name "* ]]; then continue; fi
  log="$out/$name.log"
  echo "== kernel $name: $mode (log $log)"
  t0=$(date +%s)
  set +e
  # A run takes 2-4 minutes; a hung guest must not eat the CI budget (30 minutes in all).
  "$here/guest.sh" --timeout 600 --env CI="${CI:-}" --env BPFILTER_TESTS="$tests" --env RUST_BACKTRACE=1 \
    "$name" -- tools/kernels/suites.sh "$mode" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  secs=$(( $(date +%s) - t0 ))
  release="$(cat "${KERNEL_CACHE:-/var/cache/bpfilter/kernels}/$name/release")"
  strategy="$(sed -n 's/.*strategy: \([a-z]*\).*/\1/p' "$log" | head -1)"
  if (( rc == 0 )); then verdict=passed; else verdict="FAILED (exit $rc)"; failed=1; fi
  echo "$name $release $mode: $verdict in ${secs}s${strategy:+, strategy $strategy}" >> "$summary"
  grep -ho 'MATRIX .*' "$log" | sed "s/^MATRIX /  /" >> "$summary" || true
done < "$here/matrix"
echo "== kernel matrix"
cat "$summary"
exit $failed
