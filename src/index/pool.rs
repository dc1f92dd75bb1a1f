//! Token pooling at index time (Clavié et al. 2024, "Reducing the Footprint of
//! Multi-Vector Retrieval with Minimal Performance Impact via Token Pooling"),
//! as PyLate's `hierarchical_pooling` does it, checked against its source:
//!
//! 1. The first `protected` vectors of a document are kept as they are.
//! 2. For the other `n` vectors `x`: the cosine distance matrix
//!    `D = 1 − x·xᵀ` (`n × n`).
//! 3. `scipy.cluster.hierarchy.linkage(D, method="ward")`: scipy reads a 2-D
//!    argument as `n` *observations* of `n` features (PyLate passes the square
//!    matrix, not a condensed one), so Ward runs on the Euclidean distances
//!    between the rows of `D`: `E[i, j] = Σ_c (D[i, c] − D[j, c])²`.
//! 4. `fcluster(Z, t=k, criterion="maxclust")` with `k = max(n / pool_factor, 1)`
//!    (integer division, as PyLate: ⌊n / f⌋, not ⌈n / f⌉): the tree cut into
//!    `k` clusters.
//! 5. Each cluster is replaced by its members' mean. PyLate stops there; colwgpu
//!    also L2-normalises the mean, because its index assumes unit vectors
//!    (spherical k-means, residuals re-normalised on decompression), so the
//!    stored vector is what decompression would give anyway.
//!
//! Steps 2 and 3's distance matrices run on the backend (`shaders/pairwise.wgsl`
//! or [`pairwise_cpu`], its twin); Ward's merges (nearest-neighbour chain with
//! the Lance–Williams update, O(n²) per document) run on the CPU in f64.
//! Output order: the protected vectors, then the clusters in order of their
//! first member (MaxSim does not depend on the order).

use crate::backend::Compute;
use crate::error::{Error, Result};

/// Token pooling settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pooling {
    /// Vectors per cluster, on average (≥ 1; 1 = no pooling).
    pub factor: usize,
    /// Leading vectors kept as they are (PyLate's default: 1, the `[CLS]`).
    pub protected: usize,
}

impl Default for Pooling {
    fn default() -> Self {
        Self {
            factor: 1,
            protected: 1,
        }
    }
}

impl Pooling {
    /// Vectors a document of `n` becomes.
    pub fn pooled_len(&self, n: usize) -> usize {
        if self.factor <= 1 || n <= self.protected {
            return n;
        }
        let rest = n - self.protected;
        self.protected + (rest / self.factor).max(1)
    }
}

/// A block of row vectors: `rows × cols` values at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
}

/// Distance modes of [`pairwise_cpu`] and `pairwise.wgsl`.
pub const COSINE: u32 = 0;
pub const SQUARED_EUCLIDEAN: u32 = 1;

/// CPU twin of `pairwise.wgsl`: per block, the `rows × rows` matrix of
/// `1 − x_i·x_j` (`COSINE`) or `Σ (x_i − x_j)²` (`SQUARED_EUCLIDEAN`), f32
/// accumulation in the same order; blocks' outputs back to back.
pub fn pairwise_cpu(x: &[f32], blocks: &[Block], mode: u32) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = Vec::with_capacity(blocks.iter().map(|b| b.rows * b.rows).sum());
    for b in blocks {
        let rows: Vec<f32> = (0..b.rows * b.rows)
            .into_par_iter()
            .map(|t| {
                let (i, j) = (t / b.rows, t % b.rows);
                let xi = &x[b.offset + i * b.cols..][..b.cols];
                let xj = &x[b.offset + j * b.cols..][..b.cols];
                let mut acc = 0f32;
                if mode == COSINE {
                    for (a, b) in xi.iter().zip(xj) {
                        acc += a * b;
                    }
                    1.0 - acc
                } else {
                    for (a, b) in xi.iter().zip(xj) {
                        let d = a - b;
                        acc += d * d;
                    }
                    acc
                }
            })
            .collect();
        out.extend(rows);
    }
    out
}

