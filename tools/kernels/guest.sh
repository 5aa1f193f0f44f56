#!/usr/bin/env bash
# Run one command inside a QEMU guest booted with one of the kernels that fetch.sh unpacked.
#
#   tools/kernels/guest.sh [--timeout S] [--mem MiB] [--cpus N] [--env NAME[=VALUE]]... \
#       [--console FILE] [--setup SCRIPT] [--systemd] <kernel> -- <command> [args...]
#
# The guest sees the host's / read-only (virtio-9p) under a RAM-backed overlay, so every path,
# binary and library is the host's own and nothing the guest writes reaches the host. The
# command runs as root in the caller's working directory with a small, explicit environment;
# its stdout and stderr come back on ours (virtio-serial ports, so it sees pipes as in CI, not
# a tty) and its exit status becomes ours. 125: the guest itself failed (boot, setup, timeout).
#
# --setup SCRIPT runs SCRIPT chrooted into the guest's root before its init starts the system,
# as an image build installs packages (no init running: systemctl acts offline). --systemd
# boots the host's systemd as PID 1 and runs the command as a unit after multi-user.target.
set -euo pipefail

# One block, read whole before it runs: bash reads a script as it goes, and a run lasts long
# enough for this file to change under it (a checkout, an edit).
{
readonly GUEST_FAIL=125
# Normally 4-6 s: a guest that has not started the command after this is stuck.
readonly BOOT_TIMEOUT=120
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
self="$here/$(basename "${BASH_SOURCE[0]}")"
cache="${KERNEL_CACHE:-/var/cache/bpfilter/kernels}"

die() { echo "guest.sh: $*" >&2; exit "$GUEST_FAIL"; }

usage() {
  local names
  names="$(cd "$cache" 2>/dev/null && find . -mindepth 2 -maxdepth 2 -name release | cut -d/ -f2 \
    | sort | tr '\n' ' ')"
  sed -n '4,5s/^# //p' "$self" >&2
  echo "kernels in $cache: ${names:-none (run tools/kernels/fetch.sh)}" >&2
  exit 2
}

timeout=1500
mem=2048
smp=2
console=
setup=
systemd=0
# Passed through when set here; HOME is always /root (the guest runs as root).
env_names=(CI PATH RUST_BACKTRACE RUST_LOG RUST_TEST_THREADS RUST_TEST_NOCAPTURE NO_COLOR CARGO_TERM_COLOR)
mapfile -t -O "${#env_names[@]}" env_names < <(compgen -e -X '!BPFILTER_*')
env_set=()
while (( $# )); do
  case "$1" in
    --timeout) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || usage; timeout="$2"; shift 2 ;;
    --mem) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || usage; mem="$2"; shift 2 ;;
    --cpus) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || usage; smp="$2"; shift 2 ;;
    --console) [[ -n "${2:-}" ]] || usage; console="$2"; shift 2 ;;
    --setup) [[ -n "${2:-}" ]] || usage; setup="$2"; shift 2 ;;
    --systemd) systemd=1; shift ;;
    --env)
      # NAME=VALUE sets, a bare NAME passes this shell's value through.
      [[ "${2:-}" =~ ^[A-Za-z_][A-Za-z0-9_]*(=|$) ]] || usage
      if [[ "$2" == *=* ]]; then env_set+=("$2"); else env_names+=("$2"); fi
      shift 2 ;;
    -*) usage ;;
    *) break ;;
  esac
