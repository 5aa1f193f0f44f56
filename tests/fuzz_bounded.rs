//! A bounded fuzz run for `make test` (stable Rust, no root): seeded mutations of the
//! kernel-captured fixture blobs go through the ipt-abi parsers, the wire decoders and the
//! daemon's whole in-process request path (the same harness as the cargo-fuzz target
//! `daemon_request`, `fuzz/support/daemon_path.rs`). Asserted: nothing panics, every refusal
//! carries an errno the kernel gives for that request, whatever parses serializes back to the
//! same table, whatever decodes re-encodes to the same bytes, and a refused set changes neither
//! the rules nor the counters.
//!
//! Every file under `fuzz/regressions/<target>/` (crashes the fuzzers found) is replayed first.
//!
//! Time: `BPFILTER_FUZZ_SECS` seconds in all (default 36), split over the three stages; the
//! seed is `BPFILTER_FUZZ_SEED` (default fixed, so a failure reproduces) and is printed. A
//! failing input is written to the temp dir and named in the failure message.

mod common;
#[path = "../fuzz/support/daemon_path.rs"]
mod daemon_path;
#[path = "../fuzz/support/wire_path.rs"]
mod wire_path;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use daemon_path::{get_frame, set_frame, Harness};
use ipt_abi::{parse_add_counters, parse_replace, parse_revision_request};
use libbpfilter::wire::{Reply, Request};
use test_support::Rng;

