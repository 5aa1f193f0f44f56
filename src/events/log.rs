//! LOG: the kernel-format log line of an event (nf_log_syslog): `nf_log_ip_packet` for IPv4
//! records, `nf_log_ip6_packet` for IPv6 ones (byte 2 = NFPROTO_IPV6).
//!
//! A BPF_NETFILTER program cannot write to the kernel log, so a `-j LOG` rule hands an
//! [`Event`] to the daemon, which writes the line the kernel's LOG target would have written,
//! at the same level, through `/dev/kmsg`.
//!
//! Contract: [`format_line`] returns, byte for byte, the text of the record the kernel would
//! have stored (what `dmesg` and `/dev/kmsg` show after the level), for any record, including
//! malformed and truncated packets; it never panics. What it mirrors (xt_LOG's `log_tg`,
//! nf_log_syslog's dump functions, nf_log's line buffer, printk and `/dev/kmsg`) is in
//! `docs/KERNEL-BEHAVIOUR.md`: `#log-target`, `#log-line-format`, `#log-buffer-and-printk`,
//! `#log-namespaces`, `#devkmsg-ratelimit`.
//!
//! Every read of a header goes through [`Skb::header_pointer`], which fails exactly when the
//! kernel's `skb_header_pointer` would (past `skb->len`), so the truncation markers and the
//! early returns that follow them come out as the kernel writes them. The bytes LOG reads are
//! always within the first 188 bytes of the packet, well inside the
//! [`emitter::event::PACKET_CAP`] bytes a record carries.
//!
//! What a record does not carry, and so is never printed (`PHYSIN=`/`PHYSOUT=`, `VPROTO= VID=`,
//! the SIT device's extra bytes): `docs/KERNEL-BEHAVIOUR.md#log-differences`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use emitter::event::Event;
use ipt_abi::abi::{XT_LOG_IPOPT, XT_LOG_MACDECODE, XT_LOG_TCPOPT, XT_LOG_TCPSEQ, XT_LOG_UID};

/// `S_SIZE` of nf_log.c: the line buffer, `1024 - (sizeof(unsigned int) + 1)`.
const S_SIZE: usize = 1024 - (4 + 1);
/// Longest text the kernel passes to printk: `vsnprintf` keeps one byte of the buffer for
/// its NUL, so an overflowing chunk stops at `S_SIZE - 1`, level prefix included.
pub const NF_LOG_BUF_MAX: usize = S_SIZE - 1;
/// `PRINTKRB_RECORD_MAX`: the longest write `/dev/kmsg` accepts (`EINVAL` above).
pub const DEVKMSG_RECORD_MAX: usize = 1024;
/// `KERN_SOH`, the byte that introduces a printk level.
const KERN_SOH: u8 = 0x01;
/// `default_message_loglevel` as shipped (`CONFIG_MESSAGE_LOGLEVEL_DEFAULT`): the level of a
/// printk without a valid level prefix.
const DEFAULT_MESSAGE_LOGLEVEL: u8 = 4;
/// `overflowuid`/`overflowgid` default: what `from_kuid_munged` prints for an unmapped id.
const OVERFLOW_ID: u32 = 65534;

/// `ARPHRD_ETHER`.
pub const ARPHRD_ETHER: u16 = 1;
/// `ARPHRD_SIT`.
pub const ARPHRD_SIT: u16 = 776;
/// `ETH_HLEN`.
const ETH_HLEN: usize = 14;
/// NFPROTO_IPV6: a record of an IPv6 packet (`nf_log_ip6_packet`).
const NFPROTO_IPV6: u8 = 10;

/// IPv6 header fields and the extension headers `nf_ip6_ext_hdr` knows.
mod ip6 {
    pub const HLEN: u32 = 40;
    pub const HOPOPTS: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const NONE: u8 = 59;
    pub const DSTOPTS: u8 = 60;
    pub const ICMPV6: u8 = 58;
    /// `struct frag_hdr`.
    pub const FRAG_HLEN: u32 = 8;
    /// `IPV6_MAXPLEN`.
    pub const MAXPLEN: u32 = 0xffff;
}

/// ICMPv6 types `dump_ipv6_packet` decodes (include/uapi/linux/icmpv6.h).
mod icmp6 {
    pub const HLEN: u32 = 8;
    pub const DEST_UNREACH: u8 = 1;
    pub const PKT_TOOBIG: u8 = 2;
    pub const TIME_EXCEED: u8 = 3;
    pub const PARAMPROB: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const MGM_QUERY: u8 = 130;
    pub const MGM_REPORT: u8 = 131;
    pub const MGM_REDUCTION: u8 = 132;
}

/// The sysctl that lets namespaces other than the initial one log.
pub const NF_LOG_ALL_NETNS: &str = "/proc/sys/net/netfilter/nf_log_all_netns";
/// The sysctl that rate-limits writes to `/dev/kmsg`.
pub const PRINTK_DEVKMSG: &str = "/proc/sys/kernel/printk_devkmsg";
/// The kernel log device.
pub const DEV_KMSG: &str = "/dev/kmsg";

/// IPv4 header fields (include/uapi/linux/ip.h, include/net/ip.h).
mod ip {
    pub const HLEN: u32 = 20;
    pub const TOS_MASK: u8 = 0x1e;
    pub const PREC_MASK: u8 = 0xe0;
    pub const CE: u16 = 0x8000;
    pub const DF: u16 = 0x4000;
    pub const MF: u16 = 0x2000;
    pub const OFFSET: u16 = 0x1fff;
    /// Largest `tot_len`; a longer (BIG TCP) GSO packet carries 0 there (`iph_set_totlen`).
    pub const MAX_MTU: u32 = 0xffff;
}

/// IP protocol numbers LOG decodes.
mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const UDPLITE: u8 = 136;
}

/// ICMP types LOG decodes (include/uapi/linux/icmp.h).
mod icmp {
    pub const HLEN: u32 = 8;
    pub const ECHOREPLY: u8 = 0;
    pub const DEST_UNREACH: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const ECHO: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETERPROB: u8 = 12;
    pub const FRAG_NEEDED: u8 = 4;

    /// `required_len` of `dump_ipv4_packet`: bytes past the IP header a type needs (0: no
    /// check). Indexed by type, up to `NR_ICMP_TYPES` (18).
    pub const REQUIRED_LEN: [u32; 19] = [
        4,      // 0 ECHOREPLY
        0,      // 1
        0,      // 2
        8 + 20, // 3 DEST_UNREACH
        8 + 20, // 4 SOURCE_QUENCH
        8 + 20, // 5 REDIRECT
        0,      // 6
        0,      // 7
        4,      // 8 ECHO
        0,      // 9 ROUTERADVERT
        0,      // 10 ROUTERSOLICIT
        8 + 20, // 11 TIME_EXCEEDED
        8 + 20, // 12 PARAMETERPROB
        20,     // 13 TIMESTAMP
        20,     // 14 TIMESTAMPREPLY
        0,      // 15 INFO_REQUEST
        0,      // 16 INFO_REPLY
        12,     // 17 ADDRESS
        12,     // 18 ADDRESSREPLY
    ];
}

/// Header sizes: `sizeof(struct tcphdr)`, `udphdr`, `ip_auth_hdr`, `ip_esp_hdr`.
const TCP_HLEN: u32 = 20;
const UDP_HLEN: u32 = 8;
const AH_HLEN: u32 = 12;
const ESP_HLEN: u32 = 8;

/// Why a LOG line could not be written or a setting read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A sysctl could not be read.
    #[error("cannot read {path}")]
    Sysctl {
        /// The file under /proc/sys.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A sysctl holds a value this module does not know.
    #[error("{path} holds {value:?}")]
    SysctlValue {
        /// The file under /proc/sys.
        path: PathBuf,
        /// What it holds.
        value: String,
    },
    /// `/dev/kmsg` could not be opened for writing.
    #[error("cannot open {path} for writing")]
    Open {
        /// The device.
        path: PathBuf,
        /// Why (EPERM when `kernel.printk_devkmsg` is `off`).
        #[source]
        source: io::Error,
    },
    /// The kernel refused a record.
    #[error("write of a {len}-byte record to the kernel log")]
    Write {
        /// Bytes of the record.
        len: usize,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A record longer than `/dev/kmsg` takes (the kernel would answer EINVAL).
    #[error("record of {len} bytes, /dev/kmsg takes at most {DEVKMSG_RECORD_MAX}")]
    TooLong {
        /// Bytes of the record.
        len: usize,
    },
    /// The kernel took part of a record.
    #[error("short write to the kernel log: {written} of {len} bytes")]
    Short {
        /// Bytes taken.
        written: usize,
        /// Bytes of the record.
        len: usize,
    },
}

/// `nf_log_allowed`: the kernel's LOG writes from a packet of namespace `netns_is_init` only
/// if it is the initial namespace or `nf_log_all_netns` is set
/// (`docs/KERNEL-BEHAVIOUR.md#log-namespaces`).
pub fn log_allowed_in(netns_is_init: bool, nf_log_all_netns: bool) -> bool {
    netns_is_init || nf_log_all_netns
}

/// Reads `net.netfilter.nf_log_all_netns`. The calling thread must be in the initial
/// namespace: the file is missing elsewhere (`docs/KERNEL-BEHAVIOUR.md#log-namespaces`).
pub fn nf_log_all_netns() -> Result<bool, LogError> {
    read_nf_log_all_netns(Path::new(NF_LOG_ALL_NETNS))
}

fn read_sysctl(path: &Path) -> Result<String, LogError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| LogError::Sysctl {
            path: path.to_owned(),
            source,
        })
}

