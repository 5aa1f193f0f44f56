//! The kernel log as `/dev/kmsg` hands it out, for comparing LOG lines.
//!
//! The kernel's LOG target (`nf_log_syslog`) prints from softirq context, so its line is in
//! the log buffer before the packet's processing ends; it logs from a namespace other than the
//! initial one only while `net.netfilter.nf_log_all_netns` is 1 ([`SysctlGuard`] sets it for
//! the run and puts the old value back). bpfilter's daemon writes the same text to
//! `/dev/kmsg` a little later, from user space, and the kernel forces facility `LOG_USER`
//! (1) on such writes: a record's `PRIORITY` field is `facility * 8 + level`. The harness
//! replays the two sides one after the other and reads the records in between; a facility-1
//! record that shows up while the reference side runs is a late line of the candidate.
//!
//! Record format (Documentation/ABI/testing/dev-kmsg): `PRIO,SEQ,TS,FLAGS[,...];TEXT\n`,
//! then dictionary lines starting with a space; TEXT escapes unprintable bytes as `\xNN`.
//! One `read` returns one record; EAGAIN means none is left; EPIPE means records were
//! overwritten before we read them (the next read goes on from the oldest one left).

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// One record of the kernel log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 0 = kernel, 1 = user (what `/dev/kmsg` writes get).
    pub facility: u8,
    /// Syslog level 0..7.
    pub level: u8,
    /// Message text, escaped as `/dev/kmsg` shows it.
    pub text: String,
}

/// A non-blocking reader of `/dev/kmsg`, positioned at the end of the log when opened.
#[derive(Debug)]
pub struct Kmsg {
    fd: OwnedFd,
    /// Records overwritten before they could be read (EPIPE) since opening.
    pub lost: u64,
}

impl Kmsg {
    /// Opens `/dev/kmsg` and skips everything already logged.
    pub fn open() -> Result<Kmsg> {
        let path = CString::new("/dev/kmsg")?;
        // SAFETY: valid NUL-terminated path; the result is checked and wrapped at once.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            bail!("open /dev/kmsg: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: lseek on a descriptor we own; SEEK_END on /dev/kmsg moves past the newest
        // record (devkmsg_llseek).
        if unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) } < 0 {
            bail!("lseek /dev/kmsg: {}", std::io::Error::last_os_error());
        }
        Ok(Kmsg { fd, lost: 0 })
    }

    /// Every record logged since the last call.
    pub fn read(&mut self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            // SAFETY: buf is a valid writable buffer of the given length.
            let r = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    Some(libc::EPIPE) => {
                        self.lost += 1;
                        continue;
                    }
                    _ => return Err(e).context("read /dev/kmsg"),
                }
            }
            if r == 0 {
                break;
            }
            if let Some(rec) = parse_record(&buf[..r as usize]) {
                out.push(rec);
            }
        }
        Ok(out)
    }
}

/// Parses one `/dev/kmsg` record (None when malformed).
pub fn parse_record(raw: &[u8]) -> Option<Record> {
    let s = String::from_utf8_lossy(raw);
    let (head, rest) = s.split_once(';')?;
    let prio: u32 = head.split(',').next()?.trim().parse().ok()?;
    let text = rest.split('\n').next().unwrap_or("").to_string();
    Some(Record {
        facility: (prio >> 3) as u8,
        level: (prio & 7) as u8,
        text,
    })
}

/// The packet part of a LOG line outside the brackets of a quoted ICMP payload: from `IN=`
/// (after the prefix, which may hold anything, brackets included) to the first `[` after it.
fn outer(text: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(i) = text[from..].find("IN=").map(|i| from + i) {
        if text[i..].contains(" OUT=") && text[i..].contains(" SRC=") {
            let end = text[i..].find('[').map_or(text.len(), |e| i + e);
            return Some((i, end));
        }
        from = i + 3;
    }
    None
}

/// True when a record's text has the shape of a netfilter LOG line (`PREFIX IN=... OUT=...`
/// followed by the packet).
pub fn is_packet_log(text: &str) -> bool {
    outer(text).is_some()
}

/// The value of `KEY=` in a LOG line's packet part, outside the brackets of a quoted ICMP
/// payload (`IN` itself is not found: it starts the part).
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let (start, end) = outer(text)?;
    let region = &text[start..end];
    let pat = format!(" {key}=");
    let at = region.find(&pat)? + pat.len();
    Some(region[at..].split(' ').next().unwrap_or(""))
}

