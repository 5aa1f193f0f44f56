//! The tools that the tests of every package of the workspace share, so that each exists once:
//!
//! - [`gate`]: the one privileged gate (a failure under `CI=true`, a visible skip otherwise);
//! - [`Rng`]: the one seeded generator (a failure reproduces from its printed seed);
//! - [`netns`]: network namespaces, veth pairs, threads inside a namespace, shell commands;
//! - [`snmp`]: `/proc/net/snmp` counters (`Ip: InReceives`);
//! - [`log_all_netns`]: `net.netfilter.nf_log_all_netns` set under a lock for a test;
//! - [`packet`]: IPv4 headers and Internet checksums;
//! - [`ipv6`]: IPv6 packets with extension-header chains;
//! - `ir` (feature `ir`): builders of the emitter's IR (matches, rules, chains).
//!
//! It is a crate, not a `tests/common` module, because the packages that use it are several
//! (the root package's integration tests, the preload's tests, the benchmark, the conformance
//! harness): a module can only be shared inside one package. The benchmark and the conformance
//! harness are programs, so they take it as a normal dependency; it is never published.

#![forbid(unsafe_code)]

pub mod gate;
pub mod ipv6;
#[cfg(feature = "ir")]
pub mod ir;
pub mod log_all_netns;
pub mod netns;

pub mod packet;
mod rng;
pub mod snmp;

pub use gate::{privileged, unavailable};
pub use rng::Rng;
