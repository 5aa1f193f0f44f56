//! Property tests for ip6tables tables: generated valid IPv6 tables round-trip exactly through
//! the SET_REPLACE and GET_ENTRIES encodings, and no mutated IPv6 input (generated or
//! captured from the kernel) makes a parser panic, whichever family it is parsed as.

use std::net::Ipv6Addr;
use std::path::Path;

use ipt_abi::abi::*;
use ipt_abi::build::{Rule, RuleTarget, TableBuilder};
use ipt_abi::{parse_add_counters, parse_replace, Family, Ip6Match, IpPart, Match, Verdict};
use proptest::prelude::*;

fn ip6_part(proto: u16, inv: u8) -> impl Strategy<Value = Ip6Match> {
    (
        any::<[u128; 4]>(),
        any::<[[u8; 16]; 4]>(),
        any::<(u8, bool, [u8; 3])>(),
    )
        .prop_map(move |(a, ifs, (tos, f_tos, pad))| Ip6Match {
            src: Ipv6Addr::from(a[0]),
            dst: Ipv6Addr::from(a[1]),
            smsk: Ipv6Addr::from(a[2]),
            dmsk: Ipv6Addr::from(a[3]),
            iniface: ifs[0],
            outiface: ifs[1],
            iniface_mask: ifs[2],
            outiface_mask: ifs[3],
            proto,
            tos,
            flags: (if proto != 0 { IP6T_F_PROTO } else { 0 }) | if f_tos { IP6T_F_TOS } else { 0 },
            invflags: inv,
            pad,
        })
}

/// Matches valid in any hook of the filter table for an entry of protocol `proto`.
fn a_match6(proto: u16) -> BoxedStrategy<Match> {
    let hl = any::<[u8; 2]>().prop_map(|m| {
        Match::Hl(Ip6tHlInfo {
            mode: m[0],
            hop_limit: m[1],
        })
    });
    let frag = (any::<[u32; 3]>(), any::<u8>(), 0u8..4, any::<[u8; 2]>()).prop_map(
        |(n, flags, invflags, pad)| {
            Match::Frag(Ip6tFrag {
                ids: [n[0], n[1]],
                hdrlen: n[2],
                flags,
                invflags,
                pad,
            })
        },
    );
    let v6h = (any::<u8>(), any::<bool>(), any::<u8>()).prop_map(|(matchflags, inv, modeflag)| {
        Match::Ipv6Header(Ip6tIpv6headerInfo {
            matchflags,
            invflags: if inv { 0xff } else { 0 },
            modeflag,
        })
    });
    let opts = (
        any::<u32>(),
        0u8..4,
        0u8..2,
        any::<[u16; 16]>(),
        0u8..=16,
        any::<(u8, bool)>(),
    )
        .prop_map(|(hdrlen, flags, invflags, opts, optsnr, (pad, dst))| {
            let o = Ip6tOpts {
                hdrlen,
                flags: flags & !IP6T_OPTS_NSTRICT,
                invflags,
                opts,
                optsnr,
                pad,
            };
            if dst {
                Match::Dst(o)
            } else {
                Match::Hbh(o)
            }
        });
    let rt = (
        any::<[u32; 4]>(),
        0u8..8,
        0u8..8,
        any::<[u8; 16]>(),
        0u8..=16,
    )
        .prop_map(|(n, flags, invflags, a, addrnr)| {
            let mut r = Ip6tRt {
                rt_type: n[0],
                segsleft: [n[1], n[2]],
                hdrlen: n[3],
                flags,
                invflags,
                addrnr,
                ..Ip6tRt::default()
            };
            r.addrs[0] = a;
            if r.flags & (IP6T_RT_RES | IP6T_RT_FST_MASK) != 0 {
                // rt_mt6_check: the type 0 options need --rt-type 0, not inverted
                r.flags |= IP6T_RT_TYP;
                r.rt_type = 0;
                r.invflags &= !IP6T_RT_INV_TYP;
            }
            Match::Rt(Box::new(r))
        });
    let comment = "[ -~]{0,40}".prop_map(|t| {
        let mut c = XtCommentInfo {
            comment: [0; XT_MAX_COMMENT_LEN],
        };
        c.comment[..t.len()].copy_from_slice(t.as_bytes());
        Match::Comment(Box::new(c))
    });
    let mut s: Vec<BoxedStrategy<Match>> = vec![
        hl.boxed(),
        frag.boxed(),
        v6h.boxed(),
        opts.boxed(),
        rt.boxed(),
        comment.boxed(),
    ];
    match proto {
        58 => s.push(
            (any::<[u8; 3]>(), 0u8..2)
                .prop_map(|(t, inv)| {
                    Match::Icmp6(Ip6tIcmp {
                        icmp_type: t[0],
                        code: [t[1], t[2]],
                        invflags: inv,
                    })
                })
                .boxed(),
        ),
        6 => s.push(
            (any::<[u16; 4]>(), 0u8..16)
                .prop_map(|(p, inv)| {
                    Match::Tcp(XtTcp {
                        spts: [p[0], p[1]],
                        dpts: [p[2], p[3]],
                        invflags: inv,
                        ..XtTcp::default()
                    })
                })
                .boxed(),
        ),
        _ => {}
    }
    proptest::strategy::Union::new(s).boxed()
}

