//! The few bpf(2) commands the benchmark needs on programs that bpfilter loaded: open by id,
//! read `bpf_prog_info` (verified instructions, sizes), and BPF_PROG_TEST_RUN.
//!
//! Layouts are those of include/uapi/linux/bpf.h (`union bpf_attr`, `struct bpf_prog_info`);
//! offsets are checked in the tests below against the values the uapi header gives.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{bail, Result};

use test_support::packet::{fold, ones_sum, pseudo_sum, set_ip_checksum, Ipv4};

use crate::ruleset::{Family, DPORT, DST, DST6, SRC, SRC6};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_NETFILTER: u32 = 32;
const BPF_NETFILTER: u32 = 45;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// Size of `struct bpf_prog_info` in the uapi this was written against (6.x).
const PROG_INFO_LEN: usize = 232;
const INFO_JITED_LEN: usize = 16;
const INFO_XLATED_LEN: usize = 20;
const INFO_NAME: usize = 64;
const INFO_VERIFIED_INSNS: usize = 216;

/// Size of `struct nf_hook_state` as BPF_PROG_TEST_RUN takes it for netfilter programs.
const NF_HOOK_STATE_LEN: usize = 48;

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> Result<i64> {
    // SAFETY: attr is a valid, writable buffer of the length passed; the kernel reads and
    // writes at most that many bytes of it, and every pointer stored inside it points to
    // memory the caller keeps alive for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if rc < 0 {
        bail!("bpf({cmd}): {}", std::io::Error::last_os_error());
    }
    Ok(rc)
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}
fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}

/// Open a program by id (BPF_PROG_GET_FD_BY_ID).
pub fn prog_fd_by_id(id: u32) -> Result<OwnedFd> {
    let mut attr = [0u8; 16];
    put_u32(&mut attr, 0, id);
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: the kernel just returned this new fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Load `r0 = 1 (NF_ACCEPT); exit` as a BPF_PROG_TYPE_NETFILTER program named `name`: the
/// floor cost of any BPF hook on the path.
pub fn load_netfilter_accept(name: &str) -> Result<OwnedFd> {
    // mov64 r0, 1; exit
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 1, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_NETFILTER);
    put_u32(&mut attr, 4, insns.len() as u32);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    let n = name.len().min(15);
    attr[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
    put_u32(&mut attr, 68, BPF_NETFILTER);
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: the kernel just returned this new fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_LINK_CREATE of a netfilter program at (pf, hooknum, priority), in the calling
/// thread's network namespace. Closing the returned fd detaches it.
pub fn link_netfilter(prog: &OwnedFd, pf: u32, hooknum: u32, priority: i32) -> Result<OwnedFd> {
    let mut attr = [0u8; 64];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 8, BPF_NETFILTER);
    put_u32(&mut attr, 16, pf);
    put_u32(&mut attr, 20, hooknum);
    put_u32(&mut attr, 24, priority as u32);
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel just returned this new fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Open a pinned BPF object (BPF_OBJ_GET); it may be a program, a map or a link.
pub fn obj_get(path: &std::path::Path) -> Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut cpath = path.as_os_str().as_bytes().to_vec();
    cpath.push(0);
    let mut attr = [0u8; 16];
    put_u64(&mut attr, 0, cpath.as_ptr() as u64);
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel just returned this new fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether an open BPF object is a program (its fdinfo has `prog_type:`).
pub fn is_prog(fd: &OwnedFd) -> bool {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("prog_type:")))
}

/// What `bpf_prog_info` says about a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgStats {
    /// Program id.
    pub id: u32,
    /// Program name.
    pub name: String,
    /// Instructions the verifier processed (its work, bounded by 1M).
    pub verified_insns: u32,
    /// Translated size in bytes.
    pub xlated: u32,
    /// JIT image size in bytes.
    pub jited: u32,
}

/// Read `bpf_prog_info` of an open program.
pub fn prog_stats(fd: &OwnedFd) -> Result<ProgStats> {
    let mut info = vec![0u8; PROG_INFO_LEN];
    let mut attr = [0u8; 16];
    put_u32(&mut attr, 0, fd.as_raw_fd() as u32);
    put_u32(&mut attr, 4, PROG_INFO_LEN as u32);
    put_u64(&mut attr, 8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let name_raw = &info[INFO_NAME..INFO_NAME + 16];
    let end = name_raw.iter().position(|b| *b == 0).unwrap_or(16);
    Ok(ProgStats {
        id: get_u32(&info, 4),
        name: String::from_utf8_lossy(&name_raw[..end]).into_owned(),
        verified_insns: get_u32(&info, INFO_VERIFIED_INSNS),
        xlated: get_u32(&info, INFO_XLATED_LEN),
        jited: get_u32(&info, INFO_JITED_LEN),
    })
}

/// The benchmark's packet as BPF_PROG_TEST_RUN takes it at LOCAL_IN: Ethernet header, then
/// IPv4 + UDP 10.200.0.1 -> 10.200.0.2:5001 with a 32-byte payload.
pub fn test_packet() -> Vec<u8> {
    let payload = 32usize;
    let ip_len = 20 + 8 + payload;
    let mut p = Vec::with_capacity(14 + ip_len);
    p.extend_from_slice(&[
        0x02, 0, 0x0a, 0xc8, 0, 0x02, 0x02, 0, 0x0a, 0xc8, 0, 0x01, 0x08, 0x00,
    ]);
    let mut udp = Vec::with_capacity(8 + payload);
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&DPORT.to_be_bytes());
    udp.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend(std::iter::repeat_n(0x5a, payload));
    let mut ip = Ipv4 {
        frag: 0x4000, // DF
        ..Ipv4::new(17, SRC.octets(), DST.octets())
    }
    .build(&udp);
    set_ip_checksum(&mut ip);
    p.extend_from_slice(&ip);
    p
}

