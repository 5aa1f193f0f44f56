//! `xt-mutate`: derives the negative fixtures (fixtures/negative/) from captured blobs.
//!
//! ```text
//! xt-mutate list                        one line per mutation: name, base, kind, setup, description
//! xt-mutate make NAME CAPTURED_DIR OUT  write mutation NAME of its base blob to OUT
//! xt-mutate help [COMMAND]              this list, or one command's arguments
//! ```
//! `--ipv6` switches to the ip6tables mutations (`ip6t_entry` layout, bases under captured6/,
//! see `mutations6`).
//! `base` names the capture (`CAPTURED_DIR/BASE/replace.bin`, or `add_counters.bin` for kind
//! `add_counters`); `setup` says how capture.sh prepares the scratch namespace before sending
//! the mutated blob: `initial` (a bare `iptables -L`, 4 entries, the state every base
//! SET_REPLACE was captured against) or `restore` (the base ruleset restored). The errno is
//! never decided here: capture.sh asks the real kernel with xt-oracle.
//!
//! Layout facts used (64-bit, include/uapi/linux/netfilter_ipv4/ip_tables.h, x_tables.h):
//! ipt_replace is 96 bytes (name 0, valid_hooks 32, num_entries 36, size 40, hook_entry 44,
//! underflow 64, num_counters 84, counters 88); ipt_entry is 112 bytes (ip 0..84 with proto at
//! 80, flags 82, invflags 83; nfcache 84, target_offset 88, next_offset 90, comefrom 92,
//! counters 96); match/target headers are 32 bytes (size u16, name[29], revision u8).

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};

const HDR: usize = 96;
const ENTRY: usize = 112;
const XT_HDR: usize = 32;
const H_VALID_HOOKS: usize = 32;
const H_NUM_ENTRIES: usize = 36;
const H_SIZE: usize = 40;
const H_HOOK_ENTRY: usize = 44;
const H_UNDERFLOW: usize = 64;
const H_NUM_COUNTERS: usize = 84;
const NF_INET_LOCAL_IN: usize = 1;
const NF_INET_FORWARD: usize = 2;
const NF_INET_LOCAL_OUT: usize = 3;

/// Set once by `--ipv6`: entries are `ip6t_entry` (168 bytes: ipv6 0..136 with proto at 128,
/// tos 130, flags 131, invflags 132, padding 133..136; nfcache 136, target_offset 140,
/// next_offset 142, comefrom 144, padding 148..152, counters 152).
static IPV6: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn ipv6() -> bool {
    IPV6.load(std::sync::atomic::Ordering::Relaxed)
}

/// (entry header size, offset of target_offset, offset of next_offset) of the family.
fn layout() -> (usize, usize, usize) {
    if ipv6() {
        (E6, E6_TO, E6_NEXT)
    } else {
        (ENTRY, 88, 90)
    }
}

const E6: usize = 168;
const E6_PROTO: usize = 128;
const E6_TOS: usize = 130;
const E6_FLAGS: usize = 131;
const E6_INV: usize = 132;
const E6_PAD: usize = 133;
const E6_TO: usize = 140;
const E6_NEXT: usize = 142;
const E6_ENTRY_PAD: usize = 148;
const IP6T_F_PROTO: u8 = 0x01;
const IP6T_TCP_RESET: u32 = 6;

/// A match or target inside an entry: absolute offset of its header, size, name.
#[derive(Debug, Clone)]
struct Ext {
    off: usize,
    size: usize,
    name: String,
}

/// One entry of the base blob, offsets absolute (from the start of the blob).
#[derive(Debug, Clone)]
struct Ent {
    off: usize,
    next: usize,
    matches: Vec<Ext>,
    target: Ext,
    /// The standard target's verdict, if this is a standard target.
    verdict: Option<i32>,
}

impl Ent {
    fn rel(&self) -> u32 {
        (self.off - HDR) as u32
    }
    fn match_named(&self, name: &str) -> Option<&Ext> {
        self.matches.iter().find(|m| m.name == name)
    }
    fn verdict_off(&self) -> usize {
        self.target.off + XT_HDR
    }
}