done
if (( $# < 3 )) || [[ "$2" != -- ]]; then usage; fi
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
if [[ -n "$setup" ]]; then
  # The guest runs it by its host path through the shared root.
  [[ -f "$setup" && -r "$setup" ]] || die "--setup $setup: no such readable file"
  setup="$(realpath "$setup")"
fi
tmp="${TMPDIR:-/tmp}"
# The run dir travels on the kernel command line, which cannot quote, and paths go into QEMU
# options, where a comma separates options.
for path in "$tmp" "$moddir"; do
  [[ "$path" != *[[:space:],]* ]] || die "whitespace or comma in a path is not supported: $path"
done

# Per run: the initramfs staging area, the command (which the guest reads through the shared
# root), FIFOs for its output, the rc file, the console log.
run="$(mktemp -d "$tmp/guest.XXXXXX")"
pids=()
# shellcheck disable=SC2317 # reached through the trap
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# The initramfs: static busybox, the modules needed to reach the 9p root, /init and /stage2.
# All of the guest's setup happens in busybox from RAM: under TCG every exec of a dynamically
# linked host binary through 9p costs about 0.1 s, and a bash-driven setup took 3 s instead of
# a fraction of one.
# ---------------------------------------------------------------------------------------------
write_init() {
  cat <<'INIT'
#!/bin/sh
# PID 1 in the initramfs. GUEST_RUN and GUEST_REL come from the kernel command line (the
# kernel hands parameters it does not know to init as environment). Our output goes to the
# serial console, which guest.sh shows when no status comes back.
export PATH=/bin
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

# The host's / read-only, under a tmpfs upper layer: same paths as the host, writes in RAM.
opts=trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro
mount -t 9p -o "$opts" hostroot /lower || fail "cannot mount the host's root (9p)"
mount -t tmpfs -o mode=0755 upper /upper
mkdir /upper/rw /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/rw,workdir=/upper/work overlay /newroot \
  || fail "cannot mount the overlay"
r=/newroot
# request_module() (iptables-legacy's `modprobe ip_tables`, veth autoload) runs the host's
# kmod against this kernel's modules, which the host shares where kmod looks for them.
mkdir -p "$r/lib/modules/$GUEST_REL"
mount -t 9p -o "$opts" modules "$r/lib/modules/$GUEST_REL" || fail "cannot mount the modules (9p)"

# The run dir is in the host's /tmp, which the guest's own /tmp hides: read it first.
run="$r$GUEST_RUN"
[ -f "$run/cmd" ] || fail "no $GUEST_RUN/cmd in the guest"
read -r cwd < "$run/cwd"
mount -t tmpfs -o mode=0755,nosuid,nodev run "$r/run"
mkdir -p "$r/run/lock" "$r/run/guest/bin"
cp "$run/cmd" /bin/busybox /stage2 "$r/run/guest/"
# The options (files in the run dir): --setup's script and --systemd's flag.
for f in setup systemd; do
  [ ! -f "$run/$f" ] || cp "$run/$f" "$r/run/guest/"
done
for a in sh cat env kill mkfifo mount poweroff sleep; do
  ln -s ../busybox "$r/run/guest/bin/$a"
done
# A fresh /tmp, unless the caller works inside /tmp (it would vanish under it).
case "$cwd" in
  /tmp|/tmp/*) ;;
  *) mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$r/tmp" ;;
esac

for d in proc sys dev; do
  mount --move "/$d" "$r/$d" || fail "cannot move /$d"
done
mkdir -p "$r/dev/pts" "$r/dev/shm" "$r/dev/virtio-ports"
mount -t devpts -o gid=5,mode=620,ptmxmode=000 devpts "$r/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$r/dev/shm"
# What udev would create; bash process substitution and `>/dev/stderr` need them.
ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"
ln -s /proc/self/fd/2 "$r/dev/stderr"
mount -t bpf -o mode=0700 bpf "$r/sys/fs/bpf" || fail "cannot mount bpffs"
mount -t cgroup2 -o nsdelegate cgroup2 "$r/sys/fs/cgroup" 2>/dev/null
mount -t tracefs tracefs "$r/sys/kernel/tracing" 2>/dev/null
mount -t debugfs debugfs "$r/sys/kernel/debug" 2>/dev/null
echo /sbin/modprobe > "$r/proc/sys/kernel/modprobe"
hostname guest
ip link set lo up || fail "cannot bring lo up"

# Name the virtio-serial ports as udev would (/dev/virtio-ports/NAME). Their names arrive
# asynchronously on the control queue. (-L: the links point into the new root's /dev.)
i=0
while [ ! -L "$r/dev/virtio-ports/guest.rc" ]; do
  for p in "$r"/sys/class/virtio-ports/*; do
    name=
    read -r name < "$p/name" 2>/dev/null
    [ -n "$name" ] && ln -sf "/dev/${p##*/}" "$r/dev/virtio-ports/$name"
  done
  i=$((i + 1))
  [ "$i" -le 200 ] || fail "no virtio-serial ports"
  [ -L "$r/dev/virtio-ports/guest.rc" ] || sleep 0.05
done

# The ports as seen from here: the links point into the new root's /dev.
port() { echo "$r$(readlink "$r/dev/virtio-ports/$1")"; }

# systemd mode: the host's enabled units (its *.wants) stay out of the guest, before the setup
# enables its own; PID 1 must see a VM, not the container the host may be (/.dockerenv).
if [ -f "$r/run/guest/systemd" ]; then
  rm -rf "$r"/etc/systemd/system/*.wants "$r"/etc/systemd/system/*.requires \
    "$r/.dockerenv" "$r/run/.containerenv"
fi

# --setup: the script, chrooted into the new root before any init runs there (as an image
# build installs packages: no /run/systemd/system yet, so systemctl acts offline and
# deb-systemd-invoke starts nothing). Its output goes to the command's ports, through FIFOs
# so that the ports are free again once it is done, and "setup STATUS" to the status port.
if [ -f "$r/run/guest/setup" ]; then
  g="$r/run/guest"
  mkfifo "$g/setup.out" "$g/setup.err"
  cat "$g/setup.out" > "$(port guest.stdout)" &
  out=$!
  cat "$g/setup.err" > "$(port guest.stderr)" &
  err=$!
  rc=0
  env -i /bin/chroot "$r" /bin/bash /run/guest/setup < "$r/dev/null" > "$g/setup.out" \
    2> "$g/setup.err" || rc=$?
  i=0
  while [ "$i" -lt 100 ] && { kill -0 "$out" || kill -0 "$err"; } 2>/dev/null; do
    sleep 0.05
    i=$((i + 1))
  done
  kill "$out" "$err" 2>/dev/null
  rm -f "$g/setup.out" "$g/setup.err"
  echo "setup $rc" > "$(port guest.rc)"
  if [ "$rc" != 0 ]; then
    poweroff -f
    sleep 60
  fi
fi

if [ -f "$r/run/guest/systemd" ]; then
  # A container image's "start no service" policy (Docker's policy-rc.d exits 101) fits the
  # setup's chroot, not a booted system: invoke-rc.d and deb-systemd-invoke would refuse to
  # start or stop units there.
  rm -f "$r/usr/sbin/policy-rc.d"
  # systemd-tmpfiles empties /tmp at boot (tmp.conf: "D /tmp"), which would take the caller's
  # working directory with it when that lies in the host's /tmp (a clone there, as in CI).
  mkdir -p "$r/etc/tmpfiles.d"
  echo "d /tmp 1777 root root -" > "$r/etc/tmpfiles.d/tmp.conf"
  # An empty or missing /etc/machine-id means "first boot" to systemd (preset-all, firstboot).
  mid=
  read -r mid < "$r/etc/machine-id" 2>/dev/null
  case "$mid" in
    *[!0-9a-f]*|'') mid= ;;
  esac
  if [ "${#mid}" != 32 ]; then
    read -r mid < "$r/proc/sys/kernel/random/uuid"
    echo "${mid//-/}" > "$r/etc/machine-id"
  fi
  # Units useless in this guest, or slow under TCG: no terminals (getty), no network to wait
  # for, no periodic jobs, no remount from /etc/fstab. Masked where the admin's /etc does not
  # define them; the host's own enabled units were dropped above.
  u="$r/run/systemd/system"
  mkdir -p "$u/multi-user.target.wants"
  for m in getty.target getty@.service serial-getty@.service getty-static.service \
      console-getty.service autovt@.service systemd-logind.service systemd-user-sessions.service \
      systemd-networkd-wait-online.service systemd-networkd.service systemd-networkd.socket \
      systemd-timesyncd.service systemd-time-wait-sync.service \
      apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
      fstrim.timer man-db.timer systemd-tmpfiles-clean.timer e2scrub_reap.service \
      systemd-remount-fs.service systemd-firstboot.service systemd-machine-id-commit.service \
      systemd-pstore.service systemd-ask-password-wall.path systemd-ask-password-console.path \
      systemd-update-utmp.service systemd-update-utmp-runlevel.service \
      proc-sys-fs-binfmt_misc.automount systemd-binfmt.service \
      modprobe@configfs.service modprobe@dm_mod.service modprobe@fuse.service \
      modprobe@loop.service sys-kernel-config.mount sys-fs-fuse-connections.mount \
      dev-hugepages.mount kmod-static-nodes.service systemd-sysusers.service \
      systemd-journal-flush.service systemd-random-seed.service; do
    ln -s /dev/null "$u/$m"
  done
  # Generators too (fstab, getty, SysV scripts, GPT, the host's packages' own): each costs an
  # exec through 9p and none has anything to do here.
  mkdir -p "$r/run/systemd/system-generators"
  for m in "$r"/usr/lib/systemd/system-generators/* "$r"/etc/systemd/system-generators/*; do
    [ ! -e "$m" ] || ln -sf /dev/null "$r/run/systemd/system-generators/${m##*/}"
  done
  # The command: stage2 as a service once the boot is over: after multi-user.target and, since
  # units without default dependencies do not order that target after them, once no boot job
  # is left (is-system-running --wait; this unit's own job is done at the exec). stage2 powers
  # the guest off itself.
  cat > "$u/guest-command.service" <<'UNIT'
[Unit]
Description=guest.sh: the command
After=multi-user.target

[Service]
Type=exec
ExecStart=/run/guest/busybox sh -c '/bin/systemctl is-system-running --wait >/dev/null; exec /run/guest/busybox sh /run/guest/stage2'
StandardInput=null
StandardOutput=journal+console
UNIT
  ln -s ../guest-command.service "$u/multi-user.target.wants/guest-command.service"
  # A boot that ends in rescue or emergency mode says so at once instead of waiting for the
  # boot timeout, with the failed units and the journal's last notices on the stderr port (the
  # kernel's are on the console).
  cat > "$u/guest-boot-failed.service" <<'UNIT'
[Unit]
Description=guest.sh: the boot failed
DefaultDependencies=no

[Service]
Type=oneshot
ExecStart=/run/guest/busybox sh -c '{ /bin/systemctl --failed --no-legend --plain; /bin/journalctl -b -q --no-pager -p notice | /run/guest/busybox grep -v " kernel: " | /run/guest/busybox tail -n 40; } > /dev/virtio-ports/guest.stderr 2>&1; echo boot-failed > /dev/virtio-ports/guest.rc; /run/guest/busybox poweroff -f'
UNIT
  for t in rescue.target emergency.target; do
    mkdir -p "$u/$t.wants"
    ln -s ../guest-boot-failed.service "$u/$t.wants/guest-boot-failed.service"
  done
  exec switch_root "$r" /lib/systemd/systemd
fi

# A real root (pivot, not chroot): tests that unshare namespaces need it. Busybox runs on from
# the guest's /run, since switch_root empties the initramfs.
exec switch_root "$r" /run/guest/busybox sh /run/guest/stage2
INIT
}

