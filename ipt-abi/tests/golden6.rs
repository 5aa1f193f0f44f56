//! Golden tests for ip6tables: every ruleset captured from the real ip6tables-legacy and the
//! real kernel (fixtures/captured6/, see fixtures/README.md) must parse as IPv6, serializing
//! the parsed table must give back the kernel's GET_INFO and GET_ENTRIES answers byte for byte,
//! and `replace_blob` must parse back to the same table.
//!
//! Fails (never skips) when the fixtures are missing or empty: re-capture with
//! `fixtures/capture.sh --ipv6`.

use std::fs;
use std::path::{Path, PathBuf};

use ipt_abi::abi::*;
use ipt_abi::{parse_add_counters, parse_replace, Family, IpPart, Match, Table, Target, Verdict};

/// Fewer captured rulesets than this means the fixture tree is broken.
const MIN_RULESETS: usize = 10;
const EAGAIN: i32 = 11;
/// sizeof(struct ip6t_get_entries) header.
const GET_ENTRIES_HDR: usize = 40;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    let p = dir.join(file);
    let b = fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (run fixtures/capture.sh --ipv6)", p.display()));
    assert!(!b.is_empty(), "{} is empty", p.display());
    b
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn rulesets() -> Vec<PathBuf> {
    let root = fixtures().join("captured6");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e} (run fixtures/capture.sh --ipv6)", root.display()))
        .map(|d| d.expect("dir entry").path())
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "initial"))
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= MIN_RULESETS,
        "only {} captured IPv6 rulesets under {}",
        dirs.len(),
        root.display()
    );
    dirs
}

/// Names the field of an ip6t_entry at byte `off` of the entry.
fn entry_field(off: usize) -> &'static str {
    match off {
        0..=15 => "ipv6.src",
        16..=31 => "ipv6.dst",
        32..=47 => "ipv6.smsk",
        48..=63 => "ipv6.dmsk",
        64..=127 => "ipv6.ifaces",
        128..=129 => "ipv6.proto",
        130 => "ipv6.tos",
        131 => "ipv6.flags",
        132 => "ipv6.invflags",
        133..=135 => "ipv6 padding",
        136..=139 => "nfcache",
        140..=141 => "target_offset",
        142..=143 => "next_offset",
        144..=147 => "comefrom",
        148..=151 => "entry padding",
        152..=167 => "counters",
        _ => "match/target",
    }
}

fn locate_entries(kernel: &[u8], off: usize) -> String {
    if off < GET_ENTRIES_HDR {
        return format!("header byte {off}");
    }
    let (mut pos, mut idx) = (GET_ENTRIES_HDR, 0usize);
    while pos + IP6T_ENTRY_SIZE <= kernel.len() {
        let next = usize::from(u16::from_ne_bytes([kernel[pos + 142], kernel[pos + 143]]));
        if next == 0 {
            break;
        }
        if off < pos + next {
            let inner = off - pos;
            return format!(
                "entry {idx} (blob offset {}) + {inner}: {}",
                pos - GET_ENTRIES_HDR,
                entry_field(inner)
            );
        }
        pos += next;
        idx += 1;
    }
    "past the kernel's entries".to_string()
}

fn diff(ours: &[u8], kernel: &[u8], locate: &dyn Fn(usize) -> String) -> Option<String> {
    if ours == kernel {
        return None;
    }
    let first = ours.iter().zip(kernel).position(|(a, b)| a != b);
    Some(match first {
        Some(off) => format!(
            "first difference at byte {off} ({}): ours {:#04x}, kernel {:#04x}; lengths ours {} kernel {}",
            locate(off),
            ours[off],
            kernel[off],
            ours.len(),
            kernel.len()
        ),
        None => format!(
            "lengths differ: ours {} kernel {}",
            ours.len(),
            kernel.len()
        ),
    })
}

fn parse6(dir: &Path) -> Table {
    parse_replace(Family::Ipv6, &read(dir, "replace.bin"), None)
        .unwrap_or_else(|e| panic!("{}: {e} (errno {})", dir.display(), e.errno()))
        .table
}

