#!/usr/bin/env bash
# Run one command inside a QEMU guest booted with one of the kernels that fetch.sh unpacked.
#
#   tools/kernels/guest.sh [--timeout S] [--mem MiB] [--env NAME[=VALUE]]... <kernel> -- <cmd> [args...]
#
# The guest sees the host's / read-only (virtio-9p) under a RAM-backed overlay, so every path,
# binary and library is the host's own and nothing it writes reaches the host. The command runs
# as root with the caller's working directory; its stdout and stderr come back on this script's
# stdout and stderr (virtio-serial ports, so the command sees pipes as it would in CI, not a tty)
# and its exit status becomes ours. 125 means the guest itself failed (boot, setup, timeout).
#
# The same file is also the guest's init after switch_root (--in-guest, run by the guest's
# PID 1 from the shared host filesystem): keeping both halves here keeps them in step.
set -euo pipefail

readonly GUEST_FAIL=125

die() { echo "guest.sh: $*" >&2; exit "$GUEST_FAIL"; }

# ---------------------------------------------------------------------------------------------
# Inside the guest: PID 1 after switch_root into the overlay. Mount what a normal Debian system
# would have (the tests need bpffs, netns, veth, module autoloading), run the command, report
# its status on the rc port, power off.
# ---------------------------------------------------------------------------------------------
in_guest() {
  local run="$1" rel="$2"
  # PID 1 gets the kernel's environment (TERM=linux, the GUEST_* parameters): start clean.
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

  mount -t tmpfs -o mode=0755,nosuid,nodev run /run
  mkdir -p /run/lock /run/guest
  # The run dir lives in the host's /tmp, which the guest's own /tmp is about to hide.
  cp "$run/cmd" /run/guest/cmd
  local cwd
  cwd="$(<"$run/cwd")"

  # systemd makes / shared on the host; `ip netns` and tests relying on propagation expect it.
  mount --make-rshared /
  mkdir -p /dev/pts /dev/shm /dev/virtio-ports
  mount -t devpts -o gid=5,mode=620,ptmxmode=000 devpts /dev/pts
  mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm
  # udev would create these; bash process substitution and `>/dev/stderr` need them.
  ln -sfn /proc/self/fd /dev/fd
  ln -sfn /proc/self/fd/0 /dev/stdin
  ln -sfn /proc/self/fd/1 /dev/stdout
  ln -sfn /proc/self/fd/2 /dev/stderr
  # A fresh /tmp, unless the caller works inside /tmp (it would vanish under the tmpfs); the
  # overlay's /tmp is RAM-backed anyway.
  if [[ "$cwd" != /tmp && "$cwd" != /tmp/* ]]; then
    mount -t tmpfs -o mode=1777,nosuid,nodev tmp /tmp
  fi
  mount -t bpf -o mode=0700 bpf /sys/fs/bpf
  mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup 2>/dev/null || true
  mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
  mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true

  # request_module() (iptables' `modprobe ip_tables`, veth autoload) runs the host's kmod
  # against this kernel's modules, shared read-only by the host at the usual place.
  [[ -f "/lib/modules/$rel/modules.dep" ]] || { echo "guest: no modules for $rel" >&2; return 1; }
  echo /sbin/modprobe > /proc/sys/kernel/modprobe
  ip link set lo up
  hostname "guest-${rel//[^a-zA-Z0-9-]/-}"

  # Name the virtio-serial ports as udev would (/dev/virtio-ports/<name>); the host creates
  # them before boot, but their names arrive asynchronously from the control queue.
  local p name i
  for (( i = 0; i < 100; i++ )); do
    for p in /sys/class/virtio-ports/*; do
      name="$(cat "$p/name" 2>/dev/null || true)"
      if [[ -n "$name" ]]; then ln -sfn "/dev/${p##*/}" "/dev/virtio-ports/$name"; fi
    done
    [[ -e /dev/virtio-ports/guest.rc ]] && break
    sleep 0.05
  done
  [[ -e /dev/virtio-ports/guest.rc ]] || { echo "guest: no virtio-serial ports" >&2; return 1; }

  # A port can be opened by one process at a time (EBUSY otherwise), so the command writes to
  # FIFOs and one `cat` per stream owns the port. This also gives the command pipes, not a tty.
  mkfifo /run/guest/stdout /run/guest/stderr
  cat /run/guest/stdout > /dev/virtio-ports/guest.stdout &
  local cat_out=$!
  cat /run/guest/stderr > /dev/virtio-ports/guest.stderr &
  local cat_err=$!

  local rc=0
  env -i bash /run/guest/cmd < /dev/null > /run/guest/stdout 2> /run/guest/stderr || rc=$?

  # A daemon left running by the command would hold the FIFOs open forever: give the streams
  # a moment to drain, then cut them.
  for (( i = 0; i < 100; i++ )); do
    kill -0 "$cat_out" 2>/dev/null || kill -0 "$cat_err" 2>/dev/null || break
    sleep 0.05
  done
  kill "$cat_out" "$cat_err" 2>/dev/null || true
  # A write to a port returns once the host has taken the data, so the status is out when
  # this returns and powering off cannot lose it.
  echo "$rc" > /dev/virtio-ports/guest.rc
}

if [[ "${1:-}" == --in-guest ]]; then
  # PID 1 must never exit (that panics): whatever happens, power off. A failed setup step
  # leaves no status, which the host reports with the console log, where this line goes.
  set -E
  trap 'echo "guest: line $LINENO: $BASH_COMMAND failed" >&2' ERR
  trap 'busybox poweroff -f; sleep 60' EXIT
  in_guest "$2" "$3"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# On the host.
# ---------------------------------------------------------------------------------------------
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
self="$here/$(basename "${BASH_SOURCE[0]}")"
cache="${KERNEL_CACHE:-/var/cache/bpfilter/kernels}"

usage() {
  echo "usage: $0 [--timeout S] [--mem MiB] [--env NAME[=VALUE]]... [--console FILE] <kernel> -- <command> [args...]" >&2
  echo "kernels: $(cd "$cache" 2>/dev/null && ls -d -- */ 2>/dev/null | tr -d / | tr '\n' ' ')" >&2
  exit 2
}

timeout=1500
mem=2048
console=
# Passed through when set on the host; HOME is always /root.
env_names=(CI PATH RUST_BACKTRACE RUST_LOG RUST_TEST_THREADS RUST_TEST_NOCAPTURE NO_COLOR CARGO_TERM_COLOR)
mapfile -t -O "${#env_names[@]}" env_names < <(compgen -e -X '!BPFILTER_*')
env_set=()
while (( $# )); do
  case "$1" in
    --timeout) [[ "${2:-}" =~ ^[0-9]+$ ]] || usage; timeout="$2"; shift 2 ;;
    --mem) [[ "${2:-}" =~ ^[0-9]+$ ]] || usage; mem="$2"; shift 2 ;;
    --console) [[ -n "${2:-}" ]] || usage; console="$2"; shift 2 ;;
    --env)
      [[ "${2:-}" =~ ^[A-Za-z_][A-Za-z0-9_]*(=|$) ]] || usage
      if [[ "$2" == *=* ]]; then env_set+=("$2"); else env_names+=("$2"); fi
      shift 2 ;;
    -h|--help) usage ;;
    --) usage ;;
    -*) usage ;;
    *) break ;;
  esac
