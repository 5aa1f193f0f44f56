//! `xt-client`: the raw-socket sockopt client of the bad-input and privilege tests
//! (tests/hardening). It runs a script of IPT_SO_* operations, one per line, through a raw
//! socket (so that a preloaded libbpfilter.so sends them to the daemon, or the kernel's own
//! ip_tables answers them) and prints `R LINE RET ERRNO OPTLEN_AFTER` per operation. The
//! script language is documented in tests/hardening/mod.rs.
//!
//! ```text
//! xt-client SCRIPT
//! ```
#![allow(
    clippy::unwrap_used,
    reason = "a test tool: a malformed script is a test bug"
)]

use std::io::Write;
use std::path::PathBuf;

const IPT_SO_SET_REPLACE: i32 = 64;
const IPT_SO_GET_INFO: i32 = 64;
const IPT_SO_GET_ENTRIES: i32 = 65;

/// fixtures/ of the workspace.
fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"))
}

fn main() {
    let Some(script) = std::env::args_os().nth(1) else {
        eprintln!("usage: xt-client SCRIPT");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(&script).unwrap();
    let mut c = Client::new();
    let mut out = std::io::stdout().lock();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (ret, errno, optlen) = c.op(line);
        writeln!(out, "R {n} {ret} {errno} {optlen}").unwrap();
        out.flush().unwrap();
    }
}

/// A table name field of `n` bytes.
fn name_field(name: &[u8], n: usize) -> Vec<u8> {
    let mut v = name.to_vec();
    v.resize(n, 0);
    v
}

fn unhex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// An 8-aligned buffer holding `bytes` at offset `misalign`.
struct Buf {
    words: Vec<u64>,
    misalign: usize,
    len: usize,
}

impl Buf {
    fn new(bytes: &[u8], len: usize, misalign: usize) -> Buf {
        let total = misalign + len.max(bytes.len());
        let mut b = Buf {
            words: vec![0u64; total.div_ceil(8) + 1],
            misalign,
            len: len.max(bytes.len()),
        };
        b.bytes_mut()[..bytes.len()].copy_from_slice(bytes);
        b
    }
    fn ptr(&mut self) -> *mut u8 {
        // SAFETY: misalign < the allocation size, so the pointer stays inside `words`.
        unsafe { self.words.as_mut_ptr().cast::<u8>().add(self.misalign) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        let (len, p) = (self.len, self.ptr());
        // SAFETY: `words` holds misalign + len bytes from its start; p is misalign in.
        unsafe { std::slice::from_raw_parts_mut(p, len) }
    }
}

/// The client's raw socket (opened on first use) and its counters buffer.
struct Client {
    fd: Option<i32>,
    counters: Vec<u64>,
}

impl Client {
    fn new() -> Client {
        Client {
            fd: None,
            counters: vec![0; (1 << 20) / 8],
        }
    }

    /// The raw socket, or the errno socket(2) failed with (EPERM without CAP_NET_RAW).
    fn fd(&mut self) -> Result<i32, i32> {
        if let Some(fd) = self.fd {
            return Ok(fd);
        }
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(Self::errno());
        }
        self.fd = Some(fd);
        Ok(fd)
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    fn set(&mut self, optname: i32, buf: &mut Buf, optlen: u32) -> (i32, i32, u32) {
        let fd = match self.fd() {
            Ok(fd) => fd,
            Err(e) => return (-1, e, optlen),
        };
        let p = buf.ptr();
        // SAFETY: p is valid for buf.len >= optlen bytes (or the test deliberately passes a
        // larger optlen; then the kernel or the preload reads past it into our padding word).
        let ret = unsafe { libc::setsockopt(fd, libc::IPPROTO_IP, optname, p.cast(), optlen) };
        (ret, if ret < 0 { Self::errno() } else { 0 }, optlen)
    }

    fn get(&mut self, optname: i32, buf: &mut Buf, optlen: u32) -> (i32, i32, u32) {
        let fd = match self.fd() {
            Ok(fd) => fd,
            Err(e) => return (-1, e, optlen),
        };
        let mut len = optlen as libc::socklen_t;
        let p = buf.ptr();
        // SAFETY: p is valid for max(optlen, input) bytes.
        let ret = unsafe { libc::getsockopt(fd, libc::IPPROTO_IP, optname, p.cast(), &mut len) };
        (ret, if ret < 0 { Self::errno() } else { 0 }, len)
    }

    /// filter's GET_INFO: (num_entries, size), or None.
    fn info(&mut self) -> Option<(u32, u32)> {
        let mut b = Buf::new(&name_field(b"filter", 84), 84, 0);
        let (ret, _, _) = self.get(IPT_SO_GET_INFO, &mut b, 84);
        if ret < 0 {
            return None;
        }
        let bytes = b.bytes_mut();
        let n = u32::from_ne_bytes(bytes[76..80].try_into().unwrap());
        let size = u32::from_ne_bytes(bytes[80..84].try_into().unwrap());
        Some((n, size))
    }

    fn replace(
        &mut self,
        blob: &[u8],
        optlen: u32,
        misalign: usize,
        ptr: &str,
        num: Option<u32>,
    ) -> (i32, i32, u32) {
        // The buffer really holds optlen bytes (zeros after the blob), up to 512 MiB.
        let len = (optlen as usize).min(512 << 20).max(blob.len()).max(96);
        let mut b = Buf::new(blob, len, misalign);
        let bytes = b.bytes_mut();
        if let Some(n) = num {
            bytes[84..88].copy_from_slice(&n.to_ne_bytes());
        }
        let p: u64 = match ptr {
            "valid" => self.counters.as_mut_ptr() as u64,
            // Far from anything mapped, not NULL (NULL is special-cased by some code).
            "garbage" => 0x0000_7ead_dead_0000,
            _ => u64::from_ne_bytes(bytes[88..96].try_into().unwrap()),
        };
        bytes[88..96].copy_from_slice(&p.to_ne_bytes());
        self.set(IPT_SO_SET_REPLACE, &mut b, optlen)
    }

