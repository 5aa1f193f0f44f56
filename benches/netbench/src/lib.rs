//! Side-by-side data-path and control-plane benchmarks of bpfilter, the kernel's
//! iptables-legacy and nftables (method: `benches/netbench/README.md`): one sender thread
//! interleaves every configuration (backend x rule kind x rule count), so that all of them see
//! the same machine state, and the per-packet cost is the sender's thread CPU time.
//!
//! A second interleaved run ([`features`]) measures connection-state matches, LOG and REJECT
//! against iptables-legacy, and REJECT's replies per second ([`replies`]).
//!
//! A third part ([`commands`]) times single iptables commands on a small table.
//!
//! A last pass measures IPv6 the way the first run measures IPv4 (the same code with
//! [`ruleset::Family::Ipv6`]: ip6tables-legacy, nftables `ip6`, bpfilter's ip6tables), with
//! its own no-firewall reference; its figures are [`report::Report::ipv6`].
//!
//! The `netbench` binary drives a run and writes `RESULTS.md` and `plot.svg`.

pub mod backend;
pub mod bpf;
pub mod commands;
pub mod features;
pub mod netns;
pub mod progs;
pub mod replies;
pub mod report;
pub mod result;
pub mod ruleset;
pub mod sender;
pub mod stats;
