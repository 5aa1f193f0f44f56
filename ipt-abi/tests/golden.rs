//! Golden tests: every ruleset captured from the real iptables-legacy and the real kernel
//! (fixtures/captured/, see fixtures/README.md) must parse, and serializing the parsed table
//! must give back the kernel's own GET_INFO and GET_ENTRIES answers byte for byte.
//!
//! Fails (never skips) when the fixtures are missing or empty: re-capture with `make fixtures`.

use std::fs;
use std::path::{Path, PathBuf};

use ipt_abi::abi::*;
use ipt_abi::{
    parse_add_counters, parse_replace, parse_revision_request, query_revision, Entry, ExtKind,
    Family, Match, Table, Target, XtCounters,
};

/// Fewer captured rulesets than this means the fixture tree is broken, not that there is
/// nothing to test.
const MIN_RULESETS: usize = 40;
const EAGAIN: i32 = 11;
const ENOENT: i32 = 2;
/// sizeof(struct ipt_get_entries) and sizeof(struct ipt_entry) on 64-bit.
const GET_ENTRIES_HDR: usize = 40;
const IPT_ENTRY: usize = 112;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    let p = dir.join(file);
    let b = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run `make fixtures`)", p.display()));
    assert!(!b.is_empty(), "{} is empty", p.display());
    b
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// Every captured ruleset directory except `initial/` (which has no request blobs).
fn rulesets() -> Vec<PathBuf> {
    let root = fixtures().join("captured");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make fixtures`)", root.display()))
        .map(|d| d.expect("dir entry").path())
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "initial"))
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= MIN_RULESETS,
        "only {} captured rulesets under {} (want >= {MIN_RULESETS}): run `make fixtures`",
        dirs.len(),
        root.display()
    );
    dirs
}

/// Names the field of an ipt_entry at byte `off` of the entry.
fn entry_field(off: usize) -> &'static str {
    match off {
        0..=3 => "ip.src",
        4..=7 => "ip.dst",
        8..=11 => "ip.smsk",
        12..=15 => "ip.dmsk",
        16..=31 => "ip.iniface",
        32..=47 => "ip.outiface",
        48..=63 => "ip.iniface_mask",
        64..=79 => "ip.outiface_mask",
        80..=81 => "ip.proto",
        82 => "ip.flags",
        83 => "ip.invflags",
        84..=87 => "nfcache",
        88..=89 => "target_offset",
        90..=91 => "next_offset",
        92..=95 => "comefrom",
        96..=111 => "counters",
        _ => "match/target",
    }
}

/// Where `off` falls in a GET_ENTRIES answer, walking the kernel's own bytes.
fn locate_entries(kernel: &[u8], off: usize) -> String {
    if off < GET_ENTRIES_HDR {
        return format!("header byte {off}");
    }
    let (mut pos, mut idx) = (GET_ENTRIES_HDR, 0usize);
    while pos + IPT_ENTRY <= kernel.len() {
        let next = usize::from(u16::from_ne_bytes([kernel[pos + 90], kernel[pos + 91]]));
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

fn getinfo_field(off: usize) -> &'static str {
    match off {
        0..=31 => "name",
        32..=35 => "valid_hooks",
        36..=55 => "hook_entry",
        56..=75 => "underflow",
        76..=79 => "num_entries",
        _ => "size",
    }
}

/// None when equal, else a description of the first difference.
fn diff(ours: &[u8], kernel: &[u8], locate: &dyn Fn(usize) -> String) -> Option<String> {
    if ours == kernel {
        return None;
    }
    let first = ours.iter().zip(kernel).position(|(a, b)| a != b);
    let differing = ours.iter().zip(kernel).filter(|(a, b)| a != b).count();
    Some(match first {
        Some(off) => format!(
            "first difference at byte {off} ({}): ours {:#04x}, kernel {:#04x}; {differing} bytes differ; lengths ours {} kernel {}",
            locate(off), ours[off], kernel[off], ours.len(), kernel.len()
        ),
        None => format!("lengths differ: ours {} kernel {} (common prefix equal)", ours.len(), kernel.len()),
    })
}

/// Checks one captured ruleset; returns the list of problems found.
fn check_ruleset(dir: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let replace = read(dir, "replace.bin");
    let add = read(dir, "add_counters.bin");
    let info = read(dir, "get_info.bin");
    let entries = read(dir, "get_entries.bin");
    assert_eq!(info.len(), 84, "{}: get_info.bin", dir.display());
    let kernel_num_entries = u32_at(&info, 76);
    let num_counters = u32_at(&replace, 84);

    let r = match parse_replace(ipt_abi::Family::Ipv4, &replace, None) {
        Ok(r) => r,
        Err(e) => return vec![format!("parse_replace: {e} (errno {})", e.errno())],
    };
    if r.name != "filter" {
        bad.push(format!("name {:?}, want \"filter\"", r.name));
    }
    if r.num_counters != num_counters {
        bad.push(format!(
            "num_counters {} want {num_counters}",
            r.num_counters
        ));
    }
    if r.table.entries.len() != kernel_num_entries as usize {
        bad.push(format!(
            "{} entries, kernel has {kernel_num_entries}",
            r.table.entries.len()
        ));
    }
    if r.table.size() != u32_at(&info, 80) {
        bad.push(format!(
            "size {} kernel {}",
            r.table.size(),
            u32_at(&info, 80)
        ));
    }
    // The kernel compares num_counters with the table it replaces: same count passes, any
    // other gives EAGAIN.
    if let Err(e) = parse_replace(ipt_abi::Family::Ipv4, &replace, Some(num_counters)) {
        bad.push(format!(
            "parse_replace(ipt_abi::Family::Ipv4, Some({num_counters})): {e}"
        ));
    }
    match parse_replace(ipt_abi::Family::Ipv4, &replace, Some(num_counters + 1)) {
        Ok(_) => bad.push("num_counters mismatch accepted (kernel: EAGAIN)".into()),
        Err(e) if e.errno() != EAGAIN => bad.push(format!(
            "num_counters mismatch: errno {} want EAGAIN",
            e.errno()
        )),
        Err(_) => {}
    }

    let counters: Vec<XtCounters> = match parse_add_counters(ipt_abi::Family::Ipv4, &add) {
        Ok(a) => {
            if a.name != "filter" {
                bad.push(format!("add_counters name {:?}", a.name));
            }
            if a.counters.len() != kernel_num_entries as usize {
                bad.push(format!(
                    "add_counters has {} counters, want {kernel_num_entries}",
                    a.counters.len()
                ));
            }
            a.counters
        }
        Err(e) => {
            bad.push(format!("parse_add_counters: {e} (errno {})", e.errno()));
            return bad;
        }
    };

    // Nothing flows in the scratch namespace: the kernel's counters are exactly what
    // SET_ADD_COUNTERS added to the fresh (zeroed) table.
    if let Some(d) = diff(&r.table.get_info(), &info, &|o| {
        getinfo_field(o).to_string()
    }) {
        bad.push(format!("get_info: {d}"));
    }
    if let Some(d) = diff(&r.table.get_entries(&counters), &entries, &|o| {
        locate_entries(&entries, o)
    }) {
        bad.push(format!("get_entries: {d}"));
    }
    bad
}

#[test]
fn golden_rulesets_match_kernel() {
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
        "{} problems in {} captured rulesets:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

#[test]
fn golden_counters_fixture_has_nonzero_counters() {
    // Guards the golden test itself: at least one fixture must carry counters, or the
    // counters path of get_entries would only ever be compared on zeros.
    let dir = fixtures().join("captured/counters");
    let add = parse_add_counters(ipt_abi::Family::Ipv4, &read(&dir, "add_counters.bin"))
        .expect("parse counters fixture");
    assert!(
        add.counters.iter().any(|c| c.pcnt != 0 && c.bcnt != 0),
        "counters fixture has only zeros"
    );
    assert!(
        add.counters.iter().any(|c| c.pcnt == 1 << 32),
        "64-bit counter value missing"
    );
}

#[test]
fn golden_big_table() {
    let dir = fixtures().join("captured/big_10k");
    let r = parse_replace(ipt_abi::Family::Ipv4, &read(&dir, "replace.bin"), Some(4))
        .expect("10k-rule table parses");
    // 10,000 rules + 3 policies + the ERROR tail.
    assert_eq!(r.table.entries.len(), 10_004);
    for (i, e) in r.table.entries.iter().enumerate() {
        assert_eq!(e.index as usize, i, "entry index");
    }
}

#[test]
fn golden_initial_table() {
    let dir = fixtures().join("captured/initial");
    let info = read(&dir, "get_info.bin");
    let entries = read(&dir, "get_entries.bin");
    let t = Table::initial("filter").expect("initial filter table");
    let zeros = vec![XtCounters { pcnt: 0, bcnt: 0 }; t.entries.len()];
    if let Some(d) = diff(&t.get_info(), &info, &|o| getinfo_field(o).to_string()) {
        panic!("initial get_info: {d}");
    }
    if let Some(d) = diff(&t.get_entries(&zeros), &entries, &|o| {
        locate_entries(&entries, o)
    }) {
        panic!("initial get_entries: {d}");
    }
    assert_eq!(t.entries.len() as u32, u32_at(&info, 76));
}

#[test]
fn initial_unknown_table_is_enoent() {
    match Table::initial("nosuchtable") {
        Ok(_) => panic!("unknown table accepted (kernel: ENOENT)"),
        Err(e) => assert_eq!(e.errno(), ENOENT),
    }
}

/// Extensions bpfilter implements (DESIGN.md); for these a revision query must get the
/// kernel's exact answer. Every other name gets ENOENT, as from a kernel without it.
const SUPPORTED_MATCHES: &[&str] = &[
    "recent",
    "hashlimit",
    "tcp",
    "udp",
    "icmp",
    "multiport",
    "iprange",
    "comment",
    "conntrack",
    "state",
    "mark",
    "pkttype",
    "tcpmss",
    "limit",
    "addrtype",
    "owner",
    "mac",
];
/// ip6tables-only matches bpfilter implements (IPv6 only).
const SUPPORTED_MATCHES6: &[&str] = &[
    "icmp6",
    "hl",
    "frag",
    "ipv6header",
    "hbh",
    "dst",
    "rt",
    "eui64",
];
const SUPPORTED_TARGETS: &[&str] = &["", "ERROR", "LOG", "REJECT"];

#[test]
fn golden_revision_queries() {
    let path = fixtures().join("revisions.tsv");
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make fixtures`)", path.display()));
    let mut failures = Vec::new();
    let mut checked = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 6, "bad revisions.tsv line: {line:?}");
        let family = match f[0] {
            "ipv4" => Family::Ipv4,
            "ipv6" => Family::Ipv6,
            other => panic!("bad family {other}"),
        };
        let (kind, supported) = match f[1] {
            "match" => (ExtKind::Match, SUPPORTED_MATCHES),
            "target" => (ExtKind::Target, SUPPORTED_TARGETS),
            other => panic!("bad kind {other}"),
        };
        let name = f[2];
        let rev: u8 = f[3].parse().expect("revision");
        let kernel: i32 = f[4].parse().expect("errno");
        // IPv4 names the kernel knows but bpfilter does not implement answer ENOENT (DESIGN.md:
        // "revision queries answer ENOENT for them"); ip6tables' own names (icmp6) count as
        // supported only for IPv6.
        // REJECT is ipt_REJECT for IPv4 and ip6t_REJECT for IPv6, both implemented.
        let implemented = supported.contains(&name)
            || (family == Family::Ipv6
                && kind == ExtKind::Match
                && SUPPORTED_MATCHES6.contains(&name));
        let want = if implemented || kernel == ENOENT {
            kernel
        } else {
            ENOENT
        };
        let got = match query_revision(family, kind, name, rev) {
            Ok(_) => 0,
            Err(e) => e.errno(),
        };
        checked += 1;
        if got != want {
            failures.push(format!("{line}: bpfilter answers {got}, want {want}"));
        }
    }
    assert!(
        checked >= 50,
        "only {checked} revision queries in {}",
        path.display()
    );
    assert!(
        failures.is_empty(),
        "{} revision answers differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn revision_request_decodes() {
    // struct xt_get_revision as iptables sends it: name[29] then the revision byte.
    let mut req = [0u8; 30];
    req[..9].copy_from_slice(b"multiport");
    req[29] = 1;
    let (name, rev) = parse_revision_request(&req).expect("30-byte request");
    assert_eq!((name.as_str(), rev), ("multiport", 1));
    assert!(
        parse_revision_request(&req[..29]).is_err(),
        "short request accepted"
    );
}