done
(( $# >= 3 )) && [[ "$2" == -- ]] || usage
kname="$1"
shift 2

kdir="$cache/$kname"
[[ -f "$kdir/vmlinuz" && -f "$kdir/release" ]] \
  || die "kernel '$kname' not in $cache (run tools/kernels/fetch.sh)"
rel="$(<"$kdir/release")"
moddir="$kdir/modules/lib/modules/$rel"
[[ -f "$moddir/modules.dep" ]] || die "kernel '$kname': no $moddir/modules.dep"
for tool in qemu-system-x86_64 busybox modprobe xz zstd; do
  command -v "$tool" >/dev/null || die "$tool not installed"
done
# These travel on the kernel command line, which cannot quote.
for path in "$self" "$cache" "${TMPDIR:-/tmp}"; do
  [[ "$path" != *[[:space:]]* ]] || die "path with whitespace not supported: $path"
done

# Per run: the initramfs staging area, the command (read by the guest through the shared root),
# FIFOs for its output, the rc file, the console log.
run="$(mktemp -d "${TMPDIR:-/tmp}/guest.XXXXXX")"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The initramfs: static busybox, the modules needed to reach the 9p root (decompressed: busybox
# insmod takes plain ELF only), and an /init that mounts the overlay and hands over to
# `guest.sh --in-guest`. Cached per kernel, keyed on this script and the kernel.
build_initramfs() {
  local out="$1" stage="$run/initramfs"
  mkdir -p "$stage"/{bin,dev,proc,sys,lower,upper,newroot,modules}
  cp /usr/bin/busybox "$stage/bin/busybox"
  local applet
  for applet in sh mount mkdir insmod switch_root poweroff sleep cat echo; do
    ln -s busybox "$stage/bin/$applet"
  done
  # In load order, dependencies first; `builtin` lines (virtio in 6.12 on) need nothing.
  local n=0 kind path
  while read -r kind path; do
    [[ "$kind" == insmod ]] || continue
    n=$((n + 1))
    local dst
    dst="$stage/modules/$(printf '%02d' "$n")-$(basename "${path%%.ko*}").ko"
    case "$path" in
      *.ko.xz) xz -dc "$path" > "$dst" ;;
      *.ko.zst) zstd -qdc "$path" > "$dst" ;;
      *.ko.gz) gzip -dc "$path" > "$dst" ;;
      *.ko) cp "$path" "$dst" ;;
      *) die "unexpected module file $path" ;;
    esac
  done < <(modprobe -d "$kdir/modules" -S "$rel" --show-depends -a \
             virtio_pci virtio_console 9pnet_virtio 9p overlay | awk '!seen[$2]++')
  (( n > 0 )) || die "kernel '$kname': no modules resolved for the initramfs"

  cat > "$stage/init" <<'INIT'