fn read_nf_log_all_netns(path: &Path) -> Result<bool, LogError> {
    let value = read_sysctl(path)?;
    // proc_dointvec; nf_log_allowed tests it for non-zero.
    value
        .parse::<i32>()
        .map(|v| v != 0)
        .map_err(|_| LogError::SysctlValue {
            path: path.to_owned(),
            value,
        })
}

/// `kernel.printk_devkmsg`: what the kernel does with user writes to `/dev/kmsg`
/// (`docs/KERNEL-BEHAVIOUR.md#devkmsg-ratelimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevkmsgMode {
    /// Every write is logged.
    On,
    /// Opening `/dev/kmsg` fails with EPERM.
    Off,
    /// Each open file logs at most 10 writes per 5 seconds; the others are dropped although
    /// the write succeeds.
    Ratelimit,
}

/// Reads `kernel.printk_devkmsg`.
pub fn devkmsg_mode() -> Result<DevkmsgMode, LogError> {
    let path = Path::new(PRINTK_DEVKMSG);
    let value = read_sysctl(path)?;
    match value.as_str() {
        "on" => Ok(DevkmsgMode::On),
        "off" => Ok(DevkmsgMode::Off),
        "ratelimit" => Ok(DevkmsgMode::Ratelimit),
        _ => Err(LogError::SysctlValue {
            path: path.to_owned(),
            value,
        }),
    }
}

/// The kernel log, open for writing: one [`kmsg_record`] per `write(2)`, one record each.
#[derive(Debug)]
pub struct KmsgWriter {
    file: File,
}

impl KmsgWriter {
    /// Opens `/dev/kmsg` write-only. Under `kernel.printk_devkmsg=ratelimit` (the default)
    /// a writer that must not lose lines reopens it every 10 lines (see the event pump;
    /// `docs/KERNEL-BEHAVIOUR.md#devkmsg-ratelimit`).
    pub fn open() -> Result<KmsgWriter, LogError> {
        KmsgWriter::open_path(Path::new(DEV_KMSG))
    }

    /// Opens `path` (a `/dev/kmsg` stand-in in tests) write-only.
    pub fn open_path(path: &Path) -> Result<KmsgWriter, LogError> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|source| LogError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(KmsgWriter { file })
    }

    /// Writes one record as one `write(2)`; a record the kernel would refuse is an error.
    pub fn write_record(&mut self, record: &[u8]) -> Result<(), LogError> {
        let len = record.len();
        if len > DEVKMSG_RECORD_MAX {
            return Err(LogError::TooLong { len });
        }
        match self.file.write(record) {
            Ok(written) if written == len => Ok(()),
            Ok(written) => Err(LogError::Short { written, len }),
            Err(source) => Err(LogError::Write { len, source }),
        }
    }

    /// Writes the line of a LOG event.
    pub fn log(&mut self, ev: &Event<'_>) -> Result<(), LogError> {
        self.write_record(&kmsg_record(ev))
    }
}

/// The bytes to write to `/dev/kmsg` for a LOG event: `<level>`, the line, a newline. The
/// stored record differs from the kernel's in its facility only (`LOG_USER`, not `LOG_KERN`:
/// `docs/KERNEL-BEHAVIOUR.md#log-buffer-and-printk`).
pub fn kmsg_record(ev: &Event<'_>) -> Vec<u8> {
    let (level, text) = printk(ev);
    let mut out = Vec::with_capacity(text.len() + 4);
    // A text without a level starts with KERN_SOH, never '<': devkmsg_write then applies
    // the default level itself (docs/KERNEL-BEHAVIOUR.md#log-buffer-and-printk).
    if let Some(level) = level {
        out.extend_from_slice(format!("<{level}>").as_bytes());
    }
    out.extend_from_slice(&text);
    out.push(b'\n');
    out
}

/// The text of the kernel's log line for a LOG event (no level, no newline).
pub fn format_line(ev: &Event<'_>) -> Vec<u8> {
    printk(ev).1
}

/// The buffer as nf_log_buf_close hands it to printk, then what printk stores of it
/// (`docs/KERNEL-BEHAVIOUR.md#log-buffer-and-printk`).
fn printk(ev: &Event<'_>) -> (Option<u8>, Vec<u8>) {
    let mut m = LogBuf(Vec::with_capacity(512));
    if ev.pf() == NFPROTO_IPV6 {
        nf_log_ip6_packet(&mut m, ev);
    } else {
        nf_log_ip_packet(&mut m, ev);
    }
    let mut buf = m.0;
    buf.truncate(NF_LOG_BUF_MAX);
    let (level, skip) = printk_parse_prefix(&buf);
    buf.drain(..skip);
    (level, buf)
}

/// `printk_parse_prefix`: every leading `KERN_SOH` + level (`0`-`7`) or `c` pair is dropped;
/// the first level found is the record's.
fn printk_parse_prefix(buf: &[u8]) -> (Option<u8>, usize) {
    let mut level = None;
    let mut at = 0;
    while let [KERN_SOH, c, ..] = buf[at..] {
        match c {
            b'0'..=b'7' => {
                level.get_or_insert(c - b'0');
            }
            b'c' => {}
            _ => break,
        }
        at += 2;
    }
    (
        level.or(Some(DEFAULT_MESSAGE_LOGLEVEL)).filter(|_| at > 0),
        at,
    )
}

/// `struct nf_log_buf`: the line being built (cut to [`NF_LOG_BUF_MAX`] at the end).
struct LogBuf(Vec<u8>);

impl fmt::Write for LogBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl LogBuf {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn add(&mut self, args: fmt::Arguments<'_>) {
        // Appending to a Vec cannot fail; write_str above never returns an error.
        let _ = fmt::Write::write_fmt(self, args);
    }
    fn hex_upper(&mut self, b: &[u8]) {
        for x in b {
            self.add(format_args!("{x:02X}"));
        }
    }
}

/// `nf_log_buf_add`.
macro_rules! add {
    ($m:expr, $($arg:tt)*) => { $m.add(format_args!($($arg)*)) };
}

/// `%pI4`.
struct Ipv4<'a>(&'a [u8]);

impl fmt::Display for Ipv4<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}.{}", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// `%pI6`: eight groups of four lowercase hex digits, nothing compressed.
struct Ipv6<'a>(&'a [u8]);

impl fmt::Display for Ipv6<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.chunks(2).enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{:02x}{:02x}", g[0], g[1])?;
        }
        Ok(())
    }
}

/// `%pM`.
struct Mac<'a>(&'a [u8]);

impl fmt::Display for Mac<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// What LOG reads of the skb: `skb->len` and the bytes from the network header.
struct Skb<'a> {
    data: &'a [u8],
    len: u32,
}

impl<'a> Skb<'a> {
    /// `skb_header_pointer`: `len` bytes at `off`, or none past `skb->len`. Bytes within
    /// `skb->len` but past the capture cannot be read either (a record always holds the
    /// first 188 bytes LOG may read, see the module doc).
    fn header_pointer(&self, off: u32, len: u32) -> Option<&'a [u8]> {
        let end = u64::from(off) + u64::from(len);
        if end > u64::from(self.len) {
            return None;
        }
        self.data.get(off as usize..end as usize)
    }

    /// `skb->len - off` as the kernel computes it (unsigned, wrapping).
    fn rest(&self, off: u32) -> u32 {
        self.len.wrapping_sub(off)
    }
}

