//! Connection tracking on demand in a network namespace, as xt_conntrack's checkentry turns it
//! on (`nf_ct_netns_get`), held by a tiny nftables table of bpfilter's own.
//!
//! A BPF netfilter link does not turn conntrack on, so without this table `skb->_nfct` is 0
//! for every packet and the programs compiled from `-m conntrack` and `-m state` see no
//! state. [`enable_conntrack`] creates, in the calling thread's namespace:
//!
//! ```text
//! table inet bpfilter_conntrack {
//!     chain keep {        # regular chain: no hook, never evaluated
//!         ct state        # [ ct load state => reg 1 ], its only expression
//!     }
//! }
//! ```
//!
//! and [`disable_conntrack`] deletes it. The kernel behaviour this relies on (the `ct`
//! expression's get and put, module autoload inside the batch, synchronous replies and acks):
//! `docs/KERNEL-BEHAVIOUR.md#conntrack-on-demand` and `#nfnetlink-batch`. Acks are asked for
//! the commands only (begin/end are acked only since 6.10).
//!
//! Enabling is idempotent and atomic: one batch creates the table and chain if missing
//! (NLM_F_CREATE without NLM_F_EXCL), flushes the chain and adds the rule, so the chain always
//! ends with exactly one rule, and the old rule's put (if any) comes after the new rule's get:
//! conntrack never stops in between. Anyone may delete the table (`nft flush ruleset`);
//! [`conntrack_enabled`] tells whether it is there.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol};

use super::error::{Result, SysError};

/// Name of bpfilter's table (family inet).
pub const CONNTRACK_TABLE: &str = "bpfilter_conntrack";

/// Name of its one chain.
const CHAIN: &str = "keep";

/// Kernel numbers, from include/uapi/linux/netlink.h, netfilter.h, netfilter/nfnetlink.h and
/// netfilter/nf_tables.h (all `enum`s there start at 0 with an UNSPEC).
mod abi {
    pub const NLMSG_HDRLEN: usize = 16;
    pub const NLA_HDRLEN: usize = 4;
    pub const NLMSG_ERROR: u16 = 2;

    pub const NLM_F_REQUEST: u16 = 0x1;
    pub const NLM_F_ACK: u16 = 0x4;
    pub const NLM_F_CREATE: u16 = 0x400;
    pub const NLM_F_APPEND: u16 = 0x800;
    pub const NLA_F_NESTED: u16 = 0x8000;

    /// NLMSG_MIN_TYPE and NLMSG_MIN_TYPE + 1.
    pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
    pub const NFNL_MSG_BATCH_END: u16 = 17;
    pub const NFNL_SUBSYS_NFTABLES: u8 = 10;
    pub const NFNETLINK_V0: u8 = 0;
    pub const NFPROTO_UNSPEC: u8 = 0;
    pub const NFPROTO_INET: u8 = 1;

    pub const NFT_MSG_NEWTABLE: u8 = 0;
    pub const NFT_MSG_GETTABLE: u8 = 1;
    pub const NFT_MSG_DELTABLE: u8 = 2;
    pub const NFT_MSG_NEWCHAIN: u8 = 3;
    pub const NFT_MSG_NEWRULE: u8 = 6;
    pub const NFT_MSG_DELRULE: u8 = 8;

    pub const NFTA_TABLE_NAME: u16 = 1;
    pub const NFTA_CHAIN_TABLE: u16 = 1;
    pub const NFTA_CHAIN_NAME: u16 = 3;
    pub const NFTA_RULE_TABLE: u16 = 1;
    pub const NFTA_RULE_CHAIN: u16 = 2;
    pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
    pub const NFTA_LIST_ELEM: u16 = 1;
    pub const NFTA_EXPR_NAME: u16 = 1;
    pub const NFTA_EXPR_DATA: u16 = 2;
    pub const NFTA_CT_DREG: u16 = 1;
    pub const NFTA_CT_KEY: u16 = 2;

    pub const NFT_CT_STATE: u32 = 0;
    /// The first 16-byte data register (what `nft` uses for `ct state`).
    pub const NFT_REG_1: u32 = 1;
}

