//! The interleaved sender: one thread holds a connected UDP socket into every configuration
//! and visits them all, in a new shuffled order every round, charging each visit's thread CPU
//! time to its configuration.
//!
//! Receive processing (veth -> backlog -> ip_rcv -> LOCAL_IN hooks -> UDP) runs in softirq on
//! the sending thread when it re-enables bottom halves, and this kernel does not split irq time
//! out of task time (CONFIG_IRQ_TIME_ACCOUNTING is off), so the firewall's cost is inside the
//! sender's CPU time. Wall time is recorded as a cross-check.

use std::net::UdpSocket;
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use test_support::Rng;

/// Measurement knobs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Packets per sendmmsg call.
    pub batch: usize,
    /// Minimum time per visit (at least one batch is always sent).
    pub visit: Duration,
    /// Length of one sample (whole rounds over every configuration).
    pub sample: Duration,
    /// Samples thrown away at the start.
    pub warmup: usize,
    /// Samples kept.
    pub samples: usize,
    /// UDP payload bytes.
    pub payload: usize,
    /// Minimum sending time per configuration per round: a round goes over every
    /// configuration once, then again (shuffled) over those still under this, so that cheap
    /// configurations get several visits spread over each round while an expensive one's
    /// single visit already makes the round long.
    pub round_min: Duration,
}

/// What one configuration accumulated during one sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Acc {
    /// Sender thread CPU time, ns.
    pub cpu_ns: u64,
    /// Wall time, ns.
    pub wall_ns: u64,
    /// Packets sent.
    pub pkts: u64,
}

/// Everything measured: per kept sample, per configuration.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    /// `samples[s][c]`: configuration c during sample s.
    pub samples: Vec<Vec<Acc>>,
    /// Packets sent to each configuration in total (warm-up included).
    pub sent: Vec<u64>,
    /// Rounds completed.
    pub rounds: u64,
    /// Per configuration: sends that failed with the error an ICMP error left on the
    /// connected socket (a REJECT's port unreachable); the next send goes through.
    pub icmp_errors: Vec<u64>,
}

impl Acc {
    /// CPU ns per packet.
    pub fn cpu_per_pkt(&self) -> f64 {
        if self.pkts == 0 {
            f64::NAN
        } else {
            self.cpu_ns as f64 / self.pkts as f64
        }
    }
    /// Wall ns per packet.
    pub fn wall_per_pkt(&self) -> f64 {
        if self.pkts == 0 {
            f64::NAN
        } else {
            self.wall_ns as f64 / self.pkts as f64
        }
    }
}

/// This thread's CPU time in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Send into every socket, interleaved, and return per-sample accumulations.
/// `progress` is called after each kept sample with (done, total).
pub fn measure(
    socks: &[UdpSocket],
    plan: &Plan,
    progress: impl FnMut(usize, usize),
) -> Result<Measurement> {
    measure_skipping(socks, plan, |_| false, progress)
}

/// [`measure`], except that configuration `c` is not visited while `skip(c)` says so (asked
/// before each visit); a configuration skipped for a whole sample has no packets in it, so its
/// per-packet figures for that sample are NaN.
pub fn measure_skipping(
    socks: &[UdpSocket],
    plan: &Plan,
    skip: impl Fn(usize) -> bool,
    mut progress: impl FnMut(usize, usize),
) -> Result<Measurement> {
    let k = socks.len();
    if k == 0 || plan.batch == 0 {
        bail!("nothing to measure");
    }
    let payload = vec![0x5au8; plan.payload];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // Every message of a batch points at the same payload; the sockets are connected, so no
    // address is given.
    let mut msgs: Vec<libc::mmsghdr> = (0..plan.batch)
        .map(|_| {
            // SAFETY: mmsghdr is plain old data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let fds: Vec<i32> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let mut m = Measurement {
        samples: Vec::with_capacity(plan.samples),
        sent: vec![0; k],
        rounds: 0,
        icmp_errors: vec![0; k],
    };
    let mut order: Vec<usize> = (0..k).collect();
    let mut rng = Rng::new(0x6e65_7462_656e_6368);
    let total = plan.warmup + plan.samples;
    for s in 0..total {
        let mut acc = vec![Acc::default(); k];
        let start = Instant::now();
        while start.elapsed() < plan.sample {
            let mut in_round = vec![Duration::ZERO; k];
            let mut first_pass = true;
            loop {
                rng.shuffle(&mut order);
                let mut visited = false;
                for &c in &order {
                    if (!first_pass && in_round[c] >= plan.round_min) || skip(c) {
                        continue;
                    }
                    visited = true;
                    let t = visit(fds[c], &mut msgs, plan, c, &mut acc[c])?;
                    m.sent[c] += t.1;
                    in_round[c] += t.0;
                    m.icmp_errors[c] += t.2;
                }
                first_pass = false;
                if !visited {
                    break;
                }
            }
            m.rounds += 1;
        }
        if s >= plan.warmup {
            m.samples.push(acc);
            progress(s + 1 - plan.warmup, plan.samples);
        }
    }
    Ok(m)
}

/// Errors a connected UDP socket reports once after an ICMP error came back for it
/// (`icmp_err_convert`: unreachable codes; a REJECT rule's reply). The send that returns one
/// sent nothing and cleared it (`sock_error`), so the visit goes on.
fn is_icmp_error(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::ENOPROTOOPT
                | libc::EACCES
        )
    )
}

