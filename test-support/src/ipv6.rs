//! IPv6 packets for the tests: a fixed header, a chain of extension headers (RFC 8200) and a
//! transport header, with every next-header field chained. Option contents are PadN; a test
//! that wants a header cut short truncates the bytes ([`truncate`]).

/// Next-header values of the extension headers.
pub mod nh {
    /// hop-by-hop options
    pub const HOP: u8 = 0;
    /// TCP
    pub const TCP: u8 = 6;
    /// UDP
    pub const UDP: u8 = 17;
    /// routing
    pub const ROUTING: u8 = 43;
    /// fragment
    pub const FRAGMENT: u8 = 44;
    /// ESP (not an extension header to `ipv6_find_hdr`)
    pub const ESP: u8 = 50;
    /// authentication header
    pub const AUTH: u8 = 51;
    /// ICMPv6
    pub const ICMPV6: u8 = 58;
    /// no next header
    pub const NONE: u8 = 59;
    /// destination options
    pub const DEST: u8 = 60;
}

/// One extension header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ext {
    /// hop-by-hop options, `(hdrlen + 1) * 8` bytes
    HopByHop {
        /// the length field
        hdrlen: u8,
    },
    /// destination options, `(hdrlen + 1) * 8` bytes
    DstOpts {
        /// the length field
        hdrlen: u8,
    },
    /// routing header, `(hdrlen + 1) * 8` bytes
    Routing {
        /// the length field
        hdrlen: u8,
        /// routing type
        rtype: u8,
        /// segments left
        segleft: u8,
    },
    /// fragment header (8 bytes)
    Fragment {
        /// offset in 8-byte units (13 bits)
        offset: u16,
        /// the M flag
        more: bool,
        /// identification
        id: u32,
    },
    /// authentication header, `(hdrlen + 2) * 4` bytes
    Auth {
        /// the length field
        hdrlen: u8,
    },
}

impl Ext {
    /// Its next-header value.
    pub fn number(&self) -> u8 {
        match self {
            Ext::HopByHop { .. } => nh::HOP,
            Ext::DstOpts { .. } => nh::DEST,
            Ext::Routing { .. } => nh::ROUTING,
            Ext::Fragment { .. } => nh::FRAGMENT,
            Ext::Auth { .. } => nh::AUTH,
        }
    }

    /// Its bytes, with `next` as next header.
    pub fn bytes(&self, next: u8) -> Vec<u8> {
        match *self {
            Ext::HopByHop { hdrlen } | Ext::DstOpts { hdrlen } => {
                let len = (usize::from(hdrlen) + 1) * 8;
                let mut v = vec![0u8; len];
                v[0] = next;
                v[1] = hdrlen;
                // one PadN option over the rest
                v[2] = 1;
                v[3] = (len - 4) as u8;
                v
            }
            Ext::Routing {
                hdrlen,
                rtype,
                segleft,
            } => {
                let mut v = vec![0u8; (usize::from(hdrlen) + 1) * 8];
                v[0] = next;
                v[1] = hdrlen;
                v[2] = rtype;
                v[3] = segleft;
                v
            }
            Ext::Fragment { offset, more, id } => {
                let mut v = vec![next, 0];
                let w = (offset & 0x1fff) << 3 | u16::from(more);
                v.extend_from_slice(&w.to_be_bytes());
                v.extend_from_slice(&id.to_be_bytes());
                v
            }
            Ext::Auth { hdrlen } => {
                let mut v = vec![0u8; (usize::from(hdrlen) + 2) * 4];
                v[0] = next;
                v[1] = hdrlen;
                v
            }
        }
    }
}

/// An IPv6 packet: the header (`hop_limit`, addresses), `exts` in order, then `l4` as
/// protocol `proto`; the payload length is right.
pub fn packet(
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    exts: &[Ext],
    proto: u8,
    l4: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, e) in exts.iter().enumerate() {
        let next = exts.get(k + 1).map_or(proto, Ext::number);
        body.extend_from_slice(&e.bytes(next));
    }
    body.extend_from_slice(l4);
    let first = exts.first().map_or(proto, Ext::number);
    let mut v = vec![0x60, 0, 0, 0];
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.push(first);
    v.push(hop_limit);
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(&body);
    v
}

/// The first `len` bytes of `p` (a header cut short), the payload length left as it was.
pub fn truncate(mut p: Vec<u8>, len: usize) -> Vec<u8> {
    p.truncate(len);
    p
}

/// A UDP header (8 bytes, checksum 0).
pub fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&8u16.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v
}

/// A TCP header of 20 bytes plus `opts` (padded to a multiple of 4).
pub fn tcp(sport: u16, dport: u16, flags: u8, opts: &[u8]) -> Vec<u8> {
    let mut o = opts.to_vec();
    while o.len() % 4 != 0 {
        o.push(0);
    }
    let mut v = Vec::new();
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    v.push((((20 + o.len()) / 4) as u8) << 4);
    v.push(flags);
    v.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    v.extend_from_slice(&o);
    v
}

/// An ICMPv6 header (8 bytes).
pub fn icmp6(t: u8, code: u8) -> Vec<u8> {
    vec![t, code, 0, 0, 0, 0, 0, 0]
}

/// An address from its eight 16-bit groups.
pub fn addr(g: [u16; 8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    for (k, x) in g.iter().enumerate() {
        a[2 * k..2 * k + 2].copy_from_slice(&x.to_be_bytes());
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_next_headers_and_lengths() {
        let p = packet(
            [1; 16],
            [2; 16],
            64,
            &[
                Ext::HopByHop { hdrlen: 0 },
                Ext::Fragment {
                    offset: 0,
                    more: true,
                    id: 7,
                },
            ],
            nh::UDP,
            &udp(1, 2),
        );
        assert_eq!(p.len(), 40 + 8 + 8 + 8);
        assert_eq!(p[6], nh::HOP);
        assert_eq!(p[40], nh::FRAGMENT);
        assert_eq!(p[48], nh::UDP);
        assert_eq!(&p[50..52], &[0, 1]); // offset 0, M
        assert_eq!(u16::from_be_bytes([p[4], p[5]]), 24);
    }
}