/// The blob being mutated plus the parsed view of the unmutated base.
#[derive(Debug)]
struct Blob {
    b: Vec<u8>,
    ents: Vec<Ent>,
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl Blob {
    fn u16(&self, off: usize) -> u16 {
        u16::from_ne_bytes([self.b[off], self.b[off + 1]])
    }
    fn u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes([
            self.b[off],
            self.b[off + 1],
            self.b[off + 2],
            self.b[off + 3],
        ])
    }
    fn set_u8(&mut self, off: usize, v: u8) {
        self.b[off] = v;
    }
    fn set_u16(&mut self, off: usize, v: u16) {
        self.b[off..off + 2].copy_from_slice(&v.to_ne_bytes());
    }
    fn set_u32(&mut self, off: usize, v: u32) {
        self.b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn set_i32(&mut self, off: usize, v: i32) {
        self.b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn hook_entry(&self, h: usize) -> u32 {
        self.u32(H_HOOK_ENTRY + 4 * h)
    }
    fn underflow(&self, h: usize) -> u32 {
        self.u32(H_UNDERFLOW + 4 * h)
    }
    fn size(&self) -> u32 {
        self.u32(H_SIZE)
    }

    /// Parses a SET_REPLACE blob far enough to find entries, matches and targets.
    fn replace(b: Vec<u8>) -> Result<Blob> {
        ensure!(b.len() >= HDR, "short blob");
        let mut blob = Blob {
            b,
            ents: Vec::new(),
        };
        let size = blob.size() as usize;
        ensure!(blob.b.len() == HDR + size, "blob length != 96 + size");
        let mut off = HDR;
        let (esz, to_at, next_at) = layout();
        while off < HDR + size {
            let to = blob.u16(off + to_at) as usize;
            let next = blob.u16(off + next_at) as usize;
            ensure!(next >= esz && to >= esz && to < next, "bad entry at {off}");
            let mut matches = Vec::new();
            let mut m = off + esz;
            while m < off + to {
                let size = blob.u16(m) as usize;
                ensure!(size >= XT_HDR, "bad match at {m}");
                matches.push(Ext {
                    off: m,
                    size,
                    name: cstr(&blob.b[m + 2..m + 31]),
                });
                m += size;
            }
            let t = off + to;
            let target = Ext {
                off: t,
                size: blob.u16(t) as usize,
                name: cstr(&blob.b[t + 2..t + 31]),
            };
            let verdict = target.name.is_empty().then(|| blob.u32(t + XT_HDR) as i32);
            blob.ents.push(Ent {
                off,
                next,
                matches,
                target,
                verdict,
            });
            off += next;
        }
        Ok(blob)
    }

    fn ent(&self, i: usize) -> Result<Ent> {
        self.ents.get(i).cloned().context("no such entry")
    }
    fn last(&self) -> Result<Ent> {
        self.ents.last().cloned().context("no entries")
    }
    fn at_rel(&self, rel: u32) -> Result<Ent> {
        self.ents
            .iter()
            .find(|e| e.rel() == rel)
            .cloned()
            .context("no entry at offset")
    }
    /// The policy (underflow) entry of hook `h`.
    fn policy(&self, h: usize) -> Result<Ent> {
        self.at_rel(self.underflow(h))
    }
    fn with_match(&self, name: &str) -> Result<(Ent, Ext)> {
        self.ents
            .iter()
            .find_map(|e| e.match_named(name).map(|m| (e.clone(), m.clone())))
            .with_context(|| format!("no entry with match {name}"))
    }
    fn jumps(&self) -> Vec<Ent> {
        self.ents
            .iter()
            .filter(|e| e.verdict.is_some_and(|v| v >= 0))
            .cloned()
            .collect()
    }
    fn first_rule(&self) -> Result<Ent> {
        // The first entry of INPUT that is not the policy: a real rule.
        let e = self.at_rel(self.hook_entry(NF_INET_LOCAL_IN))?;
        ensure!(
            e.rel() != self.underflow(NF_INET_LOCAL_IN),
            "INPUT has no rule"
        );
        Ok(e)
    }

    /// Inserts `insert` and removes `remove` bytes at absolute `at`, inside entry `e` (before its
    /// end), and fixes every offset that points past `at`: the entry's next_offset (and
    /// target_offset when `at` is before the target), the header's size, hook entries,
    /// underflows and jump verdicts. This keeps the blob well-formed apart from the one thing
    /// the mutation means to break.
    fn splice(&mut self, e: &Ent, at: usize, remove: usize, insert: &[u8]) -> Result<()> {
        ensure!(
            at >= e.off && at + remove <= e.off + e.next,
            "splice outside entry"
        );
        let delta = insert.len() as i64 - remove as i64;
        // Every offset in a valid base points at an entry start, so exactly those past the
        // modified entry move (an insertion at its very end moves the next entry too).
        let fix = |v: u32, after: u32| -> u32 {
            if v != u32::MAX && v > after {
                (i64::from(v) + delta) as u32
            } else {
                v
            }
        };
        let at_rel = e.rel();
        for h in 0..5 {
            let (he, uf) = (self.hook_entry(h), self.underflow(h));
            self.set_u32(H_HOOK_ENTRY + 4 * h, fix(he, at_rel));
            self.set_u32(H_UNDERFLOW + 4 * h, fix(uf, at_rel));
        }
        for j in self.jumps() {
            let v = j.verdict.context("jump")? as u32;
            self.set_u32(j.verdict_off(), fix(v, at_rel));
        }
        let size = (i64::from(self.size()) + delta) as u32;
        self.set_u32(H_SIZE, size);
        let (_, to_at, next_at) = layout();
        self.set_u16(e.off + next_at, (e.next as i64 + delta) as u16);
        if at < e.target.off {
            self.set_u16(
                e.off + to_at,
                ((e.target.off - e.off) as i64 + delta) as u16,
            );
        }
        self.b.splice(at..at + remove, insert.iter().copied());
        Ok(())
    }
}

type MutFn = fn(&mut Blob) -> Result<()>;

/// One negative (or deliberately accepted) case.
struct Mutation {
    name: &'static str,
    base: &'static str,
    kind: &'static str,
    setup: &'static str,
    desc: &'static str,
    f: MutFn,
}

macro_rules! m {
    ($name:literal, $base:literal, $desc:literal, $f:expr) => {
        Mutation {
            name: $name,
            base: $base,
            kind: "replace",
            setup: "initial",
            desc: $desc,
            f: $f,
        }
    };
    ($name:literal, $base:literal, $kind:literal, $setup:literal, $desc:literal, $f:expr) => {
        Mutation {
            name: $name,
            base: $base,
            kind: $kind,
            setup: $setup,
            desc: $desc,
            f: $f,
        }
    };
}

const IPT_INV_PROTO: u8 = 0x40;
const IPT_INV_SRCIP: u8 = 0x08;

fn set_name(b: &mut Blob, off: usize, len: usize, name: &[u8]) {
    b.b[off..off + len].fill(0);
    b.b[off..off + name.len()].copy_from_slice(name);
}

// Payload layouts (include/uapi/linux/netfilter/xt_conntrack.h, xt_state.h, xt_LOG.h,
// netfilter_ipv4/ipt_REJECT.h): xt_conntrack_mtinfo3 is 164 bytes (state_mask u16 at 150,
// status_mask u16 at 152, the four *_port_high at 154..162, tail padding 162..164; match_size
// 200); mtinfo2 is mtinfo3 cut after status_mask (154) plus 2 bytes of padding (156, match_size
// 192); mtinfo1 has u8 state_mask/status_mask at 150/151 (152, match_size 184); xt_state_info
// is a u32 (match_size 40); ipt_reject_info a u32 `with` (target_size 40); xt_log_info is
// level u8, logflags u8, prefix[30] (target_size 64).
const CT_STATE_MASK: usize = 150;
const CT_STATUS_MASK: usize = 152;
const LOG_PREFIX: usize = 2;
const LOG_PREFIX_LEN: usize = 30;
const IPT_TCP_RESET: u32 = 7;

/// The first entry whose target is `name` and satisfies `pred`.
fn with_target(b: &Blob, name: &str, pred: impl Fn(&Blob, &Ent) -> bool) -> Result<Ent> {
    b.ents
        .iter()
        .find(|e| e.target.name == name && pred(b, e))
        .cloned()
        .with_context(|| format!("no entry with target {name}"))
}

/// The first match called `name` whose payload satisfies `pred`.
fn match_named(b: &Blob, name: &str, pred: impl Fn(&Blob, usize) -> bool) -> Result<(Ent, Ext)> {
    b.ents
        .iter()
        .find_map(|e| {
            e.matches
                .iter()
                .find(|m| m.name == name && pred(b, m.off + XT_HDR))
                .map(|m| (e.clone(), m.clone()))
        })
        .with_context(|| format!("no {name} match"))
}

// xt_rateinfo: avg u32 at 0, burst u32 at 4, prev u64 at 8, credit 16, credit_cap 20, cost 24,
// master u64 at 32 (40 bytes). xt_addrtype_info_v1: source u16, dest u16, flags u32 (8 bytes).
// xt_owner_match_info: uid_min, uid_max, gid_min, gid_max u32, match u8 at 16, invert u8 at 17.
const ADDRTYPE_LIMIT_IN: u32 = 4;
const ADDRTYPE_LIMIT_OUT: u32 = 8;
const OWNER_UID: u8 = 1;

/// The `-p tcp -j REJECT --reject-with tcp-reset` rule without a tcp match (so that only
/// REJECT looks at the protocol).
fn tcp_reset_rule(b: &Blob) -> Result<Ent> {
    with_target(b, "REJECT", |b, e| {
        e.matches.is_empty() && b.u32(e.target.off + XT_HDR) == IPT_TCP_RESET
    })
}

/// The first conntrack match that only tests the state (no ports, so any revision's layout
/// reads it the same way).
fn ctstate_match(b: &Blob) -> Result<(Ent, Ext)> {
    b.ents
        .iter()
        .find_map(|e| {
            e.matches
                .iter()
                .find(|m| m.name == "conntrack" && b.u16(m.off + XT_HDR + 146) & 0x1 != 0)
                .map(|m| (e.clone(), m.clone()))
        })
        .context("no conntrack --ctstate match")
}

/// Rewrites the first --ctstate match (revision 3) into `revision` with `payload_len` bytes of
/// payload (match_size 32 + XT_ALIGN(payload_len)): bytes past the new size are cut, offsets
/// fixed; revision 1 gets its u8 masks.
fn ct_to_revision(b: &mut Blob, revision: u8, keep: usize) -> Result<()> {
    let (e, m) = ctstate_match(b)?;
    ensure!(m.size == XT_HDR + 168, "not a revision 3 match");
    let p = m.off + XT_HDR;
    let (state, status) = (b.u16(p + CT_STATE_MASK), b.u16(p + CT_STATUS_MASK));
    b.splice(&e, p + keep, 168 - keep, &[])?;
    b.set_u16(m.off, (XT_HDR + keep) as u16);
    b.set_u8(m.off + 31, revision);
    if revision == 1 {
        b.set_u8(p + CT_STATE_MASK, state as u8);
        b.set_u8(p + CT_STATE_MASK + 1, status as u8);
    } else {
        // Revision 2's tail padding (where revision 3 keeps origsrc_port_high).
        b.b[p + 154..p + 156].fill(0);
    }
    Ok(())
}

/// Rewrites the first --ctstate match into a "state" match of `revision` with a `payload`-byte
/// payload whose first u32 is the state mask. Returns the match's offset.
fn ct_to_state(b: &mut Blob, revision: u8, payload: usize) -> Result<usize> {
    let (e, m) = ctstate_match(b)?;
    let p = m.off + XT_HDR;
    let state = u32::from(b.u16(p + CT_STATE_MASK));
    b.splice(&e, p + payload, m.size - XT_HDR - payload, &[])?;
    b.b[p..p + payload].fill(0);
    b.set_u32(p, state);
    b.set_u16(m.off, (XT_HDR + payload) as u16);
    set_name(b, m.off + 2, 29, b"state");
    b.set_u8(m.off + 31, revision);
    Ok(m.off)
}

fn mutations() -> Vec<Mutation> {
    vec![
        // Controls: the unmutated base must be accepted, or the harness is wrong.
        m!("control_empty", "empty", "unmutated base blob (control, must be accepted)", |_| Ok(())),
        m!("control_nested_jumps", "nested_jumps", "unmutated base blob (control)", |_| Ok(())),
        m!("control_multiport", "multiport", "unmutated base blob (control)", |_| Ok(())),
        // Header and lengths.
        m!("header_short", "empty", "blob cut to 80 bytes, shorter than ipt_replace (oracle pads the kernel's 96-byte read with zeros)", |b| { b.b.truncate(80); Ok(()) }),
        m!("blob_truncated", "empty", "last 8 bytes cut: optlen < 96 + size", |b| { let n = b.b.len() - 8; b.b.truncate(n); Ok(()) }),
        m!("blob_trailing_bytes", "empty", "8 zero bytes appended after the entries: optlen > 96 + size", |b| { b.b.extend_from_slice(&[0; 8]); Ok(()) }),
        m!("size_larger", "empty", "size += 8 with 8 zero bytes appended: a trailing partial entry", |b| { let s = b.size(); b.set_u32(H_SIZE, s + 8); b.b.extend_from_slice(&[0; 8]); Ok(()) }),
        m!("size_one_entry_short", "empty", "size and blob cut by the last entry (ERROR): num_entries no longer matches", |b| { let l = b.last()?; let s = b.size(); b.set_u32(H_SIZE, s - l.next as u32); b.b.truncate(l.off); Ok(()) }),
        m!("size_huge", "empty", "size = 0x7ffffff0 (oversized request), blob unchanged", |b| { b.set_u32(H_SIZE, 0x7fff_fff0); Ok(()) }),
        m!("size_max", "empty", "size = 0xffffffff (overflow of 96 + size), blob unchanged", |b| { b.set_u32(H_SIZE, u32::MAX); Ok(()) }),
        m!("num_entries_plus1", "empty", "num_entries one more than the entries present", |b| { let n = b.u32(H_NUM_ENTRIES); b.set_u32(H_NUM_ENTRIES, n + 1); Ok(()) }),
        m!("num_entries_minus1", "empty", "num_entries one less than the entries present", |b| { let n = b.u32(H_NUM_ENTRIES); b.set_u32(H_NUM_ENTRIES, n - 1); Ok(()) }),
        m!("num_entries_huge", "empty", "num_entries = 0x08000001 (more entry offsets than XT_MAX_TABLE_SIZE allows)", |b| { b.set_u32(H_NUM_ENTRIES, 0x0800_0001); Ok(()) }),
        m!("num_entries_zero", "empty", "num_entries = 0 with the entries present", |b| { b.set_u32(H_NUM_ENTRIES, 0); Ok(()) }),
        m!("unreachable_jump_past_end", "user_chains", "the unreachable chain-end RETURN of ssh (after -j DROP) jumps past the end: the kernel only follows reachable jumps", |b| { let ssh_drop = b.ents.iter().position(|e| e.rel() > b.underflow(NF_INET_LOCAL_OUT) && e.verdict == Some(-1)).context("no DROP in a user chain")?; let e = b.ent(ssh_drop + 1)?; ensure!(e.verdict == Some(-5), "not a RETURN"); let s = b.size(); b.set_u32(e.verdict_off(), s + 1000); Ok(()) }),
        m!("unreachable_jump_mid_entry", "user_chains", "the unreachable chain-end RETURN of ssh jumps into the middle of an entry", |b| { let ssh_drop = b.ents.iter().position(|e| e.rel() > b.underflow(NF_INET_LOCAL_OUT) && e.verdict == Some(-1)).context("no DROP in a user chain")?; let e = b.ent(ssh_drop + 1)?; b.set_u32(e.verdict_off(), 8); Ok(()) }),
        m!("unreachable_bad_verdict", "user_chains", "the unreachable chain-end RETURN of ssh gets verdict -10", |b| { let ssh_drop = b.ents.iter().position(|e| e.rel() > b.underflow(NF_INET_LOCAL_OUT) && e.verdict == Some(-1)).context("no DROP in a user chain")?; let e = b.ent(ssh_drop + 1)?; b.set_i32(e.verdict_off(), -10); Ok(()) }),
        m!("unreachable_self_loop", "user_chains", "the unreachable chain-end RETURN of ssh jumps to itself", |b| { let ssh_drop = b.ents.iter().position(|e| e.rel() > b.underflow(NF_INET_LOCAL_OUT) && e.verdict == Some(-1)).context("no DROP in a user chain")?; let e = b.ent(ssh_drop + 1)?; b.set_u32(e.verdict_off(), e.rel()); Ok(()) }),
        m!("num_counters_plus1", "empty", "num_counters = current entries + 1", |b| { let n = b.u32(H_NUM_COUNTERS); b.set_u32(H_NUM_COUNTERS, n + 1); Ok(()) }),
        m!("num_counters_minus1", "user_chains", "num_counters = current entries - 1 (valid new table)", |b| { let n = b.u32(H_NUM_COUNTERS); b.set_u32(H_NUM_COUNTERS, n - 1); Ok(()) }),
        m!("num_counters_zero", "empty", "num_counters = 0", |b| { b.set_u32(H_NUM_COUNTERS, 0); Ok(()) }),
        m!("num_counters_huge", "empty", "num_counters = 0x08000000 (>= INT_MAX / 16)", |b| { b.set_u32(H_NUM_COUNTERS, 0x0800_0000); Ok(()) }),
        // Entry offsets.
        m!("next_offset_too_small", "empty", "entry 0 next_offset = 112 (< ipt_entry + xt_entry_target)", |b| { let e = b.ent(0)?; b.set_u16(e.off + 90, 112); Ok(()) }),
        m!("next_offset_zero", "empty", "entry 1 next_offset = 0", |b| { let e = b.ent(1)?; b.set_u16(e.off + 90, 0); Ok(()) }),
        m!("next_offset_misaligned", "empty", "entry 0 next_offset += 4: entry 1 starts misaligned", |b| { let e = b.ent(0)?; b.set_u16(e.off + 90, e.next as u16 + 4); Ok(()) }),
        m!("next_offset_past_end", "empty", "last entry next_offset += 8: ends past size", |b| { let e = b.last()?; b.set_u16(e.off + 90, e.next as u16 + 8); Ok(()) }),
        m!("target_offset_in_entry_header", "empty", "entry 0 target_offset = 104 (< sizeof ipt_entry)", |b| { let e = b.ent(0)?; b.set_u16(e.off + 88, 104); Ok(()) }),
        m!("target_offset_past_next", "empty", "entry 0 target_offset = next_offset - 8: target header does not fit", |b| { let e = b.ent(0)?; b.set_u16(e.off + 88, e.next as u16 - 8); Ok(()) }),
        m!("target_offset_misaligned", "tcp_ports", "rule 0 target_offset -= 4 (lands inside the tcp match)", |b| { let e = b.first_rule()?; b.set_u16(e.off + 88, (e.target.off - e.off - 4) as u16); Ok(()) }),
        m!("target_size_too_small", "empty", "entry 0 standard target_size = 32 (no room for the verdict)", |b| { let e = b.ent(0)?; b.set_u16(e.target.off, 32); Ok(()) }),
        m!("target_size_past_next", "empty", "entry 0 target_size = 48, beyond next_offset", |b| { let e = b.ent(0)?; b.set_u16(e.target.off, 48); Ok(()) }),
        m!("standard_target_size_48", "empty", "entry 0 standard target grown to 48 bytes (8 inserted, offsets fixed): wrong size for STANDARD", |b| { let e = b.ent(0)?; b.splice(&e, e.off + e.next, 0, &[0; 8])?; b.set_u16(e.target.off, 48); Ok(()) }),
        m!("error_target_size_72", "empty", "final ERROR target grown to 72 bytes (offsets fixed): wrong size for ERROR", |b| { let e = b.last()?; b.splice(&e, e.off + e.next, 0, &[0; 8])?; b.set_u16(e.target.off, 72); Ok(()) }),
        // Hooks and underflows.
        m!("hook_entry_mid_entry", "empty", "hook_entry[INPUT] += 8: not an entry start", |b| { let v = b.hook_entry(NF_INET_LOCAL_IN); b.set_u32(H_HOOK_ENTRY + 4, v + 8); Ok(()) }),
        m!("hook_entry_past_end", "empty", "hook_entry[FORWARD] = size + 112", |b| { let s = b.size(); b.set_u32(H_HOOK_ENTRY + 8, s + 112); Ok(()) }),
        m!("hook_entry_missing", "empty", "hook_entry[OUTPUT] = 0xffffffff", |b| { b.set_u32(H_HOOK_ENTRY + 12, u32::MAX); Ok(()) }),
        m!("underflow_mid_entry", "empty", "underflow[INPUT] += 8: not an entry start", |b| { let v = b.underflow(NF_INET_LOCAL_IN); b.set_u32(H_UNDERFLOW + 4, v + 8); Ok(()) }),
        m!("underflow_missing", "empty", "underflow[FORWARD] = 0xffffffff", |b| { b.set_u32(H_UNDERFLOW + 8, u32::MAX); Ok(()) }),
        m!("underflow_conditional_src", "empty", "INPUT policy entry gets -s 1.2.3.4/32: not unconditional", |b| { let e = b.policy(NF_INET_LOCAL_IN)?; b.b[e.off..e.off + 4].copy_from_slice(&[1, 2, 3, 4]); b.b[e.off + 8..e.off + 12].copy_from_slice(&[255; 4]); Ok(()) }),
        m!("underflow_inverted_only", "empty", "INPUT policy entry invflags = IPT_INV_SRCIP with zero address/mask: ip part not all zero", |b| { let e = b.policy(NF_INET_LOCAL_IN)?; b.set_u8(e.off + 83, IPT_INV_SRCIP); Ok(()) }),
        m!("underflow_proto", "empty", "INPUT policy entry proto = 6", |b| { let e = b.policy(NF_INET_LOCAL_IN)?; b.set_u16(e.off + 80, 6); Ok(()) }),
        m!("underflow_with_match", "empty", "INPUT policy entry gets a comment match (288 bytes inserted, offsets fixed)", |b| { let e = b.policy(NF_INET_LOCAL_IN)?; let mut mt = vec![0u8; 288]; mt[..2].copy_from_slice(&288u16.to_ne_bytes()); mt[2..9].copy_from_slice(b"comment"); b.splice(&e, e.off + ENTRY, 0, &mt)?; Ok(()) }),
        m!("underflow_return", "empty", "INPUT policy verdict = XT_RETURN (-5)", |b| { let e = b.policy(NF_INET_LOCAL_IN)?; b.set_i32(e.verdict_off(), -5); Ok(()) }),
        m!("underflow_queue", "empty", "OUTPUT policy verdict = -4 (NF_QUEUE)", |b| { let e = b.policy(NF_INET_LOCAL_OUT)?; b.set_i32(e.verdict_off(), -4); Ok(()) }),
        m!("underflow_jump", "empty", "FORWARD policy verdict = jump to the OUTPUT policy", |b| { let e = b.policy(NF_INET_FORWARD)?; let o = b.underflow(NF_INET_LOCAL_OUT); b.set_u32(e.verdict_off(), o); Ok(()) }),
        m!("underflow_error_entry", "empty", "underflow[OUTPUT] = the final ERROR entry", |b| { let l = b.last()?; b.set_u32(H_UNDERFLOW + 12, l.rel()); Ok(()) }),
        m!("hooks_duplicate", "empty", "hook_entry[INPUT] = underflow[INPUT] = the FORWARD policy entry (two hooks share an entry)", |b| { let v = b.underflow(NF_INET_FORWARD); b.set_u32(H_HOOK_ENTRY + 4, v); b.set_u32(H_UNDERFLOW + 4, v); Ok(()) }),
        m!("hooks_unsorted", "empty", "hook_entry and underflow of INPUT and OUTPUT swapped (INPUT after OUTPUT)", |b| { let (hi, ui, ho, uo) = (b.hook_entry(1), b.underflow(1), b.hook_entry(3), b.underflow(3)); b.set_u32(H_HOOK_ENTRY + 4, ho); b.set_u32(H_UNDERFLOW + 4, uo); b.set_u32(H_HOOK_ENTRY + 12, hi); b.set_u32(H_UNDERFLOW + 12, ui); Ok(()) }),
        // Table identity.
        m!("valid_hooks_plus_prerouting", "empty", "valid_hooks |= PREROUTING with hook_entry/underflow[0] = INPUT's (a duplicate hook entry, and filter has no such hook)", |b| { let (he, uf) = (b.hook_entry(1), b.underflow(1)); b.set_u32(H_HOOK_ENTRY, he); b.set_u32(H_UNDERFLOW, uf); let v = b.u32(H_VALID_HOOKS); b.set_u32(H_VALID_HOOKS, v | 1); Ok(()) }),
        m!("valid_hooks_minus_forward", "empty", "valid_hooks without FORWARD (0x0a)", |b| { b.set_u32(H_VALID_HOOKS, 0x0a); Ok(()) }),
        m!("valid_hooks_zero", "empty", "valid_hooks = 0", |b| { b.set_u32(H_VALID_HOOKS, 0); Ok(()) }),
        m!("table_unknown", "empty", "table name \"nosuchtable\"", |b| { set_name(b, 0, 32, b"nosuchtable"); Ok(()) }),
        m!("table_name_unterminated", "empty", "table name = 32 x 'f', no NUL", |b| { b.b[..32].fill(b'f'); Ok(()) }),
        m!("table_nat", "empty", "table name \"nat\" with filter's hooks", |b| { set_name(b, 0, 32, b"nat"); Ok(()) }),
        m!("table_name_case", "empty", "table name \"FILTER\"", |b| { set_name(b, 0, 32, b"FILTER"); Ok(()) }),
        // Jumps and verdicts.
        m!("jump_mid_entry", "user_chains", "first jump verdict += 8: not an entry start", |b| { let j = b.jumps().first().cloned().context("no jump")?; let v = j.verdict.context("v")?; b.set_i32(j.verdict_off(), v + 8); Ok(()) }),
        m!("jump_past_end", "user_chains", "first jump verdict = size + 112", |b| { let j = b.jumps().first().cloned().context("no jump")?; let s = b.size(); b.set_u32(j.verdict_off(), s + 112); Ok(()) }),
        m!("jump_into_last_entry_tail", "user_chains", "first jump verdict = size - 8 (inside the ERROR entry)", |b| { let j = b.jumps().first().cloned().context("no jump")?; let s = b.size(); b.set_u32(j.verdict_off(), s - 8); Ok(()) }),
        m!("jump_to_offset_0", "user_chains", "INPUT rule 0 (offset 0) jumps to itself: verdict 0, which is no valid verdict (a jump to offset 0 cannot be expressed)", |b| { let j = b.jumps().first().cloned().context("no jump")?; ensure!(j.rel() == 0, "first jump not at 0"); b.set_u32(j.verdict_off(), 0); Ok(()) }),
        m!("jump_self_loop", "user_chains", "INPUT rule 1 (-j web) jumps to itself: loop", |b| { let j = b.jumps().get(1).cloned().context("no 2nd jump")?; ensure!(j.rel() != 0, "jump at 0"); b.set_u32(j.verdict_off(), j.rel()); Ok(()) }),
        m!("jump_to_base_chain_rule", "user_chains", "ssh chain rule (-j DROP) jumps to INPUT rule 1 (-j web)", |b| { let target = b.jumps().get(1).cloned().context("no 2nd jump")?.rel(); let e = b.ents.iter().find(|e| e.rel() > b.underflow(NF_INET_LOCAL_OUT) && e.verdict == Some(-1)).cloned().context("no DROP in a user chain")?; b.set_u32(e.verdict_off(), target); Ok(()) }),
        m!("jump_to_next_entry", "tcp_ports", "rule 0 (-j ACCEPT) becomes a jump to the very next entry", |b| { let e = b.first_rule()?; let n = e.rel() + e.next as u32; b.set_u32(e.verdict_off(), n); Ok(()) }),
        m!("jump_chain_loop", "nested_jumps", "last jump (level3 -> shared) retargeted to level1: level1 -> level3 -> level1 loop", |b| { let js = b.jumps(); let first = js.first().context("no jump")?.verdict.context("v")?; let last = js.last().context("no jump")?.clone(); b.set_i32(last.verdict_off(), first); Ok(()) }),
        m!("jump_to_error_head", "user_chains", "first jump verdict = the chain's ERROR head entry (instead of its first rule)", |b| { let j = b.jumps().first().cloned().context("no jump")?; let v = j.verdict.context("v")? as u32; let head = b.ents.iter().rev().find(|e| e.rel() < v).cloned().context("no head")?; b.set_u32(j.verdict_off(), head.rel()); Ok(()) }),
        m!("verdict_minus10", "tcp_ports", "rule 0 verdict = -10", |b| { let e = b.first_rule()?; b.set_i32(e.verdict_off(), -10); Ok(()) }),
        m!("verdict_int_min", "tcp_ports", "rule 0 verdict = INT_MIN", |b| { let e = b.first_rule()?; b.set_i32(e.verdict_off(), i32::MIN); Ok(()) }),
        m!("verdict_stolen", "tcp_ports", "rule 0 verdict = -3 (NF_STOLEN)", |b| { let e = b.first_rule()?; b.set_i32(e.verdict_off(), -3); Ok(()) }),
        m!("verdict_queue", "tcp_ports", "rule 0 verdict = -4 (NF_QUEUE)", |b| { let e = b.first_rule()?; b.set_i32(e.verdict_off(), -4); Ok(()) }),
        m!("verdict_repeat", "tcp_ports", "rule 0 verdict = -5 (XT_RETURN, valid in a base-chain rule)", |b| { let e = b.first_rule()?; b.set_i32(e.verdict_off(), -5); Ok(()) }),
        m!("verdict_nf_max", "tcp_ports", "rule 0 verdict = -7 (-NF_MAX_VERDICT - 2)", |b| { let e = b.first_rule()?; b.set_i32(e.verdict_off(), -7); Ok(()) }),
        // Extensions: names, revisions, sizes.
        m!("match_unknown", "tcp_ports", "first tcp match renamed \"nosuchmatch\"", |b| { let (_, m) = b.with_match("tcp")?; set_name(b, m.off + 2, 29, b"nosuchmatch"); Ok(()) }),
        m!("target_unknown", "tcp_ports", "rule 0 target renamed \"NOSUCHTARGET\"", |b| { let e = b.first_rule()?; set_name(b, e.target.off + 2, 29, b"NOSUCHTARGET"); Ok(()) }),
        m!("target_error_in_rule", "tcp_ports", "rule 0 target renamed \"ERROR\" (40-byte target)", |b| { let e = b.first_rule()?; set_name(b, e.target.off + 2, 29, b"ERROR"); Ok(()) }),
        m!("match_revision_5", "tcp_ports", "tcp match revision 5", |b| { let (_, m) = b.with_match("tcp")?; b.set_u8(m.off + 31, 5); Ok(()) }),
        m!("target_revision_1", "tcp_ports", "rule 0 standard target revision 1", |b| { let e = b.first_rule()?; b.set_u8(e.target.off + 31, 1); Ok(()) }),
        m!("multiport_revision_0", "multiport", "multiport match revision 0 (exists, different layout)", |b| { let (_, m) = b.with_match("multiport")?; b.set_u8(m.off + 31, 0); Ok(()) }),
        m!("multiport_revision_2", "multiport", "multiport match revision 2", |b| { let (_, m) = b.with_match("multiport")?; b.set_u8(m.off + 31, 2); Ok(()) }),
        m!("iprange_revision_0", "iprange", "iprange match revision 0", |b| { let (_, m) = b.with_match("iprange")?; b.set_u8(m.off + 31, 0); Ok(()) }),
        m!("tcp_match_size_short", "tcp_ports", "tcp match shrunk to 40 bytes (8 removed, offsets fixed)", |b| { let (e, m) = b.with_match("tcp")?; b.splice(&e, m.off + m.size - 8, 8, &[])?; b.set_u16(m.off, (m.size - 8) as u16); Ok(()) }),
        m!("tcp_match_size_long", "tcp_ports", "tcp match grown to 56 bytes (8 inserted, offsets fixed)", |b| { let (e, m) = b.with_match("tcp")?; b.splice(&e, m.off + m.size, 0, &[0; 8])?; b.set_u16(m.off, (m.size + 8) as u16); Ok(()) }),
        m!("match_size_zero", "tcp_ports", "tcp match_size = 0", |b| { let (_, m) = b.with_match("tcp")?; b.set_u16(m.off, 0); Ok(()) }),
        m!("match_size_past_target", "tcp_ports", "tcp match_size += 8, overlapping the target", |b| { let (_, m) = b.with_match("tcp")?; b.set_u16(m.off, (m.size + 8) as u16); Ok(()) }),
        m!("comment_match_size_short", "comment", "comment match shrunk by 8 (offsets fixed)", |b| { let (e, m) = b.with_match("comment")?; b.splice(&e, m.off + m.size - 8, 8, &[])?; b.set_u16(m.off, (m.size - 8) as u16); Ok(()) }),
        // Extension checks against the ip part.
        m!("tcp_proto_udp", "tcp_ports", "tcp match on an entry with proto 17", |b| { let (e, _) = b.with_match("tcp")?; b.set_u16(e.off + 80, 17); Ok(()) }),
        m!("tcp_proto_any", "tcp_ports", "tcp match on an entry with proto 0", |b| { let (e, _) = b.with_match("tcp")?; b.set_u16(e.off + 80, 0); Ok(()) }),
        m!("tcp_proto_inverted", "tcp_ports", "tcp match on an entry with ! -p tcp (IPT_INV_PROTO)", |b| { let (e, _) = b.with_match("tcp")?; let v = b.b[e.off + 83]; b.set_u8(e.off + 83, v | IPT_INV_PROTO); Ok(()) }),
        m!("tcp_bad_invflags", "tcp_ports", "tcp invflags = 0x80 (outside XT_TCP_INV_MASK)", |b| { let (_, m) = b.with_match("tcp")?; b.set_u8(m.off + XT_HDR + 11, 0x80); Ok(()) }),
        m!("udp_proto_tcp", "udp", "udp match on an entry with proto 6", |b| { let (e, _) = b.with_match("udp")?; b.set_u16(e.off + 80, 6); Ok(()) }),
        m!("udp_bad_invflags", "udp", "udp invflags = 0x04 (outside XT_UDP_INV_MASK)", |b| { let (_, m) = b.with_match("udp")?; b.set_u8(m.off + XT_HDR + 8, 0x04); Ok(()) }),
        m!("icmp_proto_udp", "icmp", "icmp match on an entry with proto 17", |b| { let (e, _) = b.with_match("icmp")?; b.set_u16(e.off + 80, 17); Ok(()) }),
        m!("icmp_bad_invflags", "icmp", "icmp invflags = 0x02 (outside IPT_ICMP_INV)", |b| { let (_, m) = b.with_match("icmp")?; b.set_u8(m.off + XT_HDR + 3, 0x02); Ok(()) }),
        m!("multiport_count16", "multiport", "multiport count = 16 (> XT_MULTI_PORTS)", |b| { let (_, m) = b.with_match("multiport")?; b.set_u8(m.off + XT_HDR + 1, 16); Ok(()) }),
        m!("multiport_bad_flags", "multiport", "multiport flags = 3 (not SOURCE/DESTINATION/EITHER)", |b| { let (_, m) = b.with_match("multiport")?; b.set_u8(m.off + XT_HDR, 3); Ok(()) }),
        m!("multiport_proto_icmp", "multiport", "multiport on an entry with proto 1", |b| { let (e, _) = b.with_match("multiport")?; b.set_u16(e.off + 80, 1); Ok(()) }),
        m!("multiport_proto_inverted", "multiport", "multiport on an entry with IPT_INV_PROTO", |b| { let (e, _) = b.with_match("multiport")?; let v = b.b[e.off + 83]; b.set_u8(e.off + 83, v | IPT_INV_PROTO); Ok(()) }),
        m!("iprange_bad_flags", "iprange", "iprange flags = 0xf0 (no such bits)", |b| { let (_, m) = b.with_match("iprange")?; b.set_u8(m.off + XT_HDR + 64, 0xf0); Ok(()) }),
        m!("ip_bad_flags", "tcp_ports", "rule 0 ip.flags = 0x04 (outside IPT_F_MASK)", |b| { let e = b.first_rule()?; b.set_u8(e.off + 82, 0x04); Ok(()) }),
        m!("ip_bad_invflags", "tcp_ports", "rule 0 ip.invflags = 0x80 (outside IPT_INV_MASK)", |b| { let e = b.first_rule()?; b.set_u8(e.off + 83, 0x80); Ok(()) }),
        m!("ip_goto_flag_on_accept", "tcp_ports", "rule 0 (-j ACCEPT) with IPT_F_GOTO set", |b| { let e = b.first_rule()?; b.set_u8(e.off + 82, 0x02); Ok(()) }),
        m!("comment_unterminated", "comment", "comment text filled to 256 bytes without NUL", |b| { let (_, m) = b.with_match("comment")?; b.b[m.off + XT_HDR..m.off + XT_HDR + 256].fill(b'x'); Ok(()) }),
        m!("error_name_unterminated", "empty", "final ERROR target's errorname filled with 32 'x', no NUL", |b| { let e = b.last()?; b.b[e.target.off + XT_HDR..e.target.off + XT_HDR + 32].fill(b'x'); Ok(()) }),
        m!("match_name_unterminated", "tcp_ports", "tcp match name = 29 x 'x', no NUL", |b| { let (_, m) = b.with_match("tcp")?; b.b[m.off + 2..m.off + 31].fill(b'x'); Ok(()) }),
        m!("target_name_unterminated", "tcp_ports", "rule 0 target name = 29 x 'x', no NUL", |b| { let e = b.first_rule()?; b.b[e.target.off + 2..e.target.off + 31].fill(b'x'); Ok(()) }),
        m!("table_header_only", "empty", "size = 0, num_entries = 0, no entries", |b| { b.set_u32(H_SIZE, 0); b.set_u32(H_NUM_ENTRIES, 0); b.b.truncate(HDR); Ok(()) }),
        m!("jump_to_final_error", "user_chains", "first jump verdict = the final ERROR entry", |b| { let j = b.jumps().first().cloned().context("no jump")?; let l = b.last()?; b.set_u32(j.verdict_off(), l.rel()); Ok(()) }),
        m!("entry_padded_after_target", "empty", "entry 0 gets 8 bytes after its standard target (next_offset += 8, offsets fixed)", |b| { let e = b.ent(0)?; b.splice(&e, e.off + e.next, 0, &[0; 8])?; Ok(()) }),
        m!("error_entry_padded", "empty", "final ERROR entry gets 8 bytes after its target (next_offset += 8)", |b| { let e = b.last()?; b.splice(&e, e.off + e.next, 0, &[0; 8])?; Ok(()) }),
        m!("tcp_entry_padded", "tcp_ports", "rule 0 (tcp match) gets 8 bytes after its standard target", |b| { let e = b.first_rule()?; b.splice(&e, e.off + e.next, 0, &[0; 8])?; Ok(()) }),
        // Values the kernel does not check (accepted): a validator must not refuse them.
        m!("multiport_pflag_last", "multiport", "multiport range flag set on the last port (pflags[count-1] = 1)", |b| { let (_, m) = b.with_match("multiport")?; let count = usize::from(b.b[m.off + XT_HDR + 1]); b.set_u8(m.off + XT_HDR + 32 + count - 1, 1); Ok(()) }),
        m!("multiport_pflags_consecutive", "multiport", "multiport pflags[0] and pflags[1] both set (a range flag on a range end)", |b| { let (_, m) = b.with_match("multiport")?; b.set_u8(m.off + XT_HDR + 32, 1); b.set_u8(m.off + XT_HDR + 33, 1); Ok(()) }),
        m!("multiport_range_inverted", "multiport", "multiport range 2047:1024 (start > end) in the --sports 1024:2047,... rule", |b| { let (_, m) = b.ents.iter().filter_map(|e| e.match_named("multiport").map(|m| (e.clone(), m.clone()))).nth(1).context("no 2nd multiport")?; ensure!(b.b[m.off + XT_HDR + 32] == 1, "first port is not a range"); b.set_u16(m.off + XT_HDR + 2, 2047); b.set_u16(m.off + XT_HDR + 4, 1024); Ok(()) }),
        m!("multiport_range_single_port", "multiport", "multiport range 3000:3000 (start == end) in the --sports rule", |b| { let (_, m) = b.ents.iter().filter_map(|e| e.match_named("multiport").map(|m| (e.clone(), m.clone()))).nth(1).context("no 2nd multiport")?; b.set_u16(m.off + XT_HDR + 2, 3000); b.set_u16(m.off + XT_HDR + 4, 3000); Ok(()) }),
        m!("icmp_code_range_inverted", "icmp", "icmp code min 5 > max 1", |b| { let (_, m) = b.with_match("icmp")?; b.set_u8(m.off + XT_HDR + 1, 5); b.set_u8(m.off + XT_HDR + 2, 1); Ok(()) }),
        m!("udp_port_range_inverted", "udp", "udp dport range 100:50 (min > max)", |b| { let (_, m) = b.with_match("udp")?; b.set_u16(m.off + XT_HDR + 4, 100); b.set_u16(m.off + XT_HDR + 6, 50); Ok(()) }),
        m!("iprange_range_inverted", "iprange", "iprange src min 10.0.0.50 > max 10.0.0.1", |b| { let (_, m) = b.with_match("iprange")?; b.b[m.off + XT_HDR..m.off + XT_HDR + 4].copy_from_slice(&[10, 0, 0, 50]); b.b[m.off + XT_HDR + 16..m.off + XT_HDR + 20].copy_from_slice(&[10, 0, 0, 1]); Ok(()) }),
        m!("ip_inv_proto_any", "protocols", "a rule with proto 0 and IPT_INV_PROTO (! -p all, matches nothing)", |b| { let e = b.ents.iter().find(|e| b.u16(e.off + 80) == 47).cloned().context("no -p 47 rule")?; b.set_u16(e.off + 80, 0); b.set_u8(e.off + 83, IPT_INV_PROTO); Ok(()) }),
        m!("iface_mask_without_name", "interfaces", "rule 0 (-i lo) with the name zeroed but the mask kept", |b| { let e = b.first_rule()?; b.b[e.off + 16..e.off + 32].fill(0); Ok(()) }),
        m!("iface_name_unterminated", "interfaces", "rule 0 (-i lo) iniface = 16 x 'a' with a full mask, no NUL", |b| { let e = b.first_rule()?; b.b[e.off + 16..e.off + 32].fill(b'a'); b.b[e.off + 48..e.off + 64].fill(0xff); Ok(()) }),
        // Fields the kernel ignores or overwrites: must be accepted.
        m!("counters_in_blob", "empty", "non-zero counters inside every entry (the kernel ignores them)", |b| { for e in b.ents.clone() { b.b[e.off + 96..e.off + 112].fill(0x11); } Ok(()) }),
        m!("comefrom_garbage", "empty", "comefrom = 0xdeadbeef in every entry (the kernel clears it)", |b| { for e in b.ents.clone() { b.set_u32(e.off + 92, 0xdead_beef); } Ok(()) }),
        m!("nfcache_garbage", "empty", "nfcache = 0xffffffff in every entry", |b| { for e in b.ents.clone() { b.set_u32(e.off + 84, u32::MAX); } Ok(()) }),
        m!("invalid_hook_offsets_garbage", "empty", "hook_entry/underflow of invalid hooks (PREROUTING, POSTROUTING) = 0x12345678", |b| { for h in [0, 4] { b.set_u32(H_HOOK_ENTRY + 4 * h, 0x1234_5678); b.set_u32(H_UNDERFLOW + 4 * h, 0x1234_5678); } Ok(()) }),
        // REJECT (ipt_REJECT.c): xt_check_target (size, .table "filter"), reject_tg_check.
        m!("control_reject", "reject", "unmutated base blob (control)", |_| Ok(())),
        m!("reject_tcp_reset_proto_any", "reject", "-p tcp -j REJECT --reject-with tcp-reset with the protocol cleared (proto 0)", |b| { let e = tcp_reset_rule(b)?; b.set_u16(e.off + 80, 0); Ok(()) }),
        m!("reject_tcp_reset_proto_udp", "reject", "-p tcp -j REJECT --reject-with tcp-reset with proto 17", |b| { let e = tcp_reset_rule(b)?; b.set_u16(e.off + 80, 17); Ok(()) }),
        m!("reject_tcp_reset_proto_inverted", "reject", "-p tcp -j REJECT --reject-with tcp-reset with IPT_INV_PROTO (! -p tcp)", |b| { let e = tcp_reset_rule(b)?; let v = b.b[e.off + 83]; b.set_u8(e.off + 83, v | IPT_INV_PROTO); Ok(()) }),
        m!("reject_tcp_reset_other_inversion", "reject", "-p tcp -j REJECT --reject-with tcp-reset with IPT_INV_SRCIP (only ! -p matters)", |b| { let e = tcp_reset_rule(b)?; b.set_u8(e.off + 83, IPT_INV_SRCIP); Ok(()) }),
        m!("reject_echo_reply", "reject", "a REJECT --reject-with icmp-host-unreachable changed to IPT_ICMP_ECHOREPLY (4)", |b| { let e = with_target(b, "REJECT", |b, e| b.u32(e.target.off + XT_HDR) == 1)?; b.set_u32(e.target.off + XT_HDR, 4); Ok(()) }),
        m!("reject_echo_reply_on_tcp", "reject", "the -p tcp tcp-reset REJECT changed to IPT_ICMP_ECHOREPLY (4)", |b| { let e = tcp_reset_rule(b)?; b.set_u32(e.target.off + XT_HDR, 4); Ok(()) }),
        m!("reject_with_unknown", "reject", "a REJECT with = 9 (past IPT_ICMP_ADMIN_PROHIBITED, not checked)", |b| { let e = with_target(b, "REJECT", |b, e| b.u32(e.target.off + XT_HDR) == 1)?; b.set_u32(e.target.off + XT_HDR, 9); Ok(()) }),
        m!("reject_with_max", "reject", "a REJECT with = 0xffffffff", |b| { let e = with_target(b, "REJECT", |b, e| b.u32(e.target.off + XT_HDR) == 1)?; b.set_u32(e.target.off + XT_HDR, u32::MAX); Ok(()) }),
        m!("reject_align_padding_garbage", "reject", "the 4 alignment bytes after a REJECT's with = 0xab (outside targetsize)", |b| { let e = tcp_reset_rule(b)?; b.b[e.target.off + XT_HDR + 4..e.target.off + XT_HDR + 8].fill(0xab); Ok(()) }),
        m!("reject_target_size_long", "reject", "a REJECT target grown to 48 bytes (8 inserted, offsets fixed)", |b| { let e = tcp_reset_rule(b)?; b.splice(&e, e.off + e.next, 0, &[0; 8])?; b.set_u16(e.target.off, 48); Ok(()) }),
        m!("reject_target_size_short", "reject", "a REJECT target cut to its 32-byte header (offsets fixed)", |b| { let e = tcp_reset_rule(b)?; b.splice(&e, e.target.off + XT_HDR, 8, &[])?; b.set_u16(e.target.off, 32); Ok(()) }),
        m!("reject_revision_1", "reject", "a REJECT target revision 1", |b| { let e = tcp_reset_rule(b)?; b.set_u8(e.target.off + 31, 1); Ok(()) }),
        m!("reject_in_security_table", "reject", "table name \"security\" (same hooks as filter; REJECT's .table is filter)", |b| { set_name(b, 0, 32, b"security"); Ok(()) }),
        // LOG (xt_LOG.c): log_tg_check.
        m!("control_log", "log", "unmutated base blob (control)", |_| Ok(())),
        m!("log_level_8", "log", "the first LOG target level = 8", |b| { let e = with_target(b, "LOG", |_, _| true)?; b.set_u8(e.target.off + XT_HDR, 8); Ok(()) }),
        m!("log_level_255", "log", "the first LOG target level = 255", |b| { let e = with_target(b, "LOG", |_, _| true)?; b.set_u8(e.target.off + XT_HDR, 255); Ok(()) }),
        m!("log_prefix_unterminated", "log", "the first LOG prefix = 30 x 'x', no NUL", |b| { let e = with_target(b, "LOG", |_, _| true)?; let p = e.target.off + XT_HDR + LOG_PREFIX; b.b[p..p + LOG_PREFIX_LEN].fill(b'x'); Ok(()) }),
        m!("log_prefix_last_byte_set", "log", "the first LOG prefix = \"ab\" NUL then 'x' up to the last byte (NUL early, last byte not NUL)", |b| { let e = with_target(b, "LOG", |_, _| true)?; let p = e.target.off + XT_HDR + LOG_PREFIX; b.b[p..p + LOG_PREFIX_LEN].fill(b'x'); b.b[p..p + 3].copy_from_slice(b"ab\0"); Ok(()) }),
        m!("log_prefix_garbage_after_nul", "log", "the first LOG prefix = \"ab\" NUL, 0xab bytes, NUL in the last byte", |b| { let e = with_target(b, "LOG", |_, _| true)?; let p = e.target.off + XT_HDR + LOG_PREFIX; b.b[p..p + LOG_PREFIX_LEN].fill(0xab); b.b[p..p + 3].copy_from_slice(b"ab\0"); b.b[p + LOG_PREFIX_LEN - 1] = 0; Ok(()) }),
        m!("log_flags_all", "log", "the first LOG logflags = 0xff (beyond XT_LOG_MASK, not checked)", |b| { let e = with_target(b, "LOG", |_, _| true)?; b.set_u8(e.target.off + XT_HDR + 1, 0xff); Ok(()) }),
        m!("log_target_size_long", "log", "the first LOG target grown to 72 bytes (8 inserted, offsets fixed)", |b| { let e = with_target(b, "LOG", |_, _| true)?; b.splice(&e, e.off + e.next, 0, &[0; 8])?; b.set_u16(e.target.off, 72); Ok(()) }),
        m!("log_target_size_short", "log", "the first LOG target cut to 56 bytes (last 8 prefix bytes removed, offsets fixed)", |b| { let e = with_target(b, "LOG", |_, _| true)?; b.splice(&e, e.off + e.next - 8, 8, &[])?; b.set_u16(e.target.off, 56); Ok(()) }),
        m!("log_revision_1", "log", "the first LOG target revision 1", |b| { let e = with_target(b, "LOG", |_, _| true)?; b.set_u8(e.target.off + 31, 1); Ok(()) }),
        // conntrack (xt_conntrack.c): no checks beyond xt_check_match's size; UNSPEC family.
        m!("control_conntrack", "conntrack", "unmutated base blob (control)", |_| Ok(())),
        m!("conntrack_revision_0", "conntrack", "the first --ctstate match revision 0 (no such revision)", |b| { let (_, m) = ctstate_match(b)?; b.set_u8(m.off + 31, 0); Ok(()) }),
        m!("conntrack_revision_4", "conntrack", "the first --ctstate match revision 4", |b| { let (_, m) = ctstate_match(b)?; b.set_u8(m.off + 31, 4); Ok(()) }),
        m!("conntrack_v3_as_revision_2", "conntrack", "the first --ctstate match (revision 3 payload, 168 bytes) relabelled revision 2", |b| { let (_, m) = ctstate_match(b)?; b.set_u8(m.off + 31, 2); Ok(()) }),
        m!("conntrack_v3_size_short", "conntrack", "the first --ctstate match (revision 3) cut to 160 payload bytes (offsets fixed)", |b| { let (e, m) = ctstate_match(b)?; b.splice(&e, m.off + m.size - 8, 8, &[])?; b.set_u16(m.off, (m.size - 8) as u16); Ok(()) }),
        m!("conntrack_revision_2", "conntrack", "the first --ctstate match rewritten as revision 2 (xt_conntrack_mtinfo2, match_size 192)", |b| ct_to_revision(b, 2, 160)),
        m!("conntrack_revision_1", "conntrack", "the first --ctstate match rewritten as revision 1 (xt_conntrack_mtinfo1, u8 masks, match_size 184)", |b| ct_to_revision(b, 1, 152)),
        m!("conntrack_flags_garbage", "conntrack", "the first --ctstate match with match_flags = invert_flags = 0xffff (not checked)", |b| { let (_, m) = ctstate_match(b)?; b.set_u16(m.off + XT_HDR + 146, 0xffff); b.set_u16(m.off + XT_HDR + 148, 0xffff); Ok(()) }),
        m!("conntrack_pad_garbage", "conntrack", "the first --ctstate match's C tail padding (payload 162..164) = 0xab", |b| { let (_, m) = ctstate_match(b)?; b.b[m.off + XT_HDR + 162..m.off + XT_HDR + 164].fill(0xab); Ok(()) }),
        m!("conntrack_align_padding_garbage", "conntrack", "the first --ctstate match's alignment bytes (payload 164..168, outside matchsize) = 0xab", |b| { let (_, m) = ctstate_match(b)?; b.b[m.off + XT_HDR + 164..m.off + XT_HDR + 168].fill(0xab); Ok(()) }),
        m!("conntrack_proto_inverted", "conntrack", "the first --ctstate rule with -p tcp inverted (conntrack has no .proto)", |b| { let (e, _) = ctstate_match(b)?; b.set_u16(e.off + 80, 6); b.set_u8(e.off + 83, IPT_INV_PROTO); Ok(()) }),
        // state (xt_state.c): iptables 1.8.9 sends -m state as conntrack revision 3; these
        // rewrite one into the "state" revision 0 match older iptables sends.
        m!("control_state", "state", "unmutated base blob (control)", |_| Ok(())),
        m!("state_revision_0", "state", "the first -m state match (conntrack revision 3) rewritten as \"state\" revision 0 (xt_state_info, match_size 40)", |b| ct_to_state(b, 0, 8).map(|_| ())),
        m!("state_revision_1", "state", "the first -m state match rewritten as \"state\" revision 1 (no such revision)", |b| ct_to_state(b, 1, 8).map(|_| ())),
        m!("state_size_long", "state", "the first -m state match rewritten as \"state\" revision 0 with a 16-byte payload", |b| ct_to_state(b, 0, 16).map(|_| ())),
        m!("state_mask_all", "state", "\"state\" revision 0 with statemask = 0xffffffff (not checked)", |b| { let m = ct_to_state(b, 0, 8)?; b.set_u32(m + XT_HDR, u32::MAX); Ok(()) }),
        // limit (xt_limit.c): limit_mt_check's ERANGE, and what it does not check.
        m!("control_limit", "limit", "unmutated base blob (control)", |_| Ok(())),
        m!("limit_burst_zero", "limit", "the first limit match with burst 0", |b| { let (_, m) = match_named(b, "limit", |_, _| true)?; b.set_u32(m.off + XT_HDR + 4, 0); Ok(()) }),
        m!("limit_overflow", "limit", "the first limit match as 1/day with burst 4 (avg * burst credits wrap below avg's)", |b| { let (_, m) = match_named(b, "limit", |_, _| true)?; b.set_u32(m.off + XT_HDR, 864_000_000); b.set_u32(m.off + XT_HDR + 4, 4); Ok(()) }),
        m!("limit_avg_zero", "limit", "the first limit match with avg 0 (no overflow: accepted)", |b| { let (_, m) = match_named(b, "limit", |_, _| true)?; b.set_u32(m.off + XT_HDR, 0); Ok(()) }),
        m!("limit_internal_garbage", "limit", "the first limit match with prev, credit and master = 0xab bytes, cost 0 (kernel-owned: accepted, shown as zeros)", |b| { let (_, m) = match_named(b, "limit", |_, _| true)?; let p = m.off + XT_HDR; b.b[p + 8..p + 20].fill(0xab); b.b[p + 28..p + 40].fill(0xab); Ok(()) }),
        m!("limit_cost_given", "limit", "the first limit match with cost 1 and credit_cap 7 (taken as given, shown as zeros)", |b| { let (_, m) = match_named(b, "limit", |_, _| true)?; b.set_u32(m.off + XT_HDR + 20, 7); b.set_u32(m.off + XT_HDR + 24, 1); Ok(()) }),
        m!("limit_revision_1", "limit", "the first limit match revision 1 (no such revision, family-independent)", |b| { let (_, m) = match_named(b, "limit", |_, _| true)?; b.set_u8(m.off + 31, 1); Ok(()) }),
        // addrtype (xt_addrtype.c): revision 1's checkentry.
        m!("control_addrtype", "addrtype", "unmutated base blob (control)", |_| Ok(())),
        m!("addrtype_both_ifaces", "addrtype", "the INPUT --limit-iface-in match also --limit-iface-out", |b| { let (_, m) = match_named(b, "addrtype", |b, p| b.u32(p + 4) & ADDRTYPE_LIMIT_IN != 0)?; let p = m.off + XT_HDR + 4; b.set_u32(p, b.u32(p) | ADDRTYPE_LIMIT_OUT); Ok(()) }),
        m!("addrtype_iface_out_in_input", "addrtype", "the INPUT --limit-iface-in match made --limit-iface-out", |b| { let (_, m) = match_named(b, "addrtype", |b, p| b.u32(p + 4) & ADDRTYPE_LIMIT_IN != 0)?; let p = m.off + XT_HDR + 4; b.set_u32(p, (b.u32(p) & !ADDRTYPE_LIMIT_IN) | ADDRTYPE_LIMIT_OUT); Ok(()) }),
        m!("addrtype_iface_in_in_output", "addrtype", "the OUTPUT --limit-iface-out match made --limit-iface-in", |b| { let (_, m) = match_named(b, "addrtype", |b, p| b.u32(p + 4) & ADDRTYPE_LIMIT_OUT != 0 && b.u16(p) != 0)?; let p = m.off + XT_HDR + 4; b.set_u32(p, (b.u32(p) & !ADDRTYPE_LIMIT_OUT) | ADDRTYPE_LIMIT_IN); Ok(()) }),
        m!("addrtype_flags_garbage", "addrtype", "the first addrtype match with flags 0xfffffff0 added (unknown bits not checked)", |b| { let (_, m) = match_named(b, "addrtype", |_, _| true)?; let p = m.off + XT_HDR + 4; b.set_u32(p, b.u32(p) | 0xffff_fff0); Ok(()) }),
        m!("addrtype_revision_0_size", "addrtype", "the first addrtype match relabelled revision 0 (12-byte struct, 8-byte payload)", |b| { let (_, m) = match_named(b, "addrtype", |_, _| true)?; b.set_u8(m.off + 31, 0); Ok(()) }),
        m!("addrtype_revision_2", "addrtype", "the first addrtype match revision 2 (no such revision, per-family)", |b| { let (_, m) = match_named(b, "addrtype", |_, _| true)?; b.set_u8(m.off + 31, 2); Ok(()) }),
        // owner (xt_owner.c): owner_check.
        m!("control_owner", "owner", "unmutated base blob (control)", |_| Ok(())),
        m!("owner_unknown_flag", "owner", "the first owner match with match |= 0x10", |b| { let (_, m) = match_named(b, "owner", |_, _| true)?; let p = m.off + XT_HDR + 16; b.set_u8(p, b.b[p] | 0x10); Ok(()) }),
        m!("owner_uid_reversed", "owner", "the --uid-owner 1000-2000 match as 3000-2000", |b| { let (_, m) = match_named(b, "owner", |b, p| b.u32(p) == 1000)?; b.set_u32(m.off + XT_HDR, 3000); Ok(()) }),
        m!("owner_uid_invalid", "owner", "the --uid-owner 1000-2000 match up to uid 4294967295 ((uid_t)-1 does not map)", |b| { let (_, m) = match_named(b, "owner", |b, p| b.u32(p) == 1000)?; b.set_u32(m.off + XT_HDR + 4, u32::MAX); Ok(()) }),
        m!("owner_gid_invalid_unused", "owner", "the --uid-owner 1000-2000 match with gid_max (uid)-1 but no GID flag (not checked)", |b| { let (_, m) = match_named(b, "owner", |b, p| b.u32(p) == 1000 && b.b[p + 16] == OWNER_UID)?; b.set_u32(m.off + XT_HDR + 12, u32::MAX); Ok(()) }),
        m!("owner_revision_0", "owner", "the first owner match revision 0 (no such revision, family-independent)", |b| { let (_, m) = match_named(b, "owner", |_, _| true)?; b.set_u8(m.off + 31, 0); Ok(()) }),
        // tcpmss (xt_tcpmss.c): no checkentry, `.proto = IPPROTO_TCP` (xt_check_match).
        m!("control_tcpmss", "tcpmss", "unmutated base blob (control)", |_| Ok(())),
        m!("tcpmss_proto_udp", "tcpmss", "the first tcpmss match on an entry with proto 17", |b| { let (e, _) = b.with_match("tcpmss")?; b.set_u16(e.off + 80, 17); Ok(()) }),
        m!("tcpmss_proto_any", "tcpmss", "the first tcpmss match on an entry with proto 0", |b| { let (e, _) = b.with_match("tcpmss")?; b.set_u16(e.off + 80, 0); Ok(()) }),
        m!("tcpmss_proto_inverted", "tcpmss", "the first tcpmss match on an entry with ! -p tcp (IPT_INV_PROTO)", |b| { let (e, _) = b.with_match("tcpmss")?; let v = b.b[e.off + 83]; b.set_u8(e.off + 83, v | IPT_INV_PROTO); Ok(()) }),
        m!("tcpmss_revision_1", "tcpmss", "the first tcpmss match revision 1 (no such revision, per-family)", |b| { let (_, m) = b.with_match("tcpmss")?; b.set_u8(m.off + 31, 1); Ok(()) }),
        m!("tcpmss_size_long", "tcpmss", "the first tcpmss match grown by 8 (offsets fixed)", |b| { let (e, m) = b.with_match("tcpmss")?; b.splice(&e, m.off + m.size, 0, &[0; 8])?; b.set_u16(m.off, (m.size + 8) as u16); Ok(()) }),
        m!("tcpmss_pad_garbage", "tcpmss", "the first tcpmss match's C padding (payload byte 5) = 0xab (copied back as given)", |b| { let (_, m) = b.with_match("tcpmss")?; b.set_u8(m.off + XT_HDR + 5, 0xab); Ok(()) }),
        m!("tcpmss_align_padding_garbage", "tcpmss", "the first tcpmss match's XT_ALIGN tail (payload 6..8) = 0xab", |b| { let (_, m) = b.with_match("tcpmss")?; b.b[m.off + XT_HDR + 6..m.off + XT_HDR + 8].fill(0xab); Ok(()) }),
        m!("tcpmss_invert_2", "tcpmss", "the first tcpmss match with invert = 2 (not checked)", |b| { let (_, m) = b.with_match("tcpmss")?; b.set_u8(m.off + XT_HDR + 4, 2); Ok(()) }),
        m!("tcpmss_range_inverted", "tcpmss", "the first tcpmss match with mss_min 1460 > mss_max 1 (not checked)", |b| { let (_, m) = b.with_match("tcpmss")?; b.set_u16(m.off + XT_HDR, 1460); b.set_u16(m.off + XT_HDR + 2, 1); Ok(()) }),
        // SET_ADD_COUNTERS (the base ruleset restored first, so the entry count is right).
        m!("addcnt_control", "tcp_ports", "add_counters", "restore", "unmutated ADD_COUNTERS blob (control)", |_| Ok(())),
        m!("addcnt_len_short", "tcp_ports", "add_counters", "restore", "last 16 bytes cut: length != 40 + 16 * num_counters", |b| { let n = b.b.len() - 16; b.b.truncate(n); Ok(()) }),
        m!("addcnt_len_long", "tcp_ports", "add_counters", "restore", "16 bytes appended: length != 40 + 16 * num_counters", |b| { b.b.extend_from_slice(&[0; 16]); Ok(()) }),
        m!("addcnt_count_plus1", "tcp_ports", "add_counters", "restore", "num_counters + 1 and 16 bytes appended: consistent, but not the table's entry count", |b| { let n = b.u32(32); b.set_u32(32, n + 1); b.b.extend_from_slice(&[0; 16]); Ok(()) }),
        m!("addcnt_zero_count", "tcp_ports", "add_counters", "restore", "num_counters = 0 and no counters (a consistent 40-byte request)", |b| { b.set_u32(32, 0); b.b.truncate(40); Ok(()) }),
        m!("addcnt_unknown_table", "tcp_ports", "add_counters", "restore", "table name \"nosuchtable\" (right length and count)", |b| { set_name(b, 0, 32, b"nosuchtable"); Ok(()) }),
        m!("addcnt_header_short", "tcp_ports", "add_counters", "restore", "blob cut to 20 bytes (shorter than xt_counters_info; oracle pads with zeros)", |b| { b.b.truncate(20); Ok(()) }),
    ]
}

/// Payload offsets (include/uapi/linux/netfilter_ipv6/*.h): ip6t_icmp invflags 3; ip6t_hl_info
/// mode 0; ip6t_frag flags 12, invflags 13; ip6t_ipv6header_info matchflags 0, invflags 1,
/// modeflag 2; ip6t_opts flags 4, invflags 5; ip6t_rt rt_type 0, flags 16, invflags 17;
/// ip6t_reject_info `with` 0 (IP6T_TCP_RESET 6, IP6T_ICMP6_ECHOREPLY 5); xt_log_info level 0.
fn mutations6() -> Vec<Mutation> {
    // the first rule of INPUT whose ip part sets a protocol and whose match is `name`
    fn p(b: &Blob, name: &str, pred: impl Fn(&Blob, usize) -> bool) -> Result<(Ent, usize)> {
        let (e, m) = match_named(b, name, pred)?;
        Ok((e, m.off + XT_HDR))
    }
    fn reset6(b: &Blob) -> Result<Ent> {
        with_target(b, "REJECT", |b, e| {
            e.matches.is_empty() && b.u32(e.target.off + XT_HDR) == IP6T_TCP_RESET
        })
    }
    vec![
        m!("control6_empty", "empty", "unmutated base blob (control, must be accepted)", |_| Ok(())),
        m!("control6_ipv6_ext", "ipv6_ext", "unmutated base blob (control)", |_| Ok(())),
        m!("control6_log_reject", "log_reject", "unmutated base blob (control)", |_| Ok(())),
        m!("control6_chains", "chains", "unmutated base blob (control)", |_| Ok(())),
        m!("ipv4_blob_as_ipv6", "../captured/empty", "iptables' empty filter table (112-byte ipt_entry) sent at IPPROTO_IPV6", |_| Ok(())),
        // Entry sizes: the IPv6 header is 168 bytes.
        m!("next_offset_ipv4_size", "empty", "entry 0 next_offset = 152 (112 + 40, an ipt_entry's size)", |b| { let e = b.ent(0)?; b.set_u16(e.off + E6_NEXT, 152); Ok(()) }),
        m!("next_offset_199", "empty", "entry 0 next_offset = 199 (< ip6t_entry + xt_entry_target)", |b| { let e = b.ent(0)?; b.set_u16(e.off + E6_NEXT, 199); Ok(()) }),
        m!("target_offset_112", "empty", "entry 0 target_offset = 112 (inside the 168-byte header)", |b| { let e = b.ent(0)?; b.set_u16(e.off + E6_TO, 112); Ok(()) }),
        m!("target_offset_160", "empty", "entry 0 target_offset = 160 (inside the header)", |b| { let e = b.ent(0)?; b.set_u16(e.off + E6_TO, 160); Ok(()) }),
        m!("target_offset_past_next6", "empty", "entry 0 target_offset = next_offset - 8", |b| { let e = b.ent(0)?; b.set_u16(e.off + E6_TO, e.next as u16 - 8); Ok(()) }),
        m!("next_offset_misaligned6", "empty", "entry 0 next_offset += 4", |b| { let e = b.ent(0)?; b.set_u16(e.off + E6_NEXT, e.next as u16 + 4); Ok(()) }),
        m!("match_size_past_target6", "protocols", "rule 0's tcp match_size += 8 (overruns the target)", |b| { let (_, m) = b.with_match("tcp")?; let s = b.u16(m.off); b.set_u16(m.off, s + 8); Ok(()) }),
        // ip6_checkentry.
        m!("flags_unknown_bit", "protocols", "rule 0 flags |= 0x08 (past IP6T_F_MASK)", |b| { let e = b.first_rule()?; let f = b.b[e.off + E6_FLAGS]; b.set_u8(e.off + E6_FLAGS, f | 0x08); Ok(()) }),
        m!("flags_all_known", "protocols", "rule 0 flags = 0x07 (PROTO|TOS|GOTO on a non-jump rule)", |b| { let e = b.first_rule()?; b.set_u8(e.off + E6_FLAGS, 0x07); Ok(()) }),
        m!("invflags_unknown_bit", "protocols", "rule 0 invflags |= 0x80 (past IP6T_INV_MASK)", |b| { let e = b.first_rule()?; b.set_u8(e.off + E6_INV, 0x80); Ok(()) }),
        m!("invflags_frag", "protocols", "rule 0 invflags = IP6T_INV_FRAG (0x20, known, meaningless)", |b| { let e = b.first_rule()?; b.set_u8(e.off + E6_INV, 0x20); Ok(()) }),
        m!("tos_set", "protocols", "rule 0 tos = 0xb8 (not checked)", |b| { let e = b.first_rule()?; b.set_u8(e.off + E6_TOS, 0xb8); Ok(()) }),
        m!("ip6_pad_set", "protocols", "rule 0 ip6t_ip6 padding bytes = 0xaa (not checked)", |b| { let e = b.first_rule()?; b.b[e.off + E6_PAD..e.off + E6_PAD + 3].fill(0xaa); Ok(()) }),
        // Underflows: unconditional() compares all of ip6t_ip6, padding included.
        m!("underflow6_pad", "empty", "INPUT policy entry: a padding byte of ip6t_ip6 = 1", |b| { let e = b.policy(NF_INET_LOCAL_IN)?; b.set_u8(e.off + E6_PAD + 2, 1); Ok(()) }),
        m!("underflow6_tos", "empty", "INPUT policy entry: tos = 1", |b| { let e = b.policy(NF_INET_LOCAL_IN)?; b.set_u8(e.off + E6_TOS, 1); Ok(()) }),
        m!("underflow6_flag_proto", "empty", "INPUT policy entry: flags = IP6T_F_PROTO with proto 0", |b| { let e = b.policy(NF_INET_LOCAL_IN)?; b.set_u8(e.off + E6_FLAGS, IP6T_F_PROTO); Ok(()) }),
        m!("underflow6_src", "empty", "INPUT policy entry: -s 2001:db8::/16", |b| { let e = b.policy(NF_INET_LOCAL_IN)?; b.b[e.off..e.off + 2].copy_from_slice(&[0x20, 0x01]); b.b[e.off + 32..e.off + 34].fill(0xff); Ok(()) }),
        m!("underflow6_entry_pad", "empty", "INPUT policy entry: ip6t_entry's padding after comefrom = 0xff (outside ip6t_ip6)", |b| { let e = b.policy(NF_INET_LOCAL_IN)?; b.b[e.off + E6_ENTRY_PAD..e.off + E6_ENTRY_PAD + 4].fill(0xff); Ok(()) }),
        m!("underflow6_nfcache", "empty", "INPUT policy entry: nfcache = 0xffffffff", |b| { let e = b.policy(NF_INET_LOCAL_IN)?; b.set_u32(e.off + 136, u32::MAX); Ok(()) }),
        m!("underflow6_return", "empty", "INPUT policy verdict = XT_RETURN", |b| { let e = b.policy(NF_INET_LOCAL_IN)?; b.set_i32(e.verdict_off(), -5); Ok(()) }),
        m!("hook_entry_mid_entry6", "empty", "hook_entry[INPUT] += 8", |b| { let v = b.hook_entry(NF_INET_LOCAL_IN); b.set_u32(H_HOOK_ENTRY + 4, v + 8); Ok(()) }),
        m!("hooks_unsorted6", "empty", "INPUT and OUTPUT hook entries and underflows swapped", |b| { let (hi, ui, ho, uo) = (b.hook_entry(1), b.underflow(1), b.hook_entry(3), b.underflow(3)); b.set_u32(H_HOOK_ENTRY + 4, ho); b.set_u32(H_UNDERFLOW + 4, uo); b.set_u32(H_HOOK_ENTRY + 12, hi); b.set_u32(H_UNDERFLOW + 12, ui); Ok(()) }),
        m!("table_nat6", "empty", "table name \"nat\" with filter's hooks", |b| { set_name(b, 0, 32, b"nat"); Ok(()) }),
        m!("table_security6", "empty", "table name \"security\" (filter's hooks)", |b| { set_name(b, 0, 32, b"security"); Ok(()) }),
        m!("num_counters_plus1_6", "empty", "num_counters = current entries + 1", |b| { let n = b.u32(H_NUM_COUNTERS); b.set_u32(H_NUM_COUNTERS, n + 1); Ok(()) }),
        m!("num_entries_minus1_6", "chains", "num_entries one less than present", |b| { let n = b.u32(H_NUM_ENTRIES); b.set_u32(H_NUM_ENTRIES, n - 1); Ok(()) }),
        // Jumps.
        m!("jump_mid_entry6", "chains", "first jump verdict += 8", |b| { let j = b.jumps().first().cloned().context("no jump")?; let v = j.verdict.context("v")?; b.set_i32(j.verdict_off(), v + 8); Ok(()) }),
        m!("jump_self_loop6", "chains", "the last jump of the table jumps to itself", |b| { let j = b.jumps().last().cloned().context("no jump")?; b.set_u32(j.verdict_off(), j.rel()); Ok(()) }),
        m!("goto_flag_cleared", "chains", "every IP6T_F_GOTO cleared (gotos become jumps)", |b| { for e in b.ents.clone() { let f = b.b[e.off + E6_FLAGS]; b.set_u8(e.off + E6_FLAGS, f & !0x04); } Ok(()) }),
        // xt_check_match's protocol test reads ip6t_ip6.proto and IP6T_INV_PROTO.
        m!("tcp_proto_udp", "protocols", "rule 0 (-p tcp -m tcp) proto = 17", |b| { let e = b.first_rule()?; b.set_u16(e.off + E6_PROTO, 17); Ok(()) }),
        m!("tcp_proto_inverted", "protocols", "rule 0 (-p tcp -m tcp) invflags |= IP6T_INV_PROTO", |b| { let e = b.first_rule()?; b.set_u8(e.off + E6_INV, 0x40); Ok(()) }),
        m!("tcp_without_flag_proto", "protocols", "rule 0 (-p tcp -m tcp) flags &= ~IP6T_F_PROTO, proto still 6", |b| { let e = b.first_rule()?; b.set_u8(e.off + E6_FLAGS, 0); Ok(()) }),
        m!("icmp6_proto_icmp", "protocols", "first icmp6 rule: proto = 1 (IPPROTO_ICMP)", |b| { let (e, _) = b.with_match("icmp6")?; b.set_u16(e.off + E6_PROTO, 1); Ok(()) }),
        m!("icmp6_invflags_2", "protocols", "first icmp6 match invflags = 2", |b| { let (_, o) = p(b, "icmp6", |_, _| true)?; b.set_u8(o + 3, 2); Ok(()) }),
        m!("icmp6_renamed_icmp", "protocols", "first icmp6 match renamed \"icmp\" (IPv4 only)", |b| { let (_, m) = b.with_match("icmp6")?; set_name(b, m.off + 2, 29, b"icmp"); Ok(()) }),
        m!("icmp6_revision_1", "protocols", "first icmp6 match revision 1", |b| { let (_, m) = b.with_match("icmp6")?; b.set_u8(m.off + 31, 1); Ok(()) }),
        m!("multiport_proto_icmp6", "matches", "first multiport rule: proto = 58", |b| { let (e, _) = b.with_match("multiport")?; b.set_u16(e.off + E6_PROTO, 58); Ok(()) }),
        // IPv6 matches.
        m!("hl_mode_7", "ipv6_ext", "first hl match mode = 7 (no checkentry)", |b| { let (_, o) = p(b, "hl", |_, _| true)?; b.set_u8(o, 7); Ok(()) }),
        m!("hl_revision_1", "ipv6_ext", "first hl match revision 1", |b| { let (_, m) = b.with_match("hl")?; b.set_u8(m.off + 31, 1); Ok(()) }),
        m!("frag_invflags_4", "ipv6_ext", "first frag match invflags = 4 (past IP6T_FRAG_INV_MASK)", |b| { let (_, o) = p(b, "frag", |_, _| true)?; b.set_u8(o + 13, 4); Ok(()) }),
        m!("frag_flags_ff", "ipv6_ext", "first frag match flags = 0xff (not checked)", |b| { let (_, o) = p(b, "frag", |_, _| true)?; b.set_u8(o + 12, 0xff); Ok(()) }),
        m!("ipv6header_hard_invflags_1", "ipv6_ext", "ipv6header without --soft: invflags = 1 (neither 0 nor 0xff)", |b| { let (_, o) = p(b, "ipv6header", |b, o| b.b[o + 2] == 0 && b.b[o + 1] == 0)?; b.set_u8(o + 1, 1); Ok(()) }),
        m!("ipv6header_hard_invflags_ff", "ipv6_ext", "ipv6header without --soft: invflags = 0xff", |b| { let (_, o) = p(b, "ipv6header", |b, o| b.b[o + 2] == 0 && b.b[o + 1] == 0)?; b.set_u8(o + 1, 0xff); Ok(()) }),
        m!("ipv6header_soft_invflags_1", "ipv6_ext", "ipv6header --soft: invflags = 1", |b| { let (_, o) = p(b, "ipv6header", |b, o| b.b[o + 2] != 0)?; b.set_u8(o + 1, 1); Ok(()) }),
        m!("hbh_nstrict", "ipv6_ext", "first hbh match flags |= IP6T_OPTS_NSTRICT", |b| { let (_, o) = p(b, "hbh", |_, _| true)?; let f = b.b[o + 4]; b.set_u8(o + 4, f | 4); Ok(()) }),
        m!("hbh_invflags_2", "ipv6_ext", "first hbh match invflags = 2", |b| { let (_, o) = p(b, "hbh", |_, _| true)?; b.set_u8(o + 5, 2); Ok(()) }),
        m!("hbh_optsnr_16", "ipv6_ext", "the hbh --hbh-opts rule's optsnr = 16 (IP6T_OPTS_OPTSNR)", |b| { let (_, o) = p(b, "hbh", |b, o| b.b[o + 38] != 0)?; b.set_u8(o + 38, 16); Ok(()) }),
        m!("hbh_optsnr_17", "ipv6_ext", "the hbh --hbh-opts rule's optsnr = 17", |b| { let (_, o) = p(b, "hbh", |b, o| b.b[o + 38] != 0)?; b.set_u8(o + 38, 17); Ok(()) }),
        m!("hbh_optsnr_17_nstrict", "ipv6_ext", "optsnr = 17 and IP6T_OPTS_NSTRICT (which check comes first: both EINVAL)", |b| { let (_, o) = p(b, "hbh", |b, o| b.b[o + 38] != 0)?; b.set_u8(o + 38, 17); let f = b.b[o + 4]; b.set_u8(o + 4, f | 4); Ok(()) }),
        m!("rt_addrnr_16", "ipv6_ext", "the --rt-0-addrs rule's addrnr = 16 (IP6T_RT_HOPS)", |b| { let (_, o) = p(b, "rt", |b, o| b.b[o + 276] != 0)?; b.set_u8(o + 276, 16); Ok(()) }),
        m!("rt_addrnr_17", "ipv6_ext", "the --rt-0-addrs rule's addrnr = 17", |b| { let (_, o) = p(b, "rt", |b, o| b.b[o + 276] != 0)?; b.set_u8(o + 276, 17); Ok(()) }),
        m!("dst_nstrict", "ipv6_ext", "first dst match flags |= IP6T_OPTS_NSTRICT", |b| { let (_, o) = p(b, "dst", |_, _| true)?; let f = b.b[o + 4]; b.set_u8(o + 4, f | 4); Ok(()) }),
        m!("dst_renamed_hbh", "ipv6_ext", "first dst match renamed \"hbh\" (same payload)", |b| { let (_, m) = b.with_match("dst")?; set_name(b, m.off + 2, 29, b"hbh"); Ok(()) }),
        m!("rt_invflags_8", "ipv6_ext", "first rt match invflags = 8", |b| { let (_, o) = p(b, "rt", |_, _| true)?; b.set_u8(o + 17, 8); Ok(()) }),
        m!("rt0_res_type_2", "ipv6_ext", "the --rt-0-res rule's rt_type = 2", |b| { let (_, o) = p(b, "rt", |b, o| b.b[o + 16] & 0x08 != 0)?; b.set_u32(o, 2); Ok(()) }),
        m!("rt0_res_type_inverted", "ipv6_ext", "the --rt-0-res rule's invflags |= IP6T_RT_INV_TYP", |b| { let (_, o) = p(b, "rt", |b, o| b.b[o + 16] & 0x08 != 0)?; let f = b.b[o + 17]; b.set_u8(o + 17, f | 1); Ok(()) }),
        m!("rt0_res_no_type_flag", "ipv6_ext", "the --rt-0-res rule's flags &= ~IP6T_RT_TYP", |b| { let (_, o) = p(b, "rt", |b, o| b.b[o + 16] & 0x08 != 0)?; let f = b.b[o + 16]; b.set_u8(o + 16, f & !1); Ok(()) }),
        m!("rt_type2_fst", "ipv6_ext", "the --rt-type 2 rule gets IP6T_RT_FST", |b| { let (_, o) = p(b, "rt", |b, o| b.u32(o) == 2)?; let f = b.b[o + 16]; b.set_u8(o + 16, f | 0x10); Ok(()) }),
        m!("mac_revision_1", "ipv6_ext", "first mac match revision 1", |b| { let (_, m) = b.with_match("mac")?; b.set_u8(m.off + 31, 1); Ok(()) }),
        m!("eui64_revision_1", "ipv6_ext", "first eui64 match revision 1", |b| { let (_, m) = b.with_match("eui64")?; b.set_u8(m.off + 31, 1); Ok(()) }),
        m!("eui64_payload_ff", "ipv6_ext", "first eui64 match's int = 0xffffffff (unused)", |b| { let (_, o) = p(b, "eui64", |_, _| true)?; b.set_u32(o, u32::MAX); Ok(()) }),
        m!("mac_in_output", "protocols", "OUTPUT's -p tcp -m tcp rule: the 48-byte tcp match renamed \"mac\" (mac is for PREROUTING, INPUT, FORWARD)", |b| { let e = b.at_rel(b.hook_entry(NF_INET_LOCAL_OUT))?; let m = e.match_named("tcp").cloned().context("no tcp in OUTPUT")?; set_name(b, m.off + 2, 29, b"mac"); Ok(()) }),
        m!("mac_in_forward", "protocols", "FORWARD's -p udp -m udp rule: the 48-byte udp match renamed \"mac\" (allowed)", |b| { let e = b.at_rel(b.hook_entry(NF_INET_FORWARD))?; let m = e.match_named("udp").cloned().context("no udp in FORWARD")?; set_name(b, m.off + 2, 29, b"mac"); Ok(()) }),
        // Matches registered for both families, with IPv6 differences (xt_addrtype_info_v1:
        // source u16 0, dest u16 2, flags u32 4; xt_hashlimit_mtinfo3: cfg at 256, srcmask at
        // 296, dstmask 297).
        m!("addrtype6_broadcast", "stateful", "first addrtype (--dst-type LOCAL) dest |= BROADCAST", |b| { let (_, o) = p(b, "addrtype", |_, _| true)?; let d = b.u16(o + 2); b.set_u16(o + 2, d | 1 << 3); Ok(()) }),
        m!("addrtype6_blackhole", "stateful", "first addrtype source = BLACKHOLE", |b| { let (_, o) = p(b, "addrtype", |_, _| true)?; b.set_u16(o, 1 << 6); Ok(()) }),
        m!("addrtype6_prohibit", "stateful", "first addrtype dest = PROHIBIT", |b| { let (_, o) = p(b, "addrtype", |_, _| true)?; b.set_u16(o + 2, 1 << 8); Ok(()) }),
        m!("addrtype6_xresolve", "stateful", "first addrtype source = XRESOLVE (1 << 11)", |b| { let (_, o) = p(b, "addrtype", |_, _| true)?; b.set_u16(o, 1 << 11); Ok(()) }),
        m!("addrtype6_all_low_types", "stateful", "first addrtype source = UNSPEC..UNREACHABLE without BROADCAST and BLACKHOLE (0xb7)", |b| { let (_, o) = p(b, "addrtype", |_, _| true)?; b.set_u16(o, 0xb7); Ok(()) }),
        m!("addrtype6_iface_out_in_input", "stateful", "first addrtype (INPUT) flags = LIMIT_IFACE_OUT", |b| { let (_, o) = p(b, "addrtype", |_, _| true)?; b.set_u32(o + 4, 8); Ok(()) }),
        m!("addrtype6_revision_0", "stateful", "first addrtype match revision 0 (IPv4 only)", |b| { let (_, m) = b.with_match("addrtype")?; b.set_u8(m.off + 31, 0); Ok(()) }),
        m!("hashlimit6_srcmask_128", "stateful", "first hashlimit srcmask = 128", |b| { let (_, o) = p(b, "hashlimit", |_, _| true)?; b.set_u8(o + 296, 128); Ok(()) }),
        m!("hashlimit6_srcmask_129", "stateful", "first hashlimit srcmask = 129", |b| { let (_, o) = p(b, "hashlimit", |_, _| true)?; b.set_u8(o + 296, 129); Ok(()) }),
        m!("hashlimit6_dstmask_200", "stateful", "first hashlimit dstmask = 200", |b| { let (_, o) = p(b, "hashlimit", |_, _| true)?; b.set_u8(o + 297, 200); Ok(()) }),
        m!("hashlimit6_srcmask_33", "stateful", "first hashlimit srcmask = 33 (refused for IPv4)", |b| { let (_, o) = p(b, "hashlimit", |_, _| true)?; b.set_u8(o + 296, 33); Ok(()) }),
        m!("owner6_revision_0", "stateful", "first owner match revision 0", |b| { let (_, m) = b.with_match("owner")?; b.set_u8(m.off + 31, 0); Ok(()) }),
        // Targets.
        m!("reject6_echo_reply", "log_reject", "first REJECT with = IP6T_ICMP6_ECHOREPLY (5)", |b| { let e = with_target(b, "REJECT", |_, _| true)?; b.set_u32(e.target.off + XT_HDR, 5); Ok(()) }),
        m!("reject6_with_9", "log_reject", "first REJECT with = 9 (unknown)", |b| { let e = with_target(b, "REJECT", |_, _| true)?; b.set_u32(e.target.off + XT_HDR, 9); Ok(()) }),
        m!("reject6_with_max", "log_reject", "first REJECT with = 0xffffffff", |b| { let e = with_target(b, "REJECT", |_, _| true)?; b.set_u32(e.target.off + XT_HDR, u32::MAX); Ok(()) }),
        m!("reject6_ipv4_tcp_reset", "log_reject", "a non-tcp REJECT with = 7 (IPv4's IPT_TCP_RESET; for IPv6 IP6T_ICMP6_POLICY_FAIL)", |b| { let e = with_target(b, "REJECT", |b, e| b.u32(e.target.off + XT_HDR) == 0)?; b.set_u32(e.target.off + XT_HDR, 7); Ok(()) }),
        m!("reject6_reset_no_flag_proto", "log_reject", "-p tcp -j REJECT --reject-with tcp-reset: flags &= ~IP6T_F_PROTO (proto still 6)", |b| { let e = reset6(b)?; b.set_u8(e.off + E6_FLAGS, 0); Ok(()) }),
        m!("reject6_reset_udp", "log_reject", "-p tcp -j REJECT --reject-with tcp-reset: proto = 17", |b| { let e = reset6(b)?; b.set_u16(e.off + E6_PROTO, 17); Ok(()) }),
        m!("reject6_reset_inverted", "log_reject", "-p tcp -j REJECT --reject-with tcp-reset: invflags |= IP6T_INV_PROTO", |b| { let e = reset6(b)?; b.set_u8(e.off + E6_INV, 0x40); Ok(()) }),
        m!("reject6_reset_on_any", "log_reject", "a non-tcp REJECT with = IP6T_TCP_RESET", |b| { let e = with_target(b, "REJECT", |b, e| b.u32(e.target.off + XT_HDR) == 0)?; b.set_u32(e.target.off + XT_HDR, 6); Ok(()) }),
        m!("reject6_revision_1", "log_reject", "first REJECT revision 1", |b| { let e = with_target(b, "REJECT", |_, _| true)?; b.set_u8(e.target.off + 31, 1); Ok(()) }),
        m!("log6_level_8", "log_reject", "first LOG level = 8", |b| { let e = with_target(b, "LOG", |_, _| true)?; b.set_u8(e.target.off + XT_HDR, 8); Ok(()) }),
        m!("log6_prefix_unterminated", "log_reject", "first LOG prefix = 30 x 'a'", |b| { let e = with_target(b, "LOG", |_, _| true)?; b.b[e.target.off + XT_HDR + LOG_PREFIX..e.target.off + XT_HDR + LOG_PREFIX + LOG_PREFIX_LEN].fill(b'a'); Ok(()) }),
        // SET_ADD_COUNTERS.
        m!("addcnt6_control", "chains", "add_counters", "restore", "unmutated ADD_COUNTERS blob (control)", |_| Ok(())),
        m!("addcnt6_len_short", "chains", "add_counters", "restore", "last 16 bytes cut", |b| { let n = b.b.len() - 16; b.b.truncate(n); Ok(()) }),
        m!("addcnt6_count_plus1", "chains", "add_counters", "restore", "num_counters + 1 and 16 bytes appended", |b| { let n = b.u32(32); b.set_u32(32, n + 1); b.b.extend_from_slice(&[0; 16]); Ok(()) }),
        m!("addcnt6_unknown_table", "chains", "add_counters", "restore", "table name \"nosuchtable\"", |b| { set_name(b, 0, 32, b"nosuchtable"); Ok(()) }),
    ]
}

fn make(name: &str, captured: &Path, out: &Path) -> Result<()> {
    let all = if ipv6() { mutations6() } else { mutations() };
    let m = all
        .iter()
        .find(|m| m.name == name)
        .with_context(|| format!("no mutation {name}"))?;
    let file = if m.kind == "add_counters" {
        "add_counters.bin"
    } else {
        "replace.bin"
    };
    let path = captured.join(m.base).join(file);
    let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    // a base outside the family's captures (`../captured/...`) is sent as it is
    let mut blob = if m.kind == "add_counters" || m.base.starts_with("../") {
        Blob {
            b: bytes,
            ents: Vec::new(),
        }
    } else {
        Blob::replace(bytes).with_context(|| format!("parse {}", path.display()))?
    };
    (m.f)(&mut blob).with_context(|| format!("mutation {name}"))?;
    std::fs::write(out, &blob.b).with_context(|| format!("write {}", out.display()))
}

/// Derives the negative fixtures (fixtures/negative/) from captured blobs.
#[derive(Debug, Parser)]
#[command(name = "xt-mutate", args_override_self = true)]
struct Args {
    /// The ip6tables mutations (bases under captured6/).
    #[arg(long, global = true)]
    ipv6: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// One line per mutation: name, base, kind, setup, description (tab separated).
    List,
    /// Write mutation NAME of its base blob (under CAPTURED_DIR) to OUT.
    Make {
        name: String,
        captured_dir: PathBuf,
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    IPV6.store(args.ipv6, std::sync::atomic::Ordering::Relaxed);
    match args.cmd {
        Cmd::List => {
            let mut seen = std::collections::HashSet::new();
            for m in if ipv6() { mutations6() } else { mutations() } {
                if !seen.insert(m.name) {
                    bail!("duplicate mutation {}", m.name);
                }
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    m.name, m.base, m.kind, m.setup, m.desc
                );
            }
            Ok(())
        }
        Cmd::Make {
            name,
            captured_dir,
            out,
        } => make(&name, &captured_dir, &out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line() {
        Args::command().debug_assert();
        assert!(matches!(
            Args::try_parse_from(["xt-mutate", "list"]).map(|a| a.cmd),
            Ok(Cmd::List)
        ));
        assert!(matches!(
            Args::try_parse_from(["xt-mutate", "make", "header_short", "captured", "o.bin"])
                .map(|a| a.cmd),
            Ok(Cmd::Make { name, .. }) if name == "header_short"
        ));
        assert!(Args::try_parse_from(["xt-mutate", "list", "x"]).is_err());
        assert!(Args::try_parse_from(["xt-mutate", "make", "a", "b"]).is_err());
    }
}