write_stage2() {
  cat <<'STAGE2'
#!/bin/sh
# PID 1 after switch_root: run the command, send its status, power off. PID 1 must not exit
# (the kernel would panic), so every path ends in poweroff.
export PATH=/run/guest/bin
g=/run/guest
# systemd makes / shared on the host; `ip netns` and mount propagation in tests expect it.
mount --make-rshared /
# A port opens once at a time (EBUSY otherwise): one cat per stream owns it and the command
# writes to FIFOs, which it may reopen (/dev/stdout) and which are pipes, as in CI.
mkfifo "$g/stdout" "$g/stderr"
cat "$g/stdout" > /dev/virtio-ports/guest.stdout &
out=$!
cat "$g/stderr" > /dev/virtio-ports/guest.stderr &
err=$!
echo started > /dev/virtio-ports/guest.rc
rc=0
env -i /bin/bash "$g/cmd" < /dev/null > "$g/stdout" 2> "$g/stderr" || rc=$?
# A daemon the command left running would hold the FIFOs open: let the streams drain for a
# moment, then cut them.
i=0
while [ "$i" -lt 100 ] && { kill -0 "$out" || kill -0 "$err"; } 2>/dev/null; do
  sleep 0.05
  i=$((i + 1))
done
kill "$out" "$err" 2>/dev/null
# A write to a port returns once QEMU has taken the data; a second of grace all the same
# before the power goes (once a passed run's status never reached the host, the guest having
# powered off normally).
echo "$rc" > /dev/virtio-ports/guest.rc
sleep 1
poweroff -f
sleep 60
STAGE2
}

