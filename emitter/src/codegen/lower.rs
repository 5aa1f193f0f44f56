//! Lowering: a rule's IR matches become [`Test`]s, in the kernel's order.
//!
//! Pure tests (addresses, interfaces, protocol, fragment, iprange, and the port / flag / code
//! tests inside a transport match) may be reordered between two "hotdrop" points; a match that
//! can hotdrop (tcp, udp, icmp, multiport: its header-availability guard, [`Test::Guard`] /
//! [`Test::OptGuard`]; tcpmss and hashlimit whole) is a barrier, so a packet is dropped
//! exactly when the kernel would drop it. Between barriers the most selective test goes first
//! (full addresses, then masks, ranges, ports, interfaces, protocol).
//!
//! Also here, so that each test kind reads the packet the same way in every rule form: the
//! operand a one-value test compares ([`load_operand`]), the single-compare jump of split
//! leads and inline tests ([`single_jump`]), interface words and range compares.

use std::collections::BTreeMap;

use crate::builder::{Builder, Label};
use crate::insn::{alu32, alu64, mov64, AluOp, JmpOp, Reg, Src};
use crate::ir::{self, ChainId, Match, PortRange, Program};
use crate::EmitError;

use super::access::Features;
use super::record::{packed, rec};

/// One test of a rule after lowering; `Guard`s are the hotdrop barriers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Test {
    Addr {
        field: i16,
        addr: u32,
        mask: u32,
        invert: bool,
    },
    Iface {
        base: i16,
        name: [u8; 16],
        mask: [u8; 16],
        invert: bool,
    },
    Proto {
        proto: u8,
        invert: bool,
    },
    Frag {
        invert: bool,
    },
    Port {
        field: i16,
        range: PortRange,
        invert: bool,
    },
    Flags {
        mask: u8,
        cmp: u8,
        invert: bool,
    },
    /// ICMP type and code range; `v6`: ICMPv6, where type 0xFF is not "any"
    Icmp {
        icmp_type: u8,
        min: u8,
        max: u8,
        invert: bool,
        v6: bool,
    },
    Multiport(ir::MultiportMatch),
    Range {
        field: i16,
        lo: u32,
        hi: u32,
        invert: bool,
    },
    TcpOption {
        kind: u8,
        invert: bool,
    },
    /// Non-first fragment: no match; fewer than `need` bytes: hotdrop; `frag1_drops`: a
    /// fragment at offset 1 hotdrops (tcp).
    Guard {
        need: i32,
        frag1_drops: bool,
    },
    /// tcp options unreadable or data offset below 5: hotdrop.
    OptGuard,
    /// `-m conntrack`
    Conntrack(ir::CtMatch),
    /// `-m state`: the state mask
    State(u32),
    /// `-m pkttype`
    PktType {
        pkttype: u8,
        invert: bool,
    },
    /// `-m mac`
    Mac {
        src: [u8; 6],
        invert: u32,
    },
    /// `-m mark`
    Mark {
        mark: u32,
        mask: u32,
        invert: bool,
    },
    /// `-m limit`: takes a credit, so it runs exactly where the kernel's order puts it (a
    /// barrier: no test moves across it)
    Limit(ir::LimitMatch),
    /// `-m addrtype`
    Addrtype(ir::AddrtypeMatch),
    /// `-m owner`
    Owner(ir::OwnerMatch),
    /// `-m recent`: reads and writes its list, so a barrier like `limit`
    Recent(ir::RecentMatch),
    /// `-m hashlimit`: takes credit and may hotdrop, a barrier
    Hashlimit(ir::HashlimitMatch),
    /// `-m tcpmss`: the prologue's MSS scan; may hotdrop, a barrier
    TcpMss(ir::TcpMssMatch),
    /// IPv6 address under a mask: `((x ^ addr) & mask) != 0` fails; words as loaded from
    /// the record (one u32 per 8-byte slot from `field`, see `rec::SADDR6`)
    Addr6 {
        field: i16,
        addr: [u32; 4],
        mask: [u32; 4],
        invert: bool,
    },
    /// IPv6 address in an inclusive range (`iprange_mt6`): the address and the bounds as
    /// 128-bit big-endian numbers, bounds as four host-order words, most significant first
    Range6 {
        field: i16,
        lo: [u32; 4],
        hi: [u32; 4],
        invert: bool,
    },
    /// IPv6 `-m frag` on the prologue's fragment header: may hotdrop, a barrier
    Frag6(ir::FragMatch),
    /// IPv6 `-m rt` on the prologue's routing header: may hotdrop, a barrier
    Rt6(ir::RtMatch),
    /// IPv6 `-m hbh` / `-m dst` on the prologue's options header: may hotdrop, a barrier
    Opts6(ir::OptsMatch),
    /// IPv6 `-m ipv6header` on the prologue's mask: may hotdrop (past the walk's bound)
    Ipv6Header(ir::Ipv6HeaderMatch),
    /// IPv6: the prologue's `ipv6_find_hdr` walk failed: hotdrop (a barrier, where the
    /// rule's IP6T_F_PROTO test is in `ip6_packet_match`)
    WalkGuard,
}

