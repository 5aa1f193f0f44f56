//! BPF programs seen by `bpftool prog show`: which ones a load created, and their sizes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::netns::run_ok;

/// One program as `bpftool prog show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgInfo {
    /// Program id.
    pub id: u32,
    /// Program name (the kernel keeps 15 characters).
    pub name: String,
    /// Translated (post-verifier) size in bytes; 8 bytes per instruction.
    pub xlated: u64,
    /// JIT image size in bytes.
    pub jited: u64,
    /// Instructions the verifier processed (from bpf_prog_info; not printed by bpftool 7.1).
    pub verified_insns: Option<u32>,
}

impl ProgInfo {
    /// Translated instructions.
    pub fn insns(&self) -> u64 {
        self.xlated / 8
    }
}

/// Parse `bpftool prog show` plain output.
pub fn parse_prog_show(s: &str) -> Vec<ProgInfo> {
    let mut out: Vec<ProgInfo> = Vec::new();
    for line in s.lines() {
        if !line.starts_with(char::is_whitespace) {
            let Some((id, rest)) = line.split_once(':') else {
                continue;
            };
            let Ok(id) = id.trim().parse() else { continue };
            let mut words = rest.split_whitespace();
            let name = words
                .by_ref()
                .skip_while(|w| *w != "name")
                .nth(1)
                .unwrap_or("")
                .to_string();
            out.push(ProgInfo {
                id,
                name,
                xlated: 0,
                jited: 0,
                verified_insns: None,
            });
        } else if let Some(p) = out.last_mut() {
            let w: Vec<&str> = line.split_whitespace().collect();
            for pair in w.windows(2) {
                let bytes = pair[1].trim_end_matches('B').parse().unwrap_or(0);
                match pair[0] {
                    "xlated" => p.xlated = bytes,
                    "jited" => p.jited = bytes,
                    _ => {}
                }
            }
        }
    }
    out
}

/// Programs currently loaded whose name starts with `prefix`.
pub fn list(prefix: &str) -> Result<Vec<ProgInfo>> {
    let mut c = Command::new("bpftool");
    c.args(["prog", "show"]);
    let t = run_ok(c, Duration::from_secs(60))?;
    Ok(parse_prog_show(&String::from_utf8_lossy(&t.output.stdout))
        .into_iter()
        .filter(|p| p.name.starts_with(prefix))
        .collect())
}

/// Fill `verified_insns` from the kernel (programs that went away meanwhile keep None).
pub fn add_verified(progs: &mut [ProgInfo]) {
    for p in progs {
        if let Ok(fd) = crate::bpf::prog_fd_by_id(p.id) {
            p.verified_insns = crate::bpf::prog_stats(&fd).ok().map(|s| s.verified_insns);
        }
    }
}

/// Programs pinned under `dir` (recursively): the bpfilter daemon pins every program of a
/// namespace under `<bpffs>/net<netns inode>/`, which tells its programs apart from those of
/// any other bpfilter running on the machine.
pub fn pinned(dir: &Path) -> Result<Vec<ProgInfo>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let e = e?;
            let path = e.path();
            if e.file_type()?.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(fd) = crate::bpf::obj_get(&path) else {
                continue;
            };
            if !crate::bpf::is_prog(&fd) {
                continue;
            }
            let st = crate::bpf::prog_stats(&fd)?;
            out.push(ProgInfo {
                id: st.id,
                name: st.name,
                xlated: u64::from(st.xlated),
                jited: u64::from(st.jited),
                verified_insns: Some(st.verified_insns),
            });
        }
    }
    out.sort_by_key(|p| p.id);
    out.dedup_by_key(|p| p.id);
    Ok(out)
}

/// Programs in `after` that were not in `before` (by id).
pub fn new_since(before: &[ProgInfo], after: &[ProgInfo]) -> Vec<ProgInfo> {
    let old: BTreeSet<u32> = before.iter().map(|p| p.id).collect();
    after
        .iter()
        .filter(|p| !old.contains(&p.id))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "105: xdp  name bpfltr_test  tag 614b434cd8324ecc  gpl\n\
        \tloaded_at 2026-11-26T17:38:58+0000  uid 0\n\
        \txlated 16B  jited 23B  memlock 4096B\n\
        106: type 32  name bpfltr_in  tag 0011223344556677  gpl\n\
        \tloaded_at 2026-11-26T17:38:59+0000  uid 0\n\
        \txlated 800040B  jited 512345B  memlock 806912B  map_ids 7,8\n\
        \tbtf_id 12\n\
        107: cgroup_skb  tag aa  gpl\n\
        \txlated 8B  not jited\n";

    #[test]
    fn parses_bpftool_text() {
        let p = parse_prog_show(SHOW);
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            ProgInfo {
                id: 105,
                name: "bpfltr_test".into(),
                xlated: 16,
                jited: 23,
                verified_insns: None
            }
        );
        assert_eq!(p[1].name, "bpfltr_in");
        assert_eq!(p[1].insns(), 100_005);
        assert_eq!(p[1].jited, 512_345);
        assert_eq!(p[2].name, "");
        assert_eq!(p[2].jited, 0);
        let n = new_since(&p[..1], &p);
        assert_eq!(n.iter().map(|p| p.id).collect::<Vec<_>>(), vec![106, 107]);
    }
}