build_initramfs() {
  local out="$1" stage="$run/initramfs" applet n=0 kind path dst
  mkdir -p "$stage"/{bin,dev,proc,sys,lower,upper,newroot,modules}
  cp /usr/bin/busybox "$stage/bin/busybox"
  for applet in sh cat chroot cp env hostname insmod ip kill ln mkdir mkfifo mount poweroff \
      readlink rm sleep switch_root; do
    ln -s busybox "$stage/bin/$applet"
  done
  write_init > "$stage/init"
  write_stage2 > "$stage/stage2"
  chmod 0755 "$stage/init" "$stage/stage2"
  # Dependencies first (modprobe's order); `builtin` lines (virtio from 6.12 on) need nothing.
  # Decompressed here: busybox insmod takes plain ELF only.
  while read -r kind path; do
    [[ "$kind" == insmod ]] || continue
    n=$((n + 1))
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
  # Uncompressed: unpacking is faster than inflating under TCG.
  (cd "$stage" && find . -mindepth 1 | busybox cpio -o -H newc -R 0:0 2>/dev/null) > "$out.$$"
  mv -f "$out.$$" "$out"
}

# Rebuilt when this script or the kernel changes; concurrent runs each write then rename. Old
# ones go only after an hour: a run of another version of this script may be about to boot one.
key="$( { sha256sum < "$self"; echo "$rel"; stat -c '%s %Y' "$kdir/vmlinuz" "$moddir/modules.dep"; } \
        | sha256sum | cut -c1-16)"
