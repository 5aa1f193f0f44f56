#!/usr/bin/env bash
# Fetch Debian's packaged kernels for the QEMU kernel matrix (make kernels).
#
# A private apt configuration (never the machine's own sources) lists the suites that carry
# the kernels; packages are downloaded, not installed, and unpacked with dpkg -x into
#   $KERNEL_CACHE/<name>/{vmlinuz,modules/lib/modules/<release>,release}
# (default /var/cache/bpfilter/kernels, outside the repository). A kernel already unpacked is
# kept. Which kernels: tools/kernels/matrix (name, suite, package pattern).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${KERNEL_CACHE:-/var/cache/bpfilter/kernels}"
apt_dir="$cache/.apt"
mkdir -p "$apt_dir"/{lists/partial,archives/partial,etc/preferences.d,state}

# Ubuntu's archive key is kept beside this script (tools/kernels/ubuntu-archive-keyring.gpg,
# from Ubuntu's ubuntu-keyring package: the keys F6ECB376 2474EDA9 D21B7022 871920D1 991BC93C
# and 790BC727 7767219C 42C86F93 3B4FE6AC C0B21F32); Debian's is the machine's own.
cat > "$apt_dir/etc/sources.list" <<SRC
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-backports main
deb http://deb.debian.org/debian trixie main
deb http://deb.debian.org/debian trixie-backports main
deb [signed-by=$here/ubuntu-archive-keyring.gpg] http://archive.ubuntu.com/ubuntu noble-updates main
SRC
: > "$apt_dir/state/status"
apt_opts=(
  -o "Dir::Etc::sourcelist=$apt_dir/etc/sources.list"
  -o "Dir::Etc::sourceparts=-"
  -o "Dir::Etc::preferencesparts=$apt_dir/etc/preferences.d"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::State::status=$apt_dir/state/status"
  -o "Dir::Cache::archives=$apt_dir/archives"
  -o "Dir::Cache=$apt_dir"
  -o "APT::Get::List-Cleanup=0"
  -o "Debug::NoLocking=1"
)

need_update=1
while read -r name suite _; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  dest="$cache/$name"
  if [[ -f "$dest/release" && -f "$dest/vmlinuz" ]]; then
    echo "kernels: $name: $(cat "$dest/release") (cached)"
    continue
  fi
  if (( need_update )); then
    apt-get "${apt_opts[@]}" update -qq
    need_update=0
  fi
  # The kernel that the distribution's meta package names in that suite: Debian's
  # linux-image-amd64, Ubuntu's linux-image-generic.
  case "$suite" in
    noble* | jammy*) meta_pkg=linux-image-generic ;;
    *) meta_pkg=linux-image-amd64 ;;
  esac
  meta="$(apt-cache "${apt_opts[@]}" madison "$meta_pkg" | awk -F' *[|] *' -v s="$suite/" 'index($3, s) {print $2; exit}')"
  [[ -n "$meta" ]] || { echo "kernels: $name: no $meta_pkg in $suite" >&2; exit 1; }
  pkg="$(apt-cache "${apt_opts[@]}" show "$meta_pkg=$meta" | sed -n 's/^Depends: //p' | head -1 \
        | grep -o 'linux-image-[0-9][^ ,]*' | head -1)"
  ver="$(apt-cache "${apt_opts[@]}" madison "$pkg" | awk -F' *[|] *' -v s="$suite/" 'index($3, s) {print $2; exit}')"
  [[ -n "$pkg" && -n "$ver" ]] || { echo "kernels: $name: cannot resolve $meta" >&2; exit 1; }
  echo "kernels: $name: $pkg $ver ($suite)"
  work="$(mktemp -d)"
  pkgs=("$pkg=$ver")
  # Debian 7.x splits the kernel into linux-binary-<release> (the image),
  # linux-modules-<release>, of the same version; Ubuntu keeps the modules in
  # linux-modules-<release> (the rarer ones, in linux-modules-extra, are not needed)
  for part in base binary modules; do
    p="linux-$part-${pkg#linux-image-}"
    if apt-cache "${apt_opts[@]}" madison "$p" 2>/dev/null | grep -q .; then pkgs+=("$p=$ver"); fi
  done
  (cd "$work" && chmod 0777 . && apt-get "${apt_opts[@]}" download "${pkgs[@]}" >/dev/null 2>&1)
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/modules"
  for deb in "$work"/*.deb; do dpkg -x "$deb" "$dest.tmp/modules"; done
  rm -rf "$work"
  # merged-/usr packages (trixie on) ship usr/lib/modules; keep one layout: lib/modules
  if [[ -d "$dest.tmp/modules/usr/lib/modules" ]]; then
    mkdir -p "$dest.tmp/modules/lib"
    mv "$dest.tmp/modules/usr/lib/modules" "$dest.tmp/modules/lib/modules"
  fi
  rel="$(ls "$dest.tmp/modules/lib/modules" | head -1)"
  for img in "$dest.tmp/modules/boot/vmlinuz-$rel" "$dest.tmp/modules/lib/modules/$rel/vmlinuz"; do
    [[ -f "$img" ]] && cp "$img" "$dest.tmp/vmlinuz" && break
  done
  [[ -f "$dest.tmp/vmlinuz" ]] || { echo "kernels: $name: no vmlinuz in $pkg" >&2; exit 1; }
  rm -rf "$dest.tmp/modules/boot" "$dest.tmp/modules/usr"
  depmod -b "$dest.tmp/modules" "$rel"
  echo "$rel" > "$dest.tmp/release"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  echo "kernels: $name: $rel"
done < "$here/matrix"
