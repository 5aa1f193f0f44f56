//! IPv4 packets as raw bytes, the way they are replayed through the firewall, and their text
//! form in regression fixtures (`PATH IFACE HEX`, one packet a line).

use anyhow::{bail, Context, Result};
use std::fmt;
use std::net::Ipv4Addr;

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
}

/// RFC 1071 checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
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
    let ihl = 20 + opts.len();
    let total = ihl + payload.len();
    let mut p = Vec::with_capacity(total);
    p.push(0x40 | (ihl / 4) as u8);
    p.push(spec.tos);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]); // id, set by the harness
    p.extend_from_slice(&spec.frag.to_be_bytes());
    p.push(spec.ttl);
    p.push(spec.proto);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&spec.src.octets());
    p.extend_from_slice(&spec.dst.octets());
    p.extend_from_slice(&opts);
    p.extend_from_slice(payload);
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
            "{} {} {}  # {}",
            self.path.as_str(),
            self.iface,
            hex(&self.bytes),
            describe(&self.bytes)
        )
    }
}

/// Parses a packet list (`PATH IFACE HEX [# comment]` per line; blank and `#` lines skipped).
pub fn parse_packets(text: &str) -> Result<Vec<Packet>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 {
            bail!("line {}: want PATH IFACE HEX", n + 1);
        }
        out.push(Packet {
            path: f[0].parse().with_context(|| format!("line {}", n + 1))?,
            iface: f[1].to_string(),
            bytes: unhex(f[2]).with_context(|| format!("line {}", n + 1))?,
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
    fn packet_text_round_trips() {
        let pkts = vec![
            Packet {
                path: Path::Forward,
                iface: "eth0".into(),
                bytes: build_ipv4(
                    &IpSpec {
                        proto: 17,
                        ..spec()
                    },
                    &udp_header(5, 6, 0),
                ),
            },
            Packet {
                path: Path::Output,
                iface: "tun0".into(),
                bytes: build_ipv4(&spec(), &icmp_header(8, 0)),
            },
        ];
        let text = format_packets(&pkts);
        assert!(text.contains("udp 5>6"));
        assert_eq!(parse_packets(&text).expect("parse"), pkts);
        assert!(parse_packets("input eth0 4").is_err());
    }
}
