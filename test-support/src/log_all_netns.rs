//! `net.netfilter.nf_log_all_netns`, the one machine-wide setting the tests change: whether
//! the kernel's LOG writes lines for packets of namespaces other than the initial one.
//!
//! Tests that read LOG lines from namespaces need it on, and one test needs it off for a
//! moment. Test executables run side by side (`tools/tests.sh`) and tests of one executable
//! on several threads, so a guard takes an exclusive lock on a file before it sets the value
//! and gives it up after it put the previous value back: tests that depend on the setting run
//! one at a time, whatever process they are in. The lock is per open file, so another thread
//! or process waits for it; a guard taken again on the thread that holds one (a test that
//! turns the setting off for a moment) shares the lock it holds.

use std::cell::Cell;
use std::fs::{File, OpenOptions};

use nix::fcntl::{Flock, FlockArg};

const PATH: &str = "/proc/sys/net/netfilter/nf_log_all_netns";

thread_local! {
    /// Guards alive on this thread (the first one holds the lock).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// `nf_log_all_netns` set to a value while alive; the previous value back on drop.
#[derive(Debug)]
pub struct LogAllNetns {
    previous: String,
    /// the lock, held by the outermost guard of the thread
    lock: Option<Flock<File>>,
}

impl LogAllNetns {
    /// Sets `nf_log_all_netns` to `on`, after waiting for other tests' guards to go.
    pub fn set(on: bool) -> LogAllNetns {
        let lock = (DEPTH.get() == 0).then(|| {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(std::env::temp_dir().join("bpfilter-tests.nf_log_all_netns.lock"))
                .expect("the lock file of nf_log_all_netns");
            Flock::lock(file, FlockArg::LockExclusive)
                .unwrap_or_else(|(_, e)| panic!("flock on the lock of nf_log_all_netns: {e}"))
        });
        DEPTH.set(DEPTH.get() + 1);
        let previous = std::fs::read_to_string(PATH).unwrap_or_else(|_| "0".into());
        std::fs::write(PATH, if on { "1" } else { "0" }).expect("writing nf_log_all_netns");
        LogAllNetns { previous, lock }
    }

    /// Sets it on.
    pub fn on() -> LogAllNetns {
        LogAllNetns::set(true)
    }
}

impl Drop for LogAllNetns {
    fn drop(&mut self) {
        let _ = std::fs::write(PATH, self.previous.trim());
        DEPTH.set(DEPTH.get() - 1);
        // unlocks, after the value is back
        drop(self.lock.take());
    }
}
