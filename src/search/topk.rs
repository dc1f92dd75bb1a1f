//! Top-k over rows of scores, on either backend.
//!
//! Order: score descending, ties to the lower column (document index); fully
//! deterministic. Both backends rank through [`order_key`], under which `-0.0`
//! ranks just below `+0.0` and NaN ranks below every number (last).
//!
//! * `k > n` returns all `n` entries of each row (every row then has `min(k, n)`
//!   results, so [`TopK`] stays rectangular);
//! * `k = 0` is an error ([`Error::Input`]): asking for nothing is a caller bug;
//! * rows of length `n = 0` are a shape error.
//!
//! The CPU twin keeps a candidate buffer of up to `max(2k, 256)` entries and a
//! running threshold (a bounded `select_nth`): O(n + (n / k)·k) = O(n) per row
//! with a tiny constant, since once the buffer fills almost every element fails
//! one comparison; rayon spreads rows over threads. The WGSL kernel
//! (`shaders/topk.wgsl`) runs one workgroup per row: a 4-pass radix select of
//! the k-th largest key, a collection pass and a bitonic sort of the k
//! survivors in workgroup memory, O(n / 256) per invocation plus
//! O(k log² k / 256); it handles k ≤ [`kernels::topk::MAX_K`](crate::kernels::topk::MAX_K)
//! (1,024). [`topk`] on a GPU with a larger k falls back to the CPU twin (the
//! scores are on the host anyway); the resident
//! [`kernels::topk::record`](crate::kernels::topk::record) returns an error instead.

use rayon::prelude::*;

use crate::backend::Compute;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels;

/// The best `k` entries of each of `rows` rows, best first, flat row-major:
/// row r is `indices[r·k .. (r+1)·k]` with its scores at the same positions.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    pub rows: usize,
    /// Results per row: `min(k requested, n)`.
    pub k: usize,
    pub indices: Vec<u32>,
    pub scores: Vec<f32>,
}

impl TopK {
    /// An empty result for `rows` rows of length 0 (e.g. an empty corpus).
    pub fn empty(rows: usize) -> Self {
        Self {
            rows,
            k: 0,
            indices: Vec::new(),
            scores: Vec::new(),
        }
    }

    /// Row `r`: (columns, scores), best first.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let span = r * self.k..(r + 1) * self.k;
        (&self.indices[span.clone()], &self.scores[span])
    }

    /// CPU twin of the kernel's `neg_inf_is_empty` option
    /// ([`kernels::topk::Options`]): entries scoring −inf become padding,
    /// index `u32::MAX`.
    pub fn mark_neg_inf_empty(&mut self) {
        for (i, &s) in self.indices.iter_mut().zip(&self.scores) {
            if s == f32::NEG_INFINITY {
                *i = u32::MAX;
            }
        }
    }

    /// Every row in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u32], &[f32])> + '_ {
        (0..self.rows).map(|r| self.row(r))
    }
}

/// Maps a score to a `u32` whose unsigned order is the ranking order:
/// `bits | 0x8000_0000` for `x ≥ +0.0`, `!bits` for `x ≤ -0.0`, 0 for NaN.
/// The WGSL kernel uses the same function.
#[inline]
pub fn order_key(x: f32) -> u32 {
    // Branch-free: signs are random in real scores, and mispredicted
    // branches cost more than the whole scan.
    let b = x.to_bits();
    let negative = ((b as i32) >> 31) as u32; // all ones for a set sign bit
    let key = b ^ (negative | 0x8000_0000);
    let is_nan = ((b & 0x7fff_ffff) > 0x7f80_0000) as u32;
    key & is_nan.wrapping_sub(1)
}

/// (key, column) packed so that a larger value ranks first: ties on the key
/// go to the lower column. Unique per column, hence a total order.
#[inline]
fn rank_code(x: f32, col: usize) -> u64 {
    ((order_key(x) as u64) << 32) | (u32::MAX - col as u32) as u64
}

#[inline]
fn code_col(code: u64) -> u32 {
    u32::MAX - (code & 0xffff_ffff) as u32
}

/// Validates the shape and returns the number of rows.
fn check(scores: &[f32], n: usize, k: usize) -> Result<usize> {
    if k == 0 {
        return Err(Error::Input("top-k: k must be at least 1".into()));
    }
    if n == 0 || !scores.len().is_multiple_of(n) {
        return Err(Error::shape(
            "topk",
            format!(
                "{} scores are not a whole number of rows of length {n}",
                scores.len()
            ),
        ));
    }
    if n >= u32::MAX as usize {
        return Err(Error::shape(
            "topk",
            format!("rows of {n} entries: columns must fit u32"),
        ));
    }
    Ok(scores.len() / n)
}