/// The benchmark's packet of family `f` as BPF_PROG_TEST_RUN takes it at LOCAL_IN (IPv6:
/// Ethernet, IPv6 + UDP `fd00:200::1 -> [fd00:200::2]:5001`, 32-byte payload, checksummed).
pub fn test_packet_of(f: Family) -> Vec<u8> {
    if f == Family::Ipv4 {
        return test_packet();
    }
    let payload = 32usize;
    let udp_len = 8 + payload;
    let mut p = Vec::with_capacity(14 + 40 + udp_len);
    p.extend_from_slice(&[
        0x02, 0, 0x0a, 0xc8, 0, 0x02, 0x02, 0, 0x0a, 0xc8, 0, 0x01, 0x86, 0xdd,
    ]);
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[17, 64]); // next header UDP, hop limit
    p.extend_from_slice(&SRC6.octets());
    p.extend_from_slice(&DST6.octets());
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&DPORT.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend(std::iter::repeat_n(0x5a, payload));
    let sum = pseudo_sum(&SRC6.octets(), &DST6.octets(), 17, udp_len);
    let c = match !fold(ones_sum(&udp, sum)) {
        0 => 0xffff, // RFC 8200: a computed zero is sent as all ones
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&udp);
    p
}

/// Result of one BPF_PROG_TEST_RUN.
#[derive(Debug, Clone, Copy)]
pub struct TestRun {
    /// The program's return value (1 = NF_ACCEPT).
    pub retval: u32,
    /// Kernel's average ns per run.
    pub ns: u32,
}

/// Run a netfilter program `repeat` times on `data` as if at LOCAL_IN of IPv4.
pub fn test_run_local_in(fd: &OwnedFd, data: &[u8], repeat: u32) -> Result<TestRun> {
    test_run_local_in_of(Family::Ipv4, fd, data, repeat)
}

/// Run a netfilter program `repeat` times on `data` as if at LOCAL_IN of family `f`.
pub fn test_run_local_in_of(f: Family, fd: &OwnedFd, data: &[u8], repeat: u32) -> Result<TestRun> {
    let mut ctx = [0u8; NF_HOOK_STATE_LEN];
    ctx[0] = 1; // hook = NF_INET_LOCAL_IN
    ctx[1] = f.nfproto() as u8; // pf = NFPROTO_IPV4 or NFPROTO_IPV6
    let mut attr = [0u8; 80];
    put_u32(&mut attr, 0, fd.as_raw_fd() as u32);
    put_u32(&mut attr, 8, data.len() as u32);
    put_u64(&mut attr, 16, data.as_ptr() as u64);
    put_u32(&mut attr, 32, repeat);
    put_u32(&mut attr, 40, ctx.len() as u32);
    put_u64(&mut attr, 48, ctx.as_ptr() as u64);
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(TestRun {
        retval: get_u32(&attr, 4),
        ns: get_u32(&attr, 36),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::packet::checksum;

    #[test]
    fn packet_is_well_formed() {
        let p = test_packet();
        assert_eq!(p.len(), 14 + 20 + 8 + 32);
        assert_eq!(&p[12..14], &[0x08, 0x00]);
        assert_eq!(
            checksum(&p[14..34]),
            0,
            "checksum over a valid header folds to 0"
        );
        assert_eq!(u16::from_be_bytes([p[36], p[37]]), 5001);
    }

    #[test]
    fn ipv6_packet_is_well_formed() {
        let p = test_packet_of(Family::Ipv6);
        assert_eq!(p.len(), 14 + 40 + 8 + 32);
        assert_eq!(&p[12..14], &[0x86, 0xdd]);
        assert_eq!(p[14] >> 4, 6);
        assert_eq!(u16::from_be_bytes([p[18], p[19]]), 40, "payload length");
        assert_eq!(p[20], 17);
        assert_eq!(&p[22..38], &SRC6.octets());
        assert_eq!(&p[38..54], &DST6.octets());
        assert_eq!(u16::from_be_bytes([p[56], p[57]]), 5001);
        // The UDP checksum over the pseudo-header and the datagram folds to all ones.
        let sum = pseudo_sum(&SRC6.octets(), &DST6.octets(), 17, 40);
        assert_eq!(fold(ones_sum(&p[54..], sum)), 0xffff);
        assert_eq!(test_packet_of(Family::Ipv4), test_packet());
    }

    #[test]
    fn missing_program_is_an_error() {
        // Unprivileged callers get EPERM, root gets ENOENT for an unused id: an error either way.
        assert!(prog_fd_by_id(u32::MAX).is_err());
    }
}