#!/bin/sh
# Kernel parameters the kernel does not know reach us as environment: GUEST_SH, GUEST_RUN,
# GUEST_REL. Console output ends up in the host's console log, shown when the guest fails.
fail() {
  echo "guest-init: $*"
  poweroff -f
  sleep 60
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in /modules/*.ko; do
  insmod "$m" || fail "insmod $m"
done
opts=trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro
mount -t 9p -o "$opts" hostroot /lower || fail "cannot mount the host root (9p)"
mount -t tmpfs -o mode=0755 upper /upper || fail "tmpfs"
mkdir /upper/rw /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/rw,workdir=/upper/work overlay /newroot \
  || fail "cannot mount the overlay"
mkdir -p "/newroot/lib/modules/$GUEST_REL"
mount -t 9p -o "$opts" modules "/newroot/lib/modules/$GUEST_REL" || fail "cannot mount the modules (9p)"
for d in proc sys dev; do
  mount --move "/$d" "/newroot/$d" || fail "move /$d"
done
exec switch_root /newroot /bin/bash "$GUEST_SH" --in-guest "$GUEST_RUN" "$GUEST_REL"
INIT
  chmod 0755 "$stage/init"
  (cd "$stage" && find . -mindepth 1 | busybox cpio -o -H newc -R 0:0 2>/dev/null) > "$out.tmp.$$"
  mv -f "$out.tmp.$$" "$out"
}

key="$( { sha256sum < "$self"; echo "$rel"; stat -c '%s %Y' "$kdir/vmlinuz" "$moddir/modules.dep"; } \
        | sha256sum | cut -c1-16)"
initramfs="$kdir/initramfs-$key.cpio"
if [[ ! -f "$initramfs" ]]; then
  build_initramfs "$initramfs"
  find "$kdir" -maxdepth 1 -name 'initramfs-*.cpio' ! -name "${initramfs##*/}" -delete
