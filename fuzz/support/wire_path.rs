//! The wire protocol's decoders and the daemon's connection loop on arbitrary bytes, for
//! fuzzing. Shared, through `#[path]`, by the cargo-fuzz target `wire_decode` and by the
//! bounded fuzz run of `make test` (`tests/fuzz_bounded.rs`).
//!
//! Invariants: nothing panics; whatever `Request::decode` / `Reply::decode` accept re-encodes
//! to the very same bytes (decoding is strict); the same bytes arriving over a socket make
//! `serve_connection` answer every whole frame with one well-formed reply and stop at the
//! first broken one, without waiting for more than was sent.
#![allow(dead_code, clippy::unwrap_used, reason = "test support")]

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;

use libbpfilter::wire::{self, Reply, Request};

/// Checks one input (see the module doc).
pub fn check(data: &[u8]) -> Result<(), String> {
    if let Ok(req) = Request::decode(data) {
        if req.encode() != data {
            return Err(format!("request {req:?} re-encodes differently"));
        }
    }
    if let Ok(reply) = Reply::decode(data) {
        if reply.encode() != data {
            return Err("reply re-encodes differently".into());
        }
        if !(0..=wire::MAX_ERRNO).contains(&reply.errno) && reply.errno != wire::KERNEL_SERVES {
            return Err(format!("reply errno {} decoded", reply.errno));
        }
    }
    if data.len() >= wire::HEADER_LEN {
        let mut h = [0u8; wire::HEADER_LEN];
        h.copy_from_slice(&data[..wire::HEADER_LEN]);
        if let Ok(hdr) = wire::FrameHeader::parse(&h) {
            if hdr.len > wire::MAX_PAYLOAD {
                return Err(format!("header length {} above the bound passed", hdr.len));
            }
            if let Ok(kind) = wire::RequestKind::from_u16(hdr.kind) {
                let _ = Request::decode_body(kind, &data[wire::HEADER_LEN..]);
            }
        }
    }
    let _ = wire::parse_table_names(data);
    if data.len() <= 64 * 1024 {
        serve(data)?;
    }
    Ok(())
}

/// `data` through `serve_connection` over a socketpair.
fn serve(data: &[u8]) -> Result<(), String> {
    let (mut client, server) = UnixStream::pair().map_err(|e| e.to_string())?;
    client.write_all(data).map_err(|e| e.to_string())?;
    client
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut answered = 0usize;
    let _ = wire::serve_connection(&server, |r| {
        answered += 1;
        match r {
            Ok(_) => Reply::ok(Vec::new()),
            Err(e) => Reply::error(e.errno()),
        }
    });
    drop(server);
    // A server that stops at a broken frame closes with our bytes unread: the kernel then
    // reports ECONNRESET after the replies already queued, which is the end here.
    let mut replies = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => replies.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the replies: {e}")),
        }
    }
    let mut rest = &replies[..];
    let mut seen = 0usize;
    while !rest.is_empty() {
        if rest.len() < wire::HEADER_LEN {
            return Err(format!("{} stray reply bytes", rest.len()));
        }
        let len = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
        if rest.len() < wire::HEADER_LEN + len {
            return Err("a reply frame cut short".into());
        }
        let (frame, tail) = rest.split_at(wire::HEADER_LEN + len);
        Reply::decode(frame).map_err(|e| format!("the server wrote a bad reply: {e}"))?;
        seen += 1;
        rest = tail;
    }
    if seen != answered {
        return Err(format!(
            "{answered} requests answered, {seen} replies arrived"
        ));
    }
    Ok(())
}
