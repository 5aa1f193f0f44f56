//! IPv4 packets as raw bytes, the way they are replayed through the firewall, and their text
//! form in regression fixtures (`PATH IFACE HEX`, one packet a line).

use anyhow::{bail, Context, Result};
use std::fmt;
use std::net::Ipv4Addr;
use test_support::packet::{checksum, fold, ones_sum, Ipv4};

/// Which hook of the firewall a packet is meant to cross.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Path {
    /// Sent by a neighbour to an address the firewall delivers locally (LOCAL_IN).
    Input,
    /// Sent by a neighbour and routed through the firewall (FORWARD).
    Forward,
    /// Originated in the firewall by a raw socket (LOCAL_OUT).
    Output,
}

impl Path {
    /// All paths in replay order.
    pub const ALL: [Path; 3] = [Path::Input, Path::Forward, Path::Output];

    /// The fixture keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Input => "input",
            Path::Forward => "forward",
            Path::Output => "output",
        }
    }
}

impl std::str::FromStr for Path {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "input" => Path::Input,
            "forward" => Path::Forward,
            "output" => Path::Output,
            _ => bail!("unknown path {s:?}"),
        })
    }
}

/// One packet of a corpus: the path, the firewall interface (ingress for input/forward,
/// egress for output) and the IP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Hook the packet is aimed at.
    pub path: Path,
    /// Firewall interface it enters (input, forward) or leaves by (output).
    pub iface: String,
    /// IPv4 datagram, header included; the harness rewrites the IP ID (and checksum).
    pub bytes: Vec<u8>,
    /// Injected with the Ethernet broadcast address as destination (`skb->pkt_type` is then
    /// PACKET_BROADCAST): the local TCP and UDP stacks drop such a unicast datagram silently
    /// and `icmp_send` answers nothing, so a flow towards the firewall can stand in for a
    /// local service without the kernel's own RST or port-unreachable interfering. Only for
    /// injected packets (`ip_forward` drops them). Written `bcast` in fixtures.
    pub bcast: bool,
    /// Output only, stateful replay only: sent by a real UDP or TCP socket of the firewall
    /// (bound to the datagram's source address and port and to the interface, connected to its
    /// destination; UDP sends the payload, TCP connects without blocking) instead of the raw
    /// socket, so that the errno the socket reports afterwards (ECONNREFUSED, EHOSTUNREACH...
    /// from a REJECT's reply) is compared too. The kernel picks the IP ID (and, for TCP, the
    /// sequence number and options). Written `socket` in fixtures.
    pub socket: bool,
}

impl Packet {
    /// A unicast packet.
    pub fn new(path: Path, iface: impl Into<String>, bytes: Vec<u8>) -> Packet {
        Packet {
            path,
            iface: iface.into(),
            bytes,
            bcast: false,
            socket: false,
        }
    }
}

/// Fields of an IPv4 header to build.
#[derive(Debug, Clone)]
pub struct IpSpec {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol number.
    pub proto: u8,
    /// Time to live.
    pub ttl: u8,
    /// Flags and fragment offset word (DF 0x4000, MF 0x2000, offset in 8-byte units).
    pub frag: u16,
    /// TOS byte.
    pub tos: u8,
    /// Raw IP options (padded to a multiple of 4 here).
    pub options: Vec<u8>,
}

/// Builds an IPv4 datagram with a valid header checksum and total length.
pub fn build_ipv4(spec: &IpSpec, payload: &[u8]) -> Vec<u8> {
    let mut opts = spec.options.clone();
    while opts.len() % 4 != 0 {
        opts.push(0);
    }
    opts.truncate(40);
    // the id is set by the harness
    let mut p = Ipv4 {
        tos: spec.tos,
        frag: spec.frag,
        ttl: spec.ttl,
        opts: &opts,
        ..Ipv4::new(spec.proto, spec.src.octets(), spec.dst.octets())
    }
    .build(payload);
    fix_ip_checksum(&mut p);
    p
}