/// The best `min(k, row.len())` columns of one row, best first, into the two
/// output slices (which must have that length). `row.len()` < u32::MAX.
pub fn topk_row(row: &[f32], k: usize, out_idx: &mut [u32], out_scores: &mut [f32]) {
    let k = k.min(row.len());
    debug_assert!(out_idx.len() == k && out_scores.len() == k);
    if k == 0 {
        return;
    }
    let cap = (2 * k).max(256);
    let mut buf: Vec<u64> = Vec::with_capacity(cap.min(row.len()));
    // Codes are ≥ 1 (columns < u32::MAX), so 0 admits everything.
    let mut threshold = 0u64;
    // Chunks of 16 whose keys all fall below the threshold's key are skipped
    // with one vectorised test; the rest are looked at one by one.
    const CHUNK: usize = 16;
    for (c, chunk) in row.chunks(CHUNK).enumerate() {
        let floor = (threshold >> 32) as u32;
        if !chunk
            .iter()
            .fold(false, |any, &x| any | (order_key(x) >= floor))
        {
            continue;
        }
        for (i, &x) in chunk.iter().enumerate() {
            let code = rank_code(x, c * CHUNK + i);
            if code > threshold {
                buf.push(code);
                if buf.len() == cap {
                    buf.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
                    buf.truncate(k);
                    threshold = buf[k - 1];
                }
            }
        }
    }
    if buf.len() > k {
        buf.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        buf.truncate(k);
    }
    buf.sort_unstable_by(|a, b| b.cmp(a));
    for (t, &code) in buf.iter().enumerate() {
        let col = code_col(code);
        out_idx[t] = col;
        out_scores[t] = row[col as usize];
    }
}

/// CPU twin: top-k of every row of `scores` (rows of length `n`).
pub fn topk_cpu(scores: &[f32], n: usize, k: usize) -> Result<TopK> {
    let rows = check(scores, n, k)?;
    let ke = k.min(n);
    let mut indices = vec![0u32; rows * ke];
    let mut out = vec![0f32; rows * ke];
    // Rows are cheap (a scan): give each rayon task at least ~64k scores.
    let min_rows = (65_536 / n).max(1);
    scores
        .par_chunks(n)
        .zip(indices.par_chunks_mut(ke))
        .zip(out.par_chunks_mut(ke))
        .with_min_len(min_rows)
        .for_each(|((row, idx), sc)| topk_row(row, ke, idx, sc));
    Ok(TopK {
        rows,
        k: ke,
        indices,
        scores: out,
    })
}

/// Top-k of every row of `scores` (rows of length `n`) on `compute`.
pub fn topk(compute: &Compute, scores: &[f32], n: usize, k: usize) -> Result<TopK> {
    let rows = check(scores, n, k)?;
    compute.topk(scores, rows, n, k)
}

/// Uploads the rows (in groups that fit one binding), records the kernel and
/// reads back only the results.
pub(crate) fn topk_gpu(
    ctx: &GpuContext,
    scores: &[f32],
    rows: usize,
    n: usize,
    k: usize,
) -> Result<TopK> {
    let ke = k.min(n);
    let rows_per_group = ctx.rows_per_binding(n);
    let mut indices = Vec::with_capacity(rows * ke);
    let mut out = Vec::with_capacity(rows * ke);
    for group in scores.chunks(rows_per_group * n) {
        let g_rows = group.len() / n;
        let input = ctx.upload("topk scores", group)?;
        let idx = ctx.pool().get((g_rows * ke * 4) as u64);
        let sc = ctx.pool().get((g_rows * ke * 4) as u64);
        let mut enc = ctx.encoder("topk");
        kernels::topk::record(
            ctx,
            &mut enc,
            &kernels::topk::Buffers {
                scores: &input,
                out_idx: idx.buffer(),
                out_scores: sc.buffer(),
            },
            kernels::topk::Shape {
                rows: g_rows,
                n,
                k: ke,
                in_stride: n,
            },
        )?;
        let mut back = ctx.submit_and_read::<u32>(
            enc,
            &[(idx.buffer(), g_rows * ke), (sc.buffer(), g_rows * ke)],
        )?;
        let s = back.pop().unwrap_or_default();
        let i = back.pop().unwrap_or_default();
        indices.extend_from_slice(&i);
        out.extend(s.into_iter().map(f32::from_bits));
    }
    Ok(TopK {
        rows,
        k: ke,
        indices,
        scores: out,
    })
}
