//! The wire protocol between bpfilter clients (the `LD_PRELOAD` interposer, the CLI) and the
//! daemon.
//!
//! # Framing
//! Every message is one frame on a `SOCK_STREAM` Unix socket:
//!
//! | offset | size | field                                                   |
//! |--------|------|---------------------------------------------------------|
//! | 0      | 4    | magic, the bytes `"BPFL"`                               |
//! | 4      | 2    | version, u16 little endian, [`VERSION`]                 |
//! | 6      | 2    | kind, u16 little endian ([`RequestKind`] or [`REPLY_KIND`]) |
//! | 8      | 4    | payload length, u32 little endian, at most [`MAX_PAYLOAD`] |
//! | 12     | len  | payload                                                 |
//!
//! Request payloads (all integers little endian):
//! - `Sockopt`: family u8 (2 = IPv4, 10 = IPv6), op u8 (0 = get, 1 = set), reserved u16 (0),
//!   optname u32, optlen u32, then the optval bytes. For a get, optlen is the caller's `*optlen`
//!   and the bytes are the input part of optval (at most optlen bytes: the table name of
//!   GET_INFO, the 40-byte header of GET_ENTRIES, the 30-byte `xt_get_revision`). For a set,
//!   optlen equals the number of bytes that follow (the whole optval).
//! - `TableNames`: family u8, three reserved bytes (0).
//! - `Status`, `Counters`: an opaque payload the daemon defines.
//! - `Dump`: flags u8 (bit 0: a hook name follows), reserved u8 (0), hook length u16 (at most
//!   [`MAX_HOOK_NAME`]), the hook name (UTF-8), then an opaque payload.
//! - `Flush`: all u8 (0 or 1), three reserved bytes (0), then an opaque payload.
//! - `RecentRead`: name length u16 (1 to [`MAX_RECENT_NAME`]), reserved u16 (0), then the
//!   name of the `recent` list (UTF-8, no NUL, no `/`): the `NAME` of `/proc/net/xt_recent/NAME`.
//! - `RecentWrite`: name length u16 (as for `RecentRead`), data length u16 (at most
//!   [`MAX_RECENT_WRITE`]), the name, then the data: the first bytes of one write(2) to that
//!   file (`+ADDR`, `-ADDR`, `/`), all that the kernel's `recent_mt_proc_write` looks at.
//!
//! Reply payload: errno i32 (0 = success, [`KERNEL_SERVES`], else a positive errno), then the
//! payload: for a
//! sockopt get, the optval bytes to copy back to the caller (empty for revision queries, which
//! leave optval untouched); for `IPT_SO_SET_REPLACE`, the old counters (num_counters x 16 bytes);
//! for `TableNames`, the text of `/proc/net/ip_tables_names` (one name per line, each ending in
//! `\n`, see [`table_names_payload`]); for `RecentRead`, the text of `/proc/net/xt_recent/NAME`;
//! for `RecentWrite`, write's return count as a u64 (see [`recent_write_payload`]). ENOENT on
//! either: no `recent` list of that name in bpfilter's tables.
//!
//! Every request carries the sender's network namespace (an fd of `/proc/self/ns/net`) as
//! `SCM_RIGHTS` ancillary data on its first bytes. A connection carries any number of
//! request/reply pairs in sequence; the clients in this crate use one connection per request.
//!
//! # Contract
//! Lengths are checked against [`MAX_PAYLOAD`] before anything is allocated; garbage, short or
//! oversized frames give a [`WireError`], never a panic. `decode` is the exact inverse of
//! `encode`.
#![allow(
    unsafe_code,
    reason = "SCM_RIGHTS: adopting received fds needs from_raw_fd"
)]

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use zerocopy::little_endian::{I32, U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The reply errno that means "not bpfilter's: make this call against the kernel": a sockopt
/// or table-names request of a family bpfilter does not compile (IPv6, until it does). The
/// preload then calls the real `getsockopt`/`setsockopt`/`fopen`, so that the kernel answers
/// exactly as without bpfilter.
pub const KERNEL_SERVES: i32 = -1;

/// Frame magic: the ASCII bytes `BPFL`.
pub const MAGIC: [u8; 4] = *b"BPFL";
/// Protocol version carried by every frame; a frame with another version is refused.
pub const VERSION: u16 = 1;
/// Size of the frame header (magic, version, kind, length).
pub const HEADER_LEN: usize = 12;
/// Largest payload accepted in either direction (256 MiB), checked before allocating.
pub const MAX_PAYLOAD: u32 = 256 << 20;
/// Longest hook name in a `Dump` request.
pub const MAX_HOOK_NAME: usize = 256;
/// Longest `recent` list name (`XT_RECENT_NAME_LEN` minus its NUL).
pub const MAX_RECENT_NAME: usize = 199;
/// The bytes of one write(2) to `/proc/net/xt_recent/NAME` the kernel looks at:
/// `sizeof("+b335:1d35:1e55:dead:c0de:1715:5afe:c0de")` in `recent_mt_proc_write`.
pub const MAX_RECENT_WRITE: usize = 40;
/// Frame kind of a reply.
pub const REPLY_KIND: u16 = 0x8000;
/// Largest errno a reply may carry (the kernel's MAX_ERRNO).
pub const MAX_ERRNO: i32 = 4095;
/// Path of the network namespace handle sent with every request.
pub const NETNS_PATH: &str = "/proc/self/ns/net";

/// Fixed part of a `Sockopt` request payload.
const SOCKOPT_FIXED: usize = size_of::<SockoptHead>();
/// Largest optval a `Sockopt` request can carry (the payload bound minus its fixed part).
pub const MAX_OPTVAL: usize = MAX_PAYLOAD as usize - SOCKOPT_FIXED;
/// Fixed part of a `Dump` request payload.
const DUMP_FIXED: usize = size_of::<DumpHead>();
/// Bytes of the first chunk the reader asks for when a frame is announced; the rest grows as
/// data actually arrives, so a peer that announces a huge length and sends nothing costs little.
const READ_CHUNK: usize = 1 << 20;
/// The longest a frame's payload may take to arrive once its header has.
pub const FRAME_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// How many fds one message can carry (the kernel's SCM_MAX_FD): the control buffer has room
/// for all of them, so it is never truncated (nix cannot parse a truncated one, and the fds the
/// kernel did install would leak). Any beyond the first are closed.
const MAX_FDS: usize = 253;

// The fixed-layout parts of frames, as they are on the wire (see the module doc): byte arrays
// and little-endian integers only, so every struct has alignment 1, no padding, and reads
// from any offset of a buffer.

/// The frame header.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
struct RawHeader {
    /// [`MAGIC`].
    magic: [u8; 4],
    /// [`VERSION`].
    version: U16,
    /// A [`RequestKind`] code or [`REPLY_KIND`].
    kind: U16,
    /// Payload length.
    len: U32,
}

/// The fixed part of a `Sockopt` request payload (the optval bytes follow).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
struct SockoptHead {
    /// [`Family`] value.
    family: u8,
    /// [`SockoptOp`] value.
    op: u8,
    /// Zero.
    reserved: [u8; 2],
    /// The optname.
    optname: U32,
    /// The optlen.
    optlen: U32,
}

/// A `TableNames` request payload.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
struct TableNamesBody {
    /// [`Family`] value.
    family: u8,
    /// Zero.
    reserved: [u8; 3],
}

/// The fixed part of a `Dump` request payload (the hook name, then the opaque payload follow).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
struct DumpHead {
    /// Bit 0: a hook name follows.
    flags: u8,
    /// Zero.
    reserved: [u8; 1],
    /// Length of the hook name.
    hook_len: U16,
}

/// The fixed part of a `Flush` request payload (the opaque payload follows).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
struct FlushHead {
    /// 0 or 1.
    all: u8,
    /// Zero.
    reserved: [u8; 3],
}

/// The fixed part of a `RecentRead` / `RecentWrite` request payload (the name, then the data
/// follow).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
struct RecentHead {
    /// Length of the list name.
    name_len: U16,
    /// Length of the write's data (zero for a read).
    data_len: U16,
}

/// The fixed part of a reply payload (the answer's bytes follow).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
struct ReplyHead {
    /// 0 or a positive errno.
    errno: I32,
}

const _: () = {
    assert!(size_of::<RawHeader>() == HEADER_LEN);
    assert!(size_of::<SockoptHead>() == 12);
    assert!(size_of::<TableNamesBody>() == 4);
    assert!(size_of::<DumpHead>() == 4);
    assert!(size_of::<FlushHead>() == 4);
    assert!(size_of::<RecentHead>() == 4);
    assert!(size_of::<ReplyHead>() == 4);
};

/// Errors of framing, decoding and transport.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed by peer")]
    Closed,
    /// A read or write on the socket failed.
    #[error("socket {op} failed: {source}")]
    Io {
        /// The operation that failed ("read", "write", "recvmsg", "sendmsg", "open").
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// Fewer bytes than a frame or field needs.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The frame does not start with [`MAGIC`].
    #[error("bad magic {0:02x?} (not a bpfilter frame)")]
    BadMagic([u8; 4]),
    /// The frame's version is not [`VERSION`].
    #[error("unsupported protocol version {0} (this side speaks {VERSION})")]
    BadVersion(u16),
    /// The kind field names no known request (or a reply where a request was expected).
    #[error("unknown frame kind {0:#06x}")]
    UnknownKind(u16),
    /// A declared length is above a limit.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Which length.
        what: &'static str,
        /// Declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The family byte is neither 2 (IPv4) nor 10 (IPv6).
    #[error("unknown address family {0}")]
    UnknownFamily(u8),
    /// A field holds a value the protocol does not allow.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which field.
        what: &'static str,
        /// Why it is refused.
        detail: String,
    },
    /// The frame length and the payload structure disagree.
    #[error("{extra} trailing bytes after {what}")]
    Trailing {
        /// What was decoded.
        what: &'static str,
        /// Bytes left over.
        extra: usize,
    },
}

