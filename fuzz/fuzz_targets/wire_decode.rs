//! Fuzz the wire protocol: `Request::decode` and `Reply::decode` on arbitrary bytes (no panic,
//! and whatever decodes re-encodes to the very same bytes, since decoding is strict), and the
//! daemon's connection loop (`serve_connection`) on the same bytes arriving over a socket, where
//! the frame can be cut anywhere and lengths can be huge.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use libbpfilter::wire::{self, Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = Request::decode(data) {
        assert_eq!(
            req.encode(),
            data,
            "decode/encode of a request is not exact"
        );
    }
    if let Ok(reply) = Reply::decode(data) {
        assert_eq!(
            reply.encode(),
            data,
            "decode/encode of a reply is not exact"
        );
        assert!((0..=wire::MAX_ERRNO).contains(&reply.errno));
    }
    if data.len() >= wire::HEADER_LEN {
        let mut h = [0u8; wire::HEADER_LEN];
        h.copy_from_slice(&data[..wire::HEADER_LEN]);
        if let Ok(hdr) = wire::FrameHeader::parse(&h) {
            assert!(hdr.len <= wire::MAX_PAYLOAD);
            if let Ok(kind) = wire::RequestKind::from_u16(hdr.kind) {
                let _ = Request::decode_body(kind, &data[wire::HEADER_LEN..]);
            }
        }
    }
    let _ = wire::parse_table_names(data);

    // The same bytes through the server loop: it answers every whole frame and stops at the
    // first broken one, never panics and never waits for more than was announced and sent.
    if data.len() <= 64 * 1024 {
        let (client, server) = UnixStream::pair().expect("socketpair");
        let mut c = client;
        c.write_all(data).expect("write");
        c.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut answered = 0usize;
        let _ = wire::serve_connection(&server, |r| {
            answered += 1;
            match r {
                Ok(_) => Reply::ok(Vec::new()),
                Err(e) => Reply::error(e.errno()),
            }
        });
        drop(server);
        let mut replies = Vec::new();
        c.read_to_end(&mut replies).expect("read replies");
        // Every reply the loop wrote is one well-formed reply frame.
        let mut rest = &replies[..];
        let mut seen = 0usize;
        while !rest.is_empty() {
            assert!(rest.len() >= wire::HEADER_LEN);
            let len = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
            let (frame, tail) = rest.split_at(wire::HEADER_LEN + len);
            Reply::decode(frame).expect("the server wrote a bad reply");
            seen += 1;
            rest = tail;
        }
        assert_eq!(seen, answered);
    }
});