/// Replays one transcript (every sockopt of a command sequence, in order) against a model of
/// the kernel built from ipt-abi alone: the table starts as `Table::initial`, SET_REPLACE
/// installs the parsed table with zeroed counters, SET_ADD_COUNTERS adds, and every GET_INFO,
/// GET_ENTRIES and revision answer must equal the kernel's. Returns the problems found.
fn replay(dir: &Path) -> Vec<String> {
    let tdir = dir.join("transcript");
    let log = fs::read_to_string(tdir.join("calls.tsv"))
        .unwrap_or_else(|e| panic!("{}: {e}", tdir.display()));
    let mut table = Table::initial("filter").expect("initial filter table");
    let mut counters = vec![XtCounters { pcnt: 0, bcnt: 0 }; table.entries.len()];
    let mut bad = Vec::new();
    let mut calls = 0;
    for line in log.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 9, "bad calls.tsv line {line:?}");
        let (op, optname, errno, prefix) = (f[2], f[3], f[6], f[8]);
        let errno: i32 = errno.parse().expect("errno");
        let input = read(&tdir, &format!("{prefix}.in"));
        let output = || read(&tdir, &format!("{prefix}.out"));
        let at = format!("call {prefix}");
        calls += 1;
        match (op, optname) {
            ("get", "64") if errno == 0 => {
                if let Some(d) = diff(&table.get_info(), &output(), &|o| {
                    getinfo_field(o).to_string()
                }) {
                    bad.push(format!("{at} GET_INFO: {d}"));
                }
            }
            ("get", "64") => {
                // A failed GET_INFO: the table does not exist (only filter is in the model).
                let raw = &input[..input.len().min(32)];
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                let name = String::from_utf8_lossy(&raw[..end]).into_owned();
                let got = Table::initial(&name).map_or_else(|e| e.errno(), |_| 0);
                if name == "filter" || got != errno {
                    bad.push(format!(
                        "{at} GET_INFO {name:?}: errno {got}, kernel {errno}"
                    ));
                }
            }
            ("get", "65") if errno == 0 => {
                let kernel = output();
                if let Some(d) = diff(&table.get_entries(&counters), &kernel, &|o| {
                    locate_entries(&kernel, o)
                }) {
                    bad.push(format!("{at} GET_ENTRIES: {d}"));
                }
            }
            ("get", "66" | "67") => {
                let kind = if optname == "66" {
                    ExtKind::Match
                } else {
                    ExtKind::Target
                };
                let got = parse_revision_request(&input)
                    .and_then(|(name, rev)| query_revision(Family::Ipv4, kind, &name, rev));
                let got = got.map_or_else(|e| e.errno(), |_| 0);
                if got != errno {
                    bad.push(format!("{at} revision query: errno {got}, kernel {errno}"));
                }
            }
            ("set", "64") => match parse_replace(
                ipt_abi::Family::Ipv4,
                &input,
                Some(table.entries.len() as u32),
            ) {
                Ok(r) if errno == 0 => {
                    table = r.table;
                    counters = vec![XtCounters { pcnt: 0, bcnt: 0 }; table.entries.len()];
                }
                Ok(_) => bad.push(format!("{at} SET_REPLACE accepted, kernel errno {errno}")),
                Err(e) if e.errno() != errno => bad.push(format!(
                    "{at} SET_REPLACE errno {}, kernel {errno}: {e}",
                    e.errno()
                )),
                Err(_) => {}
            },
            ("set", "65") => match parse_add_counters(ipt_abi::Family::Ipv4, &input) {
                Ok(a) if errno == 0 && a.counters.len() == counters.len() => {
                    for (c, add) in counters.iter_mut().zip(&a.counters) {
                        c.pcnt = c.pcnt.wrapping_add(add.pcnt);
                        c.bcnt = c.bcnt.wrapping_add(add.bcnt);
                    }
                }
                Ok(a) if errno == 0 => bad.push(format!(
                    "{at} SET_ADD_COUNTERS has {} counters for {} entries",
                    a.counters.len(),
                    counters.len()
                )),
                Ok(_) => {}
                Err(e) => bad.push(format!("{at} SET_ADD_COUNTERS: {e}, kernel errno {errno}")),
            },
            _ => {}
        }
    }
    assert!(calls >= 8, "{}: only {calls} calls", tdir.display());
    bad
}

