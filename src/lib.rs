//! The bpfilter daemon: server, per-namespace state, translation and the BPF system layer.

pub mod cli;
pub mod daemon;
pub mod events;
pub mod layout;
pub mod probe;
pub mod sys;
pub mod xlate;