/// Replaces the outer `ID=` value of a LOG line by `*`. The kernel draws the IP ID of the
/// datagrams it originates (ICMP errors: `ip_select_ident`) and bpfilter's raw socket gets
/// another draw (and an RST's ID 0 becomes a drawn one, `raw_send_hdrinc`), so the ID of a
/// firewall-originated packet legitimately differs; the harness's own packets carry their
/// tag, which is kept.
pub fn mask_outer_id(text: &str) -> String {
    let Some((start, end)) = outer(text) else {
        return text.to_string();
    };
    let Some(ttl) = text[start..end].find(" TTL=").map(|t| start + t) else {
        return text.to_string();
    };
    let Some(rel) = text[ttl..end].find(" ID=") else {
        return text.to_string();
    };
    let at = ttl + rel + 4;
    let stop = text[at..].find(' ').map_or(text.len(), |e| at + e);
    format!("{}*{}", &text[..at], &text[stop..])
}

/// Masks the clock values of IP timestamp options in every `OPT (HEX)` of a LOG line
/// (`--log-ip-options`), as `crate::packet::mask_ip_timestamps` does in datagrams.
pub fn mask_opt_timestamps(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("OPT (") {
        let start = at + 5;
        out.push_str(&rest[..start]);
        let end = rest[start..].find(')').map_or(rest.len(), |e| start + e);
        let hex = &rest[start..end];
        let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        match bytes {
            Some(mut b) if hex.len() % 2 == 0 => {
                crate::packet::mask_ip_timestamps(&mut b);
                for x in b {
                    out.push_str(&format!("{x:02X}"));
                }
            }
            _ => out.push_str(hex),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Masks what a real TCP socket draws (`--log-tcp-sequence`'s `SEQ=` and `ACK=`, and the TCP
/// options, whose timestamps have a drawn offset) in a LOG line about one of its segments or
/// an answer to it.
pub fn mask_tcp_draws(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let key = [" SEQ=", " ACK="]
            .iter()
            .find(|k| rest.starts_with(**k))
            .copied();
        if let Some(k) = key {
            out.push_str(k);
            out.push('*');
            i += k.len();
            while i < text.len() && text.as_bytes()[i].is_ascii_digit() {
                i += 1;
            }
            continue;
        }
        if rest.starts_with("OPT (")
            && text[..i]
                .rfind("PROTO=")
                .is_some_and(|p| text[p..].starts_with("PROTO=TCP"))
        {
            out.push_str("OPT (*");
            i += rest.find(')').unwrap_or(rest.len());
            continue;
        }
        let ch = rest.chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Masks every IP ID (`TTL=N ID=M`, outer and quoted) of a LOG line: the ones a real socket
/// draws.
pub fn mask_ip_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" TTL=") {
        let after_ttl = at + 5;
        let digits = rest[after_ttl..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(rest.len(), |d| after_ttl + d);
        out.push_str(&rest[..digits]);
        rest = &rest[digits..];
        if let Some(r) = rest.strip_prefix(" ID=") {
            out.push_str(" ID=*");
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            rest = &r[end..];
        }
    }
    out.push_str(rest);
    out
}

/// The machine-wide lock of the kernel log: two harness runs at once would read each other's
/// LOG lines (the loopback addresses, the interface names and MAC addresses are the same in
/// every run), so a run takes it before its first stateful case and keeps it to the end.
#[derive(Debug)]
pub struct LogLock(#[allow(dead_code, reason = "held for its flock")] std::fs::File);

/// Where [`LogLock`] lives.
pub const LOG_LOCK: &str = "/run/conformance-kmsg.lock";

impl LogLock {
    /// Takes the lock, waiting (and saying so) while another run holds it.
    pub fn take() -> Result<LogLock> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOG_LOCK)
            .with_context(|| format!("open {LOG_LOCK}"))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!(
                "conformance: waiting for another run to release the kernel log ({LOG_LOCK})"
            );
            // SAFETY: as above, blocking.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                bail!("flock {LOG_LOCK}: {}", std::io::Error::last_os_error());
            }
        }
        Ok(LogLock(f))
    }
}

/// Sets a sysctl for as long as the guard lives and restores the old value when dropped.
#[derive(Debug)]
pub struct SysctlGuard {
    path: String,
    old: String,
}

impl SysctlGuard {
    /// Writes `value` to `/proc/sys/KEY` (KEY with slashes), remembering the old value.
    pub fn set(key: &str, value: &str) -> Result<SysctlGuard> {
        let path = format!("/proc/sys/{key}");
        let old = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        std::fs::write(&path, value).with_context(|| format!("write {path}"))?;
        Ok(SysctlGuard {
            path,
            old: old.trim().to_string(),
        })
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "drop: IN=eth0 OUT= MAC=02:cf:00:00:00:01:02:cf:00:00:01:01:08:00 \
        SRC=10.0.0.1 DST=198.18.0.1 LEN=56 TOS=0x00 PREC=0xC0 TTL=64 ID=4711 PROTO=ICMP \
        TYPE=3 CODE=3 [SRC=198.18.0.1 DST=10.0.0.1 LEN=28 TOS=0x00 PREC=0x00 TTL=64 ID=5 \
        PROTO=UDP SPT=53 DPT=1000 LEN=8 ] ";

    #[test]
    fn records_parse() {
        let r = parse_record(b"12,345,678,-;hello IN=eth0 OUT= SRC=1.2.3.4\n SUBSYSTEM=x\n")
            .expect("record");
        assert_eq!((r.facility, r.level), (1, 4));
        assert_eq!(r.text, "hello IN=eth0 OUT= SRC=1.2.3.4");
        assert!(is_packet_log(&r.text));
        assert!(!is_packet_log("eth0: link becomes ready"));
        assert!(parse_record(b"garbage").is_none());
    }

    #[test]
    fn every_ip_id_can_be_masked() {
        let m = mask_ip_ids(LINE);
        assert!(m.contains("TTL=64 ID=* PROTO=ICMP"), "{m}");
        assert!(m.contains("TTL=64 ID=* PROTO=UDP"), "{m}");
        assert_eq!(mask_ip_ids("x TTL=1"), "x TTL=1");
    }

    #[test]
    fn socket_draws_are_masked() {
        let t = "p IN= OUT=eth0 SRC=1.1.1.1 DST=2.2.2.2 LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=0 DF \
                 OPT (94040000) PROTO=TCP SPT=1 DPT=2 SEQ=3444607255 ACK=0 WINDOW=64240 RES=0x00 \
                 SYN URGP=0 OPT (020405B40402080A0001) ";
        let m = mask_tcp_draws(t);
        assert!(m.contains("OPT (94040000) PROTO=TCP"), "{m}");
        assert!(m.contains("SEQ=* ACK=* WINDOW=64240"), "{m}");
        assert!(m.ends_with("URGP=0 OPT (*) "), "{m}");
    }

    #[test]
    fn timestamp_options_are_masked() {
        let t = "x OPT (440C0D00003576040000FFFF) PROTO=TCP OPT (0101) y";
        assert_eq!(
            mask_opt_timestamps(t),
            "x OPT (440C0D000000000000000000) PROTO=TCP OPT (0101) y"
        );
        assert_eq!(mask_opt_timestamps("OPT (zz"), "OPT (zz");
    }

    #[test]
    fn outer_id_is_masked_not_the_quoted_one() {
        let m = mask_outer_id(LINE);
        assert!(m.contains("TTL=64 ID=* PROTO=ICMP"), "{m}");
        assert!(m.contains("ID=5 PROTO=UDP"), "{m}");
        assert_eq!(field(LINE, "ID"), Some("4711"));
        assert_eq!(field(LINE, "SRC"), Some("10.0.0.1"));
        assert_eq!(field(LINE, "OUT"), Some(""));
        let bracketed = format!("[UFW BLOCK] {}", &LINE[6..]);
        assert!(is_packet_log(&bracketed));
        assert_eq!(field(&bracketed, "ID"), Some("4711"));
        assert!(mask_outer_id(&bracketed).starts_with("[UFW BLOCK] IN=eth0"));
        assert!(mask_outer_id(&bracketed).contains("TTL=64 ID=* PROTO=ICMP"));
        assert_eq!(mask_outer_id("no fields"), "no fields");
    }
}
