//! The bpfilter client: wire protocol shared with the daemon, and a Rust client API.