/// A rule of chain `chain` (0..3 built-in, then u0, u1, ...): jumps go only to later user
/// chains, so generated tables never loop.
fn a_rule6(chain: usize, users: usize) -> impl Strategy<Value = Rule> {
    let first_user = if chain < 3 { 0 } else { chain - 3 + 1 };
    (
        prop_oneof![Just(0u16), Just(6u16), Just(17u16), Just(58u16)],
        0u8..0x80,
        any::<u32>(),
    )
        .prop_flat_map(move |(proto, inv, nfcache)| {
            // ! -p with a protocol-bound match is refused by xt_check_match
            let inv = if matches!(proto, 6 | 58) {
                inv & !IP6T_INV_PROTO
            } else {
                inv
            };
            (
                ip6_part(proto, inv),
                proptest::collection::vec(a_match6(proto), 0..3),
                (
                    0u8..7,
                    first_user..users.max(first_user + 1),
                    0u32..9,
                    0u8..8,
                ),
            )
                .prop_map(move |(ip, matches, (t, j, with, level))| {
                    let target = match t {
                        3 if j < users => RuleTarget::Jump(format!("u{j}")),
                        4 if j < users => RuleTarget::Goto(format!("u{j}")),
                        // reject_tg6_check: no echo-reply, tcp-reset only on -p tcp
                        5 => RuleTarget::Reject(match with {
                            IP6T_ICMP6_ECHOREPLY => IP6T_ICMP6_PORT_UNREACH,
                            IP6T_TCP_RESET if proto != 6 || ip.invflags & IP6T_INV_PROTO != 0 => {
                                IP6T_ICMP6_ADM_PROHIBITED
                            }
                            w => w,
                        }),
                        6 => RuleTarget::Log {
                            level,
                            flags: 0,
                            prefix: format!("r{j}"),
                        },
                        0 | 3 => RuleTarget::Accept,
                        1 | 4 => RuleTarget::Drop,
                        _ => RuleTarget::Return,
                    };
                    Rule {
                        ip: IpPart::V6(ip),
                        nfcache,
                        matches,
                        target,
                    }
                })
        })
}

