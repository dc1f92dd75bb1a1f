//! How the CPU linear kernels ([`super::sgemm`], [`super::bf16`]) share an
//! output among rayon tasks: row blocks × runs of column panels.

use rayon::prelude::*;

/// A raw pointer to an output shared by tasks that write disjoint parts of
/// it (the blocks handed out by [`for_each_block`], or attention's
/// (sequence, head) column blocks).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: only used where every task writes a part of the buffer no other
// task touches, while the buffer outlives the tasks.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Calls `task(scratch, block, p0, p1)` once for every row block
/// (`0..blocks`) and run of column panels `p0..p1` covering `0..panels`, on
/// the rayon pool when `parallel` (one `scratch` per rayon split, reused
/// across its tasks), else in order on the calling thread. When there are
/// too few row blocks to keep every thread busy (short batches, such as one
/// query) the panels are split too, into runs of equal length.
pub(crate) fn for_each_block<S: Default + Send>(
    blocks: usize,
    panels: usize,
    parallel: bool,
    task: impl Fn(&mut S, usize, usize, usize) + Sync + Send,
) {
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let groups = if blocks >= 4 * threads || threads == 1 {
        1
    } else {
        (4 * threads).div_ceil(blocks).min(panels).max(1)
    };
    let per_group = panels.div_ceil(groups).max(1);
    let groups = panels.div_ceil(per_group).max(1);
    let run = |scratch: &mut S, t: usize| {
        let (block, g) = (t / groups, t % groups);
        let p0 = g * per_group;
        task(scratch, block, p0, (p0 + per_group).min(panels));
    };
    let tasks = blocks * groups;
    if threads > 1 && tasks > 1 {
        (0..tasks)
            .into_par_iter()
            .for_each_init(S::default, |scratch, t| run(scratch, t));
    } else {
        let mut scratch = S::default();
        for t in 0..tasks {
            run(&mut scratch, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Every (row block, panel) is visited exactly once, serial or parallel,
    /// with many or few row blocks.
    #[test]
    fn every_block_and_panel_once() {
        for (blocks, panels) in [(1, 1), (1, 36), (3, 12), (11, 48), (40, 5), (2, 1)] {
            for parallel in [false, true] {
                let seen = Mutex::new(vec![0u32; blocks * panels]);
                for_each_block::<()>(blocks, panels, parallel, |_, b, p0, p1| {
                    assert!(p0 < p1 && p1 <= panels);
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    for p in p0..p1 {
                        seen[b * panels + p] += 1;
                    }
                });
                let seen = seen.into_inner().unwrap_or_else(|e| e.into_inner());
                assert!(
                    seen.iter().all(|&c| c == 1),
                    "{blocks}×{panels} parallel={parallel}: {seen:?}"
                );
            }
        }
    }
}
