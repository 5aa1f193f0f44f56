//! Waiting for an RCU grace period from user space.
//!
//! Once a grace period has passed after a slot update, no packet is still being processed by
//! the program that was replaced; membarrier's `MEMBARRIER_CMD_GLOBAL` waits for one
//! (`docs/KERNEL-BEHAVIOUR.md#rcu-grace-period`).

use super::error::{last_errno, Result, SysError};

/// `MEMBARRIER_CMD_GLOBAL` from include/uapi/linux/membarrier.h.
const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;

/// Returns once every BPF program run that started before the call has finished (an RCU grace
/// period, through membarrier). EINVAL on nohz_full kernels: the caller then has to wait some
/// other way.
pub fn synchronize_rcu() -> Result<()> {
    // SAFETY: membarrier takes plain integers and touches no user memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_GLOBAL,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if ret != 0 {
        return Err(SysError::Syscall {
            call: "membarrier(MEMBARRIER_CMD_GLOBAL)",
            errno: last_errno(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_period_is_available() {
        // SAFETY: MEMBARRIER_CMD_QUERY (0) takes plain integers and touches no user memory.
        let mask = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                0 as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
            )
        };
        assert!(mask >= 0, "membarrier query failed");
        assert_ne!(
            mask & MEMBARRIER_CMD_GLOBAL,
            0,
            "kernel without MEMBARRIER_CMD_GLOBAL (nohz_full?)"
        );
        let t = std::time::Instant::now();
        synchronize_rcu().unwrap();
        synchronize_rcu().unwrap();
        // A real grace period takes time on a multi-CPU machine (several jiffies typically).
        if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
            assert!(
                t.elapsed() > std::time::Duration::from_micros(50),
                "{:?}",
                t.elapsed()
            );
        }
    }
}