impl Test {
    /// Lower is tested earlier within a run of pure tests.
    fn rank(&self) -> u32 {
        match self {
            Test::Addr { mask, .. } if *mask == u32::MAX => 0,
            Test::Addr6 { mask, .. } if *mask == [u32::MAX; 4] => 0,
            Test::Addr { .. } | Test::Addr6 { .. } => 1,
            Test::Range { .. } | Test::Range6 { .. } => 2,
            Test::Port { range, .. } if range.lo == range.hi => 3,
            Test::Iface { .. } => 4,
            Test::Multiport(_) => 5,
            Test::Port { .. } => 6,
            Test::Icmp { .. } => 6,
            Test::Flags { .. } => 7,
            Test::Proto { .. } => 8,
            Test::Frag { .. } => 9,
            Test::TcpOption { .. } => 10,
            Test::State(_) => 11,
            Test::Mark { .. } | Test::PktType { .. } => 11,
            Test::Mac { .. } => 12,
            Test::Conntrack(_) => 12,
            Test::Addrtype(_) | Test::Owner(_) => 13,
            Test::Guard { .. }
            | Test::OptGuard
            | Test::WalkGuard
            | Test::Frag6(_)
            | Test::Rt6(_)
            | Test::Opts6(_)
            | Test::Ipv6Header(_)
            | Test::Limit(_)
            | Test::Recent(_)
            | Test::Hashlimit(_)
            | Test::TcpMss(_) => u32::MAX,
        }
    }

    /// Is this a hotdrop barrier?
    pub(super) fn is_barrier(&self) -> bool {
        matches!(
            self,
            Test::Guard { .. }
                | Test::OptGuard
                | Test::WalkGuard
                | Test::Frag6(_)
                | Test::Rt6(_)
                | Test::Opts6(_)
                | Test::Ipv6Header(_)
                | Test::Limit(_)
                | Test::Recent(_)
                | Test::Hashlimit(_)
                | Test::TcpMss(_)
        )
    }

    /// Does the test change state the kernel keeps per rule or per list (a `limit` credit, a
    /// `recent` stamp, a `hashlimit` credit), so that running it once stands for nothing but
    /// itself?
    pub(super) fn is_stateful(&self) -> bool {
        matches!(self, Test::Limit(_) | Test::Recent(_) | Test::Hashlimit(_))
    }
}

