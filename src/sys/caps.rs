//! A process's capabilities, by `capget(2)`: one syscall where `/proc/PID/status` is an open,
//! a read of a page the kernel formats field by field (memory, signals, cpusets) and a parse.
//! The daemon asks once per request, as the kernel checks each sockopt call.

use super::error::{last_errno, Result, SysError};

/// `_LINUX_CAPABILITY_VERSION_3` (include/uapi/linux/capability.h): 64-bit sets, as two
/// 32-bit halves.
const VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The effective capability set of the thread `pid` (a process's main thread for its pid).
/// ESRCH when it is gone.
pub fn effective_capabilities(pid: i32) -> Result<u64> {
    let mut header = Header {
        version: VERSION_3,
        pid,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget reads the header and, for version 3, writes two data structs; both live
    // on this stack frame for the duration of the call.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    if ret != 0 {
        return Err(SysError::Syscall {
            call: "capget",
            errno: last_errno(),
        });
    }
    Ok(u64::from(data[0].effective) | (u64::from(data[1].effective) << 32))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    /// CapEff of /proc/self/status, in hex.
    fn cap_eff_from_proc() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
        u64::from_str_radix(line["CapEff:".len()..].trim(), 16).unwrap()
    }

    #[test]
    fn the_set_is_what_proc_shows() {
        let pid = std::process::id() as i32;
        assert_eq!(effective_capabilities(pid).unwrap(), cap_eff_from_proc());
        // of another process too: init's, which is all of them or at least not ours to guess,
        // compared with its own status line
        let status = std::fs::read_to_string("/proc/1/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
        let want = u64::from_str_radix(line["CapEff:".len()..].trim(), 16).unwrap();
        assert_eq!(effective_capabilities(1).unwrap(), want);
    }

    #[test]
    fn a_process_that_is_gone_is_esrch() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        let err = effective_capabilities(pid).unwrap_err();
        assert_eq!(err.errno(), libc::ESRCH);
    }
}