fn check_ruleset(dir: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let replace = read(dir, "replace.bin");
    let add = read(dir, "add_counters.bin");
    let info = read(dir, "get_info.bin");
    let entries = read(dir, "get_entries.bin");
    assert_eq!(info.len(), 84, "{}: get_info.bin", dir.display());
    let num_counters = u32_at(&replace, 84);
    let r = match parse_replace(Family::Ipv6, &replace, Some(num_counters)) {
        Ok(r) => r,
        Err(e) => return vec![format!("parse_replace: {e} (errno {})", e.errno())],
    };
    if r.table.family != Family::Ipv6 || r.name != "filter" {
        bad.push(format!("family {:?} name {:?}", r.table.family, r.name));
    }
    if !r.table.entries.iter().all(|e| e.ip.as_v6().is_some()) {
        bad.push("an entry without an IPv6 ip part".into());
    }
    match parse_replace(Family::Ipv6, &replace, Some(num_counters + 1)) {
        Err(e) if e.errno() == EAGAIN => {}
        other => bad.push(format!("num_counters mismatch: {other:?}, kernel: EAGAIN")),
    }
    let counters = match parse_add_counters(Family::Ipv6, &add) {
        Ok(a) => {
            if let Err(e) = a.check_against(&r.table) {
                bad.push(format!("add_counters against the table: {e}"));
            }
            a.counters
        }
        Err(e) => return vec![format!("parse_add_counters: {e}")],
    };
    if let Some(d) = diff(&r.table.get_info(), &info, &|o| format!("getinfo byte {o}")) {
        bad.push(format!("get_info: {d}"));
    }
    if let Some(d) = diff(&r.table.get_entries(&counters), &entries, &|o| {
        locate_entries(&entries, o)
    }) {
        bad.push(format!("get_entries: {d}"));
    }
    // What GET_ENTRIES shows, sent back as a SET_REPLACE, is the same table.
    let again = r.table.replace_blob(num_counters, 0);
    match parse_replace(Family::Ipv6, &again, Some(num_counters)) {
        Ok(a) if a.table == r.table => {}
        Ok(_) => bad.push("replace_blob parses to another table".into()),
        Err(e) => bad.push(format!("replace_blob refused: {e}")),
    }
    // The kernel's own GET_ENTRIES bytes, framed as a SET_REPLACE, parse to the same table.
    let mut framed = replace[..IPT_REPLACE_SIZE].to_vec();
    framed.extend_from_slice(&entries[GET_ENTRIES_HDR..]);
    match parse_replace(Family::Ipv6, &framed, None) {
        Ok(a) if a.table == r.table => {}
        Ok(_) => bad.push("the kernel's entries parse to another table".into()),
        Err(e) => bad.push(format!("the kernel's entries refused: {e}")),
    }
    // An ip6tables blob is no iptables blob: the IPv4 parser must not take it.
    if parse_replace(Family::Ipv4, &replace, None).is_ok_and(|a| a.table.entries.len() > 4) {
        bad.push("parsed as IPv4 too".into());
    }
    bad
}

