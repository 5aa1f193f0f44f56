//! BPF_PROG_TYPE_NETFILTER programs: load (with the verifier log on failure), test runs, pins
//! and introspection.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use zerocopy::FromZeros;

use super::error::{check, Result, SysError};
use super::obj::{fill_info, get_info, RawProgInfo};
use super::obj_name;

/// `struct bpf_insn` is 8 bytes.
const INSN_SIZE: usize = 8;
/// First log buffer; grown on ENOSPC up to [`LOG_MAX`].
const LOG_START: usize = 1 << 20;
/// The largest log taken again only to explain a failure ([`LOG_START`] holds the end of
/// a longer one, where the verifier says why).
const EXPLAIN_LOG_MAX: usize = 4 << 20;
/// What a load over the verifier's limits (E2BIG) says instead of its log.
const TOO_COMPLEX: &str = "the verifier gave up on the program: over its limits of \
    1,000,000 verified instructions or 8,192 pending branches (E2BIG); no log was taken, which \
    would repeat the whole verification";
/// The kernel refuses log buffers of `UINT_MAX >> 2` bytes or more; stay well below.
const LOG_MAX: usize = 64 << 20;

/// Figures of one successful load.
#[derive(Debug, Clone, Default)]
pub struct LoadStats {
    /// Instructions the verifier processed (`bpf_prog_info.verified_insns`).
    pub verified_insns: u32,
    /// Wall time of the BPF_PROG_LOAD call(s), verifier and JIT included.
    pub load_time: Duration,
    /// Instructions after the kernel's rewrites (`xlated_prog_len / 8`).
    pub xlated_insns: u32,
    /// Size of the JIT image in bytes.
    pub jited_bytes: u32,
    /// The verifier log when `log_level` > 0 (empty otherwise).
    pub log: String,
}

/// Result of one BPF_PROG_TEST_RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (NF_DROP 0 / NF_ACCEPT 1 for netfilter programs).
    pub retval: u32,
    /// The kernel's average ns per run.
    pub duration_ns: u32,
}

/// What the kernel reports about a program (`struct bpf_prog_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgInfo {
    /// Kernel id.
    pub id: u32,
    /// Name given at load (up to 15 bytes).
    pub name: String,
    /// `enum bpf_prog_type` number (32 = netfilter).
    pub prog_type: u32,
    /// The kernel's tag (hash of the instructions), as `bpftool prog` shows it.
    pub tag: [u8; 8],
    /// Instructions after the kernel's rewrites.
    pub xlated_insns: u32,
    /// JIT image size in bytes.
    pub jited_bytes: u32,
    /// Instructions the verifier processed.
    pub verified_insns: u32,
    /// Ids of the maps the program uses.
    pub map_ids: Vec<u32>,
}