    /// SET_REPLACE of FILE placed so that it ends right before an inaccessible page, with
    /// OPTLEN (`-` = the file's length) possibly larger than what is readable.
    fn set_guarded(&mut self, optlen: &str, path: &str) -> (i32, i32, u32) {
        let mut blob = std::fs::read(path).unwrap();
        let optlen = if optlen == "-" {
            blob.len() as u32
        } else {
            optlen.parse().unwrap()
        };
        let counters = self.counters.as_mut_ptr() as u64;
        blob[88..96].copy_from_slice(&counters.to_ne_bytes());
        let page = 4096;
        let pages = blob.len().div_ceil(page);
        // SAFETY: an anonymous private mapping of (pages + 1) pages; nothing else uses it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                (pages + 1) * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base.cast::<u8>();
        // SAFETY: the last page of our mapping becomes inaccessible; the blob is copied to the
        // end of the pages before it, inside the mapping.
        let start = unsafe {
            assert_eq!(
                libc::mprotect(base.add(pages * page).cast(), page, libc::PROT_NONE),
                0
            );
            let start = base.add(pages * page - blob.len());
            std::ptr::copy_nonoverlapping(blob.as_ptr(), start, blob.len());
            start
        };
        let fd = match self.fd() {
            Ok(fd) => fd,
            Err(e) => return (-1, e, optlen),
        };
        // SAFETY: the kernel (or the preload) may read past the blob: that is the point; the
        // guard page makes such a read fail instead of reading garbage.
        let ret = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                IPT_SO_SET_REPLACE,
                start.cast(),
                optlen,
            )
        };
        (ret, if ret < 0 { Self::errno() } else { 0 }, optlen)
    }

    fn install(&mut self, path: &str) -> (i32, i32, u32) {
        let blob = std::fs::read(path).unwrap();
        let Some((n, _)) = self.info() else {
            return (-1, Self::errno(), 0);
        };
        self.replace(&blob, blob.len() as u32, 0, "valid", Some(n))
    }

    fn reset(&mut self) -> (i32, i32, u32) {
        let empty = fixtures().join("captured/empty/replace.bin");
        self.install(empty.to_str().unwrap())
    }

    fn op(&mut self, line: &str) -> (i32, i32, u32) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[0] {
            "set" => {
                let optname: i32 = f[1].parse().unwrap();
                let misalign: usize = f[3].parse().unwrap();
                let blob = std::fs::read(f[6]).unwrap();
                let optlen = if f[2] == "-" {
                    blob.len() as u32
                } else {
                    f[2].parse().unwrap()
                };
                let r = if optname == IPT_SO_SET_REPLACE {
                    self.replace(&blob, optlen, misalign, f[5], None)
                } else {
                    let mut b = Buf::new(&blob, blob.len().max(40), misalign);
                    self.set(optname, &mut b, optlen)
                };
                if f[4] == "1" && optname == IPT_SO_SET_REPLACE && r.0 == 0 {
                    let again = self.reset();
                    assert_eq!(again.0, 0, "reset after an accepted blob failed: {again:?}");
                }
                r
            }
            "get" => {
                let optname: i32 = f[1].parse().unwrap();
                let optlen: u32 = f[2].parse().unwrap();
                let misalign: usize = f[3].parse().unwrap();
                let input = unhex(f[4]);
                let mut b = Buf::new(&input, optlen as usize, misalign);
                self.get(optname, &mut b, optlen)
            }
            "getlie" => {
                // optlen claims more than the buffer holds (the input only).
                let optname: i32 = f[1].parse().unwrap();
                let optlen: u32 = f[2].parse().unwrap();
                let input = unhex(f[3]);
                let mut b = Buf::new(&input, input.len(), 0);
                self.get(optname, &mut b, optlen)
            }
            "entries" => {
                let Some((_, size)) = self.info() else {
                    return (-1, Self::errno(), 0);
                };
                let dsize: i64 = f[2].parse().unwrap();
                let doptlen: i64 = f[3].parse().unwrap();
                let size = (i64::from(size) + dsize) as u32;
                let optlen = (40 + i64::from(size) + doptlen) as u32;
                let mut hdr = name_field(f[1].as_bytes(), 32);
                hdr.extend_from_slice(&size.to_ne_bytes());
                hdr.resize(40, 0);
                let mut b = Buf::new(&hdr, optlen as usize, 0);
                self.get(IPT_SO_GET_ENTRIES, &mut b, optlen)
            }
            "install" => self.install(f[1]),
            "setguard" => self.set_guarded(f[1], f[2]),
            "wire" => {
                let req = libbpfilter::wire::Request::decode(&unhex(f[1])).unwrap();
                match libbpfilter::Client::connect().and_then(|mut c| c.request(&req)) {
                    Ok(reply) => (0, reply.errno, reply.payload.len() as u32),
                    Err(e) => {
                        eprintln!("wire: {e}");
                        (-1, e.errno(), 0)
                    }
                }
            }
            "reset" => self.reset(),
            other => panic!("unknown client op {other}"),
        }
    }
}