fi

{
  echo "# generated by guest.sh"
  for name in "${env_names[@]}"; do
    [[ -n "${!name+x}" ]] && printf 'export %s=%q\n' "$name" "${!name}"
  done
  echo 'export HOME=/root'
  for kv in "${env_set[@]}"; do
    printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
  done
  printf 'cd %q || exit %d\n' "$PWD" "$GUEST_FAIL"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} > "$run/cmd"
printf '%s\n' "$PWD" > "$run/cwd"

# QEMU's file chardev reopens its path: writing through FIFOs to cat keeps our stdout/stderr
# exactly what the caller gave us (a pipe, a tty or a file shared with other writers).
mkfifo "$run/stdout" "$run/stderr"
cat "$run/stdout" &
cat_out=$!
cat "$run/stderr" >&2 &
cat_err=$!
pids+=("$cat_out" "$cat_err")

fsdev_opts=security_model=none,readonly=on
qemu=(
  qemu-system-x86_64
  -nodefaults -no-user-config -display none -no-reboot
  # These hosts are PVM guests without usable nested KVM: a stock kernel dies under KVM.
  -accel tcg,thread=multi -cpu max -smp 2 -m "$mem"
  -kernel "$kdir/vmlinuz" -initrd "$initramfs"
  -append "console=ttyS0 ${console:+ignore_loglevel printk.time=1} quiet panic=-1 rdinit=/init GUEST_SH=$self GUEST_RUN=$run GUEST_REL=$rel"
  -serial "file:$run/console.log"
  # multidevs=remap: / spans several host filesystems; without it their inode numbers collide.
  -fsdev "local,id=hostroot,path=/,$fsdev_opts,multidevs=remap"
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
  -fsdev "local,id=modules,path=$moddir,$fsdev_opts"
  -device virtio-9p-pci,fsdev=modules,mount_tag=modules
  -device virtio-serial-pci
  -chardev "file,id=out,path=$run/stdout"
  -device virtserialport,chardev=out,name=guest.stdout
  -chardev "file,id=err,path=$run/stderr"
  -device virtserialport,chardev=err,name=guest.stderr
  -chardev "file,id=rc,path=$run/rc"
  -device virtserialport,chardev=rc,name=guest.rc
)

# In the background so that our INT/TERM traps run at once (bash defers them while a foreground
# child runs) and stop QEMU through cleanup. --foreground: no process group of its own, so a
# terminal's Ctrl-C is not lost.
timeout --foreground "$timeout" "${qemu[@]}" < /dev/null &
pids+=("$!")
qemu_rc=0
wait "$!" || qemu_rc=$?
# QEMU has closed the FIFOs and the cats see EOF, unless QEMU failed before opening them: then
# they would wait for a writer forever.
for (( i = 0; i < 40; i++ )); do
  kill -0 "$cat_out" 2>/dev/null || kill -0 "$cat_err" 2>/dev/null || break
  sleep 0.05
done

console_tail() {
  if [[ -s "$run/console.log" ]]; then
    echo "guest.sh: last console lines:" >&2
    tail -n 40 "$run/console.log" | tr -d '\r' >&2
  fi
}
if [[ -n "$console" ]]; then
  tr -d '\r' < "$run/console.log" > "$console" || true
fi
if (( qemu_rc == 124 )); then
  console_tail
  die "kernel $kname: timed out after ${timeout}s, QEMU killed"
fi
rc="$(tr -dc 0-9 < "$run/rc" 2>/dev/null || true)"
if [[ -z "$rc" ]]; then
  console_tail
  die "kernel $kname: the guest did not report a status (QEMU exit $qemu_rc; boot or setup failed)"
fi
exit "$rc"
