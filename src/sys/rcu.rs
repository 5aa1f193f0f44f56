//! Waiting for an RCU grace period from user space.
//!
//! Netfilter hooks run their programs inside `rcu_read_lock()`, tail calls included, so once a
//! grace period has passed after a PROG_ARRAY update, no packet is still being judged by the
//! program that was replaced. `membarrier(MEMBARRIER_CMD_GLOBAL)` is implemented with
//! `synchronize_rcu()` (kernel/sched/membarrier.c), which is exactly that wait.

use super::error::{Result, SysError};

const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;

/// Blocks until every RCU read-side section that was running when it was called has ended.
pub fn synchronize_rcu() -> Result<()> {
    // SAFETY: membarrier takes no pointers; cmd GLOBAL with flags 0 and cpu_id 0 is valid.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_GLOBAL,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if ret < 0 {
        return Err(SysError::Syscall {
            call: "membarrier",
            errno: std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn grace_period_completes() {
        super::synchronize_rcu().expect("membarrier(MEMBARRIER_CMD_GLOBAL)");
    }
}