impl WireError {
    /// The errno that best describes this error to a sockopt caller (always positive).
    pub fn errno(&self) -> i32 {
        match self {
            WireError::Closed => libc::ECONNRESET,
            WireError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            WireError::TooLarge { .. } => libc::EMSGSIZE,
            WireError::UnknownFamily(_) => libc::EAFNOSUPPORT,
            WireError::Truncated { .. }
            | WireError::BadMagic(_)
            | WireError::BadVersion(_)
            | WireError::UnknownKind(_)
            | WireError::Malformed { .. }
            | WireError::Trailing { .. } => libc::EPROTO,
        }
    }

    /// Whether a socket timeout ended the wait (SO_RCVTIMEO/SO_SNDTIMEO, or
    /// [`FRAME_DEADLINE`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, WireError::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }

    fn io(op: &'static str, source: io::Error) -> Self {
        WireError::Io { op, source }
    }

    fn errno_io(op: &'static str, errno: Errno) -> Self {
        WireError::Io {
            op,
            source: io::Error::from_raw_os_error(errno as i32),
        }
    }
}

/// Address family of a request: the `NFPROTO_*` / `AF_*` value on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Family {
    /// iptables (level `IPPROTO_IP`, `ipt_*` structs).
    Ipv4 = 2,
    /// ip6tables (level `IPPROTO_IPV6`, `ip6t_*` structs).
    Ipv6 = 10,
}

impl Family {
    /// The wire (and `AF_*`) value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Parses the wire value.
    pub fn from_u8(v: u8) -> Result<Family, WireError> {
        match v {
            2 => Ok(Family::Ipv4),
            10 => Ok(Family::Ipv6),
            other => Err(WireError::UnknownFamily(other)),
        }
    }
}

/// Direction of a sockopt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SockoptOp {
    /// getsockopt.
    Get = 0,
    /// setsockopt.
    Set = 1,
}

/// A forwarded getsockopt/setsockopt call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sockopt {
    /// Which table family (from the sockopt level).
    pub family: Family,
    /// get or set.
    pub op: SockoptOp,
    /// The optname (`IPT_SO_*` / `IP6T_SO_*`).
    pub optname: u32,
    /// For a get: the caller's `*optlen`. For a set: the caller's optlen (= `payload.len()`).
    pub optlen: u32,
    /// For a get: the input bytes of optval (a prefix of at most optlen bytes). For a set: all
    /// of optval.
    pub payload: Vec<u8>,
}

/// Kind codes of requests (the frame's kind field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum RequestKind {
    /// A forwarded sockopt.
    Sockopt = 1,
    /// The table names of `/proc/net/ip_tables_names` / `ip6_tables_names`.
    TableNames = 2,
    /// Daemon status (CLI).
    Status = 3,
    /// Counters (CLI).
    Counters = 4,
    /// Dump of programs/rules (CLI).
    Dump = 5,
    /// Remove what bpfilter attached (CLI).
    Flush = 6,
    /// Read `/proc/net/xt_recent/NAME` (the interposer's open).
    RecentRead = 7,
    /// One write(2) to `/proc/net/xt_recent/NAME`.
    RecentWrite = 8,
}

impl RequestKind {
    /// Parses the frame's kind field.
    pub fn from_u16(v: u16) -> Result<RequestKind, WireError> {
        Ok(match v {
            1 => RequestKind::Sockopt,
            2 => RequestKind::TableNames,
            3 => RequestKind::Status,
            4 => RequestKind::Counters,
            5 => RequestKind::Dump,
            6 => RequestKind::Flush,
            7 => RequestKind::RecentRead,
            8 => RequestKind::RecentWrite,
            other => return Err(WireError::UnknownKind(other)),
        })
    }
}

/// A request from a client to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A forwarded getsockopt/setsockopt.
    Sockopt(Sockopt),
    /// Which tables exist in the caller's namespace.
    TableNames {
        /// IPv4 (`ip_tables_names`) or IPv6 (`ip6_tables_names`).
        family: Family,
    },
    /// `bpfilter status`.
    Status {
        /// Opaque, defined by the daemon.
        payload: Vec<u8>,
    },
    /// `bpfilter counters`.
    Counters {
        /// Opaque, defined by the daemon.
        payload: Vec<u8>,
    },
    /// `bpfilter dump [HOOK]`.
    Dump {
        /// The hook (or program) to dump; None = everything.
        hook: Option<String>,
        /// Opaque, defined by the daemon.
        payload: Vec<u8>,
    },
    /// `bpfilter flush [--all]`.
    Flush {
        /// Every namespace (true) or only the caller's (false).
        all: bool,
        /// Opaque, defined by the daemon.
        payload: Vec<u8>,
    },
    /// The text of `/proc/net/xt_recent/NAME` in the caller's namespace.
    RecentRead {
        /// The list's name (1 to [`MAX_RECENT_NAME`] bytes, no NUL, no `/`).
        name: String,
    },
    /// One write(2) to `/proc/net/xt_recent/NAME` in the caller's namespace.
    RecentWrite {
        /// The list's name (as for `RecentRead`).
        name: String,
        /// The write's first bytes (at most [`MAX_RECENT_WRITE`]).
        data: Vec<u8>,
    },
}

