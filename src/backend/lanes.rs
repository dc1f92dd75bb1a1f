//! Lanes: whole forward passes side by side on the CPU, each on its own
//! rayon pool (one thread each, up to [`MAX_LANES`] threads), instead of
//! every op split across all threads.
//!
//! Within one forward pass each op is a parallel region, so every thread
//! waits for the slowest at each of a layer's dozen ops, and the serial parts
//! of an op (the `gemm` crate's setup, a pass over a short batch) leave the
//! others idle. With as many jobs (batches) as threads, running one job per
//! thread removes those waits; each job then computes exactly what it would
//! alone, since no f32 kernel's result depends on its thread count (the
//! encoder test `lanes_do_not_change_vectors` compares the bits).
//!
//! A lane holds one batch's activations, so lanes are capped at
//! [`MAX_LANES`]; with more threads than that, each lane's pool gets several.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::Result;

/// Most lanes (each keeps one batch's activations alive: tens of MB for a
/// batch of documents).
pub const MAX_LANES: usize = 8;

/// Lanes for a caller on a rayon pool of `threads` threads: `threads`
/// capped at [`MAX_LANES`], or `COLWGPU_CPU_LANES` (1 turns lanes off) when
/// set to a count, capped at `threads`.
pub fn count(threads: usize) -> usize {
    static FROM_ENV: OnceLock<Option<usize>> = OnceLock::new();
    let wanted = FROM_ENV.get_or_init(|| {
        std::env::var("COLWGPU_CPU_LANES")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let threads = threads.max(1);
    match *wanted {
        Some(n) => n.clamp(1, threads),
        None => threads.min(MAX_LANES),
    }
}

/// `lanes` rayon pools sharing `threads` threads (the first `threads % lanes`
/// pools get one more), made once per `(lanes, threads)` and kept; `None`
/// when the OS refuses a thread (the caller then runs its jobs in turn).
pub fn pools(lanes: usize, threads: usize) -> Option<Arc<Vec<rayon::ThreadPool>>> {
    type Cache = Vec<((usize, usize), Arc<Vec<rayon::ThreadPool>>)>;
    static CACHE: Mutex<Cache> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, p)) = cache.iter().find(|(key, _)| *key == (lanes, threads)) {
        return Some(p.clone());
    }
    let made = (0..lanes)
        .map(|lane| {
            rayon::ThreadPoolBuilder::new()
                .num_threads((threads / lanes + usize::from(lane < threads % lanes)).max(1))
                .thread_name(move |t| format!("colwgpu-lane{lane}.{t}"))
                .build()
                .ok()
        })
        .collect::<Option<Vec<_>>>()?;
    let made = Arc::new(made);
    cache.push(((lanes, threads), made.clone()));
    Some(made)
}

/// Runs `job(worker, j)` for `j` in `0..jobs`, lane `i` taking the next
/// unstarted `j` on `pools[i]` with `workers[i]` until none are left or one
/// failed. Lane 0 runs from the calling thread (blocked in its pool's
/// `install`); the others each from a scoped thread, and a lane whose thread
/// the OS refuses just takes no jobs. Returns each lane's `(j, result)`
/// pairs; a panic in a job is re-raised here.
pub fn run<W, T, F>(
    workers: &mut [W],
    pools: &[rayon::ThreadPool],
    jobs: usize,
    job: &F,
) -> Vec<(usize, Result<T>)>
where
    W: Send,
    T: Send,
    F: Fn(&mut W, usize) -> Result<T> + Sync,
{
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let lane = |worker: &mut W| {
        let mut done = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let j = next.fetch_add(1, Ordering::Relaxed);
            if j >= jobs {
                break;
            }
            let result = job(worker, j);
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            done.push((j, result));
        }
        done
    };
    let (Some((first, others)), Some((first_pool, other_pools))) =
        (workers.split_first_mut(), pools.split_first())
    else {
        return Vec::new();
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = others
            .iter_mut()
            .zip(other_pools)
            .filter_map(|(worker, pool)| {
                let lane = &lane;
                std::thread::Builder::new()
                    .spawn_scoped(s, move || pool.install(|| lane(worker)))
                    .ok()
            })
            .collect();
        let mut done = first_pool.install(|| lane(first));
        for h in handles {
            match h.join() {
                Ok(d) => done.extend(d),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        done
    })
}

/// The results of [`run`] in `j` order, or the error of the lowest failing `j`.
pub fn in_order<T>(mut done: Vec<(usize, Result<T>)>, jobs: usize) -> Result<Vec<T>> {
    done.sort_by_key(|(j, _)| *j);
    let mut out = Vec::with_capacity(jobs);
    for (_, result) in done {
        out.push(result?);
    }
    debug_assert_eq!(out.len(), jobs, "every job ran when none failed");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn every_job_runs_once_and_results_come_back_in_order() {
        let pools = pools(2, 2).expect("two threads");
        let mut workers = vec![0usize; 2];
        let done = run(&mut workers, &pools, 37, &|count: &mut usize, j| {
            *count += 1;
            assert_eq!(rayon::current_num_threads(), 1, "a lane is single-threaded");
            Ok(j * j)
        });
        assert_eq!(workers.iter().sum::<usize>(), 37);
        let squares = in_order(done, 37).expect("no job failed");
        assert_eq!(squares, (0..37).map(|j| j * j).collect::<Vec<_>>());
    }

    #[test]
    fn the_lowest_failing_job_is_reported() {
        let pools = pools(2, 2).expect("two threads");
        let mut workers = vec![(); 2];
        let done = run(&mut workers, &pools, 50, &|_: &mut (), j| {
            if j >= 3 {
                Err(Error::Input(format!("job {j}")))
            } else {
                Ok(j)
            }
        });
        match in_order(done, 50) {
            Err(Error::Input(m)) => assert_eq!(m, "job 3"),
            other => panic!("expected job 3's error, got {other:?}"),
        }
    }

    #[test]
    fn lanes_share_the_threads() {
        let pools = pools(3, 8).expect("eight threads");
        let sizes: Vec<usize> = pools.iter().map(|p| p.current_num_threads()).collect();
        assert_eq!(sizes, vec![3, 3, 2]);
        assert!(count(1) == 1 && count(64) <= MAX_LANES.max(1));
    }
}