/// `nf_log_ip_packet` (its `nf_log_allowed` check is [`log_allowed_in`], the caller's); the
/// line's parts: `docs/KERNEL-BEHAVIOUR.md#log-line-format`.
fn nf_log_ip_packet(m: &mut LogBuf, ev: &Event<'_>) {
    nf_log_dump_packet_common(m, ev);
    let has_in = ev.in_ifindex() != 0 || !ev.in_name().is_empty();
    if has_in {
        dump_mac_header(m, ev);
    }
    let skb = Skb {
        data: ev.packet(),
        len: ev.skb_len(),
    };
    // iph_totlen: tot_len 0 on a BIG TCP GSO packet means skb->len
    // (docs/KERNEL-BEHAVIOUR.md#log-line-format).
    let gso_tcp = skb.len > ip::MAX_MTU
        && skb
            .header_pointer(0, ip::HLEN)
            .is_some_and(|h| h[9] == proto::TCP);
    dump_ipv4_packet(m, ev, &skb, gso_tcp, 0);
}

/// `nf_log_ip6_packet`: the same common part and MAC header as IPv4's, then
/// [`dump_ipv6_packet`] (`docs/KERNEL-BEHAVIOUR.md#log-line-format`).
fn nf_log_ip6_packet(m: &mut LogBuf, ev: &Event<'_>) {
    nf_log_dump_packet_common(m, ev);
    if ev.in_ifindex() != 0 || !ev.in_name().is_empty() {
        dump_mac_header(m, ev);
    }
    let skb = Skb {
        data: ev.packet(),
        len: ev.skb_len(),
    };
    dump_ipv6_packet(m, ev, &skb, 0, true);
}

/// `nf_ip6_ext_hdr`: the headers `dump_ipv6_packet` walks as extension headers (ESP and
/// NEXTHDR_NONE among them, unlike `ipv6_ext_hdr`).
fn nf_ip6_ext_hdr(h: u8) -> bool {
    matches!(
        h,
        ip6::HOPOPTS | ip6::ROUTING | ip6::FRAGMENT | ip6::ESP | ip6::AH | ip6::NONE | ip6::DSTOPTS
    )
}

/// `dump_ipv6_packet`: the IPv6 header at `ip6hoff`, its extension headers as the kernel walks
/// them, the transport header; `recurse` is false for the packet an ICMPv6 error quotes.
fn dump_ipv6_packet(m: &mut LogBuf, ev: &Event<'_>, skb: &Skb<'_>, ip6hoff: u32, recurse: bool) {
    let logflags = ev.log_flags();
    let ipopt = logflags & XT_LOG_IPOPT != 0;
    let Some(ih) = skb.header_pointer(ip6hoff, ip6::HLEN) else {
        m.bytes(b"TRUNCATED");
        return;
    };
    add!(m, "SRC={} DST={} ", Ipv6(&ih[8..24]), Ipv6(&ih[24..40]));
    let first = be32(ih, 0);
    let plen = u32::from(be16(ih, 4));
    // ipv6_payload_len: 0 on a BIG TCP GSO packet means the skb's length
    let payload = if plen == 0 && skb.len > ip6::MAXPLEN + ip6::HLEN && ih[6] == proto::TCP {
        skb.len - ip6::HLEN
    } else {
        plen
    };
    add!(
        m,
        "LEN={} TC={} HOPLIMIT={} FLOWLBL={} ",
        payload + ip6::HLEN,
        (first & 0x0ff0_0000) >> 20,
        ih[7],
        first & 0x000f_ffff
    );

    let mut fragment = false;
    let mut ptr = ip6hoff + ip6::HLEN;
    let mut current = ih[6];
    while current != ip6::NONE && nf_ip6_ext_hdr(current) {
        let Some(hp) = skb.header_pointer(ptr, 2) else {
            m.bytes(b"TRUNCATED");
            return;
        };
        if ipopt {
            m.bytes(b"OPT ( ");
        }
        let hdrlen = match current {
            ip6::FRAGMENT => {
                m.bytes(b"FRAG:");
                let Some(fh) = skb.header_pointer(ptr, ip6::FRAG_HLEN) else {
                    m.bytes(b"TRUNCATED ");
                    return;
                };
                let frag_off = be16(fh, 2);
                add!(m, "{} ", frag_off & 0xfff8);
                if frag_off & 0x0001 != 0 {
                    m.bytes(b"INCOMPLETE ");
                }
                add!(m, "ID:{:08x} ", be32(fh, 4));
                if frag_off & 0xfff8 != 0 {
                    fragment = true;
                }
                ip6::FRAG_HLEN
            }
            ip6::DSTOPTS | ip6::ROUTING | ip6::HOPOPTS => {
                if fragment {
                    if ipopt {
                        m.bytes(b")");
                    }
                    return;
                }
                (u32::from(hp[1]) + 1) << 3
            }
            ip6::AH => {
                if ipopt {
                    m.bytes(b"AH ");
                    if fragment {
                        m.bytes(b")");
                        return;
                    }
                    let Some(ah) = skb.header_pointer(ptr, AH_HLEN) else {
                        add!(m, "INCOMPLETE [{} bytes] )", skb.rest(ptr));
                        return;
                    };
                    add!(m, "SPI=0x{:x} ", be32(ah, 4));
                }
                (u32::from(hp[1]) + 2) << 2
            }
            ip6::ESP => {
                if ipopt {
                    m.bytes(b"ESP ");
                    if fragment {
                        m.bytes(b")");
                        return;
                    }
                    match skb.header_pointer(ptr, ESP_HLEN) {
                        None => add!(m, "INCOMPLETE [{} bytes] )", skb.rest(ptr)),
                        Some(eh) => add!(m, "SPI=0x{:x} )", be32(eh, 0)),
                    }
                }
                return;
            }
            other => {
                add!(m, "Unknown Ext Hdr {other}");
                return;
            }
        };
        if ipopt {
            m.bytes(b") ");
        }
        current = hp[0];
        ptr = ptr.wrapping_add(hdrlen);
    }

    match current {
        proto::TCP => {
            if nf_log_dump_tcp_header(m, skb, fragment, ptr, logflags) {
                return;
            }
        }
        proto::UDP | proto::UDPLITE => {
            if nf_log_dump_udp_header(m, skb, current, fragment, ptr) {
                return;
            }
        }
        ip6::ICMPV6 => {
            m.bytes(b"PROTO=ICMPv6 ");
            if !fragment {
                let Some(ic) = skb.header_pointer(ptr, icmp6::HLEN) else {
                    add!(m, "INCOMPLETE [{} bytes] ", skb.rest(ptr));
                    return;
                };
                let ty = ic[0];
                add!(m, "TYPE={ty} CODE={} ", ic[1]);
                match ty {
                    icmp6::ECHO_REQUEST | icmp6::ECHO_REPLY => {
                        add!(m, "ID={} SEQ={} ", be16(ic, 4), be16(ic, 6));
                    }
                    icmp6::MGM_QUERY | icmp6::MGM_REPORT | icmp6::MGM_REDUCTION => {}
                    icmp6::PARAMPROB
                    | icmp6::DEST_UNREACH
                    | icmp6::PKT_TOOBIG
                    | icmp6::TIME_EXCEED => {
                        if ty == icmp6::PARAMPROB {
                            add!(m, "POINTER={:08x} ", be32(ic, 4));
                        }
                        if recurse {
                            m.bytes(b"[");
                            dump_ipv6_packet(m, ev, skb, ptr + icmp6::HLEN, false);
                            m.bytes(b"] ");
                        }
                        if ty == icmp6::PKT_TOOBIG {
                            add!(m, "MTU={} ", be32(ic, 4));
                        }
                    }
                    _ => {}
                }
            }
        }
        p => add!(m, "PROTO={p} "),
    }

    if logflags & XT_LOG_UID != 0 && recurse {
        nf_log_dump_sk_uid_gid(m, ev);
    }
    if recurse && ev.mark() != 0 {
        add!(m, "MARK=0x{:x} ", ev.mark());
    }
}

/// `nf_log_dump_packet_common`: level, prefix, devices (no PHYSIN/PHYSOUT:
/// docs/KERNEL-BEHAVIOUR.md#log-differences).
fn nf_log_dump_packet_common(m: &mut LogBuf, ev: &Event<'_>) {
    m.bytes(&[KERN_SOH, b'0'.wrapping_add(ev.log_level())]);
    m.bytes(ev.prefix());
    m.bytes(b"IN=");
    m.bytes(ev.in_name());
    m.bytes(b" OUT=");
    m.bytes(ev.out_name());
    m.bytes(b" ");
}

