//! `xt-oracle`: asks the real kernel, in the current network namespace, what it says about an
//! `IPT_SO_*` request. Used by fixtures/capture.sh to record kernel answers (see
//! fixtures/README.md); it never interprets a blob beyond patching the counters pointer.
//!
//! ```text
//! xt-oracle replace BLOB [--optlen N]       send BLOB as IPT_SO_SET_REPLACE
//! xt-oracle add-counters BLOB [--optlen N]  send BLOB as IPT_SO_SET_ADD_COUNTERS
//! xt-oracle get-info TABLE OUT              write the kernel's IPT_SO_GET_INFO answer to OUT
//! xt-oracle get-entries TABLE OUT           write the kernel's IPT_SO_GET_ENTRIES answer to OUT
//! xt-oracle dump TABLE DIR                  DIR/get_info.bin and DIR/get_entries.bin
//! xt-oracle flips BLOB LABEL OUT_TSV RESET  every single-byte flip of a SET_REPLACE blob
//!                                           (xor 0xff, 0x01, 0x80), appended to OUT_TSV;
//!                                           RESET re-installs the starting table size
//! xt-oracle probes OUT_TSV                  malformed get/set requests and the kernel's errnos
//! xt-oracle revision FAMILY KIND NAME REV   ask IPT_SO_GET_REVISION_MATCH/TARGET (FAMILY
//!                                           ipv4) or IP6T_SO_GET_REVISION_* (ipv6); KIND is
//!                                           match or target
//! xt-oracle help [COMMAND]                  this list, or one command's arguments
//! ```
//! `--ipv6` (before or after the command) sends every request as ip6tables does: an
//! `AF_INET6` raw socket and level `IPPROTO_IPV6` (the `IP6T_SO_*` optnames have the same
//! numbers, and `ip6t_replace`/`ip6t_getinfo`/`ip6t_get_entries` the same header layouts).
//!
//! Every command prints one line `ERRNO<TAB>NAME` (`0<TAB>OK` on success) and exits 0 when the
//! kernel answered, whatever it answered; a non-zero exit means the oracle itself failed (2 for
//! a bad command line).

use std::ffi::c_void;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

const IPT_SO_SET_REPLACE: i32 = 64;
const IPT_SO_SET_ADD_COUNTERS: i32 = 65;
const IPT_SO_GET_INFO: i32 = 64;
const IPT_SO_GET_ENTRIES: i32 = 65;
/// sizeof(struct ipt_replace) on 64-bit.
const REPLACE_HDR: usize = 96;
/// Offset of `ipt_replace.num_counters` and of the `counters` pointer.
const NUM_COUNTERS_OFF: usize = 84;
const COUNTERS_PTR_OFF: usize = 88;
/// sizeof(struct ipt_getinfo).
const GETINFO_LEN: usize = 84;
/// sizeof(struct ipt_get_entries) (name[32], size, padding to the 8-byte alignment of entries).
const GET_ENTRIES_HDR: usize = 40;
/// Cap on the buffer offered for old counters; the kernel writes it only on success, when
/// num_counters is the real (small) entry count.
const MAX_COUNTERS_BUF: usize = 64 << 20;

fn errno_name(e: i32) -> &'static str {
    match e {
        0 => "OK",
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ELOOP => "ELOOP",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EPROTOTYPE => "EPROTOTYPE",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EOVERFLOW => "EOVERFLOW",
        _ => "E?",
    }
}

/// Set once by `--ipv6`: ip6tables' socket family and sockopt level instead of iptables'.
static IPV6: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn ipv6() -> bool {
    IPV6.load(std::sync::atomic::Ordering::Relaxed)
}

/// (socket family, sockopt level) of the requests.
fn family() -> (i32, i32) {
    if ipv6() {
        (libc::AF_INET6, libc::IPPROTO_IPV6)
    } else {
        (libc::AF_INET, libc::IPPROTO_IP)
    }
}

