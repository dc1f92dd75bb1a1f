//! Spherical k-means, as ColBERTv2 runs it (faiss k-means on unit vectors):
//!
//! * **centroid count**: `2^floor(log2(16·√N))` for `N` token vectors
//!   ([`num_centroids_for`]), capped by the caller to the sample size;
//! * **initialisation**: `k` distinct sample vectors picked by a seeded shuffle;
//! * **assignment**: `argmax_c x·c` (inner product = cosine on unit vectors), the
//!   WGSL kernel `shaders/kmeans.wgsl` on [`Compute::Gpu`] or blocked `gemm` +
//!   argmax on [`Compute::Cpu`]; ties go to the lower centroid id on both;
//! * **update**: the mean of each cluster (f64 sums, in vector order), then
//!   L2-normalised (`max(norm, 1e-12)`);
//! * **empty clusters**: re-seeded deterministically with the vectors that fit
//!   their centroid worst (lowest best score, ties to the lower vector index),
//!   one vector per empty cluster, in increasing cluster order;
//! * a fixed number of iterations, no early stop.
//!
//! The result depends only on the inputs, the seed and the backend (the two
//! backends round dot products differently, so near-ties may resolve differently).

use rayon::prelude::*;

use super::rng::SplitMix;
use crate::backend::Compute;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels;

/// ColBERTv2's centroid count for `num_vectors` token vectors:
/// `2^floor(log2(16·√N))`, at least 1.
pub fn num_centroids_for(num_vectors: usize) -> usize {
    if num_vectors == 0 {
        return 1;
    }
    let target = 16.0 * (num_vectors as f64).sqrt();
    let exp = target.log2().floor().max(0.0) as u32;
    1usize << exp.min(30)
}

fn check_shapes(x: &[f32], dim: usize, centroids: &[f32]) -> Result<()> {
    if dim == 0
        || !x.len().is_multiple_of(dim)
        || !centroids.len().is_multiple_of(dim)
        || centroids.is_empty()
    {
        return Err(Error::shape(
            "kmeans assign",
            format!(
                "{} values of vectors and {} values of centroids for dimension {dim}",
                x.len(),
                centroids.len()
            ),
        ));
    }
    Ok(())
}

/// Nearest centroid by inner product for every row of `x` (`n × dim`):
/// `(codes, best scores)`, on the chosen backend.
pub fn assign(
    compute: &Compute,
    x: &[f32],
    dim: usize,
    centroids: &[f32],
) -> Result<(Vec<u32>, Vec<f32>)> {
    check_shapes(x, dim, centroids)?;
    compute.assigner(x, dim)?.assign(centroids)
}

/// The CPU twin of `shaders/kmeans.wgsl`: blocks of rows scored against all
/// centroids with `gemm`, then a strict-`>` argmax in centroid order (ties →
/// the lower id; a row whose scores are all NaN gets code 0).
pub fn assign_cpu(x: &[f32], dim: usize, centroids: &[f32]) -> (Vec<u32>, Vec<f32>) {
    assign_cpu_blocked(x, dim, centroids, 256, 1024)
}

/// [`assign_cpu`] with an explicit blocking: tasks of `rows` vectors, each
/// scoring `cols` centroids per `gemm` call into a `rows × cols` scratch that
/// stays in cache, keeping a running argmax. Exposed for tuning benches.
#[doc(hidden)]
pub fn assign_cpu_blocked(
    x: &[f32],
    dim: usize,
    centroids: &[f32],
    rows: usize,
    cols: usize,
) -> (Vec<u32>, Vec<f32>) {
    let n = x.len() / dim.max(1);
    let k = centroids.len() / dim.max(1);
    let mut codes = vec![0u32; n];
    let mut best = vec![f32::MIN; n];
    if n == 0 || k == 0 {
        return (codes, best);
    }
    let (rows, cols) = (rows.max(1), cols.clamp(1, k));
    x.par_chunks(rows * dim)
        .zip(codes.par_chunks_mut(rows))
        .zip(best.par_chunks_mut(rows))
        .for_each(|((xb, cb), sb)| {
            let m = cb.len();
            let mut scores = vec![0f32; m * cols];
            // Centroid blocks in increasing order and a strict '>' across them:
            // ties go to the lower centroid id.
            for (j, cblock) in centroids.chunks(cols * dim).enumerate() {
                let kc = cblock.len() / dim;
                let scores = &mut scores[..m * kc];
                // Serial: the tasks themselves already share the rayon pool.
                crate::backend::cpu::matmul_transposed_serial(xb, cblock, scores, m, kc, dim);
                for (i, row) in scores.chunks_exact(kc).enumerate() {
                    let max = row_max(row);
                    if max > sb[i] {
                        // First index of the maximum (NaN never equals).
                        let c = row.iter().position(|&s| s == max).unwrap_or(0);
                        sb[i] = max;
                        cb[i] = (j * cols + c) as u32;
                    }
                }
            }
        });
    (codes, best)
}

