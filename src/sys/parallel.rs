//! Kernel calls run on several threads at once: program loads, whose verification is the
//! costly part of applying a large ruleset and runs in the calling thread's context.

use std::sync::Mutex;

/// Runs `jobs` on up to `threads` scoped threads, each job on a thread that sees the same
/// kernel as the caller's (in unit tests, the caller's fake), and returns their results in
/// job order. One job, or one thread, runs on the caller's thread.
pub fn run_parallel<T, F>(jobs: Vec<F>, threads: usize) -> Vec<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let threads = threads.min(jobs.len());
    if threads <= 1 {
        return jobs.into_iter().map(|job| job()).collect();
    }
    let n = jobs.len();
    let queue: Mutex<Vec<(usize, F)>> = Mutex::new(jobs.into_iter().enumerate().rev().collect());
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    #[cfg(test)]
    let seen = super::fake::inherited();
    std::thread::scope(|s| {
        for _ in 0..threads {
            #[cfg(test)]
            let seen = seen.clone();
            s.spawn(|| {
                #[cfg(test)]
                seen.adopt();
                loop {
                    // the lock is held only to take a job or store a result
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    let Some((i, job)) = next else { break };
                    let out = job();
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(out);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_in_job_order_on_every_thread_count() {
        for threads in [0, 1, 2, 3, 8] {
            let jobs: Vec<_> = (0..20u64)
                .map(|i| {
                    move || {
                        std::thread::sleep(std::time::Duration::from_micros((20 - i) * 50));
                        i * i
                    }
                })
                .collect();
            let want: Vec<u64> = (0..20).map(|i| i * i).collect();
            assert_eq!(run_parallel(jobs, threads), want, "{threads} threads");
        }
    }

    #[test]
    fn jobs_see_the_callers_fake_kernel() {
        use super::super::{Map, MapType};
        let kernel = super::super::fake::FakeKernel::install();
        let before = kernel.object_count();
        let jobs: Vec<_> = (0..4)
            .map(|i| move || Map::create(MapType::Array, 4, 8, 1, &format!("bpfltr_p{i}")))
            .collect();
        let maps: Vec<Map> = run_parallel(jobs, 4)
            .into_iter()
            .map(|m| m.expect("created"))
            .collect();
        // made on the fake, not on the real kernel
        assert_eq!(kernel.object_count(), before + maps.len());
    }
}