fn a_builder6() -> impl Strategy<Value = TableBuilder> {
    (0usize..3).prop_flat_map(|users| {
        let chains: Vec<_> = (0..3 + users)
            .map(|c| proptest::collection::vec(a_rule6(c, users), 0..4))
            .collect();
        (chains, any::<[bool; 3]>()).prop_map(move |(rules, drop)| {
            let mut b = TableBuilder::filter6();
            for u in 0..users {
                b.user_chain(&format!("u{u}"));
            }
            for (i, name) in ["INPUT", "FORWARD", "OUTPUT"].iter().enumerate() {
                b.policy(
                    name,
                    if drop[i] {
                        Verdict::Drop
                    } else {
                        Verdict::Accept
                    },
                );
            }
            for (c, rs) in rules.into_iter().enumerate() {
                let name = match c {
                    0 => "INPUT".to_string(),
                    1 => "FORWARD".to_string(),
                    2 => "OUTPUT".to_string(),
                    u => format!("u{}", u - 3),
                };
                for r in rs {
                    b.rule(&name, r);
                }
            }
            b
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replace6_round_trip(b in a_builder6(), n in 1u32..1000, ptr in any::<u64>()) {
        let table = b.build().expect("generated IPv6 tables are valid");
        prop_assert_eq!(table.family, Family::Ipv6);
        let blob = table.replace_blob(n, ptr);
        let r = parse_replace(Family::Ipv6, &blob, Some(n)).expect("serialized table parses");
        prop_assert_eq!(&r.table, &table);
        prop_assert_eq!(r.table.replace_blob(n, ptr), blob);
        // GET_ENTRIES' body is itself a valid entries blob
        let counters: Vec<_> = (0..table.entries.len() as u64)
            .map(|i| ipt_abi::XtCounters { pcnt: i, bcnt: n.into() })
            .collect();
        let got = table.get_entries(&counters);
        let mut framed = table.replace_blob(1, 0);
        framed.truncate(96);
        framed.extend_from_slice(&got[40..]);
        let again = parse_replace(Family::Ipv6, &framed, None).expect("GET_ENTRIES re-parses").table;
        prop_assert_eq!(&again, &table);
        for (i, e) in table.entries.iter().enumerate() {
            let off = 40 + e.offset as usize + 152;
            prop_assert_eq!(&got[off..off + 8], &counters[i].pcnt.to_ne_bytes());
        }
    }

    #[test]
    fn mutated_ipv6_blobs_never_panic(b in a_builder6(), edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let table = b.build().expect("valid");
        let mut blob = table.replace_blob(4, 0);
        let len = blob.len();
        for (at, v) in edits {
            blob[at % len] = v;
        }
        let _ = parse_replace(Family::Ipv4, &blob, None);
        if let Ok(r) = parse_replace(Family::Ipv6, &blob, None) {
            let again = parse_replace(Family::Ipv6, &r.table.replace_blob(r.num_counters, 0), None).expect("re-parse");
            prop_assert_eq!(again.table, r.table);
        }
    }

    #[test]
    fn mutated_ipv6_captures_never_panic(which in 0usize..4, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..16), cut in any::<usize>()) {
        let name = ["ipv6_ext", "ufw6", "log_reject", "chains"][which];
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/captured6").join(name).join("replace.bin");
        let mut blob = std::fs::read(&p).expect("captured6 fixture");
        let len = blob.len();
        for (at, v) in edits {
            blob[at % len] = v;
        }
        for b in [&blob[..], &blob[..cut % (len + 1)]] {
            let _ = parse_replace(Family::Ipv4, b, Some(4));
            let _ = parse_add_counters(Family::Ipv6, b);
            if let Ok(r) = parse_replace(Family::Ipv6, b, None) {
                let counters = vec![ipt_abi::XtCounters::default(); r.table.entries.len()];
                prop_assert_eq!(r.table.get_entries(&counters).len(), 40 + r.table.size() as usize);
                // the kernel shows what it keeps (a limit's given cost and cap are not shown),
                // so what GET_ENTRIES shows must come back the same
                let again = parse_replace(Family::Ipv6, &r.table.replace_blob(r.num_counters, 0), None).expect("re-parse");
                prop_assert_eq!(again.table.get_entries(&counters), r.table.get_entries(&counters));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic6(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_replace(Family::Ipv6, &bytes, None);
        let _ = parse_replace(Family::Ipv6, &bytes, Some(4));
        let _ = parse_add_counters(Family::Ipv6, &bytes);
    }
}