/// Makes the kernel track connections in the calling thread's network namespace until
/// [`disable_conntrack`]; run it through [`super::in_netns`]. Idempotent. Under the unit
/// tests' fake kernel, a no-op (the fake's `in_netns` does not enter the namespace, so a real
/// call would change the host's).
pub fn enable_conntrack() -> Result<()> {
    #[cfg(test)]
    if super::fake::current().is_some() {
        return Ok(());
    }
    let (batch, labels) = enable_batch(1);
    let replies = Nfnl::open()?.talk(&batch)?;
    batch_outcome(1, &labels, &replies)
}

/// Deletes bpfilter's table in the calling thread's namespace, dropping its conntrack
/// reference (the kernel stops tracking once no one else holds one). Absent table: Ok. Under
/// the fake kernel, a no-op.
pub fn disable_conntrack() -> Result<()> {
    #[cfg(test)]
    if super::fake::current().is_some() {
        return Ok(());
    }
    let (batch, labels) = disable_batch(1);
    let replies = Nfnl::open()?.talk(&batch)?;
    match batch_outcome(1, &labels, &replies) {
        Err(e) if e.errno() == libc::ENOENT => Ok(()),
        r => r,
    }
}

/// Whether bpfilter's table exists in the calling thread's namespace (NFT_MSG_GETTABLE).
/// Under the unit tests' fake kernel, always false: the fake does not model nftables.
pub fn conntrack_enabled() -> Result<bool> {
    #[cfg(test)]
    if super::fake::current().is_some() {
        return Ok(false);
    }
    let msg = gettable_msg(1);
    let replies = Nfnl::open()?.talk(&msg)?;
    gettable_outcome(1, &replies)
}

/// What a failed message of ours was, for [`SysError::Syscall::call`].
const BATCH_LABEL: &str = "nf_tables batch for bpfilter_conntrack (subsystem or commit)";
const NEWTABLE_LABEL: &str = "NFT_MSG_NEWTABLE inet bpfilter_conntrack";
const NEWCHAIN_LABEL: &str = "NFT_MSG_NEWCHAIN inet bpfilter_conntrack keep";
const FLUSH_LABEL: &str = "NFT_MSG_DELRULE (flush) inet bpfilter_conntrack keep";
const NEWRULE_LABEL: &str = "NFT_MSG_NEWRULE inet bpfilter_conntrack keep (ct state)";
const DELTABLE_LABEL: &str = "NFT_MSG_DELTABLE inet bpfilter_conntrack";
const GETTABLE_LABEL: &str = "NFT_MSG_GETTABLE inet bpfilter_conntrack";