/// Recomputes the IP header checksum.
pub fn fix_ip_checksum(p: &mut [u8]) {
    if p.len() < 20 {
        return;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let ihl = ihl.clamp(20, p.len());
    p[10] = 0;
    p[11] = 0;
    let c = checksum(&p[..ihl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Where a datagram's transport checksum lives and what it should be: (offset of the field
/// in the datagram, full checksum, folded pseudo-header sum), for TCP, UDP and ICMP in an
/// unfragmented datagram whose header is complete. The pseudo-header sum is what a
/// CHECKSUM_PARTIAL packet carries in the field (`~tcp_v4_check(len, s, d, 0)`): the kernel's
/// own RSTs cross a veth that way, and a packet socket sees them before the checksum is done.
pub fn l4_checksum(p: &[u8]) -> Option<(usize, u16, u16)> {
    if p.len() < 20 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
    let frag = u16::from_be_bytes([p[6], p[7]]);
    if ihl < 20 || total < ihl || frag & 0x3fff != 0 {
        return None;
    }
    let l4 = &p[ihl..total];
    let (field, min) = match p[9] {
        6 => (16, 20),
        17 => (6, 8),
        1 => (2, 8),
        _ => return None,
    };
    if l4.len() < min {
        return None;
    }
    let pseudo = if p[9] == 1 {
        0
    } else {
        let mut ph = Vec::with_capacity(12);
        ph.extend_from_slice(&p[12..20]);
        ph.extend_from_slice(&[0, p[9]]);
        ph.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        ones_sum(&ph, 0)
    };
    let mut body = l4.to_vec();
    body[field] = 0;
    body[field + 1] = 0;
    let mut full = !fold(ones_sum(&body, pseudo));
    if p[9] == 17 && full == 0 {
        full = 0xffff;
    }
    Some((ihl + field, full, fold(pseudo)))
}

/// Writes the correct transport checksum (TCP, UDP, ICMP; no-op for anything else).
pub fn fix_l4_checksum(p: &mut [u8]) {
    if let Some((at, full, _)) = l4_checksum(p) {
        p[at..at + 2].copy_from_slice(&full.to_be_bytes());
    }
}

/// A TCP segment (header, options zero-padded to 32 bits, payload) with a zero checksum;
/// `fix_l4_checksum` on the datagram fills it in.
#[allow(clippy::too_many_arguments)]
pub fn tcp_segment(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut t = tcp_header(sport, dport, flags, options, None);
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[14..16].copy_from_slice(&window.to_be_bytes());
    t.extend_from_slice(payload);
    t
}

/// An ICMP message: type, code, the four "rest of header" bytes, payload; checksum over all.
pub fn icmp_message(ty: u8, code: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(payload);
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// Zeroes the data of every IP timestamp option (type 68) in `opts`: a host that receives or
/// forwards such a datagram writes its clock (milliseconds since midnight UTC) there, which
/// differs between two runs. Pointer and flags are kept.
pub fn mask_ip_timestamps(opts: &mut [u8]) {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            t => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    break;
                }
                if t == 68 && len > 4 {
                    opts[i + 4..i + len].iter_mut().for_each(|b| *b = 0);
                }
                i += len;
            }
        }
    }
}

/// Sets the IP ID (the harness's per-packet tag) and fixes the checksum.
pub fn set_id(p: &mut [u8], id: u16) {
    p[4..6].copy_from_slice(&id.to_be_bytes());
    fix_ip_checksum(p);
}

/// The IP ID of a datagram.
pub fn id_of(p: &[u8]) -> Option<u16> {
    (p.len() >= 20).then(|| u16::from_be_bytes([p[4], p[5]]))
}

/// TCP header with the given data offset (in 32-bit words; options fill the space after 20).
pub fn tcp_header(
    sport: u16,
    dport: u16,
    flags: u8,
    options: &[u8],
    doff_override: Option<u8>,
) -> Vec<u8> {
    let mut opts = options.to_vec();
    while opts.len() % 4 != 0 {
        opts.push(0);
    }
    opts.truncate(40);
    let doff = doff_override.unwrap_or((5 + opts.len() / 4) as u8);
    let mut h = Vec::with_capacity(20 + opts.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&0x1000_0000u32.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes());
    h.push(doff << 4);
    h.push(flags);
    h.extend_from_slice(&512u16.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h.extend_from_slice(&opts);
    h
}

/// UDP header (length filled for `payload_len` bytes after it, checksum 0).
pub fn udp_header(sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(8);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h
}

/// ICMP header (type, code, checksum over header only, id/seq).
pub fn icmp_header(ty: u8, code: u8) -> Vec<u8> {
    let mut h = vec![ty, code, 0, 0, 0x12, 0x34, 0, 1];
    let c = checksum(&h);
    h[2..4].copy_from_slice(&c.to_be_bytes());
    h
}

/// A one-line human description of a datagram (for reports and fixtures).
pub fn describe(p: &[u8]) -> String {
    if p.len() < 20 {
        return format!("short({})", p.len());
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let proto = p[9];
    let frag = u16::from_be_bytes([p[6], p[7]]);
    let off = frag & 0x1fff;
    let mut s = format!("{src} > {dst} proto {proto} len {}", p.len());
    if frag & 0x2000 != 0 || off != 0 {
        s.push_str(&format!(
            " frag(off={off}{})",
            if frag & 0x2000 != 0 { ",MF" } else { "" }
        ));
    }
    if ihl > 20 {
        s.push_str(&format!(" ipopts={}", ihl - 20));
    }
    let t = p.get(ihl..).unwrap_or(&[]);
    if off == 0 {
        match proto {
            6 if t.len() >= 14 => {
                s.push_str(&format!(
                    " tcp {}>{} flags=0x{:02x} doff={}",
                    u16::from_be_bytes([t[0], t[1]]),
                    u16::from_be_bytes([t[2], t[3]]),
                    t[13],
                    t[12] >> 4
                ));
                if t.len() < 20 {
                    s.push_str(&format!(" truncated({})", t.len()));
                }
            }
            17 if t.len() >= 4 => {
                s.push_str(&format!(
                    " udp {}>{}",
                    u16::from_be_bytes([t[0], t[1]]),
                    u16::from_be_bytes([t[2], t[3]])
                ));
                if t.len() < 8 {
                    s.push_str(&format!(" truncated({})", t.len()));
                }
            }
            1 if t.len() >= 2 => s.push_str(&format!(" icmp type {} code {}", t[0], t[1])),
            _ => s.push_str(&format!(" l4len {}", t.len())),
        }
    }
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    if s.len() % 2 != 0 {
        bail!("odd hex length");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).with_context(|| format!("bad hex at {i}")))
        .collect()
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}{}{}  # {}",
            self.path.as_str(),
            self.iface,
            if self.bcast { "bcast " } else { "" },
            if self.socket { "socket " } else { "" },
            hex(&self.bytes),
            describe(&self.bytes)
        )
    }
}

