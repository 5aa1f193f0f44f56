#!/usr/bin/env bash
# Checks bpfilter's systemd units with `systemd-analyze verify` (no running systemd needed).
#
#   dist/systemd/verify.sh [SBINDIR]
#
# The units are the *.in sources with @sbindir@ replaced by SBINDIR (default: this checkout's
# target/release, where `make build` puts the binary: verify requires ExecStart's binary to
# exist). Fails when verify fails or prints anything at all: a warning about a unit is a
# defect. Documentation= man pages are checked too when the binary can generate them
# (`bpfilter generate man DIR`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sbindir="${1:-$(cd "$here/../.." && pwd)/target/release}"
[[ -x "$sbindir/bpfilter" ]] || { echo "verify.sh: no executable $sbindir/bpfilter (make build)" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "verify.sh: systemd-analyze not installed" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
units="$tmp/units"
mkdir -p "$units"
for src in "$here"/*.in; do
  sed "s|@sbindir@|$sbindir|g" "$src" >"$units/$(basename "$src" .in)"
done
# The drop-in is checked on a stand-in for netfilter-persistent.service (its ordering and
# its parse), the way systemd would merge it into the real one.
cp -r "$here/netfilter-persistent.service.d" "$units/"
cat >"$units/netfilter-persistent.service" <<'EOF'
[Unit]
Description=stand-in for netfilter-persistent.service
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
[Install]
WantedBy=multi-user.target
EOF

man=--man=no
if "$sbindir/bpfilter" generate man "$tmp/man/man8" >/dev/null 2>&1 && [[ -f "$tmp/man/man8/bpfilter.8" ]]; then
  export MANPATH="$tmp/man"
  man=--man=yes
else
  echo "verify.sh: $sbindir/bpfilter cannot generate man pages: Documentation= not checked" >&2
fi

# SYSTEMD_LOG_COLOR: plain text to compare. Drop-ins and same-directory units are found through
# the unit files' own directory.
out="$(cd "$units" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify "$man" \
  ./bpfilter.socket ./bpfilter.service ./bpfilter-restore.service ./bpfilter-restore6.service \
  ./netfilter-persistent.service 2>&1)" \
  && rc=0 || rc=$?
if (( rc != 0 )) || [[ -n "$out" ]]; then
  printf '%s\n' "$out" >&2
  echo "verify.sh: systemd-analyze verify failed (exit $rc) or warned" >&2
  exit 1
fi
echo "verify.sh: bpfilter.socket bpfilter.service bpfilter-restore.service bpfilter-restore6.service and the netfilter-persistent drop-in verify cleanly"
