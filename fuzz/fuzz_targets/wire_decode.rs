//! Fuzz the wire protocol: `Request::decode` and `Reply::decode` on arbitrary bytes, and the
//! daemon's connection loop (`serve_connection`) on the same bytes arriving over a socket, where
//! a frame can be cut anywhere and lengths can be huge. Invariants: `support/wire_path.rs`.
#![no_main]

#[path = "../support/wire_path.rs"]
mod wire_path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(why) = wire_path::check(data) {
        panic!("{why}");
    }
});
