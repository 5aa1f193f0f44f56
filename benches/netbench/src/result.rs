//! What one measured configuration holds, and the number formats every table uses: shared by
//! the rule-count run ([`crate::report`]) and the features run ([`crate::features`]).

use std::time::Duration;

use crate::backend::Backend;
use crate::progs::ProgInfo;
use crate::ruleset::RuleKind;
use crate::stats::median;

/// Everything known about one configuration (backend x rule kind x N).
#[derive(Debug, Clone)]
pub struct ConfigResult {
    /// Firewall.
    pub backend: Backend,
    /// Rule kind (None for the no-firewall reference).
    pub kind: Option<RuleKind>,
    /// Non-matching rules before the final ACCEPT.
    pub n: usize,
    /// Time to load the ruleset into a fresh namespace.
    pub restore: Option<Duration>,
    /// Median time to append one rule to it.
    pub append: Option<Duration>,
    /// bpfltr_* programs the load created (bpfilter only).
    pub progs: Vec<ProgInfo>,
    /// INPUT program's BPF_PROG_LOAD time (verifier + JIT) as `bpfilter status` reports it.
    pub verifier_ms: Option<f64>,
    /// BPF_PROG_TEST_RUN of this configuration's live programs at LOCAL_IN: (name, ns per
    /// run, return value).
    pub test_runs: Vec<(String, u32, u32)>,
    /// Why the configuration could not be set up (then it is not measured).
    pub error: Option<String>,
    /// Failed checks (packets received, final rule counter).
    pub check_failures: Vec<String>,
    /// Per kept sample: CPU ns per packet.
    pub cpu: Vec<f64>,
    /// Per kept sample: wall ns per packet.
    pub wall: Vec<f64>,
    /// Per kept sample: CPU ns per packet minus the no-firewall configuration's in that sample.
    pub added: Vec<f64>,
}

impl ConfigResult {
    /// A configuration not measured yet.
    pub fn new(backend: Backend, kind: Option<RuleKind>, n: usize) -> ConfigResult {
        ConfigResult {
            backend,
            kind,
            n,
            restore: None,
            append: None,
            progs: Vec::new(),
            test_runs: Vec::new(),
            verifier_ms: None,
            error: None,
            check_failures: Vec::new(),
            cpu: Vec::new(),
            wall: Vec::new(),
            added: Vec::new(),
        }
    }

    /// Median added ns per packet.
    pub fn added_median(&self) -> f64 {
        median(&self.added)
    }
}

/// Two decimals, "-" when unknown, and no "-0.00" for a value that rounds to zero (a
/// lookup's per-rule cost is zero give or take noise).
pub fn f2(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() < 0.005 {
        "0.00".into()
    } else {
        format!("{v:.2}")
    }
}

/// Rounded, with thousands separators: 41469.4 -> "41,469".
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 && digits != "0" {
        format!("-{out}")
    } else {
        out
    }
}
