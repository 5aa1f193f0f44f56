//! Negative tests: every blob in fixtures/negative/ was sent to the real kernel, which
//! answered the errno recorded in MANIFEST.tsv (see fixtures/README.md). The parser must give
//! the same answer: the same errno for a refused blob, success for an accepted one.
//!
//! Fails (never skips) when the manifest is missing, short, or names a missing blob.

use std::fs;
use std::path::{Path, PathBuf};

use ipt_abi::{parse_add_counters, parse_replace};

/// At least this many refused blobs, or the fixture tree is broken.
const MIN_NEGATIVE: usize = 25;
const EINVAL: i32 = 22;
const ENOENT: i32 = 2;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/negative")
}

/// One MANIFEST.tsv line.
#[derive(Debug)]
struct Case {
    name: String,
    errno: i32,
    errno_name: String,
    kind: String,
    current_entries: u32,
    description: String,
}

fn manifest() -> Vec<Case> {
    let path = dir().join("MANIFEST.tsv");
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make fixtures`)", path.display()));
    let cases: Vec<Case> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 6, "bad manifest line: {l}");
            Case {
                name: f[0].to_string(),
                errno: f[1].parse().unwrap_or_else(|_| panic!("bad errno in: {l}")),
                errno_name: f[2].to_string(),
                kind: f[3].to_string(),
                current_entries: f[4]
                    .parse()
                    .unwrap_or_else(|_| panic!("bad current_entries in: {l}")),
                description: f[5].to_string(),
            }
        })
        .collect();
    let refused = cases.iter().filter(|c| c.errno != 0).count();
    assert!(
        refused >= MIN_NEGATIVE,
        "only {refused} negative cases in {} (want >= {MIN_NEGATIVE})",
        path.display()
    );
    cases
}

/// Returns None when the parser agrees with the kernel, else what went wrong.
fn check(c: &Case) -> Option<String> {
    let path = dir().join(format!("{}.bin", c.name));
    let blob = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let got: Result<(), (i32, String)> = match c.kind.as_str() {
        "replace" => parse_replace(ipt_abi::Family::Ipv4, &blob, Some(c.current_entries))
            .map(|_| ())
            .map_err(|e| (e.errno(), e.to_string())),
        "add_counters" => match parse_add_counters(ipt_abi::Family::Ipv4, &blob) {
            // parse_add_counters cannot know the namespace's tables; the kernel's later checks
            // (do_add_counters: table lookup, ENOENT; then private->number != num_counters,
            // EINVAL) are applied here, in the kernel's order, with the recorded state (the
            // filter table holding current_entries entries).
            Ok(a) if a.name != "filter" => Err((ENOENT, format!("no table {:?}", a.name))),
            Ok(a) if a.counters.len() != c.current_entries as usize => Err((
                EINVAL,
                format!(
                    "{} counters for {} entries",
                    a.counters.len(),
                    c.current_entries
                ),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err((e.errno(), e.to_string())),
        },
        k => panic!("{}: unknown kind {k}", c.name),
    };
    match (c.errno, got) {
        (0, Ok(())) => None,
        (0, Err((e, msg))) => Some(format!(
            "kernel accepts, parser refused with errno {e}: {msg}"
        )),
        (want, Ok(())) => Some(format!(
            "kernel refuses with {want} {}, parser accepted",
            c.errno_name
        )),
        (want, Err((e, _))) if e == want => None,
        (want, Err((e, msg))) => Some(format!(
            "kernel {want} {}, parser errno {e}: {msg}",
            c.errno_name
        )),
    }
}

#[test]
fn negative_fixtures_match_kernel_errno() {
    let cases = manifest();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check(c).map(|why| format!("{} ({}): {why}", c.name, c.description)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} negative fixtures disagree with the kernel:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_manifest_covers_each_errno_kind() {
    // The manifest must exercise each errno the kernel's validation produces; a re-capture
    // that lost one of them is a broken fixture tree.
    let cases = manifest();
    for want in ["EINVAL", "ELOOP", "ENOENT", "EAGAIN", "ENOMEM", "OK"] {
        assert!(
            cases.iter().any(|c| c.errno_name == want),
            "no {want} case in MANIFEST.tsv"
        );
    }
}

#[test]
fn negative_manifest_covers_reject_log_conntrack_state() {
    // One case per check of ipt_REJECT.c, xt_LOG.c, xt_conntrack.c and xt_state.c (and the
    // values they do not check), with the errno the 6.18 kernel answered when captured. A
    // re-capture that lost one, or a kernel that answers otherwise, fails here.
    const EPROTOTYPE: i32 = 91;
    let cases = manifest();
    let want = [
        ("reject_tcp_reset_proto_any", EINVAL),
        ("reject_tcp_reset_proto_udp", EINVAL),
        ("reject_tcp_reset_proto_inverted", EINVAL),
        ("reject_tcp_reset_other_inversion", 0),
        ("reject_echo_reply", EINVAL),
        ("reject_with_unknown", 0),
        ("reject_target_size_long", EINVAL),
        ("reject_target_size_short", EINVAL),
        ("reject_revision_1", ENOENT),
        ("reject_in_security_table", EINVAL),
        ("log_level_8", EINVAL),
        ("log_prefix_unterminated", EINVAL),
        ("log_prefix_last_byte_set", EINVAL),
        ("log_prefix_garbage_after_nul", 0),
        ("log_flags_all", 0),
        ("log_target_size_short", EINVAL),
        ("log_revision_1", ENOENT),
        ("conntrack_revision_0", EPROTOTYPE),
        ("conntrack_v3_as_revision_2", EINVAL),
        ("conntrack_revision_1", 0),
        ("conntrack_revision_2", 0),
        ("conntrack_flags_garbage", 0),
        ("conntrack_pad_garbage", 0),
        ("state_revision_0", 0),
        ("state_revision_1", EPROTOTYPE),
        ("state_size_long", EINVAL),
    ];
    for (name, errno) in want {
        let c = cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} in MANIFEST.tsv"));
        assert_eq!(c.errno, errno, "{name}: {}", c.description);
    }
}

/// Fewer flip answers than this means flips.tsv is broken.
const MIN_FLIPS: usize = 10_000;

#[test]
fn byte_flips_match_kernel_errno() {
    // flips.tsv: every single-byte flip (xor 0xff, 0x01, 0x80) of several captured SET_REPLACE
    // blobs, each sent to the kernel holding a 4-entry filter table (the base's num_counters).
    let path = dir().join("flips.tsv");
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make fixtures`)", path.display()));
    let captured = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/captured");
    let mut bases: std::collections::HashMap<String, Vec<u8>> = std::collections::HashMap::new();
    let (mut checked, mut failures) = (0usize, Vec::new());
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 5, "bad flips.tsv line: {line:?}");
        let base = bases.entry(f[0].to_string()).or_insert_with(|| {
            let p = captured.join(f[0]).join("replace.bin");
            fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        });
        let off: usize = f[1].parse().expect("offset");
        let mask = u8::from_str_radix(f[2].trim_start_matches("0x"), 16).expect("xor mask");
        let want: i32 = f[3].parse().expect("errno");
        let mut blob = base.clone();
        blob[off] ^= mask;
        let got = match parse_replace(ipt_abi::Family::Ipv4, &blob, Some(4)) {
            Ok(_) => 0,
            Err(e) => e.errno(),
        };
        checked += 1;
        if got != want {
            failures.push(format!(
                "{} byte {off} ^ {mask:#04x}: kernel {want} {}, parser {got}",
                f[0], f[4]
            ));
        }
    }
    assert!(
        checked >= MIN_FLIPS,
        "only {checked} flips in {}",
        path.display()
    );
    // Summarise by (base, kernel errno, parser errno) so one systematic difference reads as one
    // line, then show the first cases.
    let mut summary: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for f in &failures {
        let base = f.split(' ').next().unwrap_or("").to_string();
        let pair = f.rsplit(": ").next().unwrap_or("").to_string();
        *summary.entry((base, pair)).or_default() += 1;
    }
    let summary: Vec<String> = summary
        .iter()
        .map(|((b, p), n)| format!("  {n} x {b}: {p}"))
        .collect();
    let shown: Vec<&str> = failures.iter().take(40).map(String::as_str).collect();
    assert!(
        failures.is_empty(),
        "{} of {checked} byte flips disagree with the kernel:\n{}\nfirst {}:\n{}",
        failures.len(),
        summary.join("\n"),
        shown.len(),
        shown.join("\n")
    );
}