/// `max(f32::MIN, row…)` ignoring NaN.
fn row_max(row: &[f32]) -> f32 {
    crate::backend::vecmath::max_lanes(row).max(f32::MIN)
}

/// Vectors resident on the GPU (split into bindings under the adapter's limit)
/// so repeated assignments (k-means iterations) upload only the centroids.
pub struct GpuAssigner<'a> {
    ctx: &'a GpuContext,
    dim: usize,
    n: usize,
    chunks: Vec<(wgpu::Buffer, usize)>,
}

/// Rows per GPU dispatch so `rows·dim` f32 fit one storage binding.
pub(crate) fn rows_per_binding(ctx: &GpuContext, dim: usize) -> usize {
    ctx.rows_per_binding(dim).min(1 << 20)
}

impl<'a> GpuAssigner<'a> {
    pub fn new(ctx: &'a GpuContext, x: &[f32], dim: usize) -> Result<Self> {
        if dim == 0 || !x.len().is_multiple_of(dim) {
            return Err(Error::shape(
                "kmeans assign",
                format!("{} values for dimension {dim}", x.len()),
            ));
        }
        let rows = rows_per_binding(ctx, dim);
        let chunks = x
            .chunks(rows * dim)
            .map(|c| Ok((ctx.upload("kmeans vectors", c)?, c.len() / dim)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            ctx,
            dim,
            n: x.len() / dim,
            chunks,
        })
    }

    /// `(codes, best scores)` against `centroids`: one submit for all chunks.
    pub fn assign(&self, centroids: &[f32]) -> Result<(Vec<u32>, Vec<f32>)> {
        let ctx = self.ctx;
        let dim = self.dim;
        if centroids.is_empty() || !centroids.len().is_multiple_of(dim) {
            return Err(Error::shape(
                "kmeans assign",
                format!("{} centroid values for dimension {dim}", centroids.len()),
            ));
        }
        if self.n == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let k = centroids.len() / dim;
        let cbuf = ctx.upload("kmeans centroids", centroids)?;
        let mut encoder = ctx.encoder("kmeans assign");
        let mut outs = Vec::with_capacity(self.chunks.len());
        for (xbuf, rows) in &self.chunks {
            let codes = ctx.pool().get(*rows as u64 * 4);
            let scores = ctx.pool().get(*rows as u64 * 4);
            kernels::kmeans::record_assign(
                ctx,
                &mut encoder,
                &kernels::kmeans::Buffers {
                    x: xbuf,
                    centroids: &cbuf,
                    codes: codes.buffer(),
                    scores: scores.buffer(),
                },
                (*rows, k, dim),
            )?;
            outs.push((codes, scores, *rows));
        }
        let mut sources = Vec::with_capacity(outs.len() * 2);
        for (c, s, rows) in &outs {
            sources.push((c.buffer(), *rows));
            sources.push((s.buffer(), *rows));
        }
        let read: Vec<Vec<u32>> = ctx.submit_and_read(encoder, &sources)?;
        let mut codes = Vec::with_capacity(self.n);
        let mut scores = Vec::with_capacity(self.n);
        for pair in read.chunks_exact(2) {
            codes.extend_from_slice(&pair[0]);
            scores.extend(pair[1].iter().map(|&b| f32::from_bits(b)));
        }
        Ok((codes, scores))
    }
}