/// `dump_mac_header`.
fn dump_mac_header(m: &mut LogBuf, ev: &Event<'_>) {
    let mac = ev.mac();
    let dev_type = ev.dev_type();
    if ev.log_flags() & XT_LOG_MACDECODE != 0 && dev_type == ARPHRD_ETHER {
        if mac.len() < ETH_HLEN {
            return;
        }
        add!(m, "MACSRC={} MACDST={} ", Mac(&mac[6..12]), Mac(&mac[0..6]));
        // nf_log_dump_vlan: a record has no VLAN tag (docs/KERNEL-BEHAVIOUR.md#log-differences).
        add!(m, "MACPROTO={:04x} ", be16(mac, 12));
        return;
    }
    m.bytes(b"MAC=");
    let hard_header_len = usize::from(ev.hard_header_len());
    if hard_header_len != 0 && !mac.is_empty() {
        if dev_type != ARPHRD_SIT {
            // The kernel reads hard_header_len bytes from the MAC header on, running into
            // the network header when the MAC header is shorter.
            let bytes = mac.iter().chain(ev.packet()).take(hard_header_len);
            for (i, b) in bytes.enumerate() {
                if i > 0 {
                    m.bytes(b":");
                }
                add!(m, "{b:02x}");
            }
        }
        if dev_type == ARPHRD_SIT && mac.len() >= 20 {
            // The MAC header of a SIT device is the outer IPv4 header.
            add!(m, " TUNNEL={}->{}", Ipv4(&mac[12..16]), Ipv4(&mac[16..20]));
        }
    }
    m.bytes(b" ");
}

/// `dump_ipv4_packet`: the IPv4 header at `iphoff` and what follows; `iphoff` is 0 for the
/// packet and non-zero for the one an ICMP error quotes (never recursed into further).
fn dump_ipv4_packet(m: &mut LogBuf, ev: &Event<'_>, skb: &Skb<'_>, gso_tcp: bool, iphoff: u32) {
    let logflags = ev.log_flags();
    let Some(ih) = skb.header_pointer(iphoff, ip::HLEN) else {
        m.bytes(b"TRUNCATED");
        return;
    };
    let ihl4 = u32::from(ih[0] & 0x0f) * 4;
    let tos = ih[1];
    let tot_len = be16(ih, 2);
    let frag_off = be16(ih, 6);
    let protocol = ih[9];
    let fragment = frag_off & ip::OFFSET != 0;

    add!(m, "SRC={} DST={} ", Ipv4(&ih[12..16]), Ipv4(&ih[16..20]));
    let len = if tot_len == 0 && gso_tcp {
        skb.len
    } else {
        u32::from(tot_len)
    };
    add!(
        m,
        "LEN={len} TOS=0x{:02X} PREC=0x{:02X} TTL={} ID={} ",
        tos & ip::TOS_MASK,
        tos & ip::PREC_MASK,
        ih[8],
        be16(ih, 4)
    );
    if frag_off & ip::CE != 0 {
        m.bytes(b"CE ");
    }
    if frag_off & ip::DF != 0 {
        m.bytes(b"DF ");
    }
    if frag_off & ip::MF != 0 {
        m.bytes(b"MF ");
    }
    if fragment {
        add!(m, "FRAG:{} ", frag_off & ip::OFFSET);
    }

    if logflags & XT_LOG_IPOPT != 0 && ihl4 > ip::HLEN {
        let Some(op) = skb.header_pointer(iphoff + ip::HLEN, ihl4 - ip::HLEN) else {
            m.bytes(b"TRUNCATED");
            return;
        };
        m.bytes(b"OPT (");
        m.hex_upper(op);
        m.bytes(b") ");
    }

    let thoff = iphoff + ihl4;
    match protocol {
        proto::TCP => {
            if nf_log_dump_tcp_header(m, skb, fragment, thoff, logflags) {
                return;
            }
        }
        proto::UDP | proto::UDPLITE => {
            if nf_log_dump_udp_header(m, skb, protocol, fragment, thoff) {
                return;
            }
        }
        proto::ICMP => dump_icmp(m, ev, skb, gso_tcp, iphoff, thoff, fragment),
        proto::AH => {
            if !fragment {
                m.bytes(b"PROTO=AH ");
                match skb.header_pointer(thoff, AH_HLEN) {
                    None => add!(m, "INCOMPLETE [{} bytes] ", skb.rest(thoff)),
                    Some(ah) => add!(m, "SPI=0x{:x} ", be32(ah, 4)),
                }
            }
        }
        proto::ESP => {
            m.bytes(b"PROTO=ESP ");
            if !fragment {
                match skb.header_pointer(thoff, ESP_HLEN) {
                    None => add!(m, "INCOMPLETE [{} bytes] ", skb.rest(thoff)),
                    Some(eh) => add!(m, "SPI=0x{:x} ", be32(eh, 0)),
                }
            }
        }
        p => add!(m, "PROTO={p} "),
    }

    if logflags & XT_LOG_UID != 0 && iphoff == 0 {
        nf_log_dump_sk_uid_gid(m, ev);
    }
    if iphoff == 0 && ev.mark() != 0 {
        add!(m, "MARK=0x{:x} ", ev.mark());
    }
}

/// The ICMP case of `dump_ipv4_packet` (it always goes on to UID and MARK).
fn dump_icmp(
    m: &mut LogBuf,
    ev: &Event<'_>,
    skb: &Skb<'_>,
    gso_tcp: bool,
    iphoff: u32,
    off: u32,
    fragment: bool,
) {
    m.bytes(b"PROTO=ICMP ");
    if fragment {
        return;
    }
    let Some(ich) = skb.header_pointer(off, icmp::HLEN) else {
        add!(m, "INCOMPLETE [{} bytes] ", skb.rest(off));
        return;
    };
    let (ty, code) = (ich[0], ich[1]);
    add!(m, "TYPE={ty} CODE={code} ");
    let required = icmp::REQUIRED_LEN
        .get(usize::from(ty))
        .copied()
        .unwrap_or(0);
    if required != 0 && skb.rest(off) < required {
        add!(m, "INCOMPLETE [{} bytes] ", skb.rest(off));
        return;
    }
    match ty {
        icmp::ECHOREPLY | icmp::ECHO => {
            add!(m, "ID={} SEQ={} ", be16(ich, 4), be16(ich, 6));
        }
        icmp::PARAMETERPROB => add!(m, "PARAMETER={} ", ich[4]),
        icmp::REDIRECT | icmp::DEST_UNREACH | icmp::SOURCE_QUENCH | icmp::TIME_EXCEEDED => {
            if ty == icmp::REDIRECT {
                add!(m, "GATEWAY={} ", Ipv4(&ich[4..8]));
            }
            if iphoff == 0 {
                m.bytes(b"[");
                dump_ipv4_packet(m, ev, skb, gso_tcp, off + icmp::HLEN);
                m.bytes(b"] ");
            }
            if ty == icmp::DEST_UNREACH && code == icmp::FRAG_NEEDED {
                add!(m, "MTU={} ", be16(ich, 6));
            }
        }
        _ => {}
    }
}

/// `nf_log_dump_tcp_header`; true when the kernel's returns 1 (the line ends here).
fn nf_log_dump_tcp_header(
    m: &mut LogBuf,
    skb: &Skb<'_>,
    fragment: bool,
    off: u32,
    logflags: u8,
) -> bool {
    m.bytes(b"PROTO=TCP ");
    if fragment {
        return false;
    }
    let Some(th) = skb.header_pointer(off, TCP_HLEN) else {
        add!(m, "INCOMPLETE [{} bytes] ", skb.rest(off));
        return true;
    };
    add!(m, "SPT={} DPT={} ", be16(th, 0), be16(th, 2));
    if logflags & XT_LOG_TCPSEQ != 0 {
        add!(m, "SEQ={} ACK={} ", be32(th, 4), be32(th, 8));
    }
    add!(m, "WINDOW={} ", be16(th, 14));
    // (tcp_flag_word & TCP_RESERVED_BITS (0x0E000000)) >> 22: byte 12's bits 1-3, shifted.
    add!(m, "RES=0x{:02x} ", (th[12] & 0x0e) << 2);
    if th[12] & 0x01 != 0 {
        m.bytes(b"AE ");
    }
    const FLAGS: [(u8, &[u8]); 8] = [
        (0x80, b"CWR "),
        (0x40, b"ECE "),
        (0x20, b"URG "),
        (0x10, b"ACK "),
        (0x08, b"PSH "),
        (0x04, b"RST "),
        (0x02, b"SYN "),
        (0x01, b"FIN "),
    ];
    for (bit, name) in FLAGS {
        if th[13] & bit != 0 {
            m.bytes(name);
        }
    }
    add!(m, "URGP={} ", be16(th, 18));

    let doff4 = u32::from(th[12] >> 4) * 4;
    if logflags & XT_LOG_TCPOPT != 0 && doff4 > TCP_HLEN {
        let Some(op) = skb.header_pointer(off + TCP_HLEN, doff4 - TCP_HLEN) else {
            m.bytes(b"OPT (TRUNCATED)");
            return true;
        };
        m.bytes(b"OPT (");
        m.hex_upper(op);
        m.bytes(b") ");
    }
    false
}

