//! One iptables command at a time on a small table, as Docker, fail2ban or libvirt issue them:
//! the wall time of the whole command (process start, the daemon's work, exit), each backend
//! in its own namespace, the backends' runs interleaved command by command so that all of
//! them see the same machine state, as medians and ratios to iptables-legacy.
//!
//! Commands enter the namespace with `nsenter --net` (no mount namespace, unlike `ip netns
//! exec`), the same for every backend.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::backend::{Backend, Tools};
use crate::netns::{self, run_ok};
use crate::ruleset::{self, RuleKind};
use crate::stats;

/// Rules of the small table every command works on.
pub const RULES: usize = 10;

/// One command of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Op {
    /// As the report names it.
    pub name: &'static str,
    /// iptables arguments (`None`: iptables-save).
    pub args: Option<&'static [&'static str]>,
    /// The goal, as a ratio to iptables-legacy.
    pub goal: f64,
}

/// The commands of a round, in order: each write is undone by a later one, so the table is
/// the same at the start of every round.
pub const OPS: [Op; 9] = [
    Op {
        name: "-A INPUT (append)",
        args: Some(&[
            "-A",
            "INPUT",
            "-s",
            "10.250.0.1/32",
            "-p",
            "tcp",
            "--dport",
            "9",
            "-j",
            "DROP",
        ]),
        goal: 1.5,
    },
    Op {
        name: "-I INPUT 1 (insert)",
        args: Some(&["-I", "INPUT", "1", "-s", "10.250.0.2/32", "-j", "DROP"]),
        goal: 1.5,
    },
    Op {
        name: "-D INPUT RULE (delete)",
        args: Some(&[
            "-D",
            "INPUT",
            "-s",
            "10.250.0.1/32",
            "-p",
            "tcp",
            "--dport",
            "9",
            "-j",
            "DROP",
        ]),
        goal: 1.5,
    },
    Op {
        name: "-D INPUT 1 (delete)",
        args: Some(&["-D", "INPUT", "1"]),
        goal: 1.5,
    },
    Op {
        name: "-P FORWARD ACCEPT",
        args: Some(&["-P", "FORWARD", "ACCEPT"]),
        goal: 1.5,
    },
    Op {
        name: "-Z (zero)",
        args: Some(&["-Z"]),
        goal: 1.5,
    },
    Op {
        name: "-L -n",
        args: Some(&["-L", "-n"]),
        goal: 1.2,
    },
    Op {
        name: "-S",
        args: Some(&["-S"]),
        goal: 1.2,
    },
    Op {
        name: "iptables-save",
        args: None,
        goal: 1.2,
    },
];

/// The medians of one command, per backend.
#[derive(Debug, Clone)]
pub struct Row {
    /// The command.
    pub op: Op,
    /// (backend, median ms, runs) in the report's backend order.
    pub ms: Vec<(Backend, f64)>,
}

/// The command table.
#[derive(Debug, Clone)]
pub struct Commands {
    /// Rows, in [`OPS`] order.
    pub rows: Vec<Row>,
    /// Rounds run (runs per command and backend).
    pub rounds: usize,
}

impl Commands {
    /// Median ms of `op` on `b`.
    pub fn median(&self, op: &str, b: Backend) -> Option<f64> {
        let row = self.rows.iter().find(|r| r.op.name == op)?;
        row.ms.iter().find(|(x, _)| *x == b).map(|(_, ms)| *ms)
    }
}

/// The command that runs `op` for backend `b` inside namespace `ns`.
fn command(tools: &Tools, b: Backend, ns: &str, op: &Op) -> Command {
    let net = format!("--net=/run/netns/{ns}");
    let mut c = Command::new("nsenter");
    c.arg(net);
    match (b, op.args) {
        (Backend::Legacy, Some(args)) => {
            c.arg("iptables-legacy").args(args);
        }
        (Backend::Legacy, None) => {
            c.arg("iptables-legacy-save");
        }
        (_, Some(args)) => {
            c.arg(&tools.bpfilter).arg("iptables").args(args);
        }
        (_, None) => {
            c.arg(&tools.bpfilter).arg("iptables-save");
        }
    }
    if let Some(a) = b.access() {
        c.env("BPFILTER_SOCKET", tools.daemon(a).socket);
    }
    c.env("XTABLES_LOCKFILE", &tools.xtables_lock);
    c
}

/// Runs `rounds` rounds of [`OPS`] on iptables-legacy and the bpfilter backends of `backends`
/// (nftables has no iptables commands), each in a namespace holding [`RULES`] rules.
pub fn run(tools: &Tools, backends: &[Backend], rounds: usize, work: &Path) -> Result<Commands> {
    let measured: Vec<Backend> = backends
        .iter()
        .copied()
        .filter(|b| *b == Backend::Legacy || b.is_bpfilter())
        .collect();
    let pid = std::process::id();
    let file = work.join("commands.save");
    std::fs::write(
        &file,
        ruleset::iptables_save(&ruleset::rules(RuleKind::Mixed, RULES)),
    )?;
    let mut spaces = Vec::new();
    let result = (|| {
        for b in &measured {
            let ns = format!("{}{pid}-cmd-{}", netns::PREFIX, b.tag());
            netns::ip(&["netns", "add", &ns])?;
            spaces.push(ns.clone());
            tools
                .restore(*b, &ns, &file)
                .with_context(|| format!("{}: loading the small table", b.name()))?;
        }
        let timeout = Duration::from_secs(30);
        let mut times = vec![vec![Vec::new(); measured.len()]; OPS.len()];
        for round in 0..rounds + 1 {
            for (i, op) in OPS.iter().enumerate() {
                // Who goes first turns each round.
                for k in 0..measured.len() {
                    let j = (k + round) % measured.len();
                    let t = run_ok(command(tools, measured[j], &spaces[j], op), timeout)
                        .with_context(|| format!("{}: {}", measured[j].name(), op.name))?;
                    // The first round warms up (page cache, the daemon's first requests).
                    if round > 0 {
                        times[i][j].push(t.elapsed.as_secs_f64() * 1e3);
                    }
                }
            }
        }
        Ok(Commands {
            rows: OPS
                .iter()
                .zip(times)
                .map(|(op, per)| Row {
                    op: *op,
                    ms: measured
                        .iter()
                        .zip(per)
                        .map(|(b, t)| (*b, stats::median(&t)))
                        .collect(),
                })
                .collect(),
            rounds,
        })
    })();
    for ns in spaces {
        netns::delete(&ns);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_of_a_round_is_undone_by_the_round() {
        // What -A adds, -D RULE removes; what -I adds, -D 1 removes.
        let args = |name: &str| {
            OPS.iter()
                .find(|o| o.name == name)
                .and_then(|o| o.args)
                .expect("op")
        };
        assert_eq!(
            args("-A INPUT (append)")[1..],
            args("-D INPUT RULE (delete)")[1..]
        );
        assert_eq!(args("-I INPUT 1 (insert)")[2], "1");
        assert_eq!(args("-D INPUT 1 (delete)"), ["-D", "INPUT", "1"]);
        let writes = OPS.iter().filter(|o| o.goal == 1.5).count();
        assert_eq!(writes, 6);
    }
}