/// Most ICMP-reported errors one visit accepts: beyond that the error is not a one-off.
const MAX_ICMP_ERRORS_PER_VISIT: u64 = 64;

/// One visit: batches into `fd` until `plan.visit` has passed (at least one batch); CPU and
/// wall time and packets go to `acc`. Returns (wall time, packets, ICMP-reported errors).
fn visit(
    fd: i32,
    msgs: &mut [libc::mmsghdr],
    plan: &Plan,
    c: usize,
    acc: &mut Acc,
) -> Result<(Duration, u64, u64)> {
    let w0 = Instant::now();
    let c0 = thread_cpu_ns();
    let mut pkts = 0u64;
    let mut icmp_errors = 0u64;
    loop {
        // SAFETY: fd is an open socket owned by the caller's `socks`; msgs holds `batch`
        // initialised headers whose iovec points into the caller's `payload`, both alive for
        // this call.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), plan.batch as u32, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if is_icmp_error(&err) && icmp_errors < MAX_ICMP_ERRORS_PER_VISIT {
                icmp_errors += 1;
                continue;
            }
            bail!("sendmmsg to configuration {c}: {err}");
        }
        pkts += n as u64;
        if w0.elapsed() >= plan.visit {
            break;
        }
    }
    let c1 = thread_cpu_ns();
    let w1 = w0.elapsed();
    acc.cpu_ns += c1.saturating_sub(c0);
    acc.wall_ns += w1.as_nanos() as u64;
    acc.pkts += pkts;
    Ok((w1, pkts, icmp_errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiving socket on loopback and two sending sockets connected to it (unprivileged,
    /// in the current namespace).
    fn loopback_senders() -> (UdpSocket, Vec<UdpSocket>) {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = rx.local_addr().expect("addr");
        let socks = (0..2)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
                s.connect(addr).expect("connect");
                s
            })
            .collect();
        (rx, socks)
    }

    #[test]
    fn measures_loopback_sends() {
        let (_rx, socks) = loopback_senders();
        let plan = Plan {
            batch: 8,
            visit: Duration::from_micros(100),
            sample: Duration::from_millis(20),
            warmup: 1,
            samples: 3,
            payload: 16,
            round_min: Duration::from_micros(300),
        };
        let mut calls = 0;
        let m = measure(&socks, &plan, |_, _| calls += 1).expect("measure");
        assert_eq!(calls, 3);
        assert_eq!(m.samples.len(), 3);
        for s in &m.samples {
            for a in s {
                // round_min 300 us over visits of at least 100 us: three visits or more.
                assert!(a.pkts >= 24 && a.pkts % 8 == 0, "{} packets", a.pkts);
                assert!(a.cpu_per_pkt() > 0.0);
            }
        }
        let kept: u64 = m.samples.iter().map(|s| s[0].pkts).sum();
        assert!(m.sent[0] > kept, "warm-up packets count in `sent`");
        assert_eq!(m.icmp_errors, vec![0, 0]);
    }

    #[test]
    fn skipped_configurations_get_no_packets() {
        let (_rx, socks) = loopback_senders();
        let plan = Plan {
            batch: 4,
            visit: Duration::from_micros(50),
            sample: Duration::from_millis(5),
            warmup: 0,
            samples: 2,
            payload: 8,
            round_min: Duration::from_micros(100),
        };
        let m = measure_skipping(&socks, &plan, |c| c == 1, |_, _| {}).expect("measure");
        assert_eq!(m.sent[1], 0);
        assert!(m.sent[0] > 0);
        assert!(m.samples.iter().all(|s| s[1].cpu_per_pkt().is_nan()));
    }

    #[test]
    fn port_unreachable_errors_do_not_stop_a_visit() {
        // Unprivileged: a connected socket to a loopback port nobody listens on; the kernel's
        // port unreachable (rate limited, but loopback gets a burst) comes back as
        // ECONNREFUSED on the next send, as a REJECT rule's reply does. Batches of one: within
        // a batch the next message takes the error and sendmmsg, having sent one, drops it.
        let closed = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.connect(addr).expect("connect");
        let plan = Plan {
            batch: 1,
            visit: Duration::from_micros(100),
            sample: Duration::from_millis(10),
            warmup: 0,
            samples: 2,
            payload: 8,
            round_min: Duration::from_micros(100),
        };
        // The kernel's ICMP budget (icmp_msgs_per_sec) is shared with whatever else runs in
        // this namespace, and tests run in parallel: measure again until one reply came back.
        let mut errors = 0;
        for _ in 0..50 {
            let m = measure(std::slice::from_ref(&s), &plan, |_, _| {}).expect("measure");
            assert!(m.sent[0] > 0, "a visit stopped at an error");
            errors = m.icmp_errors[0];
            if errors > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(errors > 0, "no ECONNREFUSED seen in 50 measurements");
    }
}