initramfs="$kdir/initramfs-$key.cpio"
if [[ ! -f "$initramfs" ]]; then
  build_initramfs "$initramfs"
  find "$kdir" -maxdepth 1 -name 'initramfs-*.cpio' ! -name "${initramfs##*/}" -mmin +60 -delete
fi

# ---------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------
{
  echo "# generated by guest.sh, run by bash in the guest with an empty environment"
  for name in "${env_names[@]}"; do
    if [[ -n "${!name+x}" ]]; then printf 'export %s=%q\n' "$name" "${!name}"; fi
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
if [[ -n "$setup" ]]; then
  # Same environment and directory as the command.
  sed '$d' "$run/cmd" > "$run/setup"
  if [[ -x "$setup" ]]; then printf 'exec %q\n' "$setup"; else printf 'exec /bin/bash %q\n' "$setup"; fi \
    >> "$run/setup"
fi
(( ! systemd )) || : > "$run/systemd"

systemd_args=
if (( systemd )); then
  # The default target would be graphical; there is no udev to announce the devices that
  # /etc/fstab or a GPT root would wait for.
  systemd_args="systemd.unit=multi-user.target systemd.hostname=guest fstab=no systemd.gpt_auto=0"
fi
ro=security_model=none,readonly=on
# shellcheck disable=SC2054 # the commas are QEMU's option syntax
qemu=(
  qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot
  # These machines are PVM guests whose KVM cannot run a stock kernel: emulate (TCG).
  # One TCG thread for all vCPUs: with thread=multi the kernel's live text patching (static
  # keys flipped by ping's timestamps, netfilter hook registration) raced another vCPU
  # executing the patched bytes: oopses at mid-instruction RIPs in __netif_receive_skb_core
  # and sched_clock_cpu on 7.3 and 6.12. Two CPUs on this host gain little in parallel anyway.
  -accel tcg,thread=single -cpu max -smp "$smp" -m "$mem"
  -kernel "$kdir/vmlinuz" -initrd "$initramfs"
  # loglevel=5: errors and warnings only, so that a WARN or an oops stands out in the log.
  -append "console=ttyS0 loglevel=5 ${console:+ignore_loglevel }panic=-1 rdinit=/init GUEST_RUN=$run GUEST_REL=$rel${systemd_args:+ $systemd_args}"
  -serial "file:$run/console.log"
  # multidevs=remap: / spans several host filesystems whose inode numbers would collide.
  -fsdev "local,id=hostroot,path=/,$ro,multidevs=remap"
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
  -fsdev "local,id=modules,path=$moddir,$ro"
  -device virtio-9p-pci,fsdev=modules,mount_tag=modules
  -device virtio-serial-pci
  -chardev "file,id=out,path=$run/stdout" -device virtserialport,chardev=out,name=guest.stdout
  -chardev "file,id=err,path=$run/stderr" -device virtserialport,chardev=err,name=guest.stderr
  -chardev "file,id=rc,path=$run/rc" -device virtserialport,chardev=rc,name=guest.rc
)

# The status port says "started" when the command starts, then its exit status. Read from a
# FIFO that we hold open read-write: no blocking open, and `read -t` polls without a fork.
mkfifo "$run/rc"
exec 3<> "$run/rc"
deadline=$((SECONDS + timeout))

# One boot of the guest. Sets started (0/1), rc (empty if none came), timed_out (empty,
# "boot" or "run") and qemu_rc.
attempt() {
  local line qemu_pid cat_out cat_err i
  started=0 rc='' timed_out='' qemu_rc=0 setup_rc='' boot_failed=0
  # QEMU's file chardev opens its path itself: through FIFOs and cat, our stdout and stderr
  # stay exactly what the caller gave us (a pipe, a tty, or a file shared with other writers).
  rm -f "$run/stdout" "$run/stderr"
  mkfifo "$run/stdout" "$run/stderr"
  cat "$run/stdout" 3<&- &
  cat_out=$!
  cat "$run/stderr" >&2 3<&- &
  cat_err=$!
  # In the background, so that our INT/TERM traps run at once (bash defers them while it
  # waits for a foreground child) and stop QEMU through cleanup.
  "${qemu[@]}" < /dev/null 3<&- &
  qemu_pid=$!
  pids+=("$cat_out" "$cat_err" "$qemu_pid")
  local boot_deadline=$((SECONDS + BOOT_TIMEOUT))
  while kill -0 "$qemu_pid" 2>/dev/null; do
    if read -r -t 0.25 -u 3 line; then
      case "$line" in
        started) started=1 ;;
        boot-failed) boot_failed=1 ;;
        # The setup's status; once it succeeded the boot gets its full time again.
        "setup "[0-9]*)
          setup_rc="${line#setup }"
          boot_deadline=$((SECONDS + BOOT_TIMEOUT)) ;;
        *[!0-9]*|'') ;;
        *) rc="$line" ;;
      esac
    fi
    if (( started == 0 && SECONDS >= boot_deadline )); then timed_out=boot
    elif (( SECONDS >= deadline )); then timed_out=run
    else continue
    fi
    kill "$qemu_pid" 2>/dev/null
    for (( i = 0; i < 50; i++ )); do
      kill -0 "$qemu_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$qemu_pid" 2>/dev/null || true
    break
  done
  wait "$qemu_pid" || qemu_rc=$?
  while read -r -t 0.2 -u 3 line; do
    if [[ "$line" =~ ^[0-9]+$ ]]; then rc="$line"; fi
    if [[ "$line" =~ ^setup\ [0-9]+$ ]]; then setup_rc="${line#setup }"; fi
    if [[ "$line" == boot-failed ]]; then boot_failed=1; fi
  done
  # The cats see EOF once QEMU has gone, unless it died before opening the FIFOs: then they
  # would wait for a writer forever.
  for (( i = 0; i < 40; i++ )); do
    { kill -0 "$cat_out" || kill -0 "$cat_err"; } 2>/dev/null || break
    sleep 0.05
  done
  kill "$cat_out" "$cat_err" 2>/dev/null || true
}