/// The result of a test that does not depend on the packet, if so.
pub(super) fn constant(t: &Test) -> Option<bool> {
    match *t {
        Test::Addr {
            addr,
            mask: 0,
            invert,
            ..
        } => Some((addr != 0) == invert),
        Test::Iface { mask, invert, .. } if mask == [0; 16] => Some(!invert),
        Test::Addr6 { mask, invert, .. } if mask == [0; 4] => Some(!invert),
        Test::Icmp {
            icmp_type: 0xff,
            invert,
            v6: false,
            ..
        } => Some(!invert),
        Test::Icmp {
            min, max, invert, ..
        } if min > max => Some(invert),
        Test::Port { range, invert, .. } if range.lo > range.hi => Some(invert),
        Test::Port { range, invert, .. } if range.is_any() => Some(!invert),
        Test::Range { lo, hi, invert, .. } if lo > hi => Some(invert),
        Test::Range6 { lo, hi, invert, .. } if lo > hi => Some(invert),
        Test::Range6 { lo, hi, invert, .. } if lo == [0; 4] && hi == [u32::MAX; 4] => Some(!invert),
        // `owner_mt`: without a socket only all-inverted tests pass, with one `!
        // --socket-exists` fails
        Test::Owner(m) if m.tests ^ m.invert != 0 && m.tests & m.invert & ir::OWNER_SOCKET != 0 => {
            Some(false)
        }
        Test::Range {
            lo: 0,
            hi: u32::MAX,
            invert,
            ..
        } => Some(!invert),
        Test::Flags {
            mask: 0,
            cmp,
            invert,
        } => Some((cmp == 0) != invert),
        Test::Multiport(m) => {
            let items = m.items();
            if items.iter().all(|(lo, hi)| lo > hi) {
                Some(m.invert)
            } else if items.iter().any(|(lo, hi)| *lo == 0 && *hi == 0xffff) {
                Some(!m.invert)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The test a split rule checks inline: the first test (tests are sorted, most selective
/// first) when it is pure, not constant, and a single compare.
pub(super) fn lead_of(tests: &[Test]) -> Option<(usize, Test)> {
    let t = *tests.first()?;
    let single = match t {
        Test::Addr { mask, .. } => mask != 0,
        Test::Proto { .. } => true,
        Test::Port { range, .. } => range.lo == range.hi,
        _ => false,
    };
    (single && constant(&t).is_none()).then_some((0, t))
}

/// Can `rule_combined` compile these tests, and is it worth it (more than one exit)?
pub(super) fn combinable(tests: &[Test]) -> bool {
    let ok = tests.iter().all(|t| {
        matches!(
            t,
            Test::Addr { .. }
                | Test::Proto { .. }
                | Test::Frag { .. }
                | Test::Port { .. }
                | Test::Flags { .. }
                | Test::Icmp { .. }
                | Test::Iface { .. }
                | Test::Range { .. }
                | Test::Guard { .. }
                | Test::TcpMss(_)
                | Test::Addr6 { .. }
                | Test::WalkGuard
        )
    });
    let live = tests.iter().filter(|t| constant(t).is_none()).count();
    ok && live >= 2
}

fn addr_word(a: std::net::Ipv4Addr) -> u32 {
    // The record holds the address bytes as loaded from the packet (native load of network
    // order bytes); compare against the same representation.
    u32::from_ne_bytes(a.octets())
}

/// The port tests of a tcp or udp match: source, then destination.
fn push_ports(out: &mut Vec<Test>, sport: (PortRange, bool), dport: (PortRange, bool)) {
    for (field, (range, invert)) in [(rec::SPORT, sport), (rec::DPORT, dport)] {
        out.push(Test::Port {
            field,
            range,
            invert,
        });
    }
}

/// [`lower_family`] for an IPv4 program.
#[cfg(test)]
pub(super) fn lower(matches: &[Match]) -> Result<Vec<Test>, EmitError> {
    lower_family(matches, ir::Family::Ipv4)
}

/// The record words of an IPv6 address (as loaded: native order of the network bytes).
fn addr6_words(a: std::net::Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    std::array::from_fn(|k| {
        u32::from_ne_bytes([o[4 * k], o[4 * k + 1], o[4 * k + 2], o[4 * k + 3]])
    })
}

/// Refuse a match the family has no meaning for (never approximated), and, in IPv6, a
/// transport match that no IP6T_F_PROTO test before it in the rule gave a transport offset.
fn check_family(matches: &[Match], family: ir::Family) -> Result<(), EmitError> {
    let v6 = family == ir::Family::Ipv6;
    let mut walked = false;
    for m in matches {
        let what = match m {
            Match::Ipv4Src { .. } | Match::Ipv4Dst { .. } if v6 => {
                "IPv4 address in an IPv6 program"
            }
            Match::Protocol { .. } if v6 => {
                "IPv4 protocol test in an IPv6 program (use Ipv6Protocol)"
            }
            Match::Fragment { .. } if v6 => "-f (IPv4 fragment) in an IPv6 program",
            Match::Icmp(_) if v6 => "-m icmp in an IPv6 program (use Icmp6)",
            Match::IpRange(_) if v6 => "IPv4 iprange in an IPv6 program",
            Match::TcpMss(_) if v6 => "-m tcpmss in an IPv6 program",
            Match::Addrtype(_) if v6 => "-m addrtype in an IPv6 program",
            Match::Recent(_) if v6 => "-m recent in an IPv6 program",
            Match::Hashlimit(_) if v6 => "-m hashlimit in an IPv6 program",
            Match::Tcp(_) | Match::Udp(_) | Match::Multiport(_) | Match::Icmp6(_)
                if v6 && !walked =>
            {
                "transport match without the rule's IPv6 protocol test before it"
            }
            Match::Ipv6Src { .. }
            | Match::Ipv6Dst { .. }
            | Match::Ipv6Protocol { .. }
            | Match::Icmp6(_)
            | Match::HopLimit { .. }
            | Match::IpRange6(_)
            | Match::Frag(_)
            | Match::Rt(_)
            | Match::Opts(_)
            | Match::Ipv6Header(_)
                if !v6 =>
            {
                "IPv6 match in an IPv4 program"
            }
            Match::Ipv6Protocol { .. } => {
                walked = true;
                continue;
            }
            _ => continue,
        };
        return Err(EmitError::Unsupported { what });
    }
    Ok(())
}

/// Lower a rule's matches into tests, in the kernel's order, then sort each run of pure tests
/// between barriers by selectivity.
pub(super) fn lower_family(matches: &[Match], family: ir::Family) -> Result<Vec<Test>, EmitError> {
    check_family(matches, family)?;
    // A match lowers to one to three tests, mostly (a transport match: its guard and ports):
    // room for them at once, not grown test by test through reallocations.
    let mut out: Vec<Test> = Vec::with_capacity(2 * matches.len() + 1);
    // the transport guard of a match whose fragment at offset 1 is no reason to hotdrop
    let guard = |need| Test::Guard {
        need,
        frag1_drops: false,
    };
    for m in matches {
        match *m {
            Match::Ipv4Src { addr, mask, invert } => out.push(Test::Addr {
                field: rec::SADDR,
                addr: addr_word(addr),
                mask: addr_word(mask),
                invert,
            }),
            Match::Ipv4Dst { addr, mask, invert } => out.push(Test::Addr {
                field: rec::DADDR,
                addr: addr_word(addr),
                mask: addr_word(mask),
                invert,
            }),
            Match::InIface(i) => out.push(Test::Iface {
                base: rec::IN_NAME,
                name: i.name,
                mask: i.mask,
                invert: i.invert,
            }),
            Match::OutIface(i) => out.push(Test::Iface {
                base: rec::OUT_NAME,
                name: i.name,
                mask: i.mask,
                invert: i.invert,
            }),
            Match::Protocol { proto, invert } => {
                if proto != 0 {
                    out.push(Test::Proto { proto, invert })
                }
            }
            Match::Fragment { invert } => out.push(Test::Frag { invert }),
            Match::Tcp(t) => {
                out.push(Test::Guard {
                    need: 20,
                    frag1_drops: true,
                });
                push_ports(&mut out, (t.sport, t.inv_sport), (t.dport, t.inv_dport));
                out.push(Test::Flags {
                    mask: t.flags_mask,
                    cmp: t.flags_cmp,
                    invert: t.inv_flags,
                });
                if t.option != 0 {
                    out.push(Test::OptGuard);
                    out.push(Test::TcpOption {
                        kind: t.option,
                        invert: t.inv_option,
                    });
                }
            }
            Match::Udp(u) => {
                out.push(guard(8));
                push_ports(&mut out, (u.sport, u.inv_sport), (u.dport, u.inv_dport));
            }
            Match::Icmp(i) => {
                out.push(guard(8));
                out.push(Test::Icmp {
                    icmp_type: i.icmp_type,
                    min: i.code_min,
                    max: i.code_max,
                    invert: i.invert,
                    v6: false,
                });
            }
            Match::Multiport(mp) => {
                out.push(guard(4));
                out.push(Test::Multiport(mp));
            }
            Match::IpRange(r) => {
                let ends = [
                    (rec::SADDR, r.src, r.inv_src),
                    (rec::DADDR, r.dst, r.inv_dst),
                ];
                for (field, range, invert) in ends {
                    if let Some((lo, hi)) = range {
                        out.push(Test::Range {
                            field,
                            lo: u32::from(lo),
                            hi: u32::from(hi),
                            invert,
                        });
                    }
                }
            }
            Match::Conntrack(c) => out.push(Test::Conntrack(c)),
            Match::State(mask) => out.push(Test::State(mask)),
            Match::Mark { mark, mask, invert } => out.push(Test::Mark { mark, mask, invert }),
            Match::PktType { pkttype, invert } => out.push(Test::PktType { pkttype, invert }),
            Match::Mac { src, invert } => out.push(Test::Mac { src, invert }),
            Match::Limit(l) => out.push(Test::Limit(l)),
            Match::Addrtype(a) => out.push(Test::Addrtype(a)),
            Match::Owner(o) => out.push(Test::Owner(o)),
            Match::Recent(r) => out.push(Test::Recent(r)),
            Match::Hashlimit(h) => out.push(Test::Hashlimit(h)),
            Match::TcpMss(m) => out.push(Test::TcpMss(m)),
            Match::Ipv6Src { addr, mask, invert } | Match::Ipv6Dst { addr, mask, invert } => {
                let field = if matches!(m, Match::Ipv6Src { .. }) {
                    rec::SADDR6
                } else {
                    rec::DADDR6
                };
                let mask = addr6_words(mask);
                let addr = addr6_words(addr);
                out.push(Test::Addr6 {
                    field,
                    addr: std::array::from_fn(|k| addr[k] & mask[k]),
                    mask,
                    invert,
                });
            }
            Match::Ipv6Protocol { proto, invert } => {
                out.push(Test::WalkGuard);
                // 0 (`-p all`) matches whatever was found; a successful walk never finds 0
                if proto != 0 {
                    out.push(Test::Proto { proto, invert });
                }
            }
            Match::Icmp6(i) => {
                out.push(guard(8));
                out.push(Test::Icmp {
                    icmp_type: i.icmp_type,
                    min: i.code_min,
                    max: i.code_max,
                    invert: i.invert,
                    v6: true,
                });
            }
            Match::Frag(f) => out.push(Test::Frag6(f)),
            Match::Rt(r) => out.push(Test::Rt6(r)),
            Match::Opts(o) => out.push(Test::Opts6(o)),
            Match::Ipv6Header(h) => out.push(Test::Ipv6Header(h)),
            Match::IpRange6(r) => {
                let words = |a: std::net::Ipv6Addr| {
                    let n = u128::from(a);
                    std::array::from_fn(|k| (n >> (96 - 32 * k)) as u32)
                };
                let ends = [
                    (rec::SADDR6, r.src, r.inv_src),
                    (rec::DADDR6, r.dst, r.inv_dst),
                ];
                for (field, range, invert) in ends {
                    if let Some((lo, hi)) = range {
                        out.push(Test::Range6 {
                            field,
                            lo: words(lo),
                            hi: words(hi),
                            invert,
                        });
                    }
                }
            }
            Match::HopLimit { mode, value } => {
                let (lo, hi, invert) = match mode {
                    ir::hl::EQ => (value, value, false),
                    ir::hl::NE => (value, value, true),
                    ir::hl::LT if value > 0 => (0, value - 1, false),
                    ir::hl::GT if value < 0xff => (value + 1, 0xff, false),
                    // LT 0, GT 255 and unknown modes never match
                    _ => (1, 0, false),
                };
                out.push(Test::Range {
                    field: rec::HLIM,
                    lo: u32::from(lo),
                    hi: u32::from(hi),
                    invert,
                });
            }
            #[allow(unreachable_patterns)]
            _ => return Err(EmitError::Unsupported { what: "match kind" }),
        }
    }
    // Stable sort inside each run between barriers.
    let mut start = 0;
    for i in 0..=out.len() {
        if i == out.len() || out[i].is_barrier() {
            out[start..i].sort_by_key(Test::rank);
            start = i + 1;
        }
    }
    Ok(out)
}

/// The lowered tests of every rule, per chain.
pub(super) type Lowered = BTreeMap<ChainId, Vec<Vec<Test>>>;

/// Every rule of the chains `ids`, lowered, and what the prologue must provide for them.
pub(super) fn lower_chains<'a>(
    p: &Program,
    ids: impl Iterator<Item = &'a ChainId>,
) -> Result<(Lowered, Features), EmitError> {
    let mut feat = Features::default();
    let mut lowered = BTreeMap::new();
    for id in ids {
        let chain = &p.chains[id];
        let mut rules = Vec::with_capacity(chain.rules.len());
        for r in &chain.rules {
            let t = lower_family(&r.matches, p.family)?;
            for x in &t {
                match x {
                    Test::Iface { base, .. } if *base == rec::IN_NAME => feat.in_iface = true,
                    Test::Iface { .. } => feat.out_iface = true,
                    Test::TcpOption { .. } => feat.tcp_option = true,
                    Test::TcpMss(_) => feat.tcpmss = true,
                    Test::Conntrack(_) | Test::State(_) => feat.conntrack = true,
                    Test::Frag6(_) => feat.frag6 = true,
                    Test::Rt6(_) => feat.rt6 = true,
                    Test::Opts6(o) if o.dst => feat.dst6 = true,
                    Test::Opts6(_) => feat.hbh6 = true,
                    Test::Ipv6Header(_) => feat.ipv6h = true,
                    Test::Mark { .. }
                    | Test::PktType { .. }
                    | Test::Mac { .. }
                    | Test::Owner(_)
                    | Test::Recent(_)
                    | Test::Hashlimit(_) => feat.ctx = true,
                    Test::Addrtype(a) if a.dev != ir::AddrtypeDev::Any => feat.ctx = true,
                    _ => {}
                }
            }
            if matches!(r.action, ir::Action::Reject(_) | ir::Action::Log(_)) {
                feat.ctx = true;
            }
            rules.push(t);
        }
        lowered.insert(*id, rules);
    }
    Ok((lowered, feat))
}

/// Fields packed in r9.
#[derive(Debug, Clone, Copy)]
pub(super) enum Field {
    Dport,
    Sport,
    Proto,
    Th,
}

impl Field {
    /// The packed port of a port test's record field.
    pub(super) fn port(field: i16) -> Field {
        if field == rec::SPORT {
            Field::Sport
        } else {
            Field::Dport
        }
    }
}

/// `dst` = a field of r9, through ALU operations (so `dst` is not linked to r9).
pub(super) fn extract(b: &mut Builder, dst: Reg, f: Field) {
    match f {
        Field::Dport => {
            b.emit(alu32(AluOp::Mov, dst, Src::Reg(Reg::R9)));
            b.emit(alu32(AluOp::And, dst, Src::Imm(0xffff)));
        }
        Field::Sport => {
            b.emit(alu32(AluOp::Mov, dst, Src::Reg(Reg::R9)));
            b.emit(alu32(AluOp::Rsh, dst, Src::Imm(packed::SPORT_SHIFT)));
        }
        Field::Proto => {
            b.emit(mov64(dst, Src::Reg(Reg::R9)));
            b.emit(alu64(AluOp::Rsh, dst, Src::Imm(packed::PROTO_SHIFT)));
            b.emit(alu64(AluOp::And, dst, Src::Imm(0xff)));
        }
        Field::Th => {
            b.emit(mov64(dst, Src::Reg(Reg::R9)));
            b.emit(alu64(AluOp::Rsh, dst, Src::Imm(packed::TH_SHIFT)));
            b.emit(alu64(AluOp::And, dst, Src::Imm(0xff)));
        }
    }
}

/// `w{dst}` = the address of record field `field`, copied from its hot register (`r7` saddr,
/// `r8` daddr) by an ALU op that unlinks the copy, so that no compare refines the hot register
/// (see "Register convention").
pub(super) fn copy_addr(b: &mut Builder, dst: Reg, field: i16) {
    let hot = if field == rec::SADDR {
        Reg::R7
    } else {
        Reg::R8
    };
    b.emit(alu32(AluOp::Mov, dst, Src::Reg(hot)));
}

/// `r1` = the packet value a one-value test compares (address, protocol, port, transport
/// status); every form reads these the same way.
pub(super) fn load_operand(b: &mut Builder, t: &Test) -> Result<(), EmitError> {
    match *t {
        Test::Addr { field, .. } => copy_addr(b, Reg::R1, field),
        Test::Proto { .. } => extract(b, Reg::R1, Field::Proto),
        Test::Port { field, .. } => extract(b, Reg::R1, Field::port(field)),
        Test::Frag { .. } => extract(b, Reg::R1, Field::Th),
        _ => {
            return Err(EmitError::Internal {
                what: "operand of a test that compares more than one value",
            })
        }
    }
    Ok(())
}

/// A single-compare test (`lead_of`'s kinds: an address under a non-zero mask, the protocol,
/// one port) as one conditional jump to `target`, taken when the test passes (`on_pass`) or
/// when it fails.
pub(super) fn single_jump(
    b: &mut Builder,
    t: &Test,
    on_pass: bool,
    target: Label,
) -> Result<(), EmitError> {
    let (invert, value) = match *t {
        Test::Addr {
            addr, mask, invert, ..
        } if mask != 0 => (invert, if mask == u32::MAX { 0 } else { addr }),
        Test::Proto { proto, invert } => (invert, u32::from(proto)),
        Test::Port { range, invert, .. } if range.lo == range.hi => (invert, u32::from(range.lo)),
        _ => {
            return Err(EmitError::Internal {
                what: "single-compare jump of another test kind",
            })
        }
    };
    load_operand(b, t)?;
    if let Test::Addr { addr, mask, .. } = *t {
        // a full mask compares `x ^ addr` with 0, other masks `x & mask` with addr
        if mask == u32::MAX {
            b.emit(alu32(AluOp::Xor, Reg::R1, Src::Imm(addr as i32)));
        } else {
            b.emit(alu32(AluOp::And, Reg::R1, Src::Imm(mask as i32)));
        }
    }
    let op = if on_pass != invert {
        JmpOp::Jeq
    } else {
        JmpOp::Jne
    };
    b.jmp32(op, Reg::R1, Src::Imm(value as i32), target);
    Ok(())
}

/// The 4-byte words of an interface test the mask does not ignore: (record offset, name &
/// mask, mask).
pub(super) fn iface_words(base: i16, name: &[u8; 16], mask: &[u8; 16]) -> Vec<(i16, u32, u32)> {
    let word = |b: &[u8; 16], k: usize| {
        u32::from_ne_bytes([b[4 * k], b[4 * k + 1], b[4 * k + 2], b[4 * k + 3]])
    };
    (0..4)
        .filter_map(|k| {
            let (n, m) = (word(name, k), word(mask, k));
            (m != 0).then_some((base + 8 * k as i16, n & m, m))
        })
        .collect()
}

/// `lo <= r <= hi` (unsigned 32-bit), inverted by `invert`; `max` is the field's largest value
/// (bounds equal to 0 or `max` need no compare). Falls through on pass.
pub(super) fn range_test(
    b: &mut Builder,
    r: Reg,
    lo: u32,
    hi: u32,
    max: u32,
    invert: bool,
    fail: Label,
) -> Result<(), EmitError> {
    if lo > hi {
        // empty range: never inside
        if !invert {
            b.ja(fail);
        }
        return Ok(());
    }
    if !invert {
        if lo > 0 {
            b.jmp32(JmpOp::Jlt, r, Src::Imm(lo as i32), fail);
        }
        if hi < max {
            b.jmp32(JmpOp::Jgt, r, Src::Imm(hi as i32), fail);
        }
    } else {
        match (lo > 0, hi < max) {
            (false, false) => b.ja(fail),
            (true, false) => b.jmp32(JmpOp::Jge, r, Src::Imm(lo as i32), fail),
            (false, true) => b.jmp32(JmpOp::Jle, r, Src::Imm(hi as i32), fail),
            (true, true) => {
                let pass = b.label();
                b.jmp32(JmpOp::Jlt, r, Src::Imm(lo as i32), pass);
                b.jmp32(JmpOp::Jle, r, Src::Imm(hi as i32), fail);
                b.bind(pass)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::*;
    use std::net::Ipv4Addr;

    #[test]
    fn guards_keep_their_place() {
        let tcp = Match::Tcp(TcpMatch {
            sport: PortRange::ANY,
            dport: PortRange::one(22),
            flags_mask: 0,
            flags_cmp: 0,
            option: 0,
            inv_sport: false,
            inv_dport: false,
            inv_flags: false,
            inv_option: false,
        });
        let src = Match::Ipv4Src {
            addr: Ipv4Addr::new(10, 0, 0, 1),
            mask: Ipv4Addr::BROADCAST,
            invert: false,
        };
        let range = Match::IpRange(IpRangeMatch {
            src: Some((Ipv4Addr::new(1, 0, 0, 0), Ipv4Addr::new(2, 0, 0, 0))),
            dst: None,
            inv_src: false,
            inv_dst: false,
        });
        // pure tests before the guard are sorted (address first), the range after it stays after
        let t = lower(&[
            Match::Protocol {
                proto: 6,
                invert: false,
            },
            src,
            tcp,
            range,
        ])
        .expect("lower");
        assert!(matches!(t[0], Test::Addr { .. }));
        assert!(matches!(t[1], Test::Proto { .. }));
        assert!(matches!(
            t[2],
            Test::Guard {
                need: 20,
                frag1_drops: true
            }
        ));
        let g = t
            .iter()
            .position(|x| matches!(x, Test::Guard { .. }))
            .expect("guard");
        let r = t
            .iter()
            .position(|x| matches!(x, Test::Range { .. }))
            .expect("range");
        assert!(r > g, "iprange after tcp must stay after the tcp guard");
    }
}
