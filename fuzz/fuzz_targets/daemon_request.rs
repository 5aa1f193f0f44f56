//! Fuzz the daemon's whole request path in process: concatenated wire frames are decoded as the
//! daemon's connection loop decodes them and answered by `Daemon::handle` with an in-memory
//! backend. Invariants (see `support/daemon_path.rs`): no panic, only kernel errnos, a refused
//! set changes neither the rules nor the counters.
#![no_main]

#[path = "../support/daemon_path.rs"]
mod daemon_path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut h = daemon_path::Harness::new();
    if let Err(why) = h.run(data) {
        panic!("{why}");
    }
});