/// What one k-means run produced.
#[derive(Debug, Clone)]
pub struct KmeansResult {
    /// `k × dim`, unit rows (or zero rows for degenerate clusters).
    pub centroids: Vec<f32>,
    pub k: usize,
    /// Mean best score (cosine) of the last assignment, per iteration.
    pub mean_score: Vec<f64>,
    /// Clusters re-seeded because they were empty, per iteration.
    pub reseeded: Vec<usize>,
}

/// Row-wise `v / max(‖v‖, 1e-12)` in place.
pub(crate) fn normalize_rows(x: &mut [f32], dim: usize) {
    x.par_chunks_mut(dim.max(1)).for_each(|row| {
        let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        let inv = 1.0 / norm.max(1e-12);
        row.iter_mut().for_each(|v| *v = (*v as f64 * inv) as f32);
    });
}

/// Trains `k` centroids on `x` (`n × dim`, expected unit rows) for `iters`
/// iterations. `progress(i)` is called after iteration `i` (1-based).
pub fn train(
    compute: &Compute,
    x: &[f32],
    dim: usize,
    k: usize,
    iters: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize),
) -> Result<KmeansResult> {
    if dim == 0 || !x.len().is_multiple_of(dim) {
        return Err(Error::shape(
            "kmeans",
            format!("{} values for dimension {dim}", x.len()),
        ));
    }
    let n = x.len() / dim;
    if k == 0 || k > n {
        return Err(Error::Input(format!(
            "k-means needs 1 ≤ k ≤ number of vectors; got k = {k} for {n} vectors"
        )));
    }
    let mut rng = SplitMix::new(seed);
    let order = rng.permutation(n);
    let mut centroids = Vec::with_capacity(k * dim);
    for &i in &order[..k] {
        centroids.extend_from_slice(&x[i * dim..(i + 1) * dim]);
    }
    normalize_rows(&mut centroids, dim);

    let assigner = compute.assigner(x, dim)?;
    let mut mean_score = Vec::with_capacity(iters);
    let mut reseeded = Vec::with_capacity(iters);
    for it in 0..iters {
        let (codes, scores) = assigner.assign(&centroids)?;
        mean_score.push(scores.iter().map(|&s| s as f64).sum::<f64>() / n as f64);

        // Update: f64 sums in vector order (deterministic), then normalise.
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &c) in codes.iter().enumerate() {
            let c = c as usize;
            counts[c] += 1;
            let s = &mut sums[c * dim..(c + 1) * dim];
            for (a, &v) in s.iter_mut().zip(&x[i * dim..(i + 1) * dim]) {
                *a += v as f64;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                let s = &sums[c * dim..(c + 1) * dim];
                let norm = s.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                for (o, &v) in centroids[c * dim..(c + 1) * dim].iter_mut().zip(s) {
                    *o = (v / norm) as f32;
                }
            }
        }
        let empty: Vec<usize> = (0..k).filter(|&c| counts[c] == 0).collect();
        if !empty.is_empty() {
            let mut worst: Vec<usize> = (0..n).collect();
            let m = empty.len().min(n);
            let cmp = |a: &usize, b: &usize| scores[*a].total_cmp(&scores[*b]).then(a.cmp(b));
            if m < n {
                worst.select_nth_unstable_by(m, cmp);
                worst.truncate(m);
            }
            worst.sort_by(cmp);
            for (&c, &i) in empty.iter().zip(&worst) {
                centroids[c * dim..(c + 1) * dim].copy_from_slice(&x[i * dim..(i + 1) * dim]);
                normalize_rows(&mut centroids[c * dim..(c + 1) * dim], dim);
            }
        }
        reseeded.push(empty.len());
        progress(it + 1);
    }
    Ok(KmeansResult {
        centroids,
        k,
        mean_score,
        reseeded,
    })
}
