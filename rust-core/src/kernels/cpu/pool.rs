//! A small fork-join pool for the decode matrix-vector products.
//!
//! A decode step runs ~280 matrix-vector products of 0.1–5 ms each, with a few microseconds of
//! other work between them. Under rayon the idle worker went to sleep in between, and waking it
//! (a futex, then the scheduler) cost tens of microseconds per product: ~12% of the decode
//! profile was the kernel's scheduler. Here the helpers spin for [`SPIN`] after each job before
//! they park, so back-to-back products start at once; parked helpers cost nothing.
//!
//! One job runs at a time. A call made while another job runs (a second engine on another
//! thread, or a call from inside a task) runs on rayon instead, so the pool never blocks.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// How long an idle helper spins before it parks.
const SPIN: Duration = Duration::from_micros(500);

type Task<'a> = &'a (dyn Fn(usize) + Sync);

struct Pool {
    /// Helper threads started (the caller is the other worker).
    helpers: AtomicUsize,
    /// Held by the caller whose job runs.
    owner: Mutex<()>,
    /// The current job, written by the owner before `epoch` moves.
    job: UnsafeCell<(Task<'static>, usize)>,
    epoch: AtomicUsize,
    next: AtomicUsize,
    /// Helpers that have not finished the current job.
    running: AtomicUsize,
    panicked: AtomicBool,
    parked: AtomicUsize,
    park_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the owner (under `owner`) while no helper reads it: helpers
// read it after seeing a new epoch and stop before `running` reaches zero, which the owner
// waits for before it returns (and so before the next write).
unsafe impl Sync for Pool {}

fn no_task(_: usize) {}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            helpers: AtomicUsize::new(0),
            owner: Mutex::new(()),
            job: UnsafeCell::new((&no_task, 0)),
            epoch: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            park_lock: Mutex::new(()),
            wake: Condvar::new(),
        }));
        let wanted = rayon::current_num_threads().max(1) - 1;
        let started = (0..wanted)
            .take_while(|i| {
                let spawned = std::thread::Builder::new()
                    .name(format!("gemmakit-matvec-{i}"))
                    .spawn(move || {
                        crate::device::cores::pin_worker();
                        pool.helper()
                    });
                if let Err(e) = &spawned {
                    log::warn!("matvec helper thread {i} did not start ({e}); running with fewer");
                }
                spawned.is_ok()
            })
            .count();
        pool.helpers.store(started, Ordering::SeqCst);
        pool
    })
}

impl Pool {
    fn helper(&self) {
        let mut seen = 0;
        loop {
            seen = self.wait_for_job(seen);
            // SAFETY: see `impl Sync for Pool`.
            let (task, n) = unsafe { *self.job.get() };
            if catch_unwind(AssertUnwindSafe(|| self.work(task, n))).is_err() {
                self.panicked.store(true, Ordering::SeqCst);
            }
            self.running.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Spins, then parks, until the epoch differs from `seen`; returns the new epoch.
    fn wait_for_job(&self, seen: usize) -> usize {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = self.epoch.load(Ordering::Acquire);
            if e != seen {
                return e;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % 256 == 0 && start.elapsed() > SPIN {
                break;
            }
        }
        let mut guard = self.park_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.parked.fetch_add(1, Ordering::SeqCst);
        let e = loop {
            let e = self.epoch.load(Ordering::SeqCst);
            if e != seen {
                break e;
            }
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        };
        self.parked.fetch_sub(1, Ordering::SeqCst);
        e
    }

    fn work(&self, task: Task<'_>, n: usize) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return;
            }
            task(i);
        }
    }
}

/// Runs `task(i)` for every `i < n`, on the calling thread and the pool's helpers.
pub fn for_each_task(n: usize, task: &(dyn Fn(usize) + Sync)) {
    let pool = pool();
    let helpers = pool.helpers.load(Ordering::SeqCst);
    if helpers == 0 || n < 2 {
        (0..n).for_each(task);
        return;
    }
    let Ok(_guard) = pool.owner.try_lock() else {
        (0..n).into_par_iter().for_each(task);
        return;
    };
    // SAFETY: the helpers use `task` only until `running` is back to zero, which this function
    // waits for before it returns, so the borrow outlives every use; see `impl Sync for Pool`.
    unsafe {
        *pool.job.get() = (std::mem::transmute::<Task<'_>, Task<'static>>(task), n);
    }
    pool.next.store(0, Ordering::Relaxed);
    pool.running.store(helpers, Ordering::Relaxed);
    pool.epoch.fetch_add(1, Ordering::SeqCst);
    if pool.parked.load(Ordering::SeqCst) > 0 {
        let _lock = pool.park_lock.lock().unwrap_or_else(|e| e.into_inner());
        pool.wake.notify_all();
    }
    let mine = catch_unwind(AssertUnwindSafe(|| pool.work(task, n)));
    while pool.running.load(Ordering::Acquire) > 0 {
        std::hint::spin_loop();
    }
    if mine.is_err() || pool.panicked.swap(false, Ordering::SeqCst) {
        panic!("a matrix-vector task panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_exactly_once() {
        for n in [0usize, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            for_each_task(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }

    #[test]
    fn concurrent_and_nested_callers_do_not_block() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        for_each_task(8, &|_| {
                            for_each_task(3, &|_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 50 * 8 * 3);
    }

    #[test]
    fn helpers_wake_after_parking() {
        let count = AtomicUsize::new(0);
        for_each_task(4, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        std::thread::sleep(SPIN * 4);
        for_each_task(4, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }
}