/// The daemon's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 0 on success, else the positive errno the caller must see.
    pub errno: i32,
    /// What to hand back (see the module doc); usually empty on error.
    pub payload: Vec<u8>,
}

impl Reply {
    /// A successful reply.
    pub fn ok(payload: Vec<u8>) -> Reply {
        Reply { errno: 0, payload }
    }

    /// "Not bpfilter's": the client makes the call against the kernel itself
    /// ([`KERNEL_SERVES`]).
    pub fn kernel_serves() -> Reply {
        Reply::error(KERNEL_SERVES)
    }

    /// A failed reply with a positive errno and no payload.
    pub fn error(errno: i32) -> Reply {
        Reply {
            errno,
            payload: Vec::new(),
        }
    }

    /// Serializes the whole frame (header + payload).
    pub fn encode(&self) -> Vec<u8> {
        let head = ReplyHead {
            errno: I32::new(self.errno),
        };
        frame(REPLY_KIND, &[head.as_bytes(), &self.payload])
    }

    /// Parses one whole frame (header + payload, nothing after it).
    pub fn decode(frame: &[u8]) -> Result<Reply, WireError> {
        let (kind, body) = split_frame(frame)?;
        if kind != REPLY_KIND {
            return Err(WireError::UnknownKind(kind));
        }
        Reply::decode_body(body)
    }

    /// Parses a reply payload (after the header).
    pub fn decode_body(body: &[u8]) -> Result<Reply, WireError> {
        let (head, payload) = read_head::<ReplyHead>(body, "reply errno")?;
        let errno = head.errno.get();
        if !(0..=MAX_ERRNO).contains(&errno) && errno != KERNEL_SERVES {
            return Err(WireError::Malformed {
                what: "reply errno",
                detail: format!("{errno} is not 0 or a positive errno"),
            });
        }
        Ok(Reply {
            errno,
            payload: payload.to_vec(),
        })
    }
}

impl Request {
    /// The kind code of this request.
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Sockopt(_) => RequestKind::Sockopt,
            Request::TableNames { .. } => RequestKind::TableNames,
            Request::Status { .. } => RequestKind::Status,
            Request::Counters { .. } => RequestKind::Counters,
            Request::Dump { .. } => RequestKind::Dump,
            Request::Flush { .. } => RequestKind::Flush,
            Request::RecentRead { .. } => RequestKind::RecentRead,
            Request::RecentWrite { .. } => RequestKind::RecentWrite,
        }
    }

    /// Serializes the whole frame (header + payload).
    ///
    /// Lengths are not checked here (a Dump hook name longer than [`MAX_HOOK_NAME`], a recent
    /// list name or write outside its bounds, or a payload above [`MAX_PAYLOAD`] encodes, and the
    /// peer refuses it); [`write_request`] checks them.
    pub fn encode(&self) -> Vec<u8> {
        let body = match self {
            // the one that may be large (a table): its payload copied once, into the frame
            Request::Sockopt(s) => {
                let head = SockoptHead {
                    family: s.family.as_u8(),
                    op: s.op as u8,
                    reserved: [0; 2],
                    optname: U32::new(s.optname),
                    optlen: U32::new(s.optlen),
                };
                return frame(self.kind() as u16, &[head.as_bytes(), &s.payload]);
            }
            Request::TableNames { family } => TableNamesBody {
                family: family.as_u8(),
                reserved: [0; 3],
            }
            .as_bytes()
            .to_vec(),
            Request::Status { payload } | Request::Counters { payload } => payload.clone(),
            Request::Dump { hook, payload } => {
                let name = hook.as_deref().unwrap_or("").as_bytes();
                // Oversized names are cut to u16 here and refused by the peer's length check.
                let name = &name[..name.len().min(u16::MAX as usize)];
                let head = DumpHead {
                    flags: u8::from(hook.is_some()),
                    reserved: [0; 1],
                    hook_len: U16::new(name.len() as u16),
                };
                let mut b = Vec::with_capacity(DUMP_FIXED + name.len() + payload.len());
                b.extend_from_slice(head.as_bytes());
                b.extend_from_slice(name);
                b.extend_from_slice(payload);
                b
            }
            Request::Flush { all, payload } => {
                let head = FlushHead {
                    all: u8::from(*all),
                    reserved: [0; 3],
                };
                let mut b = Vec::with_capacity(size_of::<FlushHead>() + payload.len());
                b.extend_from_slice(head.as_bytes());
                b.extend_from_slice(payload);
                b
            }
            Request::RecentRead { name } => recent_body(name, &[]),
            Request::RecentWrite { name, data } => recent_body(name, data),
        };
        frame(self.kind() as u16, &[&body])
    }

    /// Parses one whole frame (header + payload, nothing after it). Never panics.
    pub fn decode(frame: &[u8]) -> Result<Request, WireError> {
        let (kind, body) = split_frame(frame)?;
        Request::decode_body(RequestKind::from_u16(kind)?, body)
    }

    /// Parses a request payload of the given kind (after the header).
    pub fn decode_body(kind: RequestKind, body: &[u8]) -> Result<Request, WireError> {
        Ok(match kind {
            RequestKind::Sockopt => {
                let (head, optval) = read_head::<SockoptHead>(body, "sockopt header")?;
                let family = Family::from_u8(head.family)?;
                let op = match head.op {
                    0 => SockoptOp::Get,
                    1 => SockoptOp::Set,
                    other => {
                        return Err(WireError::Malformed {
                            what: "sockopt op",
                            detail: format!("{other} is neither 0 (get) nor 1 (set)"),
                        })
                    }
                };
                reserved_zero(&head.reserved, "sockopt reserved")?;
                let optname = head.optname.get();
                let optlen = head.optlen.get();
                let payload = optval.to_vec();
                let consistent = match op {
                    SockoptOp::Get => payload.len() as u64 <= u64::from(optlen),
                    SockoptOp::Set => payload.len() as u64 == u64::from(optlen),
                };
                if !consistent {
                    return Err(WireError::Malformed {
                        what: "sockopt optlen",
                        detail: format!("optlen {optlen} with {} optval bytes", payload.len()),
                    });
                }
                Request::Sockopt(Sockopt {
                    family,
                    op,
                    optname,
                    optlen,
                    payload,
                })
            }
            RequestKind::TableNames => {
                let (head, rest) = read_head::<TableNamesBody>(body, "table-names request")?;
                reserved_zero(&head.reserved, "table-names reserved")?;
                if !rest.is_empty() {
                    return Err(WireError::Trailing {
                        what: "table-names request",
                        extra: rest.len(),
                    });
                }
                Request::TableNames {
                    family: Family::from_u8(head.family)?,
                }
            }
            RequestKind::Status => Request::Status {
                payload: body.to_vec(),
            },
            RequestKind::Counters => Request::Counters {
                payload: body.to_vec(),
            },
            RequestKind::Dump => {
                let (head, rest) = read_head::<DumpHead>(body, "dump header")?;
                if head.flags > 1 {
                    return Err(WireError::Malformed {
                        what: "dump flags",
                        detail: format!("{:#04x} has unknown bits", head.flags),
                    });
                }
                reserved_zero(&head.reserved, "dump reserved")?;
                let len = usize::from(head.hook_len.get());
                if len > MAX_HOOK_NAME {
                    return Err(WireError::TooLarge {
                        what: "dump hook name",
                        len: len as u64,
                        max: MAX_HOOK_NAME as u64,
                    });
                }
                if rest.len() < len {
                    return Err(WireError::Truncated {
                        what: "dump hook name",
                        need: len,
                        have: rest.len(),
                    });
                }
                let name = std::str::from_utf8(&rest[..len]).map_err(|e| WireError::Malformed {
                    what: "dump hook name",
                    detail: e.to_string(),
                })?;
                let hook = if head.flags & 1 == 1 {
                    Some(name.to_owned())
                } else if len == 0 {
                    None
                } else {
                    return Err(WireError::Malformed {
                        what: "dump hook name",
                        detail: "name bytes without the hook flag".into(),
                    });
                };
                Request::Dump {
                    hook,
                    payload: rest[len..].to_vec(),
                }
            }
            RequestKind::Flush => {
                let (head, rest) = read_head::<FlushHead>(body, "flush header")?;
                let all = match head.all {
                    0 => false,
                    1 => true,
                    other => {
                        return Err(WireError::Malformed {
                            what: "flush all",
                            detail: format!("{other} is not a boolean"),
                        })
                    }
                };
                reserved_zero(&head.reserved, "flush reserved")?;
                Request::Flush {
                    all,
                    payload: rest.to_vec(),
                }
            }
            RequestKind::RecentRead => {
                let (name, _no_data) = decode_recent(body, false)?;
                Request::RecentRead { name }
            }
            RequestKind::RecentWrite => {
                let (name, data) = decode_recent(body, true)?;
                Request::RecentWrite { name, data }
            }
        })
    }
}