/// Per block of vectors (`n × dim`), the squared Euclidean distances between
/// the rows of its cosine distance matrix (steps 2–3 above), on `compute`.
pub fn ward_inputs(compute: &Compute, x: &[f32], blocks: &[Block]) -> Result<Vec<f32>> {
    for b in blocks {
        if b.offset + b.rows * b.cols > x.len() {
            return Err(Error::shape(
                "pairwise",
                format!("block {b:?} outside {} values", x.len()),
            ));
        }
    }
    let total: usize = blocks.iter().map(|b| b.rows * b.rows).sum();
    let mut second = Vec::with_capacity(blocks.len());
    let mut off = 0;
    for b in blocks {
        second.push(Block {
            offset: off,
            rows: b.rows,
            cols: b.rows,
        });
        off += b.rows * b.rows;
    }
    match compute {
        Compute::Cpu => {
            let d = pairwise_cpu(x, blocks, COSINE);
            Ok(pairwise_cpu(&d, &second, SQUARED_EUCLIDEAN))
        }
        Compute::Gpu(ctx) => {
            if total == 0 {
                return Ok(Vec::new());
            }
            let meta = |bs: &[Block]| -> Vec<u32> {
                let mut m = Vec::with_capacity(bs.len() * 4);
                let mut out_off = 0u32;
                for b in bs {
                    m.extend([b.offset as u32, b.rows as u32, b.cols as u32, out_off]);
                    out_off += (b.rows * b.rows) as u32;
                }
                m
            };
            let xbuf = ctx.upload("pairwise vectors", x)?;
            let m1 = ctx.upload("pairwise blocks", &meta(blocks))?;
            let m2 = ctx.upload("pairwise blocks (rows of D)", &meta(&second))?;
            let d = ctx.pool().get(total as u64 * 4);
            let e = ctx.pool().get(total as u64 * 4);
            let mut encoder = ctx.encoder("token pooling distances");
            crate::kernels::pairwise::record(
                ctx,
                &mut encoder,
                &crate::kernels::pairwise::Buffers {
                    x: &xbuf,
                    spans: &m1,
                    out: d.buffer(),
                },
                (blocks.len(), total, COSINE),
            )?;
            crate::kernels::pairwise::record(
                ctx,
                &mut encoder,
                &crate::kernels::pairwise::Buffers {
                    x: d.buffer(),
                    spans: &m2,
                    out: e.buffer(),
                },
                (second.len(), total, SQUARED_EUCLIDEAN),
            )?;
            let mut read: Vec<Vec<f32>> = ctx.submit_and_read(encoder, &[(e.buffer(), total)])?;
            Ok(read.pop().unwrap_or_default())
        }
    }
}

