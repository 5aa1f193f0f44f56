//! Test helpers: privilege gating (fail under CI=true, skip otherwise), temporary network
//! namespaces, veth pairs and bpffs folders that clean up on drop (even when a test fails).

use std::net::UdpSocket;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{ensure_bpffs, in_netns, open_netns, remove_pins, Btf, Map, MapType};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    format!(
        "bpfltr-t{}-{}-{}",
        std::process::id(),
        tag,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Privileged tests may skip only outside CI.
fn unavailable(why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("privileged test cannot run under CI=true: {why}");
    }
    eprintln!("SKIPPED (not CI): {why}");
    false
}

/// True when BPF maps and programs can be created (root with BPF); see [`unavailable`].
pub(crate) fn require_bpf() -> bool {
    match Map::create(MapType::Array, 4, 4, 1, "bpfltr_probe") {
        Ok(_) => true,
        Err(e) => unavailable(&format!("BPF unavailable: {e}")),
    }
}

/// Kernel BTF, or None (skip) outside CI.
pub(crate) fn require_btf() -> Option<Btf> {
    match Btf::vmlinux() {
        Ok(b) => Some(b),
        Err(e) => {
            unavailable(&format!("vmlinux BTF unavailable: {e}"));
            None
        }
    }
}

/// True when we may create network namespaces with `ip netns`.
pub(crate) fn require_netns() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return unavailable("network namespace tests need root");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return unavailable("`ip` (iproute2) is not installed");
    }
    true
}

/// Runs `args` (the program first), which must succeed; its standard output.
pub(crate) fn run(args: &[&str]) -> Vec<u8> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `ip netns add` on creation, `ip netns del` on drop.
pub(crate) struct TempNetns {
    name: String,
    fd: Option<OwnedFd>,
}

impl TempNetns {
    pub(crate) fn new(tag: &str) -> TempNetns {
        let name = unique(tag);
        run(&["ip", "netns", "add", &name]);
        let mut ns = TempNetns { name, fd: None };
        ns.fd = Some(open_netns(format!("/run/netns/{}", ns.name)).expect("open netns"));
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("open").as_fd()
    }
}

impl Drop for TempNetns {
    fn drop(&mut self) {
        self.fd = None;
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair between two namespaces, 10.251.0.1/24 (a) and 10.251.0.2/24 (b). Goes away
/// with the namespaces.
pub(crate) struct VethPair {
    pub(crate) addr_b: std::net::Ipv4Addr,
}

impl VethPair {
    pub(crate) fn new(a: &TempNetns, b: &TempNetns) -> VethPair {
        run(&[
            "ip",
            "-n",
            a.name(),
            "link",
            "add",
            "va",
            "type",
            "veth",
            "peer",
            "name",
            "vb",
            "netns",
            b.name(),
        ]);
        run(&[
            "ip",
            "-n",
            a.name(),
            "addr",
            "add",
            "10.251.0.1/24",
            "dev",
            "va",
        ]);
        run(&[
            "ip",
            "-n",
            b.name(),
            "addr",
            "add",
            "10.251.0.2/24",
            "dev",
            "vb",
        ]);
        run(&["ip", "-n", a.name(), "link", "set", "va", "up"]);
        run(&["ip", "-n", b.name(), "link", "set", "vb", "up"]);
        VethPair {
            addr_b: std::net::Ipv4Addr::new(10, 251, 0, 2),
        }
    }
}

/// Sends UDP datagrams from namespace a to b over the veth, one every 200 ms, up to `tries`
/// times; true as soon as b receives one. Retrying matters right after the link comes up: until
/// linkwatch activates the veth's qdisc (up to a second), packets are silently dropped.
pub(crate) fn udp_roundtrip(a: &TempNetns, b: &TempNetns, veth: &VethPair, tries: u32) -> bool {
    let rx = in_netns(b.fd(), || UdpSocket::bind((veth.addr_b, 0)))
        .expect("setns")
        .expect("bind");
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let dst = rx.local_addr().expect("addr");
    let tx = in_netns(a.fd(), || UdpSocket::bind(("0.0.0.0", 0)))
        .expect("setns")
        .expect("bind");
    let mut buf = [0u8; 16];
    for _ in 0..tries {
        tx.send_to(b"bpfilter", dst).expect("send");
        if matches!(rx.recv(&mut buf), Ok(8)) {
            return true;
        }
    }
    false
}

/// A fresh folder under /sys/fs/bpf, removed (with its pins) on drop.
pub(crate) struct TempPinDir {
    path: PathBuf,
}

impl TempPinDir {
    pub(crate) fn new(tag: &str) -> TempPinDir {
        let path = Path::new(super::BPFFS_MOUNT).join(unique(tag));
        ensure_bpffs(&path).expect("bpffs");
        TempPinDir { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempPinDir {
    fn drop(&mut self) {
        let _ = remove_pins(&self.path);
    }
}

/// Encodes (code, dst, src, off, imm) tuples as kernel `struct bpf_insn`s.
pub(crate) fn insns(list: &[(u8, u8, u8, i16, i32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.len() * 8);
    for &(code, dst, src, off, imm) in list {
        out.push(code);
        out.push((src << 4) | (dst & 0xf));
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&imm.to_le_bytes());
    }
    out
}

/// A 32-byte IPv4/UDP packet (10.0.0.1:1234 -> 10.0.0.2:53, 4 bytes of payload).
pub(crate) fn ipv4_udp_packet() -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 32, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    p.extend_from_slice(&[0x04, 0xd2, 0, 53, 0, 12, 0, 0, b't', b'e', b's', b't']);
    p
}