#[test]
fn golden6_rulesets_match_kernel() {
    let dirs = rulesets();
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for problem in check_ruleset(dir) {
            failures.push(format!("{name}: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems in {} captured IPv6 rulesets:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

#[test]
fn golden6_initial_table() {
    let dir = fixtures().join("captured6/initial");
    let t = Table::initial_for(Family::Ipv6, "filter").expect("filter");
    assert_eq!(t.get_info(), read(&dir, "get_info.bin"));
    assert_eq!(
        t.get_entries(&[Default::default(); 4]),
        read(&dir, "get_entries.bin")
    );
    assert_eq!(t.size(), 3 * 208 + 232);
    assert_ne!(
        t,
        Table::initial("filter").expect("filter"),
        "IPv4 and IPv6 initial tables differ"
    );
}

/// The typed view of the captures: every IPv6 extension is decoded as the variant it is.
#[test]
fn golden6_typed_contents() {
    let root = fixtures().join("captured6");
    let ext = parse6(&root.join("ipv6_ext"));
    let names: Vec<&str> = ext
        .entries
        .iter()
        .flat_map(|e| e.matches.iter().map(Match::name))
        .collect();
    for n in [
        "hl",
        "frag",
        "ipv6header",
        "hbh",
        "dst",
        "rt",
        "eui64",
        "mac",
    ] {
        assert!(names.contains(&n), "{n} missing from ipv6_ext: {names:?}");
    }
    // -p ipv6-icmp sets IP6T_F_PROTO with proto 58
    let first = ext.entries[0].ip.as_v6().expect("v6");
    assert_eq!((first.proto, first.flags), (58, IP6T_F_PROTO));
    let rt0 = ext
        .entries
        .iter()
        .flat_map(|e| &e.matches)
        .find_map(|m| match m {
            Match::Rt(r) if r.addrnr == 2 => Some(r),
            _ => None,
        })
        .expect("--rt-0-addrs rule");
    assert_eq!(
        std::net::Ipv6Addr::from(rt0.addrs[1]),
        "2001:db8::2".parse::<std::net::Ipv6Addr>().expect("addr")
    );
    let lr = parse6(&root.join("log_reject"));
    let withs: Vec<u32> = lr
        .entries
        .iter()
        .filter_map(|e| match e.target {
            Target::Reject6(r) => Some(r.with),
            _ => None,
        })
        .collect();
    for w in [
        IP6T_ICMP6_NO_ROUTE,
        IP6T_ICMP6_ADM_PROHIBITED,
        IP6T_ICMP6_ADDR_UNREACH,
        IP6T_ICMP6_PORT_UNREACH,
        IP6T_TCP_RESET,
        IP6T_ICMP6_POLICY_FAIL,
        IP6T_ICMP6_REJECT_ROUTE,
    ] {
        assert!(withs.contains(&w), "--reject-with {w} missing: {withs:?}");
    }
    let chains = parse6(&root.join("chains"));
    assert!(chains
        .entries
        .iter()
        .any(|e| e.ip.is_goto() && matches!(e.target, Target::Standard(Verdict::Jump { .. }))));
    let names: Vec<String> = chains.chains().into_iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        ["INPUT", "FORWARD", "OUTPUT", "LOGDROP", "ssh", "web", "zz-last"]
    );
    let addrs = parse6(&root.join("addresses"));
    let IpPart::V6(a) = addrs.entries[0].ip else {
        panic!("IPv6 part expected")
    };
    assert_eq!(
        a.src,
        "2001:db8::".parse::<std::net::Ipv6Addr>().expect("a")
    );
    assert_eq!(
        a.smsk,
        "ffff:ffff::".parse::<std::net::Ipv6Addr>().expect("m")
    );
    // --ctorigsrc 2001:db8::/32 as conntrack revision 3, read as IPv6
    let m = parse6(&root.join("matches"));
    let ct = m
        .entries
        .iter()
        .flat_map(|e| &e.matches)
        .find_map(|x| match x {
            Match::Conntrack(c) if c.info().match_flags & XT_CONNTRACK_ORIGSRC != 0 => Some(c),
            _ => None,
        })
        .expect("--ctorigsrc rule");
    assert_eq!(
        ct.addrs6()[0],
        (
            "2001:db8::".parse().expect("a"),
            "ffff:ffff::".parse().expect("m")
        )
    );
    let ifs = parse6(&root.join("interfaces"));
    assert_eq!(ifs.entries[1].ip.iniface_name(), "eth+");
}

/// Replays an ip6tables command sequence's whole conversation with the kernel (revision
/// queries at 68/69, GET_INFO, GET_ENTRIES, SET_REPLACE, SET_ADD_COUNTERS) against the model:
/// every answer must be the kernel's, byte for byte.
#[test]
fn golden6_transcript_replays() {
    let tdir = fixtures().join("captured6/cmd_sequence6/transcript");
    let log = fs::read_to_string(tdir.join("calls.tsv"))
        .unwrap_or_else(|e| panic!("{}: {e}", tdir.display()));
    let mut table = Table::initial_for(Family::Ipv6, "filter").expect("initial");
    let mut counters = vec![ipt_abi::XtCounters::default(); table.entries.len()];
    let (mut bad, mut calls, mut revisions) = (Vec::new(), 0, 0);
    for line in log.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 9, "bad calls.tsv line {line:?}");
        let (op, optname, prefix) = (f[2], f[3], f[8]);
        let errno: i32 = f[6].parse().expect("errno");
        let input = read(&tdir, &format!("{prefix}.in"));
        let output = || read(&tdir, &format!("{prefix}.out"));
        calls += 1;
        match (op, optname) {
            ("get", "64") => {
                assert_eq!(errno, 0, "{prefix}");
                let name = ipt_abi::parse_get_info_request(&input, 84).expect("request");
                assert_eq!(name, "filter");
                if let Some(d) = diff(&table.get_info(), &output(), &|o| format!("byte {o}")) {
                    bad.push(format!("{prefix} GET_INFO: {d}"));
                }
            }
            ("get", "65") => {
                let kernel = output();
                let (_, size) = ipt_abi::parse_get_entries_request(&input, input.len() as u32)
                    .expect("request");
                assert!(table.check_get_entries_size(size).is_ok(), "{prefix}");
                if let Some(d) = diff(&table.get_entries(&counters), &kernel, &|o| {
                    locate_entries(&kernel, o)
                }) {
                    bad.push(format!("{prefix} GET_ENTRIES: {d}"));
                }
            }
            ("get", "68" | "69") => {
                revisions += 1;
                let kind = if optname == "68" {
                    ipt_abi::ExtKind::Match
                } else {
                    ipt_abi::ExtKind::Target
                };
                let got = ipt_abi::parse_revision_request(&input)
                    .and_then(|(n, r)| ipt_abi::query_revision(Family::Ipv6, kind, &n, r))
                    .map_or_else(|e| e.errno(), |_| 0);
                if got != errno {
                    bad.push(format!("{prefix} revision query: {got}, kernel {errno}"));
                }
            }
            ("set", "64") => match parse_replace(Family::Ipv6, &input, Some(table.num_entries())) {
                Ok(r) if errno == 0 => {
                    table = r.table;
                    counters = vec![Default::default(); table.entries.len()];
                }
                other => bad.push(format!(
                    "{prefix} SET_REPLACE: {:?}, kernel {errno}",
                    other.map(|_| ())
                )),
            },
            ("set", "65") => match parse_add_counters(Family::Ipv6, &input) {
                Ok(a) if errno == 0 && a.check_against(&table).is_ok() => {
                    for (c, add) in counters.iter_mut().zip(&a.counters) {
                        c.pcnt = c.pcnt.wrapping_add(add.pcnt);
                        c.bcnt = c.bcnt.wrapping_add(add.bcnt);
                    }
                }
                other => bad.push(format!(
                    "{prefix} SET_ADD_COUNTERS: {:?}, kernel {errno}",
                    other.map(|_| ())
                )),
            },
            _ => bad.push(format!("{prefix}: unexpected call {op} {optname}")),
        }
    }
    assert!(
        calls >= 60 && revisions >= 8,
        "{calls} calls, {revisions} revision queries"
    );
    assert!(
        bad.is_empty(),
        "{} problems:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