/// The payload of a `RecentRead` (empty `data`) or `RecentWrite` request. Oversized lengths are
/// cut to u16 here and refused by the peer's length checks.
fn recent_body(name: &str, data: &[u8]) -> Vec<u8> {
    let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
    let data = &data[..data.len().min(u16::MAX as usize)];
    let head = RecentHead {
        name_len: U16::new(name.len() as u16),
        data_len: U16::new(data.len() as u16),
    };
    let mut b = Vec::with_capacity(size_of::<RecentHead>() + name.len() + data.len());
    b.extend_from_slice(head.as_bytes());
    b.extend_from_slice(name);
    b.extend_from_slice(data);
    b
}

/// Parses a `RecentRead` (`write` false: the data length is reserved, zero) or `RecentWrite`
/// payload into the list name and the data.
fn decode_recent(body: &[u8], write: bool) -> Result<(String, Vec<u8>), WireError> {
    let (head, rest) = read_head::<RecentHead>(body, "recent header")?;
    let name_len = usize::from(head.name_len.get());
    let data_len = usize::from(head.data_len.get());
    check_recent_name_len(name_len)?;
    if !write && data_len != 0 {
        return Err(WireError::Malformed {
            what: "recent read reserved",
            detail: format!("{data_len} must be zero"),
        });
    }
    check_recent_data_len(data_len)?;
    let need = name_len + data_len;
    if rest.len() < need {
        return Err(WireError::Truncated {
            what: "recent name and data",
            need,
            have: rest.len(),
        });
    }
    if rest.len() > need {
        return Err(WireError::Trailing {
            what: "recent request",
            extra: rest.len() - need,
        });
    }
    let name = std::str::from_utf8(&rest[..name_len]).map_err(|e| WireError::Malformed {
        what: "recent list name",
        detail: e.to_string(),
    })?;
    if name.contains(['\0', '/']) {
        return Err(WireError::Malformed {
            what: "recent list name",
            detail: format!("{name:?} holds a NUL or a '/'"),
        });
    }
    Ok((name.to_owned(), rest[name_len..].to_vec()))
}

fn check_recent_name_len(len: usize) -> Result<(), WireError> {
    if len == 0 {
        return Err(WireError::Malformed {
            what: "recent list name",
            detail: "empty".into(),
        });
    }
    if len > MAX_RECENT_NAME {
        return Err(WireError::TooLarge {
            what: "recent list name",
            len: len as u64,
            max: MAX_RECENT_NAME as u64,
        });
    }
    Ok(())
}

fn check_recent_data_len(len: usize) -> Result<(), WireError> {
    if len > MAX_RECENT_WRITE {
        return Err(WireError::TooLarge {
            what: "recent write data",
            len: len as u64,
            max: MAX_RECENT_WRITE as u64,
        });
    }
    Ok(())
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The kind field (a [`RequestKind`] code or [`REPLY_KIND`]).
    pub kind: u16,
    /// Payload length, already checked against [`MAX_PAYLOAD`].
    pub len: u32,
}

impl FrameHeader {
    /// Checks magic, version and the length bound of a 12-byte header.
    pub fn parse(h: &[u8; HEADER_LEN]) -> Result<FrameHeader, WireError> {
        FrameHeader::from_raw(zerocopy::transmute!(*h))
    }

    fn from_raw(h: RawHeader) -> Result<FrameHeader, WireError> {
        if h.magic != MAGIC {
            return Err(WireError::BadMagic(h.magic));
        }
        let version = h.version.get();
        if version != VERSION {
            return Err(WireError::BadVersion(version));
        }
        let kind = h.kind.get();
        let len = h.len.get();
        if len > MAX_PAYLOAD {
            return Err(WireError::TooLarge {
                what: "frame payload",
                len: u64::from(len),
                max: u64::from(MAX_PAYLOAD),
            });
        }
        Ok(FrameHeader { kind, len })
    }
}