/// Lowercase hex of bytes (fixtures, reports).
pub fn to_hex(b: &[u8]) -> String {
    hex(b)
}

/// Parses a packet list (`PATH IFACE [bcast|socket] HEX [# comment]` per line; blank and `#`
/// lines skipped).
pub fn parse_packets(text: &str) -> Result<Vec<Packet>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let bcast = f.len() == 4 && f[2] == "bcast";
        let socket = f.len() == 4 && f[2] == "socket";
        if f.len() != 3 && !bcast && !socket {
            bail!("line {}: want PATH IFACE [bcast|socket] HEX", n + 1);
        }
        out.push(Packet {
            path: f[0].parse().with_context(|| format!("line {}", n + 1))?,
            iface: f[1].to_string(),
            bytes: unhex(f[f.len() - 1]).with_context(|| format!("line {}", n + 1))?,
            bcast,
            socket,
        });
    }
    Ok(out)
}

/// Formats a packet list so that `parse_packets` reads it back.
pub fn format_packets(pkts: &[Packet]) -> String {
    pkts.iter().map(|p| format!("{p}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> IpSpec {
        IpSpec {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            proto: 6,
            ttl: 64,
            frag: 0,
            tos: 0,
            options: vec![1, 1, 1],
        }
    }

    #[test]
    fn header_checksum_verifies() {
        let p = build_ipv4(&spec(), &tcp_header(1, 2, 0x02, &[], None));
        assert_eq!(p[0], 0x46);
        assert_eq!(checksum(&p[..24]), 0);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
        let mut q = p.clone();
        set_id(&mut q, 77);
        assert_eq!(id_of(&q), Some(77));
        assert_eq!(checksum(&q[..24]), 0);
    }

    #[test]
    fn transport_checksums_verify() {
        let mut tcp = build_ipv4(
            &IpSpec {
                options: vec![],
                ..spec()
            },
            &tcp_segment(1000, 80, 7, 9, 0x18, 512, &[2, 4, 5, 0xb4], b"hello"),
        );
        fix_l4_checksum(&mut tcp);
        let ihl = 20;
        // A correct checksum sums (with the pseudo-header) to zero.
        let mut ph = tcp[12..20].to_vec();
        ph.extend_from_slice(&[0, 6]);
        ph.extend_from_slice(&((tcp.len() - ihl) as u16).to_be_bytes());
        assert_eq!(!fold(ones_sum(&tcp[ihl..], ones_sum(&ph, 0))), 0);
        let (at, full, _) = l4_checksum(&tcp).expect("tcp");
        assert_eq!(at, 36);
        assert_eq!(u16::from_be_bytes([tcp[at], tcp[at + 1]]), full);
        let icmp = icmp_message(3, 3, [0; 4], &tcp[..28]);
        assert_eq!(checksum(&icmp), 0);
        let mut udp = build_ipv4(
            &IpSpec {
                proto: 17,
                options: vec![],
                ..spec()
            },
            &udp_header(53, 53, 0),
        );
        fix_l4_checksum(&mut udp);
        assert_ne!(u16::from_be_bytes([udp[26], udp[27]]), 0);
    }

    #[test]
    fn packet_text_round_trips() {
        let pkts = vec![
            Packet::new(
                Path::Forward,
                "eth0",
                build_ipv4(
                    &IpSpec {
                        proto: 17,
                        ..spec()
                    },
                    &udp_header(5, 6, 0),
                ),
            ),
            Packet {
                bcast: true,
                ..Packet::new(Path::Input, "tun0", build_ipv4(&spec(), &icmp_header(8, 0)))
            },
            Packet {
                socket: true,
                ..Packet::new(
                    Path::Output,
                    "eth1",
                    build_ipv4(&spec(), &udp_header(7, 8, 0)),
                )
            },
        ];
        let text = format_packets(&pkts);
        assert!(text.contains("udp 5>6"));
        assert!(text.contains("input tun0 bcast 4"), "{text}");
        assert!(text.contains("output eth1 socket 4"), "{text}");
        assert_eq!(parse_packets(&text).expect("parse"), pkts);
        assert!(parse_packets("input eth0 4").is_err());
    }
}
