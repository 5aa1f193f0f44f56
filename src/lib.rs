//! The bpfilter daemon: server, per-namespace state, translation and the BPF system layer.

pub mod sys;