fn raw_socket() -> Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(family().0, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .context("socket(AF_INET, SOCK_RAW, IPPROTO_RAW)");
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// setsockopt(IPPROTO_IP, optname) with `buf[..optlen]`; returns 0 or the errno.
fn set(sock: &OwnedFd, optname: i32, buf: &mut [u8], optlen: usize) -> i32 {
    // SAFETY: buf is valid for buf.len() >= optlen bytes (checked by callers via padding).
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            family().1,
            optname,
            buf.as_mut_ptr().cast::<c_void>(),
            optlen as libc::socklen_t,
        )
    };
    if r < 0 {
        last_errno()
    } else {
        0
    }
}

/// getsockopt(IPPROTO_IP, optname) into `buf` with optlen `len` (at most `buf.len()`);
/// returns (errno or 0, the optlen the kernel wrote back).
fn getsockopt(sock: &OwnedFd, optname: i32, buf: &mut [u8], len: usize) -> (i32, usize) {
    let mut l = len.min(buf.len()) as libc::socklen_t;
    // SAFETY: buf is valid for l bytes; l points to a live socklen_t.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            family().1,
            optname,
            buf.as_mut_ptr().cast::<c_void>(),
            &mut l,
        )
    };
    let e = if r < 0 { last_errno() } else { 0 };
    (e, l as usize)
}

/// getsockopt(IPPROTO_IP, optname) into `buf`; returns (errno or 0, length written).
fn get(sock: &OwnedFd, optname: i32, buf: &mut [u8]) -> (i32, usize) {
    match getsockopt(sock, optname, buf, buf.len()) {
        (0, len) => (0, len),
        (e, _) => (e, 0),
    }
}

