//! Negative fixtures for ip6tables: blobs derived from the IPv6 captures by one mutation each
//! (`xt-mutate --ipv6`) and every single-byte flip of four captures, with the errno the real
//! kernel returned (fixtures/negative6/, see fixtures/README.md). `parse_replace(Family::Ipv6,
//! ..)` must return the same errno for every one, 0 included.
//!
//! Fails (never skips) when the fixtures are missing: `fixtures/capture.sh --negative6`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use ipt_abi::{parse_add_counters, parse_replace, Family};

const MIN_NEGATIVE: usize = 40;
const MIN_FLIPS: usize = 40_000;
const EINVAL: i32 = 22;
const ENOENT: i32 = 2;

/// Where bpfilter answers differently from the kernel on purpose, and why.
const DELIBERATE: &[(&str, i32, &str)] = &[(
    "table_security6",
    ENOENT,
    "the kernel has ip6tables' security table (filter's hooks); bpfilter serves only filter",
)];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/negative6")
}

struct Case {
    name: String,
    errno: i32,
    kind: String,
    current_entries: u32,
    description: String,
}

fn manifest() -> Vec<Case> {
    let path = dir().join("MANIFEST.tsv");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run fixtures/capture.sh --negative6)",
            path.display()
        )
    });
    let cases: Vec<Case> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 6, "bad manifest line: {l}");
            Case {
                name: f[0].to_string(),
                errno: f[1].parse().expect("errno"),
                kind: f[3].to_string(),
                current_entries: f[4].parse().expect("current_entries"),
                description: f[5].to_string(),
            }
        })
        .collect();
    let refused = cases.iter().filter(|c| c.errno != 0).count();
    assert!(
        refused >= MIN_NEGATIVE,
        "only {refused} negative IPv6 cases"
    );
    cases
}

fn errno_of(c: &Case, blob: &[u8]) -> (i32, String) {
    match c.kind.as_str() {
        "replace" => match parse_replace(Family::Ipv6, blob, Some(c.current_entries)) {
            Ok(r) => {
                assert_eq!(r.table.family, Family::Ipv6);
                (0, String::new())
            }
            Err(e) => (e.errno(), e.to_string()),
        },
        "add_counters" => match parse_add_counters(Family::Ipv6, blob) {
            Ok(a) if a.name != "filter" => (ENOENT, format!("no table {:?}", a.name)),
            Ok(a) if a.counters.len() != c.current_entries as usize => {
                (EINVAL, "counter count".into())
            }
            Ok(_) => (0, String::new()),
            Err(e) => (e.errno(), e.to_string()),
        },
        k => panic!("{}: unknown kind {k}", c.name),
    }
}

#[test]
fn negative6_fixtures_match_kernel_errno() {
    let cases = manifest();
    let mut failures = Vec::new();
    for c in &cases {
        let blob = fs::read(dir().join(format!("{}.bin", c.name))).expect("blob");
        let want = DELIBERATE
            .iter()
            .find(|d| d.0 == c.name)
            .map_or(c.errno, |d| d.1);
        let (got, why) = errno_of(c, &blob);
        if got != want {
            failures.push(format!(
                "{} ({}): kernel {} (bpfilter wants {want}), parser {got}: {why}",
                c.name, c.description, c.errno
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} IPv6 negative fixtures disagree:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The kernel facts the IPv6 validators were written from, pinned by name.
#[test]
fn negative6_manifest_pins_kernel_facts() {
    let cases = manifest();
    let want = [
        ("control6_ipv6_ext", 0),
        ("ipv4_blob_as_ipv6", EINVAL),
        ("target_offset_112", EINVAL),
        ("underflow6_pad", EINVAL),
        ("underflow6_entry_pad", 0),
        ("tcp_without_flag_proto", 0),
        ("reject6_reset_no_flag_proto", EINVAL),
        ("reject6_echo_reply", EINVAL),
        ("reject6_ipv4_tcp_reset", 0),
        ("ipv6header_hard_invflags_1", EINVAL),
        ("ipv6header_soft_invflags_1", 0),
        ("hbh_nstrict", EINVAL),
        ("rt0_res_type_2", EINVAL),
        ("mac_in_output", EINVAL),
        ("mac_revision_1", ENOENT),
        ("table_security6", 0),
        ("addrtype6_broadcast", EINVAL),
        ("addrtype6_all_low_types", 0),
        ("addrtype6_revision_0", ENOENT),
        ("hashlimit6_srcmask_33", 0),
        ("hashlimit6_srcmask_129", EINVAL),
    ];
    for (name, errno) in want {
        let c = cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} in negative6/MANIFEST.tsv"));
        assert_eq!(c.errno, errno, "{name}: {}", c.description);
    }
}

#[test]
fn byte_flips6_match_kernel_errno() {
    let path = dir().join("flips.tsv");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let captured = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/captured6");
    let mut bases: HashMap<String, Vec<u8>> = HashMap::new();
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
        let got = match parse_replace(Family::Ipv6, &blob, Some(4)) {
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
    assert!(checked >= MIN_FLIPS, "only {checked} IPv6 flips");
    let shown: Vec<&str> = failures.iter().take(60).map(String::as_str).collect();
    assert!(
        failures.is_empty(),
        "{} of {checked} IPv6 byte flips disagree with the kernel:\n{}",
        failures.len(),
        shown.join("\n")
    );
}