/// Ward's hierarchical clustering of `n` points given their squared Euclidean
/// distances `d2` (`n × n`), cut into `k` clusters (as scipy's `linkage(…,
/// "ward")` + `fcluster(…, k, "maxclust")`): a label per point, clusters
/// numbered 0.. in order of their first point.
pub fn ward_labels(d2: &[f32], n: usize, k: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let k = k.clamp(1, n);
    let mut d: Vec<f64> = d2.iter().map(|&v| v.max(0.0) as f64).collect();
    let mut size = vec![1f64; n];
    let mut active = vec![true; n];
    // Merges as (height², slot a, slot b): the merged cluster lives in slot b.
    let mut merges: Vec<(f64, usize, usize)> = Vec::with_capacity(n - 1);
    let mut chain: Vec<usize> = Vec::with_capacity(n);
    while merges.len() + 1 < n {
        if chain.is_empty() {
            if let Some(first) = active.iter().position(|&a| a) {
                chain.push(first);
            }
        }
        let (a, b) = loop {
            let a = chain[chain.len() - 1];
            let prev = (chain.len() >= 2).then(|| chain[chain.len() - 2]);
            let mut best = prev;
            let mut best_d = prev.map(|p| d[a * n + p]).unwrap_or(f64::INFINITY);
            for c in 0..n {
                if c != a && active[c] && d[a * n + c] < best_d {
                    best_d = d[a * n + c];
                    best = Some(c);
                }
            }
            let Some(b) = best else {
                break (a, a);
            };
            if Some(b) == prev {
                break (a, b);
            }
            chain.push(b);
        };
        if a == b {
            break;
        }
        chain.pop();
        chain.pop();
        let dab = d[a * n + b];
        merges.push((dab, a, b));
        let (sa, sb) = (size[a], size[b]);
        for c in 0..n {
            if !active[c] || c == a || c == b {
                continue;
            }
            let sc = size[c];
            let v = ((sa + sc) * d[a * n + c] + (sb + sc) * d[b * n + c] - sc * dab)
                / (sa + sb + sc);
            d[b * n + c] = v;
            d[c * n + b] = v;
        }
        active[a] = false;
        size[b] = sa + sb;
    }
    // The tree cut into k clusters: the n − k lowest merges (stable for ties).
    merges.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for &(_, a, b) in merges.iter().take(n - k) {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        if ra != rb {
            parent[ra] = rb;
        }
    }
    let mut label_of_root = vec![usize::MAX; n];
    let mut next = 0;
    (0..n)
        .map(|i| {
            let r = find(&mut parent, i);
            if label_of_root[r] == usize::MAX {
                label_of_root[r] = next;
                next += 1;
            }
            label_of_root[r]
        })
        .collect()
}

/// Pools each document (`len × dim` blocks) as the module documentation says.
pub fn pool_documents(
    compute: &Compute,
    docs: &[Vec<f32>],
    dim: usize,
    pooling: &Pooling,
) -> Result<Vec<Vec<f32>>> {
    if pooling.factor <= 1 {
        return Ok(docs.to_vec());
    }
    // Documents in groups whose distance matrices stay well inside one binding.
    const MAX_GROUP_VALUES: usize = 8 << 20;
    let mut out = Vec::with_capacity(docs.len());
    let mut start = 0;
    while start < docs.len() {
        let mut end = start;
        let mut values = 0;
        while end < docs.len() {
            let n = (docs[end].len() / dim).saturating_sub(pooling.protected);
            if end > start && values + n * n > MAX_GROUP_VALUES {
                break;
            }
            values += n * n;
            end += 1;
        }
        let mut x = Vec::new();
        let mut blocks = Vec::new();
        for doc in &docs[start..end] {
            let n = doc.len() / dim;
            let p = pooling.protected.min(n);
            blocks.push(Block {
                offset: x.len(),
                rows: n - p,
                cols: dim,
            });
            x.extend_from_slice(&doc[p * dim..]);
        }
        let e = ward_inputs(compute, &x, &blocks)?;
        let mut e_off = 0;
        for (doc, b) in docs[start..end].iter().zip(&blocks) {
            let n = b.rows;
            let p = doc.len() / dim - n;
            let mut pooled = doc[..p * dim].to_vec();
            if n > 0 {
                let k = (n / pooling.factor).max(1);
                let labels = ward_labels(&e[e_off..e_off + n * n], n, k);
                let clusters = labels.iter().copied().max().map_or(0, |m| m + 1);
                let mut sums = vec![0f64; clusters * dim];
                let mut counts = vec![0usize; clusters];
                for (i, &l) in labels.iter().enumerate() {
                    counts[l] += 1;
                    for (s, v) in sums[l * dim..(l + 1) * dim]
                        .iter_mut()
                        .zip(&x[b.offset + i * dim..][..dim])
                    {
                        *s += *v as f64;
                    }
                }
                for l in 0..clusters {
                    let mean: Vec<f64> = sums[l * dim..(l + 1) * dim]
                        .iter()
                        .map(|s| s / counts[l] as f64)
                        .collect();
                    let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                    pooled.extend(mean.iter().map(|v| (v / norm) as f32));
                }
            }
            e_off += n * n;
            out.push(pooled);
        }
        start = end;
    }
    Ok(out)
}