/// Errnos the kernel's SET_REPLACE / SET_ADD_COUNTERS / revision parsing can give.
const PARSE_ERRNOS: &[i32] = &[
    libc::EINVAL,
    libc::ENOENT,
    libc::EAGAIN,
    libc::ELOOP,
    libc::ENOMEM,
    libc::EPROTOTYPE,
    libc::EFAULT,
    // limit_mt_check: a burst of 0 or credits that overflow
    libc::ERANGE,
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn total_budget() -> Duration {
    let secs = std::env::var("BPFILTER_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(36);
    Duration::from_secs(secs)
}

fn seed() -> u64 {
    std::env::var("BPFILTER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x00b9_f117_e4ed_5eed)
}

/// Values that sit on the kernel's checks: zero, one, signs, sizes of the ABI structs
/// (ipt_entry 112, standard entry 152, ERROR entry 176, ipt_replace 96), and huge ones.
const INTERESTING_U32: &[u32] = &[
    0,
    1,
    2,
    4,
    8,
    16,
    40,
    96,
    112,
    120,
    152,
    176,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0x0800_0000,
    0x0800_0001,
    0x7fff_fff0,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fff0,
    0xffff_fffb,
    0xffff_fffc,
    0xffff_fffd,
    0xffff_fffe,
    0xffff_ffff,
];

/// One to four mutations of `input`, with `others` to splice from.
fn mutate(rng: &mut Rng, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.index(4) {
        let len = v.len();
        match rng.index(10) {
            0 if len > 0 => {
                let i = rng.index(len);
                v[i] ^= 1 << rng.index(8);
            }
            1 if len > 0 => {
                let i = rng.index(len);
                v[i] = [0, 1, 0x7f, 0x80, 0xff, b'x'][rng.index(6)];
            }
            2 | 3 if len >= 4 => {
                // Aligned u32 fields: every length, offset, count and verdict of the ABI.
                let i = rng.index(len / 4) * 4;
                let mut x = INTERESTING_U32[rng.index(INTERESTING_U32.len())];
                if rng.index(3) == 0 {
                    let old = u32::from_ne_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
                    x = old.wrapping_add([8, 4, 1, u32::MAX, 0xffff_fff8][rng.index(5)]);
                }
                v[i..i + 4].copy_from_slice(&x.to_ne_bytes());
            }
            4 => v.truncate(rng.index(len + 1)),
            5 if len > 0 => {
                let at = rng.index(len + 1) & !7;
                let n = [8usize, 16, 40, 112][rng.index(4)];
                let fill = rng.index(256) as u8;
                v.splice(at.min(len)..at.min(len), std::iter::repeat_n(fill, n));
            }
            6 if len > 8 => {
                let at = rng.index(len) & !7;
                let n = [8usize, 16, 40, 112][rng.index(4)].min(len - at);
                v.drain(at..at + n);
            }
            7 if !others.is_empty() && len > 0 => {
                // Splice a piece of another blob over this one (entries from other rulesets).
                let o = &others[rng.index(others.len())];
                if !o.is_empty() {
                    let from = rng.index(o.len());
                    let n = (1 + rng.index(256)).min(o.len() - from);
                    let at = rng.index(len);
                    let end = (at + n).min(len);
                    v[at..end].copy_from_slice(&o[from..from + (end - at)]);
                }
            }
            8 if len > 16 => {
                // Duplicate a chunk (repeated entries, loops).
                let at = rng.index(len) & !7;
                let n = (8 * (1 + rng.index(20))).min(len - at);
                let chunk = v[at..at + n].to_vec();
                let to = rng.index(len) & !7;
                v.splice(to..to, chunk);
            }
            _ => {
                let i = rng.index(len + 1);
                v.insert(i, rng.next_u64() as u8);
            }
        }
    }
    v
}

/// Runs `f` on `input`; on a panic, saves the input and fails naming it.
fn guarded(stage: &str, input: &[u8], f: impl FnOnce(&[u8]) -> Result<(), String>) {
    let outcome = catch_unwind(AssertUnwindSafe(|| f(input)));
    let why = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(why)) => why,
        Err(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()),
    };
    let path =
        std::env::temp_dir().join(format!("fuzz-bounded-{stage}-{}.bin", std::process::id()));
    std::fs::write(&path, input).expect("save failing input");
    panic!(
        "{stage}: {why}\nthe input ({} bytes) is saved in {}; copy it to fuzz/regressions/{stage}/ \
         as a regression",
        input.len(),
        path.display()
    );
}

/// parse_replace / parse_add_counters / parse_revision_request on one input.
fn check_parsers(blob: &[u8]) -> Result<(), String> {
    for current in [None, Some(4)] {
        match parse_replace(ipt_abi::Family::Ipv4, blob, current) {
            Ok(r) => {
                let again_blob = r.table.replace_blob(r.num_counters, r.counters_ptr);
                let again = parse_replace(ipt_abi::Family::Ipv4, &again_blob, Some(r.num_counters))
                    .map_err(|e| format!("an accepted table does not re-parse: {e}"))?;
                // What the kernel shows must survive (kernel-owned payload parts, such as a
                // limit's given cost, are not shown and so do not come back).
                let counters = vec![ipt_abi::XtCounters::default(); r.table.entries.len()];
                let entries = r.table.get_entries(&counters);
                if again.table.get_entries(&counters) != entries {
                    return Err("an accepted table does not round-trip".into());
                }
                if entries.len() != 40 + r.table.size() as usize {
                    return Err("GET_ENTRIES answer of the wrong size".into());
                }
                if r.table.get_info().len() != 84 {
                    return Err("GET_INFO answer is not 84 bytes".into());
                }
            }
            Err(e) if !PARSE_ERRNOS.contains(&e.errno()) => {
                return Err(format!(
                    "parse_replace: errno {} is not a kernel one: {e}",
                    e.errno()
                ))
            }
            Err(_) => {}
        }
    }
    if let Err(e) = parse_add_counters(ipt_abi::Family::Ipv4, blob) {
        if !PARSE_ERRNOS.contains(&e.errno()) {
            return Err(format!("parse_add_counters: errno {}: {e}", e.errno()));
        }
    }
    if let Err(e) = parse_revision_request(blob) {
        if ![libc::EINVAL, libc::ENOENT, libc::EFAULT].contains(&e.errno()) {
            return Err(format!("parse_revision_request: errno {}: {e}", e.errno()));
        }
    }
    Ok(())
}

/// Request/Reply decoding of one input: strict, exact inverses of encode.
fn check_wire(frame: &[u8]) -> Result<(), String> {
    if let Ok(req) = Request::decode(frame) {
        if req.encode() != frame {
            return Err(format!("request {req:?} re-encodes differently"));
        }
    }
    if let Ok(rep) = Reply::decode(frame) {
        if rep.encode() != frame {
            return Err("reply re-encodes differently".into());
        }
    }
    Ok(())
}

/// Fixture blobs with their optname (64 SET_REPLACE, 65 SET_ADD_COUNTERS): the captured
/// requests and the negative ones.
fn fixture_blobs() -> Vec<(u32, Vec<u8>)> {
    let mut v = Vec::new();
    let fx = root().join("fixtures");
    let mut dirs: Vec<_> = std::fs::read_dir(fx.join("captured"))
        .expect("fixtures/captured")
        .flatten()
        .collect();
    dirs.sort_by_key(|e| e.path());
    for d in dirs {
        for (optname, f) in [(64, "replace.bin"), (65, "add_counters.bin")] {
            if let Ok(b) = std::fs::read(d.path().join(f)) {
                if b.len() <= 64 * 1024 {
                    v.push((optname, b));
                }
            }
        }
    }
    let mut neg: Vec<_> = std::fs::read_dir(fx.join("negative"))
        .expect("fixtures/negative")
        .flatten()
        .collect();
    neg.sort_by_key(|e| e.path());
    for f in neg {
        if f.path().extension().is_some_and(|e| e == "bin") {
            let optname = if f.file_name().to_string_lossy().starts_with("addcnt_") {
                65
            } else {
                64
            };
            v.push((optname, std::fs::read(f.path()).expect("negative blob")));
        }
    }
    assert!(v.len() >= 100, "only {} fixture blobs", v.len());
    v
}

fn filter_name(n: usize) -> Vec<u8> {
    let mut v = b"filter".to_vec();
    v.resize(n, 0);
    v
}

/// A daemon session around `blob`: GET_INFO, GET_ENTRIES (initial table), the blob as
/// SET_REPLACE (or ADD_COUNTERS), GET_INFO again.
fn session(optname: u32, blob: &[u8]) -> Vec<Vec<u8>> {
    vec![
        get_frame(64, 84, &filter_name(32)),
        get_frame(65, 40 + 632, &{
            let mut h = filter_name(32);
            h.extend_from_slice(&632u32.to_ne_bytes());
            h.resize(40, 0);
            h
        }),
        set_frame(optname, blob),
        get_frame(64, 84, &filter_name(32)),
    ]
}

fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = root().join("fuzz/regressions").join(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v.into_iter()
        .map(|p| {
            let b = std::fs::read(&p).expect("regression");
            (p, b)
        })
        .collect()
}

#[test]
fn fuzz_regressions_replay() {
    let mut n = 0;
    for (p, b) in regressions("ipt_abi_parse") {
        guarded("ipt_abi_parse", &b, check_parsers);
        eprintln!("replayed {}", p.display());
        n += 1;
    }
    for (p, b) in regressions("wire_decode") {
        guarded("wire_decode", &b, wire_path::check);
        eprintln!("replayed {}", p.display());
        n += 1;
    }
    for (p, b) in regressions("daemon_request") {
        guarded("daemon_request", &b, |b| Harness::new().run(b));
        eprintln!("replayed {}", p.display());
        n += 1;
    }
    assert!(n >= 1, "no regression inputs under fuzz/regressions/");
}

#[test]
fn bounded_fuzz_run() {
    let budget = total_budget();
    let seed = seed();
    eprintln!("bounded fuzz: seed {seed} (BPFILTER_FUZZ_SEED), {budget:?} (BPFILTER_FUZZ_SECS)");
    let fixtures = fixture_blobs();
    let blobs: Vec<Vec<u8>> = fixtures.iter().map(|(_, b)| b.clone()).collect();
    let mut rng = Rng::new(seed | 1);

    // Stage 1 (40%): the ABI parsers on mutated blobs.
    let t = Instant::now();
    let mut parsed = 0u64;
    while t.elapsed() < budget * 2 / 5 {
        let base = &blobs[rng.index(blobs.len())];
        let input = mutate(&mut rng, base, &blobs);
        guarded("ipt_abi_parse", &input, check_parsers);
        parsed += 1;
    }

    // Stage 2 (20%): wire decoding of mutated frames (whole sessions' frames and replies).
    let t = Instant::now();
    let mut frames: Vec<Vec<u8>> = fixtures
        .iter()
        .step_by(4)
        .flat_map(|(o, b)| session(*o, b))
        .collect();
    frames.push(Reply::ok(vec![1, 2, 3]).encode());
    frames.push(Reply::error(libc::EINVAL).encode());
    let mut decoded = 0u64;
    while t.elapsed() < budget / 5 {
        let base = &frames[rng.index(frames.len())];
        let input = mutate(&mut rng, base, &frames);
        if decoded % 64 == 0 {
            guarded("wire_decode", &input, wire_path::check);
        } else {
            guarded("wire_decode", &input, check_wire);
        }
        decoded += 1;
    }

    // Stage 3 (40%): the daemon's whole path; one session per daemon, one frame mutated
    // (its header length kept consistent half of the time, so the payload reaches the daemon).
    let t = Instant::now();
    let mut sessions = 0u64;
    let mut requests = 0u64;
    while t.elapsed() < budget * 2 / 5 {
        let (optname, base) = &fixtures[rng.index(fixtures.len())];
        let mut s = session(*optname, base);
        let k = rng.index(s.len());
        let mut payload = s[k][12..].to_vec();
        let fix_len = rng.index(2) == 0;
        if rng.index(4) == 0 {
            s[k] = mutate(&mut rng, &s[k], &frames);
        } else {
            // Mutate the optval (after the 12-byte sockopt header), keeping optlen consistent.
            let optval = mutate(&mut rng, &payload[12..], &blobs);
            payload.truncate(12);
            if payload[1] == 1 {
                payload[8..12].copy_from_slice(&(optval.len() as u32).to_le_bytes());
            }
            payload.extend_from_slice(&optval);
            let mut f = s[k][..12].to_vec();
            if fix_len {
                f[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
            }
            f.extend_from_slice(&payload);
            s[k] = f;
        }
        let input: Vec<u8> = s.concat();
        let mut h = Harness::new();
        guarded("daemon_request", &input, |b| h.run(b));
        sessions += 1;
        requests += h.requests;
    }
    eprintln!(
        "bounded fuzz: {parsed} parser inputs, {decoded} wire frames, {sessions} daemon sessions \
         ({requests} requests), no panic, only kernel errnos"
    );
    assert!(
        parsed > 1000 && decoded > 1000 && sessions > 100,
        "the run did too little work"
    );
}

#[test]
fn mutations_reach_every_kind_of_refusal() {
    // The mutator is only useful if it makes the parser refuse for many different reasons:
    // check that a short run sees most of the kernel's errnos.
    let blobs: Vec<Vec<u8>> = fixture_blobs().into_iter().map(|(_, b)| b).collect();
    let mut rng = Rng::new(7);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20_000 {
        let i = rng.index(blobs.len());
        let input = mutate(&mut rng, &blobs[i], &blobs);
        match parse_replace(ipt_abi::Family::Ipv4, &input, Some(4)) {
            Ok(_) => {
                seen.insert(0);
            }
            Err(e) => {
                seen.insert(e.errno());
            }
        }
    }
    for want in [
        0,
        libc::EINVAL,
        libc::ENOENT,
        libc::EAGAIN,
        libc::ELOOP,
        libc::ENOMEM,
    ] {
        assert!(
            seen.contains(&want),
            "mutations never gave errno {want}: {seen:?}"
        );
    }
}