/// The body of `/proc/net/ip_tables_names` for these tables: one name per line.
pub fn table_names_payload<S: AsRef<str>>(names: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names {
        out.extend_from_slice(n.as_ref().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Splits a `TableNames` reply payload into names (empty lines ignored).
pub fn parse_table_names(payload: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(payload)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The payload of a successful `RecentWrite` reply: write's return count, u64 little endian.
pub fn recent_write_payload(count: usize) -> Vec<u8> {
    (count as u64).to_le_bytes().to_vec()
}

/// Reads a `RecentWrite` reply payload (see [`recent_write_payload`]).
pub fn parse_recent_write(payload: &[u8]) -> Result<usize, WireError> {
    let raw: [u8; 8] = payload.try_into().map_err(|_| WireError::Malformed {
        what: "recent write count",
        detail: format!("{} bytes instead of 8", payload.len()),
    })?;
    let count = u64::from_le_bytes(raw);
    usize::try_from(count).map_err(|_| WireError::Malformed {
        what: "recent write count",
        detail: format!("{count} does not fit a size_t"),
    })
}

/// Opens the caller's network namespace (`/proc/self/ns/net`, O_RDONLY | O_CLOEXEC) to send
/// with a request.
pub fn open_netns() -> Result<OwnedFd, WireError> {
    // std opens with O_RDONLY | O_CLOEXEC, which is what SCM_RIGHTS wants.
    std::fs::File::open(NETNS_PATH)
        .map(OwnedFd::from)
        .map_err(|e| WireError::io("open", e))
}

/// Sends one request, attaching `netns` (the caller's namespace fd) as SCM_RIGHTS.
/// Refuses (before sending) a payload above [`MAX_PAYLOAD`], a hook name above
/// [`MAX_HOOK_NAME`], a recent list name outside 1..=[`MAX_RECENT_NAME`] or a recent write above
/// [`MAX_RECENT_WRITE`].
pub fn write_request(
    stream: &UnixStream,
    req: &Request,
    netns: Option<BorrowedFd<'_>>,
) -> Result<(), WireError> {
    match req {
        Request::Dump { hook: Some(h), .. } if h.len() > MAX_HOOK_NAME => {
            return Err(WireError::TooLarge {
                what: "dump hook name",
                len: h.len() as u64,
                max: MAX_HOOK_NAME as u64,
            });
        }
        Request::RecentRead { name } => check_recent_name_len(name.len())?,
        Request::RecentWrite { name, data } => {
            check_recent_name_len(name.len())?;
            check_recent_data_len(data.len())?;
        }
        _ => {}
    }
    send_frame(stream, &req.encode(), netns)
}

/// Reads one request and the namespace fd that came with it (None if the client sent none).
/// A clean close before the first byte gives [`WireError::Closed`].
pub fn read_request(stream: &UnixStream) -> Result<(Request, Option<OwnedFd>), WireError> {
    let (req, fd) = read_request_in_sync(stream)?;
    Ok((req?, fd))
}

/// Reads one frame. The outer error is fatal for the connection (transport, bad header, short
/// read); the inner one is a request that did not decode while the stream stays in sync (its
/// whole payload was consumed), so the server can answer it and go on.
fn read_request_in_sync(
    stream: &UnixStream,
) -> Result<(Result<Request, WireError>, Option<OwnedFd>), WireError> {
    let (header, fd) = recv_header(stream)?;
    let body = read_body(stream, header.len)?;
    let req = RequestKind::from_u16(header.kind).and_then(|k| Request::decode_body(k, &body));
    Ok((req, fd))
}

/// Serves one connection until the peer closes it: `handle` gets every request (with its netns
/// fd) or the decoding error of a request that arrived whole, and returns the reply to send.
/// Returns Ok(()) on a clean close, or the error that broke the connection (garbage header,
/// truncated frame, transport failure); the caller just drops the connection then.
pub fn serve_connection<F>(stream: &UnixStream, mut handle: F) -> Result<(), WireError>
where
    F: FnMut(Result<(Request, Option<OwnedFd>), WireError>) -> Reply,
{
    loop {
        let (req, fd) = match read_request_in_sync(stream) {
            Ok(r) => r,
            Err(WireError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        let reply = handle(req.map(|r| (r, fd)));
        write_reply(stream, &reply)?;
    }
}

/// The peer's credentials (SO_PEERCRED), for the daemon's CAP_NET_ADMIN check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id of the peer at connect time.
    pub pid: i32,
    /// Its effective uid.
    pub uid: u32,
    /// Its effective gid.
    pub gid: u32,
}

/// Reads SO_PEERCRED of a connected Unix socket.
pub fn peer_credentials(stream: &UnixStream) -> Result<PeerCred, WireError> {
    let c = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| WireError::errno_io("getsockopt(SO_PEERCRED)", e))?;
    Ok(PeerCred {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// Sends one reply.
pub fn write_reply(stream: &UnixStream, reply: &Reply) -> Result<(), WireError> {
    send_frame(stream, &reply.encode(), None)
}

/// Reads one reply. Any fds the peer attached are closed.
pub fn read_reply(stream: &UnixStream) -> Result<Reply, WireError> {
    let (header, _fd) = recv_header(stream)?;
    if header.kind != REPLY_KIND {
        return Err(WireError::UnknownKind(header.kind));
    }
    let body = read_body(stream, header.len)?;
    Reply::decode_body(&body)
}

/// A frame of `kind` whose body is `parts`, one after the other.
fn frame(kind: u16, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let header = RawHeader {
        magic: MAGIC,
        version: U16::new(VERSION),
        kind: U16::new(kind),
        // A body above u32::MAX cannot be represented; saturating makes the peer refuse it as
        // too large instead of reading a wrapped length.
        len: U32::new(u32::try_from(len).unwrap_or(u32::MAX)),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    out.extend_from_slice(header.as_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

fn split_frame(frame: &[u8]) -> Result<(u16, &[u8]), WireError> {
    let (h, body) = read_head::<RawHeader>(frame, "frame header")?;
    let header = FrameHeader::from_raw(h)?;
    let len = header.len as usize;
    if body.len() < len {
        return Err(WireError::Truncated {
            what: "frame payload",
            need: len,
            have: body.len(),
        });
    }
    if body.len() > len {
        return Err(WireError::Trailing {
            what: "frame",
            extra: body.len() - len,
        });
    }
    Ok((header.kind, body))
}

/// The fixed-layout `T` at the start of `buf`, and the bytes after it.
fn read_head<'a, T: FromBytes>(
    buf: &'a [u8],
    what: &'static str,
) -> Result<(T, &'a [u8]), WireError> {
    T::read_from_prefix(buf).map_err(|_| WireError::Truncated {
        what,
        need: size_of::<T>(),
        have: buf.len(),
    })
}

fn reserved_zero(bytes: &[u8], what: &'static str) -> Result<(), WireError> {
    if bytes.iter().any(|&b| b != 0) {
        return Err(WireError::Malformed {
            what,
            detail: format!("{bytes:02x?} must be zero"),
        });
    }
    Ok(())
}

fn send_frame(
    stream: &UnixStream,
    bytes: &[u8],
    netns: Option<BorrowedFd<'_>>,
) -> Result<(), WireError> {
    if bytes.len() > HEADER_LEN + MAX_PAYLOAD as usize {
        return Err(WireError::TooLarge {
            what: "frame payload",
            len: (bytes.len() - HEADER_LEN) as u64,
            max: u64::from(MAX_PAYLOAD),
        });
    }
    let raw = stream.as_fd().as_raw_fd();
    let fds: Vec<RawFd> = netns.iter().map(|f| f.as_raw_fd()).collect();
    let mut sent = 0;
    while sent < bytes.len() {
        // The fd rides on the first bytes only; MSG_NOSIGNAL so that a daemon that went away
        // gives EPIPE instead of killing the client (iptables) with SIGPIPE.
        let cmsgs = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !fds.is_empty() {
            &cmsgs
        } else {
            &[]
        };
        match sendmsg::<()>(
            raw,
            &[IoSlice::new(&bytes[sent..])],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(0) => return Err(WireError::io("sendmsg", io::ErrorKind::WriteZero.into())),
            Ok(n) => sent += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(WireError::errno_io("sendmsg", e)),
        }
    }
    Ok(())
}

/// Receives the 12-byte header with recvmsg (the SCM_RIGHTS fd arrives with the first bytes).
fn recv_header(stream: &UnixStream) -> Result<(FrameHeader, Option<OwnedFd>), WireError> {
    let raw = stream.as_fd().as_raw_fd();
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    let mut first_fd: Option<OwnedFd> = None;
    while got < HEADER_LEN {
        let mut cmsg_buf = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut h[got..])];
        let (n, fds) = match recvmsg::<()>(
            raw,
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(raw_fds) = c {
                            fds.extend(raw_fds);
                        }
                    }
                }
                (msg.bytes, fds)
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(WireError::errno_io("recvmsg", e)),
        };
        for fd in fds {
            // SAFETY: the kernel just installed this fd in our table for this message (SCM_RIGHTS);
            // nobody else holds it, so we take ownership (extra ones are closed on drop).
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            if first_fd.is_none() {
                first_fd = Some(owned);
            }
        }
        if n == 0 {
            return Err(if got == 0 {
                WireError::Closed
            } else {
                WireError::Truncated {
                    what: "frame header",
                    need: HEADER_LEN,
                    have: got,
                }
            });
        }
        got += n;
    }
    Ok((FrameHeader::parse(&h)?, first_fd))
}

/// Reads exactly `len` payload bytes; allocation grows with the data actually received.
fn read_body(stream: &UnixStream, len: u32) -> Result<Vec<u8>, WireError> {
    let len = len as usize;
    // A peer that trickles a frame byte by byte cannot hold a reader forever: each read waits
    // at most the socket's read timeout (the daemon sets one), the whole payload this long.
    let deadline = std::time::Instant::now() + FRAME_DEADLINE;
    let mut body = vec![0u8; len.min(READ_CHUNK)];
    let mut have = 0;
    while have < len {
        if have == body.len() {
            body.resize(len.min(body.len() + READ_CHUNK), 0);
        }
        if std::time::Instant::now() > deadline {
            return Err(WireError::io(
                "read",
                io::Error::new(io::ErrorKind::TimedOut, "frame payload too slow"),
            ));
        }
        match (&*stream).read(&mut body[have..]) {
            Ok(0) => {
                return Err(WireError::Truncated {
                    what: "frame payload",
                    need: len,
                    have,
                })
            }
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WireError::io("read", e)),
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    fn family() -> impl Strategy<Value = Family> {
        prop_oneof![Just(Family::Ipv4), Just(Family::Ipv6)]
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..300)
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (family(), any::<bool>(), any::<u32>(), bytes(), 0u32..1000).prop_map(
                |(family, set, optname, payload, extra)| {
                    let op = if set { SockoptOp::Set } else { SockoptOp::Get };
                    let optlen = payload.len() as u32 + if set { 0 } else { extra };
                    Request::Sockopt(Sockopt {
                        family,
                        op,
                        optname,
                        optlen,
                        payload,
                    })
                }
            ),
            family().prop_map(|family| Request::TableNames { family }),
            bytes().prop_map(|payload| Request::Status { payload }),
            bytes().prop_map(|payload| Request::Counters { payload }),
            (proptest::option::of("[a-zA-Z0-9/_-]{0,40}"), bytes())
                .prop_map(|(hook, payload)| Request::Dump { hook, payload }),
            (any::<bool>(), bytes()).prop_map(|(all, payload)| Request::Flush { all, payload }),
            recent_name().prop_map(|name| Request::RecentRead { name }),
            (
                recent_name(),
                proptest::collection::vec(any::<u8>(), 0..=MAX_RECENT_WRITE)
            )
                .prop_map(|(name, data)| Request::RecentWrite { name, data }),
        ]
    }

    /// Any valid list name: 1 to 199 bytes of UTF-8 (multi-byte included), no NUL, no '/'.
    fn recent_name() -> impl Strategy<Value = String> {
        "[^\\x00/]{1,60}".prop_filter("at most MAX_RECENT_NAME bytes", |n| {
            n.len() <= MAX_RECENT_NAME
        })
    }

    proptest! {
        #[test]
        fn request_round_trip(req in request()) {
            let bytes = req.encode();
            prop_assert_eq!(Request::decode(&bytes)?, req);
        }

        #[test]
        fn recent_write_count_round_trip(n in 0usize..=MAX_RECENT_WRITE) {
            prop_assert_eq!(parse_recent_write(&recent_write_payload(n))?, n);
        }

        #[test]
        fn reply_round_trip(errno in 0i32..=MAX_ERRNO, payload in bytes()) {
            let r = Reply { errno, payload };
            prop_assert_eq!(Reply::decode(&r.encode())?, r);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Request::decode(&data);
            let _ = Reply::decode(&data);
        }

        #[test]
        fn mutated_frames_never_panic(req in request(), idx in any::<prop::sample::Index>(), b in any::<u8>()) {
            let mut bytes = req.encode();
            let i = idx.index(bytes.len());
            bytes[i] = b;
            let _ = Request::decode(&bytes);
        }

        #[test]
        fn every_truncation_is_an_error(req in request(), cut in any::<prop::sample::Index>()) {
            let bytes = req.encode();
            let n = cut.index(bytes.len());
            prop_assert!(Request::decode(&bytes[..n]).is_err());
        }
    }

    fn get_info() -> Request {
        let mut name = vec![0u8; 32];
        name[..6].copy_from_slice(b"filter");
        Request::Sockopt(Sockopt {
            family: Family::Ipv4,
            op: SockoptOp::Get,
            optname: 64,
            optlen: 84,
            payload: name,
        })
    }

    #[test]
    fn sockopt_layout_is_documented_one() {
        let b = get_info().encode();
        assert_eq!(&b[..4], b"BPFL");
        assert_eq!(&b[4..6], &[1, 0]);
        assert_eq!(&b[6..8], &[1, 0]);
        assert_eq!(u32::from_le_bytes([b[8], b[9], b[10], b[11]]), 12 + 32);
        assert_eq!(&b[12..16], &[2, 0, 0, 0]);
        assert_eq!(&b[16..20], &64u32.to_le_bytes());
        assert_eq!(&b[20..24], &84u32.to_le_bytes());
        assert_eq!(&b[24..30], b"filter");
    }

    /// Every fixed-layout part encodes to the documented bytes (little endian, no padding) and
    /// decodes back: the preload and the daemon of different builds stay compatible.
    #[test]
    fn headers_encode_to_the_exact_bytes_and_back() {
        // Frame header.
        let reply = Reply {
            errno: 0x0102,
            payload: vec![0xee; 0x0103],
        };
        let b = reply.encode();
        let want_header = [b'B', b'P', b'F', b'L', 1, 0, 0x00, 0x80, 0x07, 0x01, 0, 0];
        assert_eq!(b[..HEADER_LEN], want_header);
        let h: [u8; HEADER_LEN] = b[..HEADER_LEN].try_into().expect("12 bytes");
        assert_eq!(
            FrameHeader::parse(&h).expect("valid header"),
            FrameHeader {
                kind: REPLY_KIND,
                len: 4 + 0x0103,
            }
        );
        let raw = RawHeader {
            magic: MAGIC,
            version: U16::new(0x0201),
            kind: U16::new(0x0403),
            len: U32::new(0x0807_0605),
        };
        assert_eq!(
            raw.as_bytes(),
            &[b'B', b'P', b'F', b'L', 1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(RawHeader::read_from_bytes(raw.as_bytes()), Ok(raw));
        // Reply: errno, then the payload.
        assert_eq!(b[12..16], [0x02, 0x01, 0, 0]);
        assert_eq!(Reply::decode(&b).expect("reply"), reply);

        // Sockopt: family, op, reserved, optname, optlen, optval.
        let req = Request::Sockopt(Sockopt {
            family: Family::Ipv6,
            op: SockoptOp::Set,
            optname: 0x0403_0201,
            optlen: 2,
            payload: vec![0xaa, 0xbb],
        });
        let b = req.encode();
        assert_eq!(
            b[..HEADER_LEN],
            [b'B', b'P', b'F', b'L', 1, 0, 1, 0, 14, 0, 0, 0]
        );
        assert_eq!(
            b[HEADER_LEN..],
            [10, 1, 0, 0, 1, 2, 3, 4, 2, 0, 0, 0, 0xaa, 0xbb]
        );
        assert_eq!(Request::decode(&b).expect("sockopt"), req);

        // TableNames: family, three reserved bytes.
        let req = Request::TableNames {
            family: Family::Ipv4,
        };
        let b = req.encode();
        assert_eq!(
            b[..HEADER_LEN],
            [b'B', b'P', b'F', b'L', 1, 0, 2, 0, 4, 0, 0, 0]
        );
        assert_eq!(b[HEADER_LEN..], [2, 0, 0, 0]);
        assert_eq!(Request::decode(&b).expect("table names"), req);

        // Dump: flags, reserved, hook length, hook, payload.
        let req = Request::Dump {
            hook: Some("INPUT".into()),
            payload: vec![7],
        };
        let b = req.encode();
        assert_eq!(
            b[..HEADER_LEN],
            [b'B', b'P', b'F', b'L', 1, 0, 5, 0, 10, 0, 0, 0]
        );
        assert_eq!(
            b[HEADER_LEN..],
            [1, 0, 5, 0, b'I', b'N', b'P', b'U', b'T', 7]
        );
        assert_eq!(Request::decode(&b).expect("dump"), req);

        // Flush: all, three reserved bytes, payload.
        let req = Request::Flush {
            all: true,
            payload: vec![9, 8],
        };
        let b = req.encode();
        assert_eq!(
            b[..HEADER_LEN],
            [b'B', b'P', b'F', b'L', 1, 0, 6, 0, 6, 0, 0, 0]
        );
        assert_eq!(b[HEADER_LEN..], [1, 0, 0, 0, 9, 8]);
        assert_eq!(Request::decode(&b).expect("flush"), req);

        // RecentRead: name length, reserved (0), name.
        let req = Request::RecentRead { name: "ssh".into() };
        let b = req.encode();
        assert_eq!(
            b[..HEADER_LEN],
            [b'B', b'P', b'F', b'L', 1, 0, 7, 0, 7, 0, 0, 0]
        );
        assert_eq!(b[HEADER_LEN..], [3, 0, 0, 0, b's', b's', b'h']);
        assert_eq!(Request::decode(&b).expect("recent read"), req);

        // RecentWrite: name length, data length, name, data.
        let req = Request::RecentWrite {
            name: "ssh".into(),
            data: b"+1.2.3.4\n".to_vec(),
        };
        let b = req.encode();
        assert_eq!(
            b[..HEADER_LEN],
            [b'B', b'P', b'F', b'L', 1, 0, 8, 0, 16, 0, 0, 0]
        );
        assert_eq!(
            b[HEADER_LEN..HEADER_LEN + 7],
            [3, 0, 9, 0, b's', b's', b'h']
        );
        assert_eq!(b[HEADER_LEN + 7..], *b"+1.2.3.4\n");
        assert_eq!(Request::decode(&b).expect("recent write"), req);

        // A RecentWrite reply: the count, u64 little endian.
        assert_eq!(recent_write_payload(0x0102), [2, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn header_errors() {
        let mut b = get_info().encode();
        b[0] = b'X';
        assert!(matches!(Request::decode(&b), Err(WireError::BadMagic(_))));
        let mut b = get_info().encode();
        b[4] = 2;
        assert!(matches!(Request::decode(&b), Err(WireError::BadVersion(2))));
        let mut b = get_info().encode();
        b[6] = 99;
        assert!(matches!(
            Request::decode(&b),
            Err(WireError::UnknownKind(99))
        ));
        let mut b = get_info().encode();
        b[8..12].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        let e = Request::decode(&b).expect_err("must fail");
        assert!(matches!(e, WireError::TooLarge { .. }), "{e}");
        assert_eq!(e.errno(), libc::EMSGSIZE);
        let mut b = get_info().encode();
        b.push(0);
        assert!(matches!(
            Request::decode(&b),
            Err(WireError::Trailing { .. })
        ));
        // A reply is not a request, and the other way round.
        assert!(Request::decode(&Reply::ok(vec![]).encode()).is_err());
        assert!(Reply::decode(&get_info().encode()).is_err());
    }

    #[test]
    fn field_errors() {
        let mut b = get_info().encode();
        b[12] = 7;
        assert!(matches!(
            Request::decode(&b),
            Err(WireError::UnknownFamily(7))
        ));
        let mut b = get_info().encode();
        b[13] = 2;
        assert!(matches!(
            Request::decode(&b),
            Err(WireError::Malformed { .. })
        ));
        let mut b = get_info().encode();
        b[14] = 1;
        assert!(matches!(
            Request::decode(&b),
            Err(WireError::Malformed { .. })
        ));
        // A get whose optval prefix is longer than optlen is inconsistent.
        let mut b = get_info().encode();
        b[20..24].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(
            Request::decode(&b),
            Err(WireError::Malformed { .. })
        ));
        // A set whose optlen differs from the bytes sent.
        let set = Request::Sockopt(Sockopt {
            family: Family::Ipv6,
            op: SockoptOp::Set,
            optname: 64,
            optlen: 3,
            payload: vec![1, 2],
        });
        assert!(Request::decode(&set.encode()).is_err());
        let r = Reply {
            errno: -2,
            payload: vec![],
        };
        assert!(Reply::decode(&r.encode()).is_err());
        // -1 is KERNEL_SERVES, the one negative value
        let r = Reply::kernel_serves();
        assert_eq!(
            Reply::decode(&r.encode()).map(|r| r.errno).ok(),
            Some(KERNEL_SERVES)
        );
        let r = Reply {
            errno: 5000,
            payload: vec![],
        };
        assert!(Reply::decode(&r.encode()).is_err());
        // Dump: a hook name longer than the bound, and a name without the flag.
        let d = Request::Dump {
            hook: Some("x".repeat(MAX_HOOK_NAME + 1)),
            payload: vec![],
        };
        assert!(matches!(
            Request::decode(&d.encode()),
            Err(WireError::TooLarge { .. })
        ));
        let mut b = Request::Dump {
            hook: Some("INPUT".into()),
            payload: vec![],
        }
        .encode();
        b[12] = 0;
        assert!(Request::decode(&b).is_err());
    }

    #[test]
    fn recent_field_errors() {
        let read = |name: &str| Request::RecentRead { name: name.into() };
        let write = |name: &str, data: &[u8]| Request::RecentWrite {
            name: name.into(),
            data: data.to_vec(),
        };
        // Names: empty, one byte too long, NUL, '/', not UTF-8.
        for req in [read(""), write("", b"/")] {
            assert!(matches!(
                Request::decode(&req.encode()),
                Err(WireError::Malformed { .. })
            ));
        }
        let longest = "x".repeat(MAX_RECENT_NAME);
        assert!(Request::decode(&read(&longest).encode()).is_ok());
        let too_long = "x".repeat(MAX_RECENT_NAME + 1);
        for req in [read(&too_long), write(&too_long, b"/")] {
            assert!(matches!(
                Request::decode(&req.encode()),
                Err(WireError::TooLarge { .. })
            ));
        }
        for name in ["a\0b", "a/b", "/", ".."] {
            let r = Request::decode(&read(name).encode());
            assert_eq!(r.is_err(), name != "..", "{name:?}: {r:?}");
        }
        let mut b = read("ab").encode();
        b[HEADER_LEN + 4] = 0xff;
        assert!(matches!(
            Request::decode(&b),
            Err(WireError::Malformed { .. })
        ));
        // Data: at most 40 bytes; a read carries none (its data length is reserved).
        let full = [b'+'; MAX_RECENT_WRITE];
        assert!(Request::decode(&write("a", &full).encode()).is_ok());
        let over = [b'+'; MAX_RECENT_WRITE + 1];
        assert!(matches!(
            Request::decode(&write("a", &over).encode()),
            Err(WireError::TooLarge { .. })
        ));
        let mut b = write("a", b"/").encode();
        b[6] = RequestKind::RecentRead as u8;
        assert!(matches!(
            Request::decode(&b),
            Err(WireError::Malformed { .. })
        ));
        // Lengths that disagree with the frame: short, and trailing bytes.
        let mut b = write("ab", b"+1.2.3.4").encode();
        b[HEADER_LEN + 2] += 1;
        assert!(matches!(
            Request::decode(&b),
            Err(WireError::Truncated { .. })
        ));
        let mut b = write("ab", b"+1.2.3.4").encode();
        b[HEADER_LEN + 2] -= 1;
        assert!(matches!(
            Request::decode(&b),
            Err(WireError::Trailing { .. })
        ));
        // The count of a write reply is exactly 8 bytes.
        assert!(parse_recent_write(&[0; 7]).is_err());
        assert!(parse_recent_write(&[0; 9]).is_err());
        // write_request refuses what the peer would refuse, before sending anything.
        let (a, _b) = UnixStream::pair().expect("socketpair");
        for req in [read(""), read(&too_long), write("a", &over)] {
            assert!(write_request(&a, &req, None).is_err(), "{req:?}");
        }
    }

    #[test]
    fn table_names_text() {
        let p = table_names_payload(&["filter", "raw"]);
        assert_eq!(p, b"filter\nraw\n");
        assert_eq!(
            parse_table_names(&p),
            vec!["filter".to_string(), "raw".to_string()]
        );
        assert!(parse_table_names(b"").is_empty());
    }

    #[test]
    fn stream_round_trip_with_netns_fd() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let ns = open_netns().expect("open netns");
        let req = get_info();
        write_request(&a, &req, Some(ns.as_fd())).expect("write");
        // Without an fd too.
        write_request(
            &a,
            &Request::Status {
                payload: b"{}".to_vec(),
            },
            None,
        )
        .expect("write");
        let (got, fd) = read_request(&b).expect("read");
        assert_eq!(got, req);
        let fd = fd.expect("netns fd passed");
        let mine = std::fs::metadata(NETNS_PATH).expect("stat");
        let theirs = std::fs::File::from(fd).metadata().expect("fstat");
        assert_eq!((mine.dev(), mine.ino()), (theirs.dev(), theirs.ino()));
        let (got, fd) = read_request(&b).expect("read");
        assert_eq!(
            got,
            Request::Status {
                payload: b"{}".to_vec()
            }
        );
        assert!(fd.is_none());

        write_reply(&b, &Reply::ok(vec![1; 84])).expect("reply");
        assert_eq!(read_reply(&a).expect("read reply"), Reply::ok(vec![1; 84]));
        drop(a);
        assert!(matches!(read_request(&b), Err(WireError::Closed)));
    }

    #[test]
    fn stream_errors_are_errors() {
        // Truncated header.
        let (mut a, b) = UnixStream::pair().expect("socketpair");
        a.write_all(b"BPFL\x01").expect("write");
        drop(a);
        assert!(matches!(read_request(&b), Err(WireError::Truncated { .. })));
        // Huge announced length: refused from the header, nothing allocated.
        let (mut a, b) = UnixStream::pair().expect("socketpair");
        let mut h = Vec::from(&b"BPFL"[..]);
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&u32::MAX.to_le_bytes());
        a.write_all(&h).expect("write");
        assert!(matches!(read_request(&b), Err(WireError::TooLarge { .. })));
        // Announced length below the limit but the peer stops early.
        let (mut a, b) = UnixStream::pair().expect("socketpair");
        let mut frame = get_info().encode();
        frame.truncate(frame.len() - 5);
        a.write_all(&frame).expect("write");
        drop(a);
        assert!(matches!(read_request(&b), Err(WireError::Truncated { .. })));
        // Garbage.
        let (mut a, b) = UnixStream::pair().expect("socketpair");
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
        let e = read_request(&b).expect_err("must fail");
        assert!(matches!(e, WireError::BadMagic(_)));
        assert_eq!(e.errno(), libc::EPROTO);
    }

    #[test]
    fn serve_connection_answers_bad_requests_and_goes_on() {
        let (mut a, b) = UnixStream::pair().expect("socketpair");
        let server = std::thread::spawn(move || {
            let mut kinds = Vec::new();
            let r = serve_connection(&b, |req| match req {
                Ok((req, _fd)) => {
                    kinds.push(req.kind());
                    Reply::ok(vec![9])
                }
                Err(e) => Reply::error(e.errno()),
            });
            (r, kinds)
        });
        write_request(&a, &get_info(), None).expect("write");
        assert_eq!(read_reply(&a).expect("reply"), Reply::ok(vec![9]));
        // A whole frame whose body is bad: answered with EPROTO, the connection stays up.
        let mut bad = get_info().encode();
        bad[13] = 9;
        a.write_all(&bad).expect("write");
        assert_eq!(read_reply(&a).expect("reply"), Reply::error(libc::EPROTO));
        // Unknown kind: same.
        let mut bad = get_info().encode();
        bad[6] = 77;
        a.write_all(&bad).expect("write");
        assert_eq!(read_reply(&a).expect("reply"), Reply::error(libc::EPROTO));
        write_request(
            &a,
            &Request::TableNames {
                family: Family::Ipv6,
            },
            None,
        )
        .expect("write");
        assert_eq!(read_reply(&a).expect("reply"), Reply::ok(vec![9]));
        // Garbage header: the server gives up on the connection.
        a.write_all(b"garbage garbage").expect("write");
        let (r, kinds) = server.join().expect("join");
        assert!(matches!(r, Err(WireError::BadMagic(_))));
        assert_eq!(kinds, [RequestKind::Sockopt, RequestKind::TableNames]);
    }

    #[test]
    fn peer_credentials_are_ours() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let c = peer_credentials(&a).expect("SO_PEERCRED");
        assert_eq!(c.pid, std::process::id() as i32);
        assert_eq!(c.uid, nix::unistd::geteuid().as_raw());
    }

    #[test]
    fn write_to_closed_peer_is_epipe_not_sigpipe() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        drop(b);
        let e = write_request(&a, &get_info(), None).expect_err("must fail");
        assert_eq!(e.errno(), libc::EPIPE);
    }
}
