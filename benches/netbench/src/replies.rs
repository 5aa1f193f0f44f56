//! REJECT replies per second: TCP SYNs sent by one thread as fast as it can into a
//! `-p tcp --dport 5002 -j REJECT --reject-with tcp-reset` rule, and the RSTs counted where they
//! arrive (the sender namespace's `Tcp InSegs`: it has no TCP socket and nothing else there
//! receives TCP). tcp-reset because `nf_send_reset` has no rate limit, while ICMP errors are
//! held to `icmp_ratelimit` and `icmp_msgs_per_sec` for every backend alike.
//!
//! The kernel's RST is built and delivered inside the sender's own softirq, so it answers every
//! SYN at whatever rate the sender reaches; bpfilter's program drops the SYN and writes a record,
//! and its daemon's pump thread sends the RST, so the rate is what that thread sustains (records
//! that do not fit in the ring buffer are lost and counted in `bpfilter status`).

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use test_support::packet::{set_ip_checksum, set_l4_checksum, Ipv4};

use crate::netns::{in_netns, Snmp};
use crate::ruleset::{DST, SRC};

/// Destination port of the SYNs (the REJECT rule's port).
pub const RST_DPORT: u16 = 5002;
/// Source port of the SYNs.
pub const RST_SPORT: u16 = 40002;

/// One IPv4 + TCP SYN 10.200.0.1:40002 -> 10.200.0.2:5002, no options, both checksums right
/// (the kernel's `nf_send_reset` and bpfilter's daemon both stay silent on a bad one).
pub fn syn_packet() -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&RST_SPORT.to_be_bytes());
    tcp[2..4].copy_from_slice(&RST_DPORT.to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1000_0000u32.to_be_bytes()); // seq
    tcp[12] = 5 << 4; // data offset: 5 words
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes()); // window
    let mut p = Ipv4 {
        frag: 0x4000, // DF
        ..Ipv4::new(6, SRC.octets(), DST.octets())
    }
    .build(&tcp);
    set_ip_checksum(&mut p);
    set_l4_checksum(&mut p, 16);
    p
}

/// A raw `IPPROTO_RAW` socket (`IP_HDRINCL`; it never receives) opened inside namespace `ns`
/// and connected to 10.200.0.2, so that `sendmmsg` needs no address.
pub fn raw_socket(ns: &str) -> Result<OwnedFd> {
    in_netns(ns, || {
        // SAFETY: plain socket(2) call; a non-negative result is a new fd owned by nobody else.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_INET, SOCK_RAW)");
        }
        // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(DST.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: addr is a valid sockaddr_in for the duration of the call and its size is
        // passed; fd is an open socket.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("connect raw socket");
        }
        Ok(fd)
    })
}

/// Send `pkt` on `fd` in `sendmmsg` batches of `batch` until `time` has passed; returns the
/// packets sent and the time it took.
pub fn blast(fd: &OwnedFd, pkt: &[u8], batch: usize, time: Duration) -> Result<(u64, Duration)> {
    if batch == 0 {
        bail!("empty batch");
    }
    let mut iov = libc::iovec {
        iov_base: pkt.as_ptr() as *mut libc::c_void,
        iov_len: pkt.len(),
    };
    let mut msgs: Vec<libc::mmsghdr> = (0..batch)
        .map(|_| {
            // SAFETY: mmsghdr is plain old data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed() < time {
        // SAFETY: fd is an open, connected socket; msgs holds `batch` initialised headers
        // whose iovec points into `pkt`, both alive for this call. The kernel only reads the
        // packet bytes.
        let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), batch as u32, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            bail!("sendmmsg on the raw socket: {err}");
        }
        sent += n as u64;
    }
    Ok((sent, t0.elapsed()))
}

/// Wait until `Tcp InSegs` of `snmp` has not moved for `quiet` (at most `max`); returns the
/// segments received since `base` and when (from `t0`) the count last changed.
pub fn wait_replies(
    snmp: &mut Snmp,
    base: u64,
    t0: Instant,
    quiet: Duration,
    max: Duration,
) -> Result<(u64, Duration)> {
    let mut last = snmp.field("Tcp", "InSegs")?;
    let mut changed = t0.elapsed();
    let waited = Instant::now();
    let mut still = Instant::now();
    while still.elapsed() < quiet && waited.elapsed() < max {
        std::thread::sleep(Duration::from_millis(5));
        let v = snmp.field("Tcp", "InSegs")?;
        if v != last {
            last = v;
            changed = t0.elapsed();
            still = Instant::now();
        }
    }
    Ok((last.saturating_sub(base), changed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::packet::{checksum, fold, ones_sum};

    #[test]
    fn syn_is_well_formed() {
        let p = syn_packet();
        assert_eq!(p.len(), 40);
        assert_eq!(checksum(&p[..20]), 0, "IP header checksum");
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        assert_eq!(
            !fold(ones_sum(&p[20..], ones_sum(&pseudo, 0))),
            0,
            "TCP checksum"
        );
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), RST_DPORT);
        assert_eq!(p[33], 0x02, "SYN only");
    }
}
