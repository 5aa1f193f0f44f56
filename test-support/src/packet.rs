//! IPv4 headers and Internet checksums (RFC 1071), for the packets tests craft.

/// Ones' complement sum of 16-bit big-endian words added to `sum` (an odd last byte padded
/// with zero), not folded.
pub fn ones_sum(data: &[u8], mut sum: u64) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in words.by_ref() {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// A sum folded to 16 bits (not complemented).
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `data`: the complement of its folded ones' complement sum.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(ones_sum(data, 0))
}

/// The sum of a TCP or UDP pseudo-header (addresses, protocol, transport length).
pub fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u64 {
    ones_sum(dst, ones_sum(src, 0)) + u64::from(proto) + len as u64
}

/// Writes the IP header checksum of datagram `p` (header length from its IHL).
pub fn set_ip_checksum(p: &mut [u8]) {
    let hlen = usize::from(p[0] & 0xf) * 4;
    p[10..12].fill(0);
    let c = checksum(&p[..hlen]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Writes the transport checksum of datagram `p` at offset `at` of its transport header
/// (TCP 16, UDP 6), over the pseudo-header and the whole rest of the datagram.
pub fn set_l4_checksum(p: &mut [u8], at: usize) {
    let hlen = usize::from(p[0] & 0xf) * 4;
    p[hlen + at..hlen + at + 2].fill(0);
    let s = pseudo_sum(&p[12..16], &p[16..20], p[9], p.len() - hlen);
    let c = !fold(ones_sum(&p[hlen..], s));
    p[hlen + at..hlen + at + 2].copy_from_slice(&c.to_be_bytes());
}

/// The fields of an IPv4 header to build; [`Ipv4::new`] and struct update for the rest.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4<'a> {
    /// Protocol number.
    pub proto: u8,
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// TOS byte.
    pub tos: u8,
    /// Identification.
    pub id: u16,
    /// Flags and fragment offset word (DF 0x4000, MF 0x2000, offset in 8-byte units).
    pub frag: u16,
    /// Time to live.
    pub ttl: u8,
    /// Option bytes (a multiple of 4).
    pub opts: &'a [u8],
}

impl Ipv4<'_> {
    /// `proto` from `src` to `dst`: TTL 64, everything else zero, no options.
    pub fn new(proto: u8, src: [u8; 4], dst: [u8; 4]) -> Ipv4<'static> {
        Ipv4 {
            proto,
            src,
            dst,
            tos: 0,
            id: 0,
            frag: 0,
            ttl: 64,
            opts: &[],
        }
    }

    /// The datagram: this header (IHL and total length from the options and `l4`, checksum
    /// zero: [`set_ip_checksum`] fills it in) followed by `l4`.
    pub fn build(&self, l4: &[u8]) -> Vec<u8> {
        assert_eq!(self.opts.len() % 4, 0, "IP options are 32-bit words");
        let hlen = 20 + self.opts.len();
        let mut p = Vec::with_capacity(hlen + l4.len());
        p.extend_from_slice(&[0x40 | (hlen / 4) as u8, self.tos]);
        p.extend_from_slice(&((hlen + l4.len()) as u16).to_be_bytes());
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&self.frag.to_be_bytes());
        p.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
        p.extend_from_slice(&self.src);
        p.extend_from_slice(&self.dst);
        p.extend_from_slice(self.opts);
        p.extend_from_slice(l4);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_length_sum() {
        // RFC 1071's example words, then an odd byte padded with zero.
        assert_eq!(ones_sum(&[0x00, 0x01, 0xf2, 0x03], 0), 0xf204);
        assert_eq!(ones_sum(&[0x12], 0), 0x1200);
        assert_eq!(fold(0x1_fffe), 0xffff);
    }

    #[test]
    fn built_header_verifies() {
        let mut p = Ipv4 {
            id: 0x1234,
            frag: 0x4000,
            opts: &[0x94, 4, 0, 0],
            ..Ipv4::new(17, [10, 0, 0, 1], [10, 0, 0, 2])
        }
        .build(&[0, 1, 0, 2, 0, 9, 0, 0, 0x5a]);
        assert_eq!(p[0], 0x46);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 33);
        set_ip_checksum(&mut p);
        assert_eq!(checksum(&p[..24]), 0);
        set_l4_checksum(&mut p, 6);
        let s = pseudo_sum(&p[12..16], &p[16..20], 17, 9);
        assert_eq!(!fold(ones_sum(&p[24..], s)), 0);
    }
}