impl ProgInfo {
    /// The tag as 16 lowercase hex digits (bpftool's format).
    pub fn tag_hex(&self) -> String {
        self.tag.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// An owned, loaded BPF program.
#[must_use]
#[derive(Debug)]
pub struct Program {
    /// Set for programs of the unit-test fake kernel (declared before `fd`: dropped first).
    #[cfg(test)]
    fake: Option<super::fake::Handle>,
    fd: OwnedFd,
}

/// One BPF_PROG_LOAD attempt; returns the fd or (errno, log, log_true_size).
fn load_once(
    prog_type: u32,
    attach_type: u32,
    name: &std::ffi::CStr,
    insns: &[u8],
    log_level: u32,
    log: &mut Vec<u8>,
) -> std::result::Result<OwnedFd, (i32, u32)> {
    let mut opts = libbpf_sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_prog_load_opts>() as libbpf_sys::size_t,
        expected_attach_type: attach_type,
        ..Default::default()
    };
    if log_level > 0 {
        log.fill(0);
        opts.log_level = log_level;
        opts.log_size = u32::try_from(log.len()).unwrap_or(u32::MAX);
        opts.log_buf = log.as_mut_ptr().cast();
    }
    let license = c"GPL";
    // The insn slice may not be 8-byte aligned; the kernel copies it with copy_from_user, which
    // has no alignment needs, so passing the byte pointer as `*const bpf_insn` is fine.
    let cnt = (insns.len() / INSN_SIZE) as libbpf_sys::size_t;
    // SAFETY: name and license are NUL-terminated; insns holds cnt * 8 readable bytes; opts
    // is fully initialized with the correct sz and its log_buf (if set) points to log.len()
    // writable bytes; everything outlives the call. libbpf's `attempts` default retries EAGAIN.
    let ret = unsafe {
        libbpf_sys::bpf_prog_load(
            prog_type,
            name.as_ptr(),
            license.as_ptr(),
            insns.as_ptr().cast(),
            cnt,
            &mut opts,
        )
    };
    let fd = check("bpf_prog_load", ret).map_err(|e| (e.errno(), opts.log_true_size))?;
    // SAFETY: bpf_prog_load succeeded, so fd is a new fd of the program, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn log_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Program {
    /// Loads a BPF_PROG_TYPE_NETFILTER program (expected attach type BPF_NETFILTER, license
    /// "GPL"). `insns` is the kernel's 8-byte instruction encoding; `name` is at most 15 bytes.
    /// `log_level` is the kernel's bit set (1 = verifier trace, 2 = with states, 4 = stats
    /// only); 0 keeps no log on success. On failure the load is retried with a log (level 1 if
    /// 0 was asked) so that the error carries the verifier's explanation; a log buffer that
    /// is too small (ENOSPC) is grown and the load repeated.
    pub fn load_netfilter(
        name: &str,
        insns: &[u8],
        log_level: u32,
    ) -> Result<(Program, LoadStats)> {
        Program::load(
            libbpf_sys::BPF_PROG_TYPE_NETFILTER,
            libbpf_sys::BPF_NETFILTER,
            name,
            insns,
            log_level,
        )
    }

    /// Loads a program of any type (`prog_type`, `expected_attach_type` as the kernel numbers
    /// them); see [`Program::load_netfilter`].
    pub fn load(
        prog_type: u32,
        expected_attach_type: u32,
        name: &str,
        insns: &[u8],
        log_level: u32,
    ) -> Result<(Program, LoadStats)> {
        Program::load_with_log_start(
            prog_type,
            expected_attach_type,
            name,
            insns,
            log_level,
            LOG_START,
        )
    }

    fn load_with_log_start(
        prog_type: u32,
        expected_attach_type: u32,
        name: &str,
        insns: &[u8],
        log_level: u32,
        log_start: usize,
    ) -> Result<(Program, LoadStats)> {
        let cname = obj_name(name)?;
        if insns.is_empty() || insns.len() % INSN_SIZE != 0 {
            return Err(SysError::invalid(format!(
                "{} bytes of instructions, not a multiple of 8",
                insns.len()
            )));
        }
        let start = Instant::now();
        #[cfg(test)]
        if let Some(k) = super::fake::current() {
            let (h, fd, log) = k.prog_load(prog_type, name, insns, log_level)?;
            let n = (insns.len() / INSN_SIZE) as u32;
            let stats = LoadStats {
                verified_insns: n,
                load_time: start.elapsed(),
                xlated_insns: n,
                jited_bytes: n * 8,
                log,
            };
            return Ok((Program { fake: Some(h), fd }, stats));
        }
        let mut log = Vec::new();
        let mut level = log_level;
        if level > 0 {
            log = vec![0u8; log_start];
        }
        // Set when a load without a log failed and is verified again for its log: the errno
        // of that failure.
        let mut explaining = None;
        let fd = loop {
            match load_once(
                prog_type,
                expected_attach_type,
                &cname,
                insns,
                level,
                &mut log,
            ) {
                Ok(fd) => break fd,
                Err((errno, true_size)) => {
                    if level == 0 {
                        if errno == libc::E2BIG {
                            // Over the verifier's limits: a log would cost the whole
                            // verification again, with a line per state, for the same
                            // answer (minutes for a program near a million instructions).
                            return Err(SysError::Load {
                                errno,
                                log: TOO_COMPLEX.to_owned(),
                            });
                        }
                        // Verify again with a log, so that the error says why.
                        explaining = Some(errno);
                        level = 1;
                        log = vec![0u8; log_start];
                        continue;
                    }
                    // A log longer than the buffer: the kernel kept its end (which says why)
                    // and tells the whole size. Requested logs grow to it; a log taken only
                    // to explain a failure grows only while it is small.
                    let limit = if explaining.is_some() {
                        EXPLAIN_LOG_MAX
                    } else {
                        LOG_MAX
                    };
                    if errno == libc::ENOSPC && log.len() < limit {
                        let want = (true_size as usize).max(log.len() * 2);
                        if explaining.is_none() || want <= limit {
                            log = vec![0u8; want.min(limit)];
                            continue;
                        }
                    }
                    return Err(SysError::Load {
                        errno: explaining.unwrap_or(errno),
                        log: log_text(&log),
                    });
                }
            }
        };
        let load_time = start.elapsed();
        let prog = Program::from_owned(fd);
        let info: RawProgInfo = get_info("bpf_prog_get_info_by_fd", prog.fd())?;
        let stats = LoadStats {
            verified_insns: info.verified_insns,
            load_time,
            xlated_insns: info.xlated_prog_len / INSN_SIZE as u32,
            jited_bytes: info.jited_prog_len,
            log: if log_level > 0 {
                log_text(&log)
            } else {
                String::new()
            },
        };
        Ok((prog, stats))
    }

    /// Runs the program once per `repeat` on `data` (BPF_PROG_TEST_RUN). For netfilter
    /// programs `data` starts at the IP header (hook LOCAL_OUT, pf IPv4) unless `ctx` (a
    /// 48-byte `struct nf_hook_state` with only hook and pf set) says otherwise.
    pub fn test_run(&self, data: &[u8], ctx: Option<&[u8]>, repeat: u32) -> Result<TestRun> {
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return h.test_run(data);
        }
        let mut opts = libbpf_sys::bpf_test_run_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as libbpf_sys::size_t,
            data_in: data.as_ptr().cast(),
            data_size_in: u32::try_from(data.len())
                .map_err(|_| SysError::invalid("test data over 4 GiB"))?,
            repeat: i32::try_from(repeat).map_err(|_| SysError::invalid("repeat over i32::MAX"))?,
            ..Default::default()
        };
        if let Some(ctx) = ctx {
            opts.ctx_in = ctx.as_ptr().cast();
            opts.ctx_size_in =
                u32::try_from(ctx.len()).map_err(|_| SysError::invalid("ctx over 4 GiB"))?;
        }
        // SAFETY: data_in/ctx_in point to the given slices with their lengths; data_out and
        // ctx_out are NULL (nothing is copied back); opts has the correct sz.
        let ret = unsafe { libbpf_sys::bpf_prog_test_run_opts(self.fd.as_raw_fd(), &mut opts) };
        check("bpf_prog_test_run_opts", ret)?;
        Ok(TestRun {
            retval: opts.retval,
            duration_ns: opts.duration,
        })
    }

    /// The instructions as the kernel runs them after its rewrites (xlated), 8 bytes each,
    /// for dumps and disassembly.
    pub fn xlated(&self) -> Result<Vec<u8>> {
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return Ok(h.prog_info()?.1);
        }
        let first: RawProgInfo = get_info("bpf_prog_get_info_by_fd", self.fd())?;
        let mut buf = vec![0u8; first.xlated_prog_len as usize];
        let mut info = RawProgInfo::new_zeroed();
        info.xlated_prog_len = first.xlated_prog_len;
        info.xlated_prog_insns = buf.as_mut_ptr() as u64;
        // SAFETY: info is zeroed except xlated_prog_insns/xlated_prog_len, which describe buf, a
        // writable buffer of that many bytes that outlives the call; self.fd is a program fd.
        unsafe { fill_info("bpf_prog_get_info_by_fd", self.fd(), &mut info) }?;
        buf.truncate(info.xlated_prog_len.min(first.xlated_prog_len) as usize);
        Ok(buf)
    }

    /// The program fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A second owned handle on the same program.
    pub fn try_clone(&self) -> Result<Program> {
        #[cfg(test)]
        if let Some(h) = &self.fake {
            let (h, fd) = h.dup()?;
            return Ok(Program { fake: Some(h), fd });
        }
        let fd = self.fd.try_clone().map_err(|e| SysError::Syscall {
            call: "fcntl(F_DUPFD_CLOEXEC)",
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        })?;
        Ok(Program::from_owned(fd))
    }

    fn from_owned(fd: OwnedFd) -> Program {
        Program {
            #[cfg(test)]
            fake: None,
            fd,
        }
    }

    /// The fake-kernel handle of a program created under the unit-test fake.
    #[cfg(test)]
    pub(crate) fn fake(&self) -> Option<&super::fake::Handle> {
        self.fake.as_ref()
    }

    /// Pins the program on bpffs.
    pub fn pin(&self, path: impl AsRef<Path>) -> Result<()> {
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return h.pin(path.as_ref());
        }
        super::obj_pin(self.fd.as_fd(), path.as_ref())
    }

    /// Opens a pinned program; ENOENT becomes NotFound.
    pub fn from_pin(path: impl AsRef<Path>) -> Result<Program> {
        #[cfg(test)]
        if let Some(k) = super::fake::current() {
            let (h, fd) = k.from_pin(path.as_ref(), super::ObjKind::Prog)?;
            return Ok(Program { fake: Some(h), fd });
        }
        Ok(Program::from_owned(super::obj_get_kind(
            path.as_ref(),
            super::ObjKind::Prog,
        )?))
    }

    /// Opens a program by kernel id.
    pub fn from_id(id: u32) -> Result<Program> {
        #[cfg(test)]
        if let Some(k) = super::fake::current() {
            let (h, fd) = k.from_id(id, super::ObjKind::Prog)?;
            return Ok(Program { fake: Some(h), fd });
        }
        // SAFETY: plain integer argument; returns a new fd or -errno.
        let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
        let fd = match check("bpf_prog_get_fd_by_id", fd) {
            Ok(fd) => fd,
            Err(e) if e.errno() == libc::ENOENT => {
                return Err(SysError::not_found(format!("program id {id}")))
            }
            Err(e) => return Err(e),
        };
        // SAFETY: bpf_prog_get_fd_by_id succeeded, so fd is a new fd of the program, owned by
        // nobody else.
        Ok(Program::from_owned(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Kernel id of the program.
    pub fn id(&self) -> Result<u32> {
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return Ok(h.id());
        }
        let info: RawProgInfo = get_info("bpf_prog_get_info_by_fd", self.fd())?;
        Ok(info.id)
    }

    /// What the kernel reports about the program, map ids included.
    pub fn info(&self) -> Result<ProgInfo> {
        #[cfg(test)]
        if let Some(h) = &self.fake {
            return Ok(h.prog_info()?.0);
        }
        let first: RawProgInfo = get_info("bpf_prog_get_info_by_fd", self.fd())?;
        let mut map_ids = vec![0u32; first.nr_map_ids as usize];
        if !map_ids.is_empty() {
            let mut info = RawProgInfo::new_zeroed();
            info.nr_map_ids = first.nr_map_ids;
            info.map_ids = map_ids.as_mut_ptr() as u64;
            // SAFETY: info is zeroed except map_ids/nr_map_ids, which describe map_ids, a
            // writable buffer of nr_map_ids u32s that outlives the call (the kernel fills at
            // most that many); self.fd is a program fd.
            unsafe { fill_info("bpf_prog_get_info_by_fd", self.fd(), &mut info) }?;
            // The program's map set cannot change after load, but stay safe if it shrank.
            map_ids.truncate(info.nr_map_ids.min(first.nr_map_ids) as usize);
        }
        Ok(ProgInfo {
            id: first.id,
            name: super::c_chars_to_string(&first.name),
            prog_type: first.type_,
            tag: first.tag,
            xlated_insns: first.xlated_prog_len / INSN_SIZE as u32,
            jited_bytes: first.jited_prog_len,
            verified_insns: first.verified_insns,
            map_ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::{insns, ipv4_udp_packet, require_bpf, TempPinDir};
    use crate::sys::{Map, MapType};

    /// `r0 = ret; exit`.
    pub(crate) fn ret_prog(ret: i32) -> Vec<u8> {
        insns(&[(0xb7, 0, 0, 0, ret), (0x95, 0, 0, 0, 0)])
    }

    #[test]
    fn load_accept_and_test_run() {
        if !require_bpf() {
            return;
        }
        let (p, stats) = Program::load_netfilter("bpfltr_t_acc", &ret_prog(1), 0).unwrap();
        assert_eq!(stats.xlated_insns, 2);
        assert!(stats.verified_insns >= 2, "{stats:?}");
        assert!(stats.jited_bytes > 0);
        assert!(stats.log.is_empty());
        let r = p.test_run(&ipv4_udp_packet(), None, 100_000).unwrap();
        assert_eq!(r.retval, 1);
        assert!(r.duration_ns > 0 && r.duration_ns < 100_000, "{r:?}");
        let (p0, _) = Program::load_netfilter("bpfltr_t_drop", &ret_prog(0), 0).unwrap();
        assert_eq!(p0.test_run(&ipv4_udp_packet(), None, 1).unwrap().retval, 0);
        // Data shorter than an IPv4 header is refused by the kernel.
        assert_eq!(
            p.test_run(&[0u8; 10], None, 1).unwrap_err().errno(),
            libc::EINVAL
        );
        // With a context: hook LOCAL_OUT (3), pf IPv4 (2) in a 48-byte nf_hook_state.
        let mut ctx = [0u8; 48];
        ctx[0] = 3;
        ctx[1] = 2;
        assert_eq!(
            p.test_run(&ipv4_udp_packet(), Some(&ctx), 1)
                .unwrap()
                .retval,
            1
        );
    }

    #[test]
    fn verifier_error_carries_log() {
        if !require_bpf() {
            return;
        }
        let e = Program::load_netfilter("bpfltr_t_bad", &ret_prog(2), 0).unwrap_err();
        let SysError::Load { errno, log } = &e else {
            panic!("not a load error: {e}")
        };
        assert_eq!(*errno, libc::EINVAL);
        assert!(log.contains("R0"), "log: {log}");
        assert!(log.contains("exit"), "log: {log}");
        // log_level > 0: the log of a successful load is returned too.
        let (_p, stats) = Program::load_netfilter("bpfltr_t_log", &ret_prog(1), 2).unwrap();
        assert!(stats.log.contains("processed"), "log: {}", stats.log);
        // Not a multiple of 8 bytes; name too long.
        assert_eq!(
            Program::load_netfilter("x", &[0u8; 9], 0)
                .unwrap_err()
                .errno(),
            libc::EINVAL
        );
        assert!(matches!(
            Program::load_netfilter("bpfltr_much_too_long_name", &ret_prog(1), 0),
            Err(SysError::Invalid { .. })
        ));
    }

    #[test]
    fn log_buffer_grows_on_enospc() {
        if !require_bpf() {
            return;
        }
        // 200 moves then exit: the level-2 log is several KiB, far above a 64-byte buffer.
        let mut list = vec![(0xb7u8, 0u8, 0u8, 0i16, 1i32); 200];
        list.push((0x95, 0, 0, 0, 0));
        let code = insns(&list);
        let (_p, stats) = Program::load_with_log_start(
            libbpf_sys::BPF_PROG_TYPE_NETFILTER,
            libbpf_sys::BPF_NETFILTER,
            "bpfltr_t_grow",
            &code,
            2,
            64,
        )
        .unwrap();
        assert!(stats.log.len() > 1000, "{} bytes", stats.log.len());
        assert!(stats.log.contains("processed 201 insns"), "{}", stats.log);
        // Failure with a tiny buffer still returns the whole log.
        let mut bad = list.clone();
        bad[199] = (0xb7, 0, 0, 0, 5);
        let e = Program::load_with_log_start(
            libbpf_sys::BPF_PROG_TYPE_NETFILTER,
            libbpf_sys::BPF_NETFILTER,
            "bpfltr_t_grow",
            &insns(&bad),
            0,
            64,
        )
        .unwrap_err();
        let SysError::Load { log, .. } = e else {
            panic!("{e}")
        };
        assert!(log.contains("At program exit the register R0 has"), "{log}");
    }

    #[test]
    fn over_the_verifiers_limits_is_said_without_a_log() {
        if !require_bpf() {
            return;
        }
        // r0 = an unknown number; then 9,000 branches on it, each leaving a state for the
        // verifier to come back to: past its 8,192 pending branches (E2BIG), in milliseconds.
        let mut list = vec![(0x85u8, 0u8, 0u8, 0i16, 7i32)]; // call bpf_get_prandom_u32
        for i in 0..9000 {
            list.push((0x15, 0, 0, 1, i)); // if r0 == i goto +1
            list.push((0xb7, 3, 0, 0, 0)); // r3 = 0
        }
        list.push((0xb7, 0, 0, 0, 1)); // r0 = 1
        list.push((0x95, 0, 0, 0, 0)); // exit
        let e = Program::load_netfilter("bpfltr_t_big", &insns(&list), 0).unwrap_err();
        let SysError::Load { errno, log } = &e else {
            panic!("not a load error: {e}")
        };
        assert_eq!(*errno, libc::E2BIG);
        // the load said so itself: no second verification for a log
        assert_eq!(log, TOO_COMPLEX);
    }

    #[test]
    fn btf_offsets_and_kfunc_ids_load_and_run() {
        if !require_bpf() {
            return;
        }
        let btf = crate::sys::Btf::vmlinux().unwrap();
        let skb = btf.member_offset("bpf_nf_ctx", "skb").unwrap() as i16;
        let len = btf.member_offset("sk_buff", "len").unwrap() as i16;
        // r3 = ctx->skb->len; r0 = (r3 == 32)
        let code = insns(&[
            (0x79, 2, 1, skb, 0), // r2 = *(u64 *)(r1 + skb)
            (0x61, 3, 2, len, 0), // r3 = *(u32 *)(r2 + len)
            (0xb7, 0, 0, 0, 0),   // r0 = 0
            (0x55, 3, 0, 1, 32),  // if r3 != 32 goto +1
            (0xb7, 0, 0, 0, 1),   // r0 = 1
            (0x95, 0, 0, 0, 0),
        ]);
        let (p, _) = Program::load_netfilter("bpfltr_t_len", &code, 0).unwrap();
        let pkt = ipv4_udp_packet();
        assert_eq!(pkt.len(), 32);
        assert_eq!(p.test_run(&pkt, None, 1).unwrap().retval, 1);
        let mut longer = pkt.clone();
        longer.extend_from_slice(&[0; 8]);
        longer[3] = 40;
        assert_eq!(p.test_run(&longer, None, 1).unwrap().retval, 0);

        // bpf_dynptr_from_skb(skb, 0, &dynptr on the stack): a kfunc call (src 2) with off 0.
        let id = btf.func_id("bpf_dynptr_from_skb").unwrap() as i32;
        let code = insns(&[
            (0x79, 1, 1, skb, 0), // r1 = ctx->skb
            (0xb7, 2, 0, 0, 0),   // r2 = 0
            (0xbf, 3, 10, 0, 0),  // r3 = r10
            (0x07, 3, 0, 0, -16), // r3 += -16
            (0x85, 0, 2, crate::sys::VMLINUX_BTF_FD_IDX, id),
            (0xb7, 0, 0, 0, 1),
            (0x95, 0, 0, 0, 0),
        ]);
        let (k, _) = Program::load_netfilter("bpfltr_t_kf", &code, 0).unwrap();
        assert_eq!(k.test_run(&pkt, None, 1).unwrap().retval, 1);
    }

    #[test]
    fn xlated_dump() {
        if !require_bpf() {
            return;
        }
        let code = ret_prog(1);
        let (p, _) = Program::load_netfilter("bpfltr_t_xl", &code, 0).unwrap();
        assert_eq!(p.xlated().unwrap(), code);
    }

    #[test]
    fn info_pin_from_id() {
        if !require_bpf() {
            return;
        }
        let dir = TempPinDir::new("prog");
        let (p, _) = Program::load_netfilter("bpfltr_t_info", &ret_prog(1), 0).unwrap();
        let info = p.info().unwrap();
        assert_eq!(info.name, "bpfltr_t_info");
        assert_eq!(info.prog_type, 32);
        assert_eq!(info.xlated_insns, 2);
        assert_eq!(info.tag_hex().len(), 16);
        assert!(info.map_ids.is_empty());
        let path = dir.path().join("p");
        p.pin(&path).unwrap();
        let q = Program::from_pin(&path).unwrap();
        assert_eq!(q.id().unwrap(), info.id);
        assert_eq!(
            Program::from_id(info.id).unwrap().info().unwrap().tag,
            info.tag
        );
        // A map pin is not a program.
        let m = Map::create(MapType::Array, 4, 4, 1, "bpfltr_t_x").unwrap();
        m.pin(dir.path().join("m")).unwrap();
        assert_eq!(
            Program::from_pin(dir.path().join("m")).unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(Map::from_pin(&path).unwrap_err().errno(), libc::EINVAL);
    }
}