/// The batch of [`enable_conntrack`], its messages numbered from `seq` (the begin header), and
/// the label of each acked command by sequence number.
fn enable_batch(seq: u32) -> (Vec<u8>, Vec<(u32, &'static str)>) {
    use abi::*;
    let create = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
    let mut b = Vec::new();
    batch_marker(&mut b, NFNL_MSG_BATCH_BEGIN, seq);

    let m = msg_start(&mut b, nft_type(NFT_MSG_NEWTABLE), create, seq + 1);
    put_str(&mut b, NFTA_TABLE_NAME, CONNTRACK_TABLE);
    msg_end(&mut b, m);

    let m = msg_start(&mut b, nft_type(NFT_MSG_NEWCHAIN), create, seq + 2);
    put_str(&mut b, NFTA_CHAIN_TABLE, CONNTRACK_TABLE);
    put_str(&mut b, NFTA_CHAIN_NAME, CHAIN);
    msg_end(&mut b, m);

    // No handle: every rule of the chain (none when it was just created).
    let m = msg_start(
        &mut b,
        nft_type(NFT_MSG_DELRULE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq + 3,
    );
    put_str(&mut b, NFTA_RULE_TABLE, CONNTRACK_TABLE);
    put_str(&mut b, NFTA_RULE_CHAIN, CHAIN);
    msg_end(&mut b, m);

    let m = msg_start(
        &mut b,
        nft_type(NFT_MSG_NEWRULE),
        create | NLM_F_APPEND,
        seq + 4,
    );
    put_str(&mut b, NFTA_RULE_TABLE, CONNTRACK_TABLE);
    put_str(&mut b, NFTA_RULE_CHAIN, CHAIN);
    let exprs = nest_start(&mut b, NFTA_RULE_EXPRESSIONS);
    let elem = nest_start(&mut b, NFTA_LIST_ELEM);
    put_str(&mut b, NFTA_EXPR_NAME, "ct");
    let data = nest_start(&mut b, NFTA_EXPR_DATA);
    put_be32(&mut b, NFTA_CT_KEY, NFT_CT_STATE);
    put_be32(&mut b, NFTA_CT_DREG, NFT_REG_1);
    nest_end(&mut b, data);
    nest_end(&mut b, elem);
    nest_end(&mut b, exprs);
    msg_end(&mut b, m);

    batch_marker(&mut b, NFNL_MSG_BATCH_END, seq + 5);
    let labels = vec![
        (seq + 1, NEWTABLE_LABEL),
        (seq + 2, NEWCHAIN_LABEL),
        (seq + 3, FLUSH_LABEL),
        (seq + 4, NEWRULE_LABEL),
    ];
    (b, labels)
}

/// The batch of [`disable_conntrack`] (NFT_MSG_DELTABLE deletes the chain and rule with it).
fn disable_batch(seq: u32) -> (Vec<u8>, Vec<(u32, &'static str)>) {
    use abi::*;
    let mut b = Vec::new();
    batch_marker(&mut b, NFNL_MSG_BATCH_BEGIN, seq);
    let m = msg_start(
        &mut b,
        nft_type(NFT_MSG_DELTABLE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq + 1,
    );
    put_str(&mut b, NFTA_TABLE_NAME, CONNTRACK_TABLE);
    msg_end(&mut b, m);
    batch_marker(&mut b, NFNL_MSG_BATCH_END, seq + 2);
    (b, vec![(seq + 1, DELTABLE_LABEL)])
}

/// A lone NFT_MSG_GETTABLE request (not batched: only changes go in batches).
fn gettable_msg(seq: u32) -> Vec<u8> {
    use abi::*;
    let mut b = Vec::new();
    let m = msg_start(
        &mut b,
        nft_type(NFT_MSG_GETTABLE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
    );
    put_str(&mut b, NFTA_TABLE_NAME, CONNTRACK_TABLE);
    msg_end(&mut b, m);
    b
}

/// nfnetlink message type: subsystem in the high byte, command in the low byte.
fn nft_type(cmd: u8) -> u16 {
    (u16::from(abi::NFNL_SUBSYS_NFTABLES) << 8) | u16::from(cmd)
}

/// Batch begin/end: family AF_UNSPEC and, in `res_id` (big-endian), the subsystem the batch
/// is for.
fn batch_marker(b: &mut Vec<u8>, ty: u16, seq: u32) {
    let start = b.len();
    put_nlmsghdr(b, ty, abi::NLM_F_REQUEST, seq);
    b.extend_from_slice(&[
        abi::NFPROTO_UNSPEC,
        abi::NFNETLINK_V0,
        0,
        abi::NFNL_SUBSYS_NFTABLES,
    ]);
    msg_end(b, start);
}

/// Starts an nf_tables command for family inet; returns where it starts, for [`msg_end`].
fn msg_start(b: &mut Vec<u8>, ty: u16, flags: u16, seq: u32) -> usize {
    let start = b.len();
    put_nlmsghdr(b, ty, flags, seq);
    b.extend_from_slice(&[abi::NFPROTO_INET, abi::NFNETLINK_V0, 0, 0]);
    start
}

/// `struct nlmsghdr` with a placeholder length and port id 0 (the kernel).
pub(super) fn put_nlmsghdr(b: &mut Vec<u8>, ty: u16, flags: u16, seq: u32) {
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
}

/// Writes `nlmsg_len` of the message starting at `start` (attributes keep it 4-aligned).
pub(super) fn msg_end(b: &mut [u8], start: usize) {
    let len = u32::try_from(b.len() - start).unwrap_or(u32::MAX);
    b[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// One attribute: `nla_len` counts header and payload but not the padding to 4 bytes.
fn put_attr(b: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = u16::try_from(abi::NLA_HDRLEN + payload.len()).unwrap_or(u16::MAX);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(payload);
    pad4(b);
}

/// NLA_STRING, NUL-terminated as `nft` sends it.
fn put_str(b: &mut Vec<u8>, ty: u16, s: &str) {
    let mut payload = Vec::with_capacity(s.len() + 1);
    payload.extend_from_slice(s.as_bytes());
    payload.push(0);
    put_attr(b, ty, &payload);
}

/// NLA_U32 in network order (nf_tables reads every u32 with `nla_get_be32`).
fn put_be32(b: &mut Vec<u8>, ty: u16, v: u32) {
    put_attr(b, ty, &v.to_be_bytes());
}

/// Opens a nested attribute (NLA_F_NESTED set, as libmnl does); close it with [`nest_end`].
fn nest_start(b: &mut Vec<u8>, ty: u16) -> usize {
    let start = b.len();
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&(ty | abi::NLA_F_NESTED).to_ne_bytes());
    start
}

/// Writes the length of the nest that starts at `start`.
fn nest_end(b: &mut [u8], start: usize) {
    let len = u16::try_from(b.len() - start).unwrap_or(u16::MAX);
    b[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

/// NLA_ALIGN / NLMSG_ALIGN: zeros up to the next multiple of 4.
fn pad4(b: &mut Vec<u8>) {
    b.resize(b.len().next_multiple_of(4), 0);
}

/// One message the kernel sent back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reply {
    /// Sequence number of the request it answers.
    seq: u32,
    /// `nlmsg_type`.
    ty: u16,
    /// For NLMSG_ERROR: the positive errno, 0 for an ack.
    errno: Option<i32>,
}

/// Splits a datagram into netlink messages; an NLMSG_ERROR must carry its 4-byte error code.
fn parse_replies(buf: &[u8], out: &mut Vec<Reply>) -> Result<()> {
    let bad = |call: &'static str| SysError::Syscall {
        call,
        errno: libc::EPROTO,
    };
    let mut rest = buf;
    while !rest.is_empty() {
        let hdr = rest
            .get(..abi::NLMSG_HDRLEN)
            .ok_or_else(|| bad("recv(NETLINK_NETFILTER): reply shorter than nlmsghdr"))?;
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        if len < abi::NLMSG_HDRLEN || len > rest.len() {
            return Err(bad("recv(NETLINK_NETFILTER): nlmsg_len out of bounds"));
        }
        let ty = u16::from_ne_bytes([hdr[4], hdr[5]]);
        let seq = u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
        let errno = if ty == abi::NLMSG_ERROR {
            let code = rest
                .get(abi::NLMSG_HDRLEN..abi::NLMSG_HDRLEN + 4)
                .filter(|_| len >= abi::NLMSG_HDRLEN + 4)
                .ok_or_else(|| bad("recv(NETLINK_NETFILTER): NLMSG_ERROR without error code"))?;
            let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
            Some(code.checked_neg().unwrap_or(libc::EIO))
        } else {
            None
        };
        out.push(Reply { seq, ty, errno });
        let step = len.next_multiple_of(4);
        rest = rest.get(step..).unwrap_or(&[]);
    }
    Ok(())
}

/// The result of a batch from its replies: the first failed message (in batch order, the
/// begin header standing for the commit) with its errno, else every command must be acked.
fn batch_outcome(begin_seq: u32, labels: &[(u32, &'static str)], replies: &[Reply]) -> Result<()> {
    let failed = |seq: u32| {
        replies
            .iter()
            .find_map(|r| r.errno.filter(|e| r.seq == seq && *e != 0))
    };
    if let Some(errno) = failed(begin_seq) {
        return Err(SysError::Syscall {
            call: BATCH_LABEL,
            errno,
        });
    }
    for &(seq, call) in labels {
        if let Some(errno) = failed(seq) {
            return Err(SysError::Syscall { call, errno });
        }
    }
    if let Some(r) = replies.iter().find(|r| r.errno.is_some_and(|e| e != 0)) {
        return Err(SysError::Syscall {
            call: "nfnetlink: error for a message bpfilter did not send",
            errno: r.errno.unwrap_or(libc::EIO),
        });
    }
    for &(seq, call) in labels {
        if !replies.iter().any(|r| r.seq == seq && r.errno == Some(0)) {
            return Err(SysError::Syscall {
                call,
                errno: libc::EPROTO,
            });
        }
    }
    Ok(())
}

/// The answer to [`gettable_msg`]: a NEWTABLE message then an ack means present, ENOENT absent.
fn gettable_outcome(seq: u32, replies: &[Reply]) -> Result<bool> {
    let newtable = nft_type(abi::NFT_MSG_NEWTABLE);
    let mut table = false;
    for r in replies.iter().filter(|r| r.seq == seq) {
        match r.errno {
            Some(0) => return Ok(table),
            Some(libc::ENOENT) => return Ok(false),
            Some(errno) => {
                return Err(SysError::Syscall {
                    call: GETTABLE_LABEL,
                    errno,
                })
            }
            None => table |= r.ty == newtable,
        }
    }
    Err(SysError::Syscall {
        call: GETTABLE_LABEL,
        errno: libc::EPROTO,
    })
}

/// A NETLINK_NETFILTER socket bound to a kernel-chosen port id; one per call, so that no
/// stale reply of another exchange can be read.
struct Nfnl {
    fd: OwnedFd,
}

impl Nfnl {
    fn open() -> Result<Nfnl> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            socket::SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|e| errno_err("socket(AF_NETLINK, NETLINK_NETFILTER)", e))?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(|e| errno_err("bind(NETLINK_NETFILTER)", e))?;
        Ok(Nfnl { fd })
    }

    /// Sends `msg` to the kernel and returns every reply it queued.
    fn talk(&self, msg: &[u8]) -> Result<Vec<Reply>> {
        let kernel = NetlinkAddr::new(0, 0);
        let sent = socket::sendto(self.fd.as_raw_fd(), msg, &kernel, MsgFlags::empty())
            .map_err(|e| errno_err("sendto(NETLINK_NETFILTER)", e))?;
        if sent != msg.len() {
            return Err(SysError::Syscall {
                call: "sendto(NETLINK_NETFILTER): short write",
                errno: libc::EMSGSIZE,
            });
        }
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => break,
                Ok(n) => parse_replies(&buf[..n.min(buf.len())], &mut replies)?,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(errno_err("recv(NETLINK_NETFILTER)", e)),
            }
        }
        Ok(replies)
    }
}

fn errno_err(call: &'static str, e: Errno) -> SysError {
    SysError::Syscall {
        call,
        errno: e as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a native-endian u16/u32 at `at`.
    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([b[at], b[at + 1]])
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// Splits a buffer of netlink messages into (type, flags, seq, body after nlmsghdr),
    /// checking that every length is in bounds and every message 4-aligned.
    fn messages(b: &[u8]) -> Vec<(u16, u16, u32, &[u8])> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < b.len() {
            let len = u32_at(b, at) as usize;
            assert_eq!(len % 4, 0, "message at {at} not 4-aligned");
            assert!(at + len <= b.len(), "message at {at} overruns");
            out.push((
                u16_at(b, at + 4),
                u16_at(b, at + 6),
                u32_at(b, at + 8),
                &b[at + 16..at + len],
            ));
            at += len;
        }
        out
    }

    /// Splits attributes into (type with flags, payload), checking nla_len and padding.
    fn attrs(b: &[u8]) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < b.len() {
            let len = u16_at(b, at) as usize;
            assert!(
                len >= 4 && at + len <= b.len(),
                "attribute at {at} overruns"
            );
            out.push((u16_at(b, at + 2), &b[at + 4..at + len]));
            let padded = len.next_multiple_of(4);
            assert!(b[at + len..at + padded].iter().all(|&x| x == 0), "padding");
            at += padded;
        }
        assert_eq!(at, b.len());
        out
    }

    #[test]
    fn constants_match_libc() {
        assert_eq!(i32::from(abi::NFT_MSG_NEWTABLE), libc::NFT_MSG_NEWTABLE);
        assert_eq!(i32::from(abi::NFT_MSG_GETTABLE), libc::NFT_MSG_GETTABLE);
        assert_eq!(i32::from(abi::NFT_MSG_DELTABLE), libc::NFT_MSG_DELTABLE);
        assert_eq!(i32::from(abi::NFT_MSG_NEWCHAIN), libc::NFT_MSG_NEWCHAIN);
        assert_eq!(i32::from(abi::NFT_MSG_NEWRULE), libc::NFT_MSG_NEWRULE);
        assert_eq!(i32::from(abi::NFT_MSG_DELRULE), libc::NFT_MSG_DELRULE);
        assert_eq!(
            i32::from(abi::NFNL_MSG_BATCH_BEGIN),
            libc::NFNL_MSG_BATCH_BEGIN
        );
        assert_eq!(i32::from(abi::NFNL_MSG_BATCH_END), libc::NFNL_MSG_BATCH_END);
        assert_eq!(
            i32::from(abi::NFNL_SUBSYS_NFTABLES),
            libc::NFNL_SUBSYS_NFTABLES
        );
        assert_eq!(i32::from(abi::NFPROTO_INET), libc::NFPROTO_INET);
        assert_eq!(abi::NFT_CT_STATE as i32, libc::NFT_CT_STATE);
        assert_eq!(abi::NFT_REG_1 as i32, libc::NFT_REG_1);
        assert_eq!(i32::from(abi::NLMSG_ERROR), libc::NLMSG_ERROR);
        assert_eq!(i32::from(abi::NLM_F_ACK), libc::NLM_F_ACK);
        assert_eq!(i32::from(abi::NLM_F_CREATE), libc::NLM_F_CREATE);
        assert_eq!(i32::from(abi::NLM_F_APPEND), libc::NLM_F_APPEND);
        assert_eq!(i32::from(abi::NLA_F_NESTED), libc::NLA_F_NESTED);
    }

    /// The whole enable batch, byte for byte (little-endian hosts; the layout is that of
    /// `nft --debug=mnl add rule inet t c ct state ...` minus its bitwise and cmp).
    #[test]
    #[cfg(target_endian = "little")]
    fn enable_batch_bytes() {
        let (b, labels) = enable_batch(100);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            // BATCH_BEGIN: len 20, type 16, REQUEST, seq 100, pid 0; AF_UNSPEC, v0, res_id be 10
            &[20, 0, 0, 0, 16, 0, 1, 0, 100, 0, 0, 0, 0, 0, 0, 0][..], &[0, 0, 0, 10],
            // NEWTABLE (0x0a00): len 44, REQUEST|ACK|CREATE, seq 101; inet
            &[44, 0, 0, 0, 0x00, 0x0a, 0x05, 0x04, 101, 0, 0, 0, 0, 0, 0, 0], &[1, 0, 0, 0],
            // NFTA_TABLE_NAME "bpfilter_conntrack\0": nla_len 23, padded to 24
            &[23, 0, 1, 0], b"bpfilter_conntrack\0", &[0],
            // NEWCHAIN (0x0a03): len 56 = 16 + 4 + 24 + 12, seq 102
            &[56, 0, 0, 0, 0x03, 0x0a, 0x05, 0x04, 102, 0, 0, 0, 0, 0, 0, 0], &[1, 0, 0, 0],
            &[23, 0, 1, 0], b"bpfilter_conntrack\0", &[0],
            // NFTA_CHAIN_NAME "keep\0": nla_len 9, padded to 12
            &[9, 0, 3, 0], b"keep\0", &[0, 0, 0],
            // DELRULE (0x0a08): len 56, REQUEST|ACK, seq 103
            &[56, 0, 0, 0, 0x08, 0x0a, 0x05, 0x00, 103, 0, 0, 0, 0, 0, 0, 0], &[1, 0, 0, 0],
            &[23, 0, 1, 0], b"bpfilter_conntrack\0", &[0],
            &[9, 0, 2, 0], b"keep\0", &[0, 0, 0],
            // NEWRULE (0x0a06): len 92 = 16 + 4 + 24 + 12 + 36, REQUEST|ACK|CREATE|APPEND, seq 104
            &[92, 0, 0, 0, 0x06, 0x0a, 0x05, 0x0c, 104, 0, 0, 0, 0, 0, 0, 0], &[1, 0, 0, 0],
            &[23, 0, 1, 0], b"bpfilter_conntrack\0", &[0],
            &[9, 0, 2, 0], b"keep\0", &[0, 0, 0],
            // NFTA_RULE_EXPRESSIONS (4|NESTED), 36 = 4 + elem 32
            &[36, 0, 4, 0x80],
            // NFTA_LIST_ELEM (1|NESTED), 32 = 4 + padded name 8 + data 20
            &[32, 0, 1, 0x80],
            // NFTA_EXPR_NAME "ct\0": nla_len 7, padded to 8
            &[7, 0, 1, 0], b"ct\0", &[0],
            // NFTA_EXPR_DATA (2|NESTED), 20 = 4 + key 8 + dreg 8
            &[20, 0, 2, 0x80],
            // NFTA_CT_KEY = be32 NFT_CT_STATE (0), NFTA_CT_DREG = be32 NFT_REG_1 (1)
            &[8, 0, 2, 0], &[0, 0, 0, 0],
            &[8, 0, 1, 0], &[0, 0, 0, 1],
            // BATCH_END: type 17, seq 105
            &[20, 0, 0, 0, 17, 0, 1, 0, 105, 0, 0, 0, 0, 0, 0, 0], &[0, 0, 0, 10],
        ]
        .concat();
        assert_eq!(b, want);
        assert_eq!(
            labels,
            vec![
                (101, NEWTABLE_LABEL),
                (102, NEWCHAIN_LABEL),
                (103, FLUSH_LABEL),
                (104, NEWRULE_LABEL)
            ]
        );
    }

    /// The same batch taken apart generically: lengths, alignment, nesting, on any host.
    #[test]
    fn enable_batch_structure() {
        let (b, _) = enable_batch(7);
        let msgs = messages(&b);
        let types: Vec<u16> = msgs.iter().map(|m| m.0).collect();
        assert_eq!(types, vec![16, 0x0a00, 0x0a03, 0x0a08, 0x0a06, 17]);
        let seqs: Vec<u32> = msgs.iter().map(|m| m.2).collect();
        assert_eq!(seqs, vec![7, 8, 9, 10, 11, 12]);
        // Acks asked for every command, never for begin/end (6.1 does not ack those).
        for (ty, flags, _, _) in &msgs {
            let is_marker = *ty == 16 || *ty == 17;
            assert_eq!(flags & abi::NLM_F_ACK != 0, !is_marker, "type {ty:#x}");
            assert_ne!(flags & abi::NLM_F_REQUEST, 0);
        }
        // No NLM_F_EXCL: an existing table or chain is not an error.
        assert!(msgs.iter().all(|m| m.1 & 0x200 == 0));
        assert_eq!(&msgs[0].3[..4], &[0, 0, 0, 10]);
        assert_eq!(&msgs[1].3[..4], &[abi::NFPROTO_INET, 0, 0, 0]);

        let rule = attrs(&msgs[4].3[4..]);
        assert_eq!(rule.len(), 3);
        assert_eq!(
            rule[0],
            (abi::NFTA_RULE_TABLE, &b"bpfilter_conntrack\0"[..])
        );
        assert_eq!(rule[1], (abi::NFTA_RULE_CHAIN, &b"keep\0"[..]));
        assert_eq!(rule[2].0, abi::NFTA_RULE_EXPRESSIONS | abi::NLA_F_NESTED);
        let list = attrs(rule[2].1);
        assert_eq!(list.len(), 1, "exactly one expression");
        assert_eq!(list[0].0, abi::NFTA_LIST_ELEM | abi::NLA_F_NESTED);
        let expr = attrs(list[0].1);
        assert_eq!(expr[0], (abi::NFTA_EXPR_NAME, &b"ct\0"[..]));
        assert_eq!(expr[1].0, abi::NFTA_EXPR_DATA | abi::NLA_F_NESTED);
        let ct = attrs(expr[1].1);
        assert_eq!(
            ct,
            vec![
                (abi::NFTA_CT_KEY, &[0u8, 0, 0, 0][..]),
                (abi::NFTA_CT_DREG, &[0u8, 0, 0, 1][..])
            ]
        );
    }

    #[test]
    fn disable_and_get_messages() {
        let (b, labels) = disable_batch(1);
        let msgs = messages(&b);
        let types: Vec<u16> = msgs.iter().map(|m| m.0).collect();
        assert_eq!(types, vec![16, 0x0a02, 17]);
        assert_eq!(labels, vec![(2, DELTABLE_LABEL)]);
        assert_eq!(
            attrs(&msgs[1].3[4..]),
            vec![(abi::NFTA_TABLE_NAME, &b"bpfilter_conntrack\0"[..])]
        );

        let g = gettable_msg(5);
        let msgs = messages(&g);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, 0x0a01);
        assert_eq!(msgs[0].1, abi::NLM_F_REQUEST | abi::NLM_F_ACK);
        assert_eq!(msgs[0].2, 5);
    }

    /// An NLMSG_ERROR for `seq` with `-errno`, echoing a 20-byte request as the kernel does.
    fn error_msg(seq: u32, errno: i32) -> Vec<u8> {
        let mut b = Vec::new();
        put_nlmsghdr(&mut b, abi::NLMSG_ERROR, 0, seq);
        b.extend_from_slice(&(-errno).to_ne_bytes());
        put_nlmsghdr(&mut b, 0x0a00, abi::NLM_F_REQUEST, seq);
        b.extend_from_slice(&[1, 0, 0, 0]);
        msg_end(&mut b, 0);
        b
    }

    #[test]
    fn parses_acks_errors_and_data() {
        let mut buf = error_msg(3, 0);
        buf.extend(error_msg(4, libc::ENOENT));
        let mut data = Vec::new();
        let m = msg_start(&mut data, 0x0a00, 0, 9);
        put_str(&mut data, abi::NFTA_TABLE_NAME, "x");
        msg_end(&mut data, m);
        buf.extend(&data);
        let mut out = Vec::new();
        parse_replies(&buf, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                Reply {
                    seq: 3,
                    ty: 2,
                    errno: Some(0)
                },
                Reply {
                    seq: 4,
                    ty: 2,
                    errno: Some(libc::ENOENT)
                },
                Reply {
                    seq: 9,
                    ty: 0x0a00,
                    errno: None
                },
            ]
        );
        // Truncated or lying lengths are refused, not read past.
        let mut out = Vec::new();
        assert_eq!(
            parse_replies(&buf[..10], &mut out).unwrap_err().errno(),
            libc::EPROTO
        );
        let mut lying = error_msg(1, 0);
        lying[0] = 200;
        assert!(parse_replies(&lying, &mut Vec::new()).is_err());
        let mut short = error_msg(1, 0);
        short.truncate(16);
        short[0] = 16;
        assert!(parse_replies(&short, &mut Vec::new()).is_err());
    }

    fn ack(seq: u32, errno: i32) -> Reply {
        Reply {
            seq,
            ty: abi::NLMSG_ERROR,
            errno: Some(errno),
        }
    }

    #[test]
    fn batch_outcome_names_the_failed_message() {
        let (_, labels) = enable_batch(1);
        let all_ok: Vec<Reply> = (2..=5).map(|s| ack(s, 0)).collect();
        assert!(batch_outcome(1, &labels, &all_ok).is_ok());

        // The kernel reports every failed message; the first in batch order is returned.
        let mut r = all_ok.clone();
        r[3] = ack(5, libc::ENOENT);
        r[1] = ack(3, libc::EPERM);
        let e = batch_outcome(1, &labels, &r).unwrap_err();
        assert_eq!(e.errno(), libc::EPERM);
        assert!(e.to_string().starts_with(NEWCHAIN_LABEL), "{e}");

        let e = batch_outcome(1, &labels, &[ack(5, libc::ENOENT)]).unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT);
        assert!(e.to_string().contains("NFT_MSG_NEWRULE"), "{e}");

        // A commit failure is reported against the batch-begin header.
        let e = batch_outcome(1, &labels, &[ack(1, libc::EOPNOTSUPP)]).unwrap_err();
        assert_eq!(e.errno(), libc::EOPNOTSUPP);
        assert!(e.to_string().contains("commit"), "{e}");

        // A missing ack is a protocol error naming the message.
        let e = batch_outcome(1, &labels, &all_ok[..3]).unwrap_err();
        assert_eq!(e.errno(), libc::EPROTO);
        assert!(e.to_string().starts_with(NEWRULE_LABEL), "{e}");

        // An error for a sequence number we never sent still fails.
        let mut r = all_ok.clone();
        r.push(ack(77, libc::EINVAL));
        assert_eq!(
            batch_outcome(1, &labels, &r).unwrap_err().errno(),
            libc::EINVAL
        );
    }

    #[test]
    fn gettable_outcomes() {
        let data = Reply {
            seq: 1,
            ty: nft_type(abi::NFT_MSG_NEWTABLE),
            errno: None,
        };
        assert!(gettable_outcome(1, &[data, ack(1, 0)]).unwrap());
        assert!(!gettable_outcome(1, &[ack(1, libc::ENOENT)]).unwrap());
        assert_eq!(
            gettable_outcome(1, &[ack(1, libc::EPERM)])
                .unwrap_err()
                .errno(),
            libc::EPERM
        );
        assert_eq!(gettable_outcome(1, &[]).unwrap_err().errno(), libc::EPROTO);
        // An ack without the table is not "present".
        assert!(!gettable_outcome(1, &[ack(1, 0)]).unwrap());
    }
}