console_tail() {
  if [[ ! -s "$run/console.log" ]]; then
    echo "guest.sh: the guest wrote nothing on its console" >&2
    return 0
  fi
  echo "guest.sh: last console lines of the guest:" >&2
  tail -n 40 "$run/console.log" | tr -d '\r' >&2
}

attempt
# Multi-threaded TCG now and then crashes a kernel while it patches its own code at boot (an
# "Oops: int3" in text_poke). The command has not run yet, so booting again is safe.
if (( ! started && ! boot_failed )) && [[ "$timed_out" != run && "${setup_rc:-0}" == 0 ]] \
  && (( SECONDS < deadline )); then
  why="$(grep -m1 -aE 'Oops|BUG:|Kernel panic' "$run/console.log" | tr -d '\r' || true)"
  echo "guest.sh: kernel $kname: the guest failed before the command started" \
    "(${why:-QEMU exit $qemu_rc${timed_out:+, no start within ${BOOT_TIMEOUT}s}}); booting again" >&2
  attempt
fi

[[ -z "$console" ]] || tr -d '\r' < "$run/console.log" > "$console" || true
if [[ -n "$setup_rc" && "$setup_rc" != 0 ]]; then
  die "kernel $kname: the setup $setup failed (exit status $setup_rc), the command did not run"