#[test]
fn golden_transcripts_replay() {
    let dirs: Vec<PathBuf> = rulesets()
        .into_iter()
        .filter(|d| d.join("transcript").is_dir())
        .collect();
    assert!(
        dirs.len() >= 3,
        "only {} captured transcripts: run `make fixtures`",
        dirs.len()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        failures.extend(replay(dir).into_iter().map(|p| format!("{name}: {p}")));
    }
    assert!(
        failures.is_empty(),
        "{} transcript problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The parsed entries of a captured ruleset.
fn captured_entries(name: &str) -> Vec<Entry> {
    let dir = fixtures().join("captured").join(name);
    parse_replace(ipt_abi::Family::Ipv4, &read(&dir, "replace.bin"), None)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .table
        .entries
}

#[test]
fn golden_conntrack_as_iptables_sends_it() {
    // iptables 1.8.9 on 6.18 sends every -m conntrack as revision 3 (xt_conntrack_mtinfo3),
    // and the fixture exercises every test of it, inverted ones and port ranges included.
    let mut flags = 0u16;
    let mut inverted = 0u16;
    let mut range = false;
    for e in captured_entries("conntrack") {
        for m in &e.matches {
            if let Match::Conntrack(c) = m {
                let i = c.info();
                assert_eq!(i.revision, 3, "entry {}", e.index);
                flags |= i.match_flags;
                inverted |= i.invert_flags;
                range |= i.origsrc_port[0] != i.origsrc_port[1];
            }
        }
    }
    assert_eq!(flags, 0x1fff, "every XT_CONNTRACK_* test but STATE_ALIAS");
    for bit in [
        XT_CONNTRACK_STATE,
        XT_CONNTRACK_PROTO,
        XT_CONNTRACK_ORIGSRC,
        XT_CONNTRACK_REPLDST,
        XT_CONNTRACK_STATUS,
        XT_CONNTRACK_EXPIRES,
        XT_CONNTRACK_ORIGDST_PORT,
        XT_CONNTRACK_REPLSRC_PORT,
        XT_CONNTRACK_DIRECTION,
    ] {
        assert!(inverted & bit != 0, "no inverted {bit:#x}");
    }
    assert!(range, "no --ctorigsrcport range");
}

#[test]
fn golden_state_arrives_as_conntrack() {
    // iptables 1.8.9 sends -m state --state as conntrack revision 3 with
    // XT_CONNTRACK_STATE | XT_CONNTRACK_STATE_ALIAS, never as "state" revision 0.
    let mut n = 0;
    for e in captured_entries("state") {
        for m in &e.matches {
            assert!(!matches!(m, Match::State(_)), "entry {}", e.index);
            if let Some(i) = m.conntrack() {
                assert_eq!(i.revision, 3);
                assert_eq!(i.match_flags, XT_CONNTRACK_STATE | XT_CONNTRACK_STATE_ALIAS);
                n += 1;
            }
        }
    }
    assert_eq!(n, 8, "-m state rules in state.rules");
}

#[test]
fn golden_reject_and_log_as_iptables_sends_them() {
    let mut with = std::collections::BTreeSet::new();
    for e in captured_entries("reject") {
        if let Target::Reject(r) = e.target {
            with.insert(r.with);
            if r.with == IPT_TCP_RESET {
                assert_eq!(e.ip.proto(), 6, "tcp-reset on entry {}", e.index);
            }
        }
    }
    assert_eq!(
        with.into_iter().collect::<Vec<_>>(),
        [0, 1, 2, 3, 5, 6, 7, 8],
        "every --reject-with but the refused echo-reply"
    );
    let (mut levels, mut flags, mut longest) = (0u8, 0u8, 0usize);
    for e in captured_entries("log") {
        if let Target::Log(l) = e.target {
            levels |= 1 << l.level;
            flags |= l.logflags;
            longest = longest.max(e.target.log_prefix().map_or(0, |p| p.len()));
        }
    }
    assert_eq!(levels, 0xff, "every level 0..=7");
    assert_eq!(flags, XT_LOG_MASK, "every --log-* flag");
    assert_eq!(longest, 29, "a prefix of the maximum length");
}

#[test]
fn golden_transcript_revision_queries() {
    // What iptables 1.8.9 asks before writing these rules (cmd_conntrack): conntrack at
    // revision 3 (also for -m state), REJECT and LOG at 0, each answered 0 by the kernel.
    let tdir = fixtures().join("captured/cmd_conntrack/transcript");
    let log = fs::read_to_string(tdir.join("calls.tsv"))
        .unwrap_or_else(|e| panic!("{}: {e}", tdir.display()));
    let mut asked = std::collections::BTreeSet::new();
    for line in log.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f[2] == "get" && (f[3] == "66" || f[3] == "67") {
            let (name, rev) =
                parse_revision_request(&read(&tdir, &format!("{}.in", f[8]))).expect("request");
            asked.insert((f[3].to_string(), name, rev, f[6].to_string()));
        }
    }
    let want: std::collections::BTreeSet<_> = [
        ("66", "conntrack", 3),
        ("66", "tcp", 0),
        ("67", "LOG", 0),
        ("67", "REJECT", 0),
    ]
    .into_iter()
    .map(|(o, n, r)| (o.to_string(), n.to_string(), r, "0".to_string()))
    .collect();
    assert_eq!(asked, want);
}