fn table_name(name: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    if name.len() >= 32 {
        bail!("table name too long: {name}");
    }
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

fn cmd_replace(blob_path: &Path, optlen: Option<usize>) -> Result<i32> {
    let blob = std::fs::read(blob_path).with_context(|| format!("read {}", blob_path.display()))?;
    let optlen = optlen.unwrap_or(blob.len());
    let sock = raw_socket()?;
    set_replace(&sock, blob, optlen)
}

/// Sends `blob` as SET_REPLACE on `sock`, with the counters pointer aimed at a buffer of ours.
fn replace_on(sock: &OwnedFd, blob: &[u8]) -> Result<i32> {
    set_replace(sock, blob.to_vec(), blob.len())
}

/// SET_REPLACE of `buf` with `optlen` on `sock`: `buf` padded with zeros to `optlen` and at
/// least the header, its counters pointer aimed at a buffer of ours sized for its
/// `num_counters`.
fn set_replace(sock: &OwnedFd, mut buf: Vec<u8>, optlen: usize) -> Result<i32> {
    // The kernel reads the 96-byte header whatever optlen says: pad so it reads our zeros.
    buf.resize(buf.len().max(optlen).max(REPLACE_HDR), 0);
    let num_counters = u32::from_ne_bytes(
        buf[NUM_COUNTERS_OFF..NUM_COUNTERS_OFF + 4]
            .try_into()
            .context("header")?,
    ) as usize;
    let mut counters = vec![0u8; num_counters.saturating_mul(16).clamp(16, MAX_COUNTERS_BUF)];
    let ptr = counters.as_mut_ptr() as u64;
    buf[COUNTERS_PTR_OFF..COUNTERS_PTR_OFF + 8].copy_from_slice(&ptr.to_ne_bytes());
    let e = set(sock, IPT_SO_SET_REPLACE, &mut buf, optlen);
    drop(counters);
    Ok(e)
}

/// Entry count of the kernel's filter table (GET_INFO num_entries).
fn current_entries(sock: &OwnedFd) -> Result<u32> {
    let mut info = vec![0u8; GETINFO_LEN];
    info[..32].copy_from_slice(&table_name("filter")?);
    let (e, n) = get(sock, IPT_SO_GET_INFO, &mut info);
    if e != 0 || n != GETINFO_LEN {
        bail!("GET_INFO filter: errno {e}");
    }
    Ok(u32::from_ne_bytes(
        info[76..80].try_into().context("num_entries")?,
    ))
}

/// Every single-byte flip of a SET_REPLACE blob, each sent to the kernel from the same table
/// state (a table of the base's num_counters entries; an accepted flip is undone by sending
/// RESET_BLOB, a SET_REPLACE blob whose table has that many entries).
/// Appends `BASE_NAME<TAB>offset<TAB>xor<TAB>errno<TAB>name` lines to `out`.
///
/// Skipped offsets: 86 (num_counters bits 16..23: whether the kernel's vmalloc of up to 256 MiB
/// of counters succeeds before its EAGAIN check depends on the machine's memory) and 88..96 (the
/// counters pointer, which this tool overwrites).
fn cmd_flips(base: &Path, label: &str, out: &Path, reset: &Path) -> Result<i32> {
    let blob = std::fs::read(base).with_context(|| format!("read {}", base.display()))?;
    let reset = std::fs::read(reset).with_context(|| format!("read {}", reset.display()))?;
    if blob.len() < REPLACE_HDR {
        bail!("{}: not a SET_REPLACE blob", base.display());
    }
    let want = u32::from_ne_bytes(
        blob[NUM_COUNTERS_OFF..NUM_COUNTERS_OFF + 4]
            .try_into()
            .context("hdr")?,
    );
    let sock = raw_socket()?;
    if current_entries(&sock)? != want {
        bail!(
            "table has {} entries, base expects {want}",
            current_entries(&sock)?
        );
    }
    let mut lines = String::new();
    let mut accepted = 0usize;
    for off in 0..blob.len() {
        if off == 86 || (COUNTERS_PTR_OFF..REPLACE_HDR).contains(&off) {
            continue;
        }
        for mask in [0xffu8, 0x01, 0x80] {
            let mut b = blob.clone();
            b[off] ^= mask;
            let e = replace_on(&sock, &b)?;
            if e == 0 {
                accepted += 1;
                // Back to a table of the base's num_counters entries: the reset blob (a table of
                // that many entries) with num_counters = what is there now.
                let mut restore = reset.clone();
                let n = current_entries(&sock)?;
                restore[NUM_COUNTERS_OFF..NUM_COUNTERS_OFF + 4].copy_from_slice(&n.to_ne_bytes());
                let r = replace_on(&sock, &restore)?;
                if r != 0 || current_entries(&sock)? != want {
                    bail!("restoring the base after offset {off} mask {mask:#x} failed: errno {r}");
                }
            }
            lines.push_str(&format!(
                "{label}\t{off}\t{mask:#04x}\t{e}\t{}\n",
                errno_name(e)
            ));
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .with_context(|| format!("open {}", out.display()))?;
    std::io::Write::write_all(&mut f, lines.as_bytes()).context("write flips")?;
    eprintln!(
        "{label}: {} flips, {accepted} accepted",
        lines.lines().count()
    );
    Ok(0)
}

/// One raw sockopt probe: `len` is the optlen passed; `buf` is padded to at least `len`.
struct Probe {
    name: &'static str,
    set: bool,
    optname: i32,
    buf: Vec<u8>,
    len: usize,
    desc: &'static str,
}

/// getsockopt with an explicit optlen (the buffer is at least that long); (errno, optlen out).
fn get_len(sock: &OwnedFd, optname: i32, buf: &mut Vec<u8>, len: usize) -> (i32, usize) {
    buf.resize(buf.len().max(len).max(1), 0);
    getsockopt(sock, optname, buf, len)
}

/// The kernel's answers to malformed get/set requests outside SET_REPLACE validation (lengths,
/// names, stale sizes, unknown optnames), for the client and daemon to mirror. Run in a
/// namespace holding the initial filter table. Writes `name, op, optname, optlen, errno,
/// errno_name, optlen_out, description` lines.
fn cmd_probes(out: &Path) -> Result<i32> {
    let sock = raw_socket()?;
    let named = |n: &str, len: usize| -> Vec<u8> {
        let mut b = vec![0u8; len.max(32)];
        b[..n.len()].copy_from_slice(n.as_bytes());
        b
    };
    // SET_ADD_COUNTERS of table `n` declaring `count` counters, all zero (40 + 16 * count bytes).
    let add_counters = |n: &str, count: u8| -> Vec<u8> {
        let mut b = named(n, 40 + 16 * usize::from(count));
        b[32] = count;
        b
    };
    // Size of the current filter table, for GET_ENTRIES probes.
    let mut info = named("filter", GETINFO_LEN);
    let (e, _) = get_len(&sock, IPT_SO_GET_INFO, &mut info, GETINFO_LEN);
    if e != 0 {
        bail!("GET_INFO filter: errno {e}");
    }
    let size = u32::from_ne_bytes(info[80..84].try_into().context("size")?) as usize;
    let entries_req = |name: &str, hdr_size: usize| -> Vec<u8> {
        let mut b = named(name, GET_ENTRIES_HDR + size + 64);
        b[32..36].copy_from_slice(&(hdr_size as u32).to_ne_bytes());
        b
    };
    let rev = |name: &str, r: u8| -> Vec<u8> {
        let mut b = vec![0u8; 32];
        b[..name.len()].copy_from_slice(name.as_bytes());
        b[29] = r;
        b
    };
    let e_ok = GET_ENTRIES_HDR + size;
    let probes = vec![
        Probe {
            name: "get_info_ok",
            set: false,
            optname: 64,
            buf: named("filter", 84),
            len: 84,
            desc: "GET_INFO filter, optlen 84",
        },
        Probe {
            name: "get_info_len_83",
            set: false,
            optname: 64,
            buf: named("filter", 84),
            len: 83,
            desc: "GET_INFO optlen 83",
        },
        Probe {
            name: "get_info_len_85",
            set: false,
            optname: 64,
            buf: named("filter", 85),
            len: 85,
            desc: "GET_INFO optlen 85",
        },
        Probe {
            name: "get_info_len_0",
            set: false,
            optname: 64,
            buf: named("filter", 84),
            len: 0,
            desc: "GET_INFO optlen 0",
        },
        Probe {
            name: "get_info_unknown_table",
            set: false,
            optname: 64,
            buf: named("nosuchtable", 84),
            len: 84,
            desc: "GET_INFO of table nosuchtable",
        },
        Probe {
            name: "get_info_name_unterminated",
            set: false,
            optname: 64,
            buf: vec![b'f'; 84],
            len: 84,
            desc: "GET_INFO name = 32 x 'f' (the kernel cuts it to 31)",
        },
        Probe {
            name: "get_info_nat",
            set: false,
            optname: 64,
            buf: named("nat", 84),
            len: 84,
            desc: "GET_INFO nat: the kernel instantiates its nat table",
        },
        Probe {
            name: "get_info_empty_name",
            set: false,
            optname: 64,
            buf: named("", 84),
            len: 84,
            desc: "GET_INFO with an empty table name",
        },
        Probe {
            name: "get_entries_ok",
            set: false,
            optname: 65,
            buf: entries_req("filter", size),
            len: e_ok,
            desc: "GET_ENTRIES filter, optlen 40 + size",
        },
        Probe {
            name: "get_entries_len_39",
            set: false,
            optname: 65,
            buf: entries_req("filter", size),
            len: 39,
            desc: "GET_ENTRIES optlen 39 (< header)",
        },
        Probe {
            name: "get_entries_len_plus8",
            set: false,
            optname: 65,
            buf: entries_req("filter", size),
            len: e_ok + 8,
            desc: "GET_ENTRIES header size right, optlen 40 + size + 8",
        },
        Probe {
            name: "get_entries_stale_size",
            set: false,
            optname: 65,
            buf: entries_req("filter", size - 8),
            len: e_ok - 8,
            desc: "GET_ENTRIES consistent optlen and header size, size 8 less than the table's",
        },
        Probe {
            name: "get_entries_bigger_size",
            set: false,
            optname: 65,
            buf: entries_req("filter", size + 8),
            len: e_ok + 8,
            desc: "GET_ENTRIES consistent optlen and header size, size 8 more than the table's",
        },
        Probe {
            name: "get_entries_unknown_table",
            set: false,
            optname: 65,
            buf: entries_req("nosuchtable", size),
            len: e_ok,
            desc: "GET_ENTRIES of table nosuchtable",
        },
        Probe {
            name: "get_revision_match_ok",
            set: false,
            optname: 66,
            buf: rev("tcp", 0),
            len: 30,
            desc: "GET_REVISION_MATCH tcp 0, optlen 30",
        },
        Probe {
            name: "get_revision_match_len_29",
            set: false,
            optname: 66,
            buf: rev("tcp", 0),
            len: 29,
            desc: "GET_REVISION_MATCH optlen 29",
        },
        Probe {
            name: "get_revision_match_len_31",
            set: false,
            optname: 66,
            buf: rev("tcp", 0),
            len: 31,
            desc: "GET_REVISION_MATCH optlen 31",
        },
        Probe {
            name: "get_revision_target_unterminated",
            set: false,
            optname: 67,
            buf: vec![b'x'; 32],
            len: 30,
            desc: "GET_REVISION_TARGET name = 29 x 'x' (no NUL)",
        },
        Probe {
            name: "get_optname_68",
            set: false,
            optname: 68,
            buf: vec![0; 84],
            len: 84,
            desc: "getsockopt IPPROTO_IP optname 68 (past IPT_SO_GET_MAX)",
        },
        Probe {
            name: "set_optname_66",
            set: true,
            optname: 66,
            buf: vec![0; 96],
            len: 96,
            desc: "setsockopt IPPROTO_IP optname 66 (past IPT_SO_SET_MAX)",
        },
        Probe {
            name: "set_replace_len_0",
            set: true,
            optname: 64,
            buf: vec![0; 96],
            len: 0,
            desc: "SET_REPLACE optlen 0 (buffer of 96 zero bytes)",
        },
        Probe {
            name: "set_add_counters_len_0",
            set: true,
            optname: 65,
            buf: vec![0; 40],
            len: 0,
            desc: "SET_ADD_COUNTERS optlen 0 (buffer of 40 zero bytes)",
        },
        Probe {
            name: "set_add_counters_unknown_table",
            set: true,
            optname: 65,
            buf: named("nosuchtable", 40),
            len: 40,
            desc: "SET_ADD_COUNTERS of table nosuchtable, 0 counters",
        },
        Probe {
            name: "set_add_counters_unknown_table_4",
            set: true,
            optname: 65,
            buf: add_counters("nosuchtable", 4),
            len: 104,
            desc: "SET_ADD_COUNTERS of table nosuchtable, 4 counters",
        },
        Probe {
            name: "set_add_counters_wrong_count",
            set: true,
            optname: 65,
            buf: add_counters("filter", 5),
            len: 120,
            desc: "SET_ADD_COUNTERS filter with 5 counters (table has 4 entries)",
        },
        Probe {
            name: "set_add_counters_ok",
            set: true,
            optname: 65,
            buf: add_counters("filter", 4),
            len: 104,
            desc: "SET_ADD_COUNTERS filter with 4 zero counters",
        },
        Probe {
            name: "set_add_counters_zero_count",
            set: true,
            optname: 65,
            buf: named("filter", 40),
            len: 40,
            desc: "SET_ADD_COUNTERS filter with 0 counters (table has 4 entries)",
        },
    ];
    let mut lines =
        String::from("# name\top\toptname\toptlen\terrno\terrno_name\toptlen_out\tdescription\n");
    let mut probes = probes;
    if ipv6() {
        // ip6tables asks revisions at 68/69; at level IPPROTO_IPV6, 66 and 67 are
        // IPV6_RECVTCLASS and IPV6_TCLASS (plain socket options the kernel answers itself), and
        // there is no "past the maximum" (70 is IPV6_AUTOFLOWLABEL): the IPv4 probes are kept
        // under their names, re-aimed, plus those two IPv6 options as they are.
        for p in &mut probes {
            if !p.set && matches!(p.optname, 66 | 67) {
                p.optname += 2;
            }
            if p.name == "get_optname_68" {
                p.name = "get_optname_66";
                p.optname = 66;
                p.desc = "getsockopt IPPROTO_IPV6 optname 66 (IPV6_RECVTCLASS, not ip6tables')";
            }
            if p.name == "set_optname_66" {
                p.desc = "setsockopt IPPROTO_IPV6 optname 66 (IPV6_RECVTCLASS, not ip6tables')";
            }
        }
        probes.push(Probe {
            name: "get_optname_67",
            set: false,
            optname: 67,
            buf: vec![0; 4],
            len: 4,
            desc: "getsockopt IPPROTO_IPV6 optname 67 (IPV6_TCLASS, not ip6tables')",
        });
        probes.push(Probe {
            name: "set_optname_70",
            set: true,
            optname: 70,
            buf: vec![0; 4],
            len: 4,
            desc: "setsockopt IPPROTO_IPV6 optname 70 (IPV6_AUTOFLOWLABEL, not ip6tables')",
        });
    }
    for mut p in probes {
        let (e, lout) = if p.set {
            p.buf.resize(p.buf.len().max(p.len).max(1), 0);
            (set(&sock, p.optname, &mut p.buf, p.len), p.len)
        } else {
            get_len(&sock, p.optname, &mut p.buf, p.len)
        };
        lines.push_str(&format!(
            "{}\t{}\t{}\t{}\t{e}\t{}\t{lout}\t{}\n",
            p.name,
            if p.set { "set" } else { "get" },
            p.optname,
            p.len,
            errno_name(e),
            p.desc
        ));
    }
    write(out, lines.as_bytes())?;
    Ok(0)
}

fn cmd_add_counters(blob_path: &Path, optlen: Option<usize>) -> Result<i32> {
    let blob = std::fs::read(blob_path).with_context(|| format!("read {}", blob_path.display()))?;
    let optlen = optlen.unwrap_or(blob.len());
    let mut buf = blob.clone();
    // xt_counters_info is 40 bytes (name[32], num_counters, padding).
    buf.resize(optlen.max(blob.len()).max(40), 0);
    let sock = raw_socket()?;
    Ok(set(&sock, IPT_SO_SET_ADD_COUNTERS, &mut buf, optlen))
}

/// GET_INFO then GET_ENTRIES of `table`; returns (errno, info bytes, entries bytes).
fn fetch(table: &str) -> Result<(i32, Vec<u8>, Vec<u8>)> {
    let sock = raw_socket()?;
    let mut info = vec![0u8; GETINFO_LEN];
    info[..32].copy_from_slice(&table_name(table)?);
    let (e, n) = get(&sock, IPT_SO_GET_INFO, &mut info);
    if e != 0 {
        return Ok((e, Vec::new(), Vec::new()));
    }
    info.truncate(n);
    // ipt_getinfo: name[32], valid_hooks, hook_entry[5], underflow[5], num_entries, size.
    let size = u32::from_ne_bytes(info[80..84].try_into().context("getinfo size")?) as usize;
    let mut entries = vec![0u8; GET_ENTRIES_HDR + size];
    entries[..32].copy_from_slice(&table_name(table)?);
    entries[32..36].copy_from_slice(&(size as u32).to_ne_bytes());
    let (e, n) = get(&sock, IPT_SO_GET_ENTRIES, &mut entries);
    if e != 0 {
        return Ok((e, info, Vec::new()));
    }
    entries.truncate(n);
    Ok((0, info, entries))
}

/// A revision query as iptables sends it: `struct xt_get_revision { char name[29]; u8 revision; }`.
fn cmd_revision(family: Family, kind: Kind, name: &str, rev: u8) -> Result<i32> {
    let (af, level, base) = match family {
        Family::Ipv4 => (libc::AF_INET, libc::IPPROTO_IP, 66),
        Family::Ipv6 => (libc::AF_INET6, libc::IPPROTO_IPV6, 68),
    };
    let optname = match kind {
        Kind::Match => base,
        Kind::Target => base + 1,
    };
    if name.len() >= 29 {
        bail!("name too long: {name}");
    }
    let mut req = [0u8; 30];
    req[..name.len()].copy_from_slice(name.as_bytes());
    req[29] = rev;
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(af, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("raw socket");
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut len = req.len() as libc::socklen_t;
    // SAFETY: req is valid for len bytes; len points to a live socklen_t.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            level,
            optname,
            req.as_mut_ptr().cast::<c_void>(),
            &mut len,
        )
    };
    Ok(if r < 0 { last_errno() } else { 0 })
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}

/// Asks the real kernel, in the current network namespace, what it says about an IPT_SO_*
/// request. Every command prints `ERRNO<TAB>NAME` (`0<TAB>OK` on success) and exits 0 when the
/// kernel answered, whatever it answered; a non-zero exit means the oracle itself failed.
#[derive(Debug, Parser)]
#[command(name = "xt-oracle", args_override_self = true)]
struct Args {
    /// ip6tables' requests: AF_INET6 socket, level IPPROTO_IPV6.
    #[arg(long, global = true)]
    ipv6: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Send BLOB as IPT_SO_SET_REPLACE (the counters pointer aimed at a buffer of ours).
    Replace {
        /// The ipt_replace blob (its counters pointer is overwritten).
        blob: PathBuf,
        /// optlen passed to setsockopt (default: BLOB's length).
        #[arg(long, value_name = "N")]
        optlen: Option<usize>,
    },
    /// Send BLOB as IPT_SO_SET_ADD_COUNTERS.
    AddCounters {
        /// The xt_counters_info blob.
        blob: PathBuf,
        /// optlen passed to setsockopt (default: BLOB's length).
        #[arg(long, value_name = "N")]
        optlen: Option<usize>,
    },
    /// Write the kernel's IPT_SO_GET_INFO answer for TABLE to OUT.
    GetInfo { table: String, out: PathBuf },
    /// Write the kernel's IPT_SO_GET_ENTRIES answer for TABLE to OUT.
    GetEntries { table: String, out: PathBuf },
    /// Write DIR/get_info.bin and DIR/get_entries.bin for TABLE.
    Dump { table: String, dir: PathBuf },
    /// Every single-byte flip (xor 0xff, 0x01, 0x80) of a SET_REPLACE blob, appended to
    /// OUT_TSV; RESET (a SET_REPLACE blob) re-installs the starting table size.
    Flips {
        /// The base ipt_replace blob.
        blob: PathBuf,
        /// First column of every line written.
        label: String,
        /// Appended to.
        out_tsv: PathBuf,
        /// An ipt_replace blob whose table has as many entries as BLOB's num_counters.
        reset: PathBuf,
    },
    /// Malformed get/set requests and the kernel's errnos, written to OUT_TSV.
    Probes { out_tsv: PathBuf },
    /// Ask IPT_SO_GET_REVISION_MATCH/TARGET (ipv4) or IP6T_SO_GET_REVISION_* (ipv6).
    Revision {
        #[arg(value_enum)]
        family: Family,
        #[arg(value_enum)]
        kind: Kind,
        /// Extension name (may be empty: the standard target).
        name: String,
        /// Revision asked about.
        rev: u8,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Family {
    Ipv4,
    Ipv6,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Match,
    Target,
}

fn run(cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Replace { blob, optlen } => cmd_replace(&blob, optlen),
        Cmd::AddCounters { blob, optlen } => cmd_add_counters(&blob, optlen),
        Cmd::GetInfo { table, out } => {
            let (e, info, _) = fetch(&table)?;
            if e == 0 || !info.is_empty() {
                write(&out, &info)?;
            }
            Ok(e)
        }
        Cmd::GetEntries { table, out } => {
            let (e, _, entries) = fetch(&table)?;
            if e == 0 {
                write(&out, &entries)?;
            }
            Ok(e)
        }
        Cmd::Dump { table, dir } => {
            let (e, info, entries) = fetch(&table)?;
            if e == 0 {
                write(&dir.join("get_info.bin"), &info)?;
                write(&dir.join("get_entries.bin"), &entries)?;
            }
            Ok(e)
        }
        Cmd::Flips {
            blob,
            label,
            out_tsv,
            reset,
        } => cmd_flips(&blob, &label, &out_tsv, &reset),
        Cmd::Probes { out_tsv } => cmd_probes(&out_tsv),
        Cmd::Revision {
            family,
            kind,
            name,
            rev,
        } => cmd_revision(family, kind, &name, rev),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    IPV6.store(args.ipv6, std::sync::atomic::Ordering::Relaxed);
    let e = run(args.cmd)?;
    println!("{e}\t{}", errno_name(e));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cmd {
        Args::try_parse_from(std::iter::once("xt-oracle").chain(args.iter().copied()))
            .expect("parses")
            .cmd
    }

    #[test]
    fn command_is_consistent() {
        Args::command().debug_assert();
    }

    /// The invocations of fixtures/capture.sh.
    #[test]
    fn capture_sh() {
        assert!(
            matches!(parse(&["dump", "filter", "d"]), Cmd::Dump { table, .. } if table == "filter")
        );
        assert!(matches!(
            parse(&["get-info", "filter", "i.bin"]),
            Cmd::GetInfo { .. }
        ));
        assert!(matches!(
            parse(&["get-entries", "filter", "e.bin"]),
            Cmd::GetEntries { .. }
        ));
        assert!(matches!(
            parse(&["replace", "n.bin"]),
            Cmd::Replace { optlen: None, .. }
        ));
        assert!(matches!(
            parse(&["replace", "n.bin", "--optlen", "80"]),
            Cmd::Replace {
                optlen: Some(80),
                ..
            }
        ));
        assert!(matches!(
            parse(&["add-counters", "n.bin", "--optlen", "40"]),
            Cmd::AddCounters {
                optlen: Some(40),
                ..
            }
        ));
        assert!(matches!(
            parse(&["flips", "b.bin", "empty", "flips.tsv", "r.bin"]),
            Cmd::Flips { label, .. } if label == "empty"
        ));
        assert!(matches!(parse(&["probes", "p.tsv"]), Cmd::Probes { .. }));
        assert!(matches!(
            parse(&["revision", "ipv6", "target", "", "1"]),
            Cmd::Revision { family: Family::Ipv6, kind: Kind::Target, name, rev: 1 } if name.is_empty()
        ));
        assert!(matches!(
            parse(&["revision", "ipv4", "match", "tcp", "0"]),
            Cmd::Revision {
                family: Family::Ipv4,
                kind: Kind::Match,
                ..
            }
        ));
        for bad in [
            &["revision", "ipv5", "match", "tcp", "0"][..],
            &["revision", "ipv4", "rule", "tcp", "0"],
            &["revision", "ipv4", "match", "tcp", "256"],
            &["dump", "filter"],
            &["replace", "n.bin", "extra"],
            &[],
        ] {
            assert!(
                Args::try_parse_from(std::iter::once("xt-oracle").chain(bad.iter().copied()))
                    .is_err(),
                "{bad:?}"
            );
        }
    }
}