fi
if (( boot_failed && ! started )); then
  console_tail
  die "kernel $kname: systemd did not reach multi-user.target (rescue or emergency mode;" \
    "its failed units and last notices are above), the command did not run"
fi
if [[ -n "$timed_out" ]]; then
  console_tail
  if [[ "$timed_out" == boot ]]; then
    die "kernel $kname: the command did not start within ${BOOT_TIMEOUT}s, QEMU killed"
  fi
  die "kernel $kname: timed out after ${timeout}s, QEMU killed"
fi
if [[ -z "$rc" ]]; then
  console_tail
  if (( started )); then
    die "kernel $kname: the guest died while the command ran (QEMU exit $qemu_rc)"
  fi
  die "kernel $kname: the guest did not start the command (QEMU exit $qemu_rc): boot or setup failed"
fi
# A kernel splat during the command does not change its status but deserves to be seen.
if grep -qaE 'WARNING:|BUG:|Oops|Call Trace:|Kernel panic' "$run/console.log"; then
  echo "guest.sh: kernel $kname ($rel) logged a warning or an oops:" >&2
  grep -avE 'mtrr: your CPUs|MMCONFIG|_CPC object|calibrate against PIT' "$run/console.log" \
    | tr -d '\r' | head -n 80 >&2
fi
exit "$rc"
}