/// `nf_log_dump_udp_header` (UDP and UDP-Lite); true when the line ends here.
fn nf_log_dump_udp_header(
    m: &mut LogBuf,
    skb: &Skb<'_>,
    protocol: u8,
    fragment: bool,
    off: u32,
) -> bool {
    if protocol == proto::UDP {
        m.bytes(b"PROTO=UDP ");
    } else {
        m.bytes(b"PROTO=UDPLITE ");
    }
    if fragment {
        return false;
    }
    let Some(uh) = skb.header_pointer(off, UDP_HLEN) else {
        add!(m, "INCOMPLETE [{} bytes] ", skb.rest(off));
        return true;
    };
    add!(
        m,
        "SPT={} DPT={} LEN={} ",
        be16(uh, 0),
        be16(uh, 2),
        be16(uh, 4)
    );
    false
}

/// `nf_log_dump_sk_uid_gid`: the socket file's fsuid/fsgid, when the skb has a full socket
/// with a file (the record's flag; the socket is always of the hook's namespace there).
fn nf_log_dump_sk_uid_gid(m: &mut LogBuf, ev: &Event<'_>) {
    if let Some((uid, gid)) = ev.uid_gid() {
        // from_kuid_munged: the invalid id prints as overflowuid.
        let munge = |id: u32| if id == u32::MAX { OVERFLOW_ID } else { id };
        add!(m, "UID={} GID={} ", munge(uid), munge(gid));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests may unwrap")]

    use super::*;
    use emitter::event::{EventBuilder, KIND_LOG};

    const NF_INET_LOCAL_IN: u8 = 1;
    const NF_INET_LOCAL_OUT: u8 = 3;
    const SRC: [u8; 4] = [10, 0, 0, 1];
    const DST: [u8; 4] = [10, 0, 0, 2];
    const ETH: [u8; 14] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // destination
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
        0x08, 0x00,
    ];

    /// An IPv4 packet: header with `opts`, then `payload`; tot_len is the real length.
    fn ipv4(proto: u8, frag_off: u16, tos: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
        assert_eq!(opts.len() % 4, 0);
        let ihl = 5 + opts.len() / 4;
        let len = ihl * 4 + payload.len();
        let mut p = vec![
            0x40 | ihl as u8,
            tos,
            (len >> 8) as u8,
            len as u8,
            0x12,
            0x34,
            (frag_off >> 8) as u8,
            frag_off as u8,
            64,
            proto,
            0,
            0,
        ];
        p.extend_from_slice(&SRC);
        p.extend_from_slice(&DST);
        p.extend_from_slice(opts);
        p.extend_from_slice(payload);
        p
    }

    fn tcp(flags13: u8, byte12_low: u8, opts: &[u8]) -> Vec<u8> {
        let doff = (20 + opts.len()) / 4;
        let mut t = vec![
            0x9c,
            0x40, // 40000
            0x00,
            0x50, // 80
            0x01,
            0x02,
            0x03,
            0x04, // seq 16909060
            0x00,
            0x00,
            0x00,
            0x07, // ack 7
            (doff as u8) << 4 | byte12_low,
            flags13,
            0xfa,
            0xf0, // window 64240
            0x00,
            0x00, // checksum
            0x00,
            0x05, // urg ptr
        ];
        t.extend_from_slice(opts);
        t
    }

    fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let len = 8 + data.len();
        let mut u = sport.to_be_bytes().to_vec();
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&(len as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(data);
        u
    }

    fn input(pkt: &[u8]) -> EventBuilder {
        EventBuilder::new(KIND_LOG, NF_INET_LOCAL_IN, pkt)
            .arg(4)
            .prefix(b"P: ")
            .input(b"veth0", 2)
            .mac(ARPHRD_ETHER, 14, &ETH)
    }

    fn line(raw: &[u8]) -> String {
        let ev = Event::parse(raw).unwrap();
        String::from_utf8(format_line(&ev)).unwrap()
    }

    const HEAD: &str = "P: IN=veth0 OUT= MAC=02:00:00:00:00:02:02:00:00:00:00:01:08:00 \
                        SRC=10.0.0.1 DST=10.0.0.2 ";

    #[test]
    fn tcp_syn_with_sequence_and_options() {
        let opts = [2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 7, 0, 0];
        let pkt = ipv4(6, 0x4000, 0, &[], &tcp(0x02, 0, &opts));
        let raw = input(&pkt).log_flags(XT_LOG_TCPSEQ | XT_LOG_TCPOPT).build();
        assert_eq!(
            line(&raw),
            format!(
                "{HEAD}LEN=52 TOS=0x00 PREC=0x00 TTL=64 ID=4660 DF PROTO=TCP SPT=40000 DPT=80 \
                 SEQ=16909060 ACK=7 WINDOW=64240 RES=0x00 SYN URGP=5 \
                 OPT (020405B40402010303070000) "
            )
        );
        // Without the flags: neither SEQ/ACK nor OPT.
        let raw = input(&pkt).build();
        assert_eq!(
            line(&raw),
            format!(
                "{HEAD}LEN=52 TOS=0x00 PREC=0x00 TTL=64 ID=4660 DF PROTO=TCP SPT=40000 DPT=80 \
                 WINDOW=64240 RES=0x00 SYN URGP=5 "
            )
        );
    }

    #[test]
    fn tcp_every_flag_reserved_bits_and_tos() {
        let pkt = ipv4(6, 0, 0xff, &[], &tcp(0xff, 0x0f, &[]));
        let raw = input(&pkt).build();
        assert_eq!(
            line(&raw),
            format!(
                "{HEAD}LEN=40 TOS=0x1E PREC=0xE0 TTL=64 ID=4660 PROTO=TCP SPT=40000 DPT=80 \
                 WINDOW=64240 RES=0x38 AE CWR ECE URG ACK PSH RST SYN FIN URGP=5 "
            )
        );
    }

    #[test]
    fn udp_and_udplite_at_level_and_mark() {
        let pkt = ipv4(17, 0, 0, &[], &udp(5353, 53, b"hello"));
        let raw = input(&pkt).arg(6).mark(0xdead_beef).build();
        let ev = Event::parse(&raw).unwrap();
        let expected = format!(
            "{HEAD}LEN=33 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=UDP SPT=5353 DPT=53 LEN=13 \
             MARK=0xdeadbeef "
        );
        assert_eq!(String::from_utf8(format_line(&ev)).unwrap(), expected);
        assert_eq!(kmsg_record(&ev), format!("<6>{expected}\n").into_bytes());

        let pkt = ipv4(136, 0, 0, &[], &udp(1, 2, b""));
        assert!(line(&input(&pkt).build()).ends_with("PROTO=UDPLITE SPT=1 DPT=2 LEN=8 "));
    }

    #[test]
    fn icmp_echo_and_fixed_length_types() {
        let pkt = ipv4(1, 0, 0, &[], &[8, 0, 0, 0, 0x12, 0x34, 0, 1, b'x', b'y']);
        assert_eq!(
            line(&input(&pkt).build()),
            format!(
                "{HEAD}LEN=30 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=ICMP TYPE=8 CODE=0 \
                 ID=4660 SEQ=1 "
            )
        );
        // Echo reply, parameter problem (no quoted packet is printed), unknown type.
        let tail = |icmp: &[u8]| line(&input(&ipv4(1, 0, 0, &[], icmp)).build());
        assert!(tail(&[0, 0, 0, 0, 0, 9, 0, 2]).ends_with("TYPE=0 CODE=0 ID=9 SEQ=2 "));
        let mut pp = vec![12, 0, 0, 0, 20, 0, 0, 0];
        pp.extend(ipv4(17, 0, 0, &[], &udp(1, 2, b"")));
        assert!(tail(&pp).ends_with("PROTO=ICMP TYPE=12 CODE=0 PARAMETER=20 "));
        assert!(tail(&[42, 7, 0, 0, 0, 0, 0, 0]).ends_with("PROTO=ICMP TYPE=42 CODE=7 "));
        // Timestamp needs 20 bytes, address mask 12: INCOMPLETE below that, nothing above.
        assert!(tail(&[13, 0, 0, 0, 0, 0, 0, 0]).ends_with("TYPE=13 CODE=0 INCOMPLETE [8 bytes] "));
        assert!(
            tail(&[13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                .ends_with("TYPE=13 CODE=0 ")
        );
        assert!(tail(&[17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).ends_with("INCOMPLETE [11 bytes] "));
        // A header shorter than 8 bytes.
        assert!(tail(&[8, 0, 0, 0, 0]).ends_with("PROTO=ICMP INCOMPLETE [5 bytes] "));
    }

    #[test]
    fn icmp_errors_quote_the_packet_once() {
        let inner = ipv4(6, 0x4000, 0, &[], &tcp(0x02, 0, &[2, 4, 5, 0xb4]));
        let mut err = vec![3, 4, 0, 0, 0, 0, 0x05, 0xdc];
        err.extend_from_slice(&inner);
        let pkt = ipv4(1, 0, 0xc0, &[], &err);
        let raw = input(&pkt)
            .log_flags(XT_LOG_TCPSEQ | XT_LOG_TCPOPT | XT_LOG_UID)
            .mark(1)
            .uid_gid(0, 0)
            .build();
        assert_eq!(
            line(&raw),
            format!(
                "{HEAD}LEN=72 TOS=0x00 PREC=0xC0 TTL=64 ID=4660 PROTO=ICMP TYPE=3 CODE=4 \
                 [SRC=10.0.0.1 DST=10.0.0.2 LEN=44 TOS=0x00 PREC=0x00 TTL=64 ID=4660 DF \
                 PROTO=TCP SPT=40000 DPT=80 SEQ=16909060 ACK=7 WINDOW=64240 RES=0x00 SYN \
                 URGP=5 OPT (020405B4) ] MTU=1500 UID=0 GID=0 MARK=0x1 "
            )
        );

        // Redirect: gateway, then the quoted packet; an ICMP error inside is not recursed.
        let mut inner_err = vec![11, 0, 0, 0, 0, 0, 0, 0];
        inner_err.extend(ipv4(17, 0, 0, &[], &udp(1, 2, b"")));
        let mut redirect = vec![5, 1, 0, 0, 192, 168, 1, 254];
        redirect.extend(ipv4(1, 0, 0, &[], &inner_err));
        let pkt = ipv4(1, 0, 0, &[], &redirect);
        assert!(line(&input(&pkt).build()).ends_with(
            "PROTO=ICMP TYPE=5 CODE=1 GATEWAY=192.168.1.254 [SRC=10.0.0.1 DST=10.0.0.2 \
             LEN=56 TOS=0x00 PREC=0x00 TTL=64 ID=4660 PROTO=ICMP TYPE=11 CODE=0 ] "
        ));

        // Too short for a quoted header: INCOMPLETE, no brackets.
        let pkt = ipv4(1, 0, 0, &[], &[11, 0, 0, 0, 0, 0, 0, 0, 0x45, 0]);
        assert!(line(&input(&pkt).build()).ends_with("TYPE=11 CODE=0 INCOMPLETE [10 bytes] "));
    }

    #[test]
    fn quoted_packet_truncation() {
        // Quoted header claims 60 bytes but only 20 follow: options TRUNCATED, no space,
        // the bracket closes, and the outer packet goes on to MARK.
        let mut inner = ipv4(6, 0, 0, &[], &[]);
        inner[0] = 0x4f;
        let mut err = vec![3, 3, 0, 0, 0, 0, 0, 0];
        err.extend_from_slice(&inner);
        let pkt = ipv4(1, 0, 0, &[], &err);
        let raw = input(&pkt).log_flags(XT_LOG_IPOPT).mark(2).build();
        assert!(line(&raw).ends_with("TTL=64 ID=4660 TRUNCATED] MARK=0x2 "));
        // Without IPOPT the TCP header is looked for past the 60 bytes: the unsigned
        // subtraction of the kernel wraps.
        let raw = input(&pkt).mark(2).build();
        assert!(line(&raw).ends_with("PROTO=TCP INCOMPLETE [4294967256 bytes] ] MARK=0x2 "));

        // A quoted TCP header of 8 bytes.
        let mut err = vec![3, 3, 0, 0, 0, 0, 0, 0];
        err.extend(ipv4(6, 0, 0, &[], &tcp(0x02, 0, &[])[..8]));
        let pkt = ipv4(1, 0, 0, &[], &err);
        assert!(line(&input(&pkt).build()).ends_with("PROTO=TCP INCOMPLETE [8 bytes] ] "));
    }

    #[test]
    fn truncated_headers_end_the_line_before_uid_and_mark() {
        let tcp_short = ipv4(6, 0, 0, &[], &[0; 10]);
        let raw = input(&tcp_short)
            .log_flags(XT_LOG_UID)
            .uid_gid(1, 1)
            .mark(3)
            .build();
        assert!(line(&raw).ends_with("ID=4660 PROTO=TCP INCOMPLETE [10 bytes] "));
        let udp_short = ipv4(17, 0, 0, &[], &[0; 7]);
        assert!(
            line(&input(&udp_short).mark(3).build()).ends_with("PROTO=UDP INCOMPLETE [7 bytes] ")
        );
        // TCP options past the end: "OPT (TRUNCATED)" without a trailing space.
        let mut t = tcp(0x10, 0, &[1, 1, 1, 1]);
        t[12] = 0xf0;
        let raw = input(&ipv4(6, 0, 0, &[], &t))
            .log_flags(XT_LOG_TCPOPT)
            .mark(3)
            .build();
        assert!(line(&raw).ends_with("ACK URGP=5 OPT (TRUNCATED)"));
        // ICMP, AH and ESP break instead of returning: MARK follows.
        let raw = input(&ipv4(1, 0, 0, &[], &[8, 0, 0])).mark(3).build();
        assert!(line(&raw).ends_with("PROTO=ICMP INCOMPLETE [3 bytes] MARK=0x3 "));
        let raw = input(&ipv4(51, 0, 0, &[], &[0; 8])).mark(3).build();
        assert!(line(&raw).ends_with("PROTO=AH INCOMPLETE [8 bytes] MARK=0x3 "));
        let raw = input(&ipv4(50, 0, 0, &[], &[0; 4])).mark(3).build();
        assert!(line(&raw).ends_with("PROTO=ESP INCOMPLETE [4 bytes] MARK=0x3 "));
        // Not even an IP header.
        let raw = input(&[0x45, 0, 0, 10, 0, 0, 0, 0, 64, 6]).build();
        assert!(line(&raw).ends_with(":08:00 TRUNCATED"));
    }

    #[test]
    fn ah_esp_and_other_protocols() {
        let ah = [4, 4, 0, 0, 0xf1, 0x23, 0x45, 0x67, 0, 0, 0, 1];
        assert!(
            line(&input(&ipv4(51, 0, 0, &[], &ah)).build()).ends_with("PROTO=AH SPI=0xf1234567 ")
        );
        let esp = [0, 0, 0x10, 0x01, 0, 0, 0, 1];
        assert!(line(&input(&ipv4(50, 0, 0, &[], &esp)).build()).ends_with("PROTO=ESP SPI=0x1001 "));
        assert!(
            line(&input(&ipv4(253, 0, 0, &[], &[1, 2])).build()).ends_with("ID=4660 PROTO=253 ")
        );
    }

    #[test]
    fn fragments() {
        // Later fragment: offset shown, no transport header read; AH prints nothing at all.
        let frag = |proto: u8| line(&input(&ipv4(proto, 0x2000 | 185, 0, &[], &[0; 16])).build());
        assert!(frag(6).ends_with("ID=4660 MF FRAG:185 PROTO=TCP "));
        assert!(frag(17).ends_with("ID=4660 MF FRAG:185 PROTO=UDP "));
        assert!(frag(1).ends_with("ID=4660 MF FRAG:185 PROTO=ICMP "));
        assert!(frag(50).ends_with("ID=4660 MF FRAG:185 PROTO=ESP "));
        assert!(frag(51).ends_with("ID=4660 MF FRAG:185 "));
        // First fragment: CE DF MF in that order, header decoded.
        let pkt = ipv4(17, 0xe000, 0, &[], &udp(7, 9, &[0; 8]));
        assert!(
            line(&input(&pkt).build()).ends_with("ID=4660 CE DF MF PROTO=UDP SPT=7 DPT=9 LEN=16 ")
        );
    }

    #[test]
    fn ip_options() {
        let opts = [0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00];
        let pkt = ipv4(17, 0, 0, &opts, &udp(1, 2, b""));
        assert!(line(&input(&pkt).log_flags(XT_LOG_IPOPT).build())
            .ends_with("ID=4660 OPT (9404000001010100) PROTO=UDP SPT=1 DPT=2 LEN=8 "));
        assert!(line(&input(&pkt).build()).ends_with("ID=4660 PROTO=UDP SPT=1 DPT=2 LEN=8 "));
    }

    #[test]
    fn mac_header_forms() {
        let pkt = ipv4(253, 0, 0, &[], &[]);
        let start = |raw: &[u8]| {
            let l = line(raw);
            l[..=l.find(" SRC=").unwrap()].to_owned()
        };
        let decode = input(&pkt).log_flags(XT_LOG_MACDECODE).build();
        assert_eq!(
            start(&decode),
            "P: IN=veth0 OUT= MACSRC=02:00:00:00:00:01 MACDST=02:00:00:00:00:02 MACPROTO=0800 "
        );
        // MACDECODE on a non-Ethernet device falls back to MAC=; the loopback header.
        let lo = EventBuilder::new(KIND_LOG, NF_INET_LOCAL_IN, &pkt)
            .input(b"lo", 1)
            .log_flags(XT_LOG_MACDECODE)
            .mac(772, 14, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0])
            .build();
        assert_eq!(
            start(&lo),
            "IN=lo OUT= MAC=00:00:00:00:00:00:00:00:00:00:00:00:08:00 "
        );
        // Ethernet with MACDECODE but a MAC header shorter than ETH_HLEN: nothing at all.
        let short = input(&pkt)
            .log_flags(XT_LOG_MACDECODE)
            .mac(ARPHRD_ETHER, 14, &ETH[..6])
            .build();
        assert_eq!(start(&short), "P: IN=veth0 OUT= ");
        // No MAC header, or a device without one: "MAC= ".
        let none = input(&pkt).mac(ARPHRD_ETHER, 14, &[]).build();
        assert_eq!(start(&none), "P: IN=veth0 OUT= MAC= ");
        let tun = input(&pkt).mac(65534, 0, &[]).build();
        assert_eq!(start(&tun), "P: IN=veth0 OUT= MAC= ");
        // hard_header_len longer than the MAC header runs into the IP header.
        let long = input(&pkt).mac(ARPHRD_ETHER, 4, &[0xaa, 0xbb]).build();
        assert_eq!(start(&long), "P: IN=veth0 OUT= MAC=aa:bb:45:00 ");
        // No input device (OUTPUT): no MAC part at all.
        let out = EventBuilder::new(KIND_LOG, NF_INET_LOCAL_OUT, &pkt)
            .output(b"eth1", 3)
            .mac(ARPHRD_ETHER, 14, &ETH)
            .build();
        assert_eq!(start(&out), "IN= OUT=eth1 ");
    }

    #[test]
    fn uid_gid_only_with_the_flag_and_a_socket() {
        let pkt = ipv4(17, 0, 0, &[], &udp(1, 2, b""));
        let out = |b: EventBuilder| line(&b.build());
        let base = || {
            EventBuilder::new(KIND_LOG, NF_INET_LOCAL_OUT, &pkt)
                .output(b"eth1", 3)
                .prefix(b"U ")
        };
        assert_eq!(
            out(base().log_flags(XT_LOG_UID).uid_gid(1000, 100).mark(0x7)),
            "U IN= OUT=eth1 SRC=10.0.0.1 DST=10.0.0.2 LEN=28 TOS=0x00 PREC=0x00 TTL=64 \
             ID=4660 PROTO=UDP SPT=1 DPT=2 LEN=8 UID=1000 GID=100 MARK=0x7 "
        );
        assert!(out(base().uid_gid(1000, 100)).ends_with("LEN=8 "));
        assert!(out(base().log_flags(XT_LOG_UID)).ends_with("LEN=8 "));
        assert!(
            out(base().log_flags(XT_LOG_UID).uid_gid(u32::MAX, 5)).ends_with("UID=65534 GID=5 ")
        );
    }

    #[test]
    fn big_tcp_length_from_skb() {
        let mut pkt = ipv4(6, 0x4000, 0, &[], &tcp(0x10, 0, &[]));
        pkt[2] = 0;
        pkt[3] = 0;
        pkt.resize(70_000, 0);
        assert!(line(&input(&pkt).build()).contains(" LEN=70000 TOS="));
        // tot_len 0 on a packet that is not that long: printed as it is.
        let mut short = ipv4(6, 0, 0, &[], &tcp(0x10, 0, &[]));
        short[2] = 0;
        short[3] = 0;
        assert!(line(&input(&short).build()).contains(" LEN=0 TOS="));
    }

    #[test]
    fn nf_log_buffer_limit_and_printk_prefix() {
        // A device with a very long hard header: the kernel's buffer keeps 1018 bytes, two
        // of them the level prefix.
        let pkt = ipv4(17, 0, 0, &[], &udp(1, 2, &[0xee; 400]));
        let raw = input(&pkt).mac(1, 400, &ETH).log_flags(0).build();
        let ev = Event::parse(&raw).unwrap();
        let l = format_line(&ev);
        assert_eq!(l.len(), NF_LOG_BUF_MAX - 2);
        let bytes: Vec<String> = ETH.iter().chain(&pkt).map(|b| format!("{b:02x}")).collect();
        let full = format!("P: IN=veth0 OUT= MAC={}", bytes.join(":"));
        assert_eq!(l, &full.as_bytes()[..NF_LOG_BUF_MAX - 2]);
        let rec = kmsg_record(&ev);
        assert!(rec.len() <= DEVKMSG_RECORD_MAX);
        assert!(rec.starts_with(b"<4>P: IN=veth0"));

        // A prefix that itself starts with KERN_SOH pairs: printk strips them, the rule's
        // level stays.
        let raw = input(&pkt).prefix(b"\x013\x01cX ").arg(5).build();
        let ev = Event::parse(&raw).unwrap();
        assert!(format_line(&ev).starts_with(b"X IN=veth0"));
        assert!(kmsg_record(&ev).starts_with(b"<5>X IN="));
        // A level printk does not know stays in the text, at the default level.
        let raw = input(&pkt).arg(9).build();
        let ev = Event::parse(&raw).unwrap();
        assert!(format_line(&ev).starts_with(b"\x019P: IN="));
        assert!(kmsg_record(&ev).starts_with(b"\x019P: IN="));
    }

    const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const HEAD6: &str = "P: IN=veth0 OUT= MAC=02:00:00:00:00:02:02:00:00:00:00:01:86:dd \
                         SRC=fd00:0000:0000:0000:0000:0000:0000:0001 \
                         DST=fd00:0000:0000:0000:0000:0000:0000:0002 ";

    /// An IPv6 packet: traffic class 0xb8, flow label 0x12345, hop limit 64; `exts` are
    /// (header number, bytes) whose first byte is replaced by the next header.
    fn ipv6(exts: &[(u8, Vec<u8>)], proto: u8, l4: &[u8]) -> Vec<u8> {
        let kinds: Vec<u8> = exts.iter().map(|e| e.0).chain([proto]).collect();
        let mut p = vec![0x6b, 0x81, 0x23, 0x45, 0, 0, kinds[0], 64];
        p.extend_from_slice(&SRC6);
        p.extend_from_slice(&DST6);
        for (i, (_, b)) in exts.iter().enumerate() {
            p.push(kinds[i + 1]);
            p.extend_from_slice(&b[1..]);
        }
        p.extend_from_slice(l4);
        let plen = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        p
    }

    fn input6(pkt: &[u8]) -> EventBuilder {
        let mut eth = ETH;
        eth[12..14].copy_from_slice(&[0x86, 0xdd]);
        input(pkt).pf(NFPROTO_IPV6).mac(ARPHRD_ETHER, 14, &eth)
    }

    const DSTOPT: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];

    #[test]
    fn ipv6_header_tcp_udp_and_uid_mark() {
        let pkt = ipv6(&[], 6, &tcp(0x02, 0, &[2, 4, 5, 0xa0]));
        assert_eq!(
            line(
                &input6(&pkt)
                    .log_flags(XT_LOG_TCPSEQ | XT_LOG_TCPOPT)
                    .build()
            ),
            format!(
                "{HEAD6}LEN=64 TC=184 HOPLIMIT=64 FLOWLBL=74565 PROTO=TCP SPT=40000 DPT=80 \
                 SEQ=16909060 ACK=7 WINDOW=64240 RES=0x00 SYN URGP=5 OPT (020405A0) "
            )
        );
        let pkt = ipv6(&[], 17, &udp(1, 2, b"abc"));
        let raw = input6(&pkt)
            .log_flags(XT_LOG_UID)
            .uid_gid(7, 8)
            .mark(0x2a)
            .build();
        assert!(line(&raw)
            .ends_with("FLOWLBL=74565 PROTO=UDP SPT=1 DPT=2 LEN=11 UID=7 GID=8 MARK=0x2a "));
        let pkt = ipv6(&[], 136, &udp(1, 2, b""));
        assert!(line(&input6(&pkt).build()).ends_with("PROTO=UDPLITE SPT=1 DPT=2 LEN=8 "));
        assert!(line(&input6(&ipv6(&[], 253, b"zz")).build()).ends_with("FLOWLBL=74565 PROTO=253 "));
        // NEXTHDR_NONE ends the walk: PROTO=59
        assert!(line(&input6(&ipv6(&[], 59, b"")).build()).ends_with("PROTO=59 "));
    }

    #[test]
    fn ipv6_extension_headers_with_and_without_ipopt() {
        let frag0 = vec![0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
        let ah = vec![0, 1, 0, 0, 0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1];
        let pkt = ipv6(
            &[
                (0, DSTOPT.to_vec()),
                (44, frag0),
                (51, ah),
                (60, DSTOPT.to_vec()),
            ],
            17,
            &udp(5, 6, b""),
        );
        assert!(line(&input6(&pkt).build())
            .ends_with("FLOWLBL=74565 FRAG:0 INCOMPLETE ID:deadbeef PROTO=UDP SPT=5 DPT=6 LEN=8 "));
        assert!(line(&input6(&pkt).log_flags(XT_LOG_IPOPT).build()).ends_with(
            "FLOWLBL=74565 OPT ( ) OPT ( FRAG:0 INCOMPLETE ID:deadbeef ) OPT ( AH SPI=0x11223344 ) \
             OPT ( ) PROTO=UDP SPT=5 DPT=6 LEN=8 "
        ));
        // a later fragment: no transport header; a header after it ends the line
        let frag = vec![0, 0, 0x05, 0x38, 0, 0, 0, 9];
        let pkt = ipv6(&[(44, frag.clone())], 58, &[128, 0, 0, 0]);
        assert!(line(&input6(&pkt).mark(1).build())
            .ends_with("FRAG:1336 ID:00000009 PROTO=ICMPv6 MARK=0x1 "));
        let pkt = ipv6(&[(44, frag.clone()), (60, DSTOPT.to_vec())], 6, &[0; 20]);
        assert!(line(&input6(&pkt).mark(1).build()).ends_with("FRAG:1336 ID:00000009 "));
        assert!(line(&input6(&pkt).log_flags(XT_LOG_IPOPT).build())
            .ends_with("OPT ( FRAG:1336 ID:00000009 ) OPT ( )"));
        // ESP ends the line; with IPOPT its SPI
        let pkt = ipv6(&[], 50, &[0, 0, 0x10, 1, 0, 0, 0, 1]);
        assert!(line(&input6(&pkt).mark(1).build()).ends_with("FLOWLBL=74565 "));
        assert!(line(&input6(&pkt).log_flags(XT_LOG_IPOPT).build())
            .ends_with("FLOWLBL=74565 OPT ( ESP SPI=0x1001 )"));
        let pkt = ipv6(&[], 50, &[0, 0, 0x10]);
        assert!(line(&input6(&pkt).log_flags(XT_LOG_IPOPT).build())
            .ends_with("OPT ( ESP INCOMPLETE [3 bytes] )"));
        // a header cut short, and no header at all
        let pkt = ipv6(&[], 0, &[]);
        assert!(line(&input6(&pkt).build()).ends_with("FLOWLBL=74565 TRUNCATED"));
        assert!(line(&input6(&pkt[..30]).build()).ends_with(":86:dd TRUNCATED"));
        let pkt = ipv6(&[], 44, &[17, 0, 0]);
        assert!(line(&input6(&pkt).build()).ends_with("FLOWLBL=74565 FRAG:TRUNCATED "));
    }

    #[test]
    fn icmpv6_types_and_quoted_packets() {
        let echo = ipv6(&[], 58, &[128, 0, 0, 0, 0x12, 0x34, 0, 3]);
        assert!(
            line(&input6(&echo).build()).ends_with("PROTO=ICMPv6 TYPE=128 CODE=0 ID=4660 SEQ=3 ")
        );
        let mld = ipv6(&[], 58, &[131, 0, 0, 0, 0, 0, 0, 0]);
        assert!(line(&input6(&mld).build()).ends_with("PROTO=ICMPv6 TYPE=131 CODE=0 "));
        let ns = ipv6(&[], 58, &[135, 0, 0, 0, 0, 0, 0, 0]);
        assert!(line(&input6(&ns).build()).ends_with("PROTO=ICMPv6 TYPE=135 CODE=0 "));
        let short = ipv6(&[], 58, &[128, 0, 0]);
        assert!(
            line(&input6(&short).mark(1).build()).ends_with("PROTO=ICMPv6 INCOMPLETE [3 bytes] ")
        );
        // a packet too big quoting a UDP datagram: once, then the MTU, then UID and MARK
        let inner = ipv6(&[], 17, &udp(9, 10, b""));
        let mut ptb = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
        ptb.extend_from_slice(&inner);
        let pkt = ipv6(&[], 58, &ptb);
        let raw = input6(&pkt)
            .log_flags(XT_LOG_UID)
            .uid_gid(0, 0)
            .mark(3)
            .build();
        assert!(line(&raw).ends_with(
            "PROTO=ICMPv6 TYPE=2 CODE=0 [SRC=fd00:0000:0000:0000:0000:0000:0000:0001 \
             DST=fd00:0000:0000:0000:0000:0000:0000:0002 LEN=48 TC=184 HOPLIMIT=64 \
             FLOWLBL=74565 PROTO=UDP SPT=9 DPT=10 LEN=8 ] MTU=1280 UID=0 GID=0 MARK=0x3 "
        ));
        // a parameter problem's pointer; an error inside an error is not recursed into
        let mut inner_err = vec![1, 4, 0, 0, 0, 0, 0, 0];
        inner_err.extend_from_slice(&inner);
        let mut pp = vec![4, 1, 0, 0, 0, 0, 0, 0x2a];
        pp.extend(ipv6(&[], 58, &inner_err));
        let pkt = ipv6(&[], 58, &pp);
        assert!(line(&input6(&pkt).build()).ends_with(
            "TYPE=4 CODE=1 POINTER=0000002a [SRC=fd00:0000:0000:0000:0000:0000:0000:0001 \
             DST=fd00:0000:0000:0000:0000:0000:0000:0002 LEN=96 TC=184 HOPLIMIT=64 \
             FLOWLBL=74565 PROTO=ICMPv6 TYPE=1 CODE=4 ] "
        ));
        // a quote cut short
        let mut du = vec![1, 3, 0, 0, 0, 0, 0, 0];
        du.extend_from_slice(&inner[..20]);
        assert!(line(&input6(&ipv6(&[], 58, &du)).build()).ends_with("TYPE=1 CODE=3 [TRUNCATED] "));
    }

    #[test]
    fn parse_prefix_levels() {
        assert_eq!(printk_parse_prefix(b"\x014abc"), (Some(4), 2));
        assert_eq!(printk_parse_prefix(b"\x01c\x016x"), (Some(6), 4));
        assert_eq!(
            printk_parse_prefix(b"\x01c"),
            (Some(DEFAULT_MESSAGE_LOGLEVEL), 2)
        );
        assert_eq!(printk_parse_prefix(b"\x01"), (None, 0));
        assert_eq!(printk_parse_prefix(b"abc"), (None, 0));
    }

    #[test]
    fn allowed_and_sysctl() {
        assert!(log_allowed_in(true, false));
        assert!(log_allowed_in(false, true));
        assert!(!log_allowed_in(false, false));
        let dir = std::env::temp_dir().join(format!("bpfilter-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("nf_log_all_netns");
        for (text, want) in [("0\n", false), ("1\n", true), ("-1\n", true)] {
            std::fs::write(&f, text).unwrap();
            assert_eq!(read_nf_log_all_netns(&f).unwrap(), want);
        }
        std::fs::write(&f, "yes\n").unwrap();
        assert!(matches!(
            read_nf_log_all_netns(&f),
            Err(LogError::SysctlValue { .. })
        ));
        assert!(matches!(
            read_nf_log_all_netns(&dir.join("missing")),
            Err(LogError::Sysctl { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writer_one_record_per_write_and_length_limit() {
        let dir = std::env::temp_dir().join(format!("bpfilter-kmsg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("kmsg");
        std::fs::write(&f, b"").unwrap();
        let mut w = KmsgWriter::open_path(&f).unwrap();
        let pkt = ipv4(253, 0, 0, &[], &[]);
        let raw = input(&pkt).build();
        let ev = Event::parse(&raw).unwrap();
        w.log(&ev).unwrap();
        assert!(matches!(
            w.write_record(&[b'x'; DEVKMSG_RECORD_MAX + 1]),
            Err(LogError::TooLong { len }) if len == DEVKMSG_RECORD_MAX + 1
        ));
        assert_eq!(std::fs::read(&f).unwrap(), kmsg_record(&ev));
        assert!(matches!(
            KmsgWriter::open_path(&dir.join("no/such")),
            Err(LogError::Open { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
