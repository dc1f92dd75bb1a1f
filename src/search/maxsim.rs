//! MaxSim (ColBERT late interaction) of queries against variable-length
//! documents, on either backend, and brute-force (exhaustive) top-k search.
//!
//! Documents are stored flat, without padding: `docs` holds `rows × dim`
//! floats and document `d` owns rows `offsets[d] .. offsets[d + 1]`
//! (`n_docs + 1` offsets, non-decreasing; they need not start at 0). Queries
//! are `nq × qlen × dim`, back to back; any `qlen ≥ 1`.
//!
//! `score(q, d) = Σ_{i < qlen} max_{j ∈ d} q_i · d_j`; a maximum that is not
//! finite (an empty document, overflow, NaN) adds 0, so an empty document
//! scores 0. NaN products are ignored by the CPU maximum (the GPU's `max` on
//! NaN is the driver's choice).
//!
//! * [`maxsim_matrix`]: every query against every document (`nq × n_docs`);
//! * [`maxsim_scores`] with a [`ScoreRequest`]: each document against the one
//!   query its `owner` entry names (per-query candidate lists, e.g. PLAID's
//!   survivors or a BM25 list, in one call);
//! * [`exhaustive_search`]: [`maxsim_matrix`] then top-k, in one GPU submit;
//! * for chaining on the device (decompress → MaxSim → top-k in one submit),
//!   the resident [`kernels::maxsim::record_all_pairs`],
//!   [`kernels::maxsim::record_assigned`] and [`kernels::topk::record`].
//!
//! The CPU twin scores blocks of documents against blocks of queries with one
//! gemm each (`S = D_block · Q_blockᵀ`: rows = document tokens, columns =
//! query tokens, about 256 KiB), then a column-wise running maximum over each
//! document's rows (contiguous rows of `S`, so it vectorises; AVX2 when the CPU
//! has it) and a sum of each query's maxima. rayon spreads the (document
//! block, query block) tasks over the cores; gemm runs single-threaded inside
//! each. The GPU path (`shaders/maxsim.wgsl`) uploads the corpus in slices
//! that fit one storage binding (rows zero-padded to a multiple of 4 floats
//! when `dim` is not one) and scores them all into one matrix.

use rayon::prelude::*;

use super::topk::TopK;
use crate::backend::Compute;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels;

/// An offset into the document rows: `u32`, `u64` or `usize`.
pub trait DocOffset: Copy + Send + Sync {
    fn as_u64(self) -> u64;
}
impl DocOffset for u32 {
    fn as_u64(self) -> u64 {
        self as u64
    }
}
impl DocOffset for u64 {
    fn as_u64(self) -> u64 {
        self
    }
}
impl DocOffset for usize {
    fn as_u64(self) -> u64 {
        self as u64
    }
}

/// Checks the corpus layout; returns the offsets as `usize`.
fn check_docs<O: DocOffset>(docs: &[f32], offsets: &[O], dim: usize) -> Result<Vec<usize>> {
    if dim == 0 {
        return Err(Error::shape("maxsim", "dim must be at least 1"));
    }
    if !docs.len().is_multiple_of(dim) {
        return Err(Error::shape(
            "maxsim",
            format!("{} document values are not whole rows of {dim}", docs.len()),
        ));
    }
    if offsets.is_empty() {
        return Err(Error::shape(
            "maxsim",
            "offsets must hold n_docs + 1 entries (at least one)",
        ));
    }
    let rows = (docs.len() / dim) as u64;
    let mut out = Vec::with_capacity(offsets.len());
    let mut prev = 0u64;
    for (d, o) in offsets.iter().enumerate() {
        let o = o.as_u64();
        if o > rows || (d > 0 && o < prev) {
            return Err(Error::shape(
                "maxsim",
                format!(
                    "offsets[{d}] = {o}: offsets must be non-decreasing and not point past \
                     the {rows} document rows"
                ),
            ));
        }
        prev = o;
        out.push(o as usize);
    }
    Ok(out)
}

/// Checks the query layout; returns the number of queries.
fn check_queries(queries: &[f32], qlen: usize, dim: usize) -> Result<usize> {
    let per_query = qlen.checked_mul(dim).unwrap_or(0);
    if per_query == 0 || !queries.len().is_multiple_of(per_query) {
        return Err(Error::shape(
            "maxsim",
            format!(
                "{} query values are not a whole number of {qlen}×{dim} queries",
                queries.len()
            ),
        ));
    }
    Ok(queries.len() / per_query)
}

/// MaxSim of every query against every document: `nq × n_docs` scores,
/// row-major (query-major). `queries` is `nq × qlen × dim`; `docs` is
/// `rows × dim` and document `d` owns rows `offsets[d] .. offsets[d + 1]`.
pub fn maxsim_matrix<O: DocOffset>(
    compute: &Compute,
    queries: &[f32],
    qlen: usize,
    docs: &[f32],
    offsets: &[O],
    dim: usize,
) -> Result<Vec<f32>> {
    let nq = check_queries(queries, qlen, dim)?;
    let offs = check_docs(docs, offsets, dim)?;
    let n = offs.len() - 1;
    if nq == 0 || n == 0 {
        return Ok(Vec::new());
    }
    compute.maxsim_matrix(queries, (nq, qlen, dim), docs, &offs)
}

/// Documents `docs[offsets[r] .. offsets[r+1]]` (in vectors of `dim`), each
/// scored against query `owner[r]` of `queries` (`qlen × dim` each): reranking
/// per-query candidate lists in one call.
pub struct ScoreRequest<'a> {
    pub queries: &'a [f32],
    pub qlen: usize,
    pub dim: usize,
    pub docs: &'a [f32],
    /// `owner.len() + 1` row offsets, non-decreasing.
    pub offsets: &'a [usize],
    pub owner: &'a [u32],
}

impl ScoreRequest<'_> {
    /// Checks the shapes; returns the number of queries.
    pub fn validate(&self) -> Result<usize> {
        let nq = check_queries(self.queries, self.qlen, self.dim)?;
        check_docs(self.docs, self.offsets, self.dim)?;
        let n = self.owner.len();
        if self.offsets.len() != n + 1 {
            return Err(Error::shape(
                "maxsim",
                format!(
                    "{} offsets for {n} documents (need n + 1)",
                    self.offsets.len()
                ),
            ));
        }
        if let Some(bad) = self.owner.iter().find(|&&o| o as usize >= nq) {
            return Err(Error::shape(
                "maxsim",
                format!("document owned by query {bad} of {nq}"),
            ));
        }
        Ok(nq)
    }
}

/// MaxSim of every document in `req` against its owner query: one score per
/// document.
pub fn maxsim_scores(compute: &Compute, req: &ScoreRequest) -> Result<Vec<f32>> {
    let nq = req.validate()?;
    if req.owner.is_empty() {
        return Ok(Vec::new());
    }
    compute.maxsim_assigned(req, nq)
}

/// Brute-force search: MaxSim of every query against every document, then
/// the best `k` per query (score descending, ties to the lower document index;
/// `min(k, n_docs)` per query; `k = 0` is an error). On the GPU the scores
/// never leave the device: MaxSim and top-k run in one submit per query group
/// and only the top-k come back (for k above [`kernels::topk::MAX_K`] the
/// scores are read back and ranked on the CPU).
pub fn exhaustive_search<O: DocOffset>(
    compute: &Compute,
    queries: &[f32],
    qlen: usize,
    docs: &[f32],
    offsets: &[O],
    dim: usize,
    k: usize,
) -> Result<TopK> {
    if k == 0 {
        return Err(Error::Input("search: k must be at least 1".into()));
    }
    let nq = check_queries(queries, qlen, dim)?;
    let offs = check_docs(docs, offsets, dim)?;
    let n = offs.len() - 1;
    if nq == 0 || n == 0 {
        return Ok(TopK::empty(nq));
    }
    compute.maxsim_topk(queries, (nq, qlen, dim), docs, &offs, k)
}

// ---------------------------------------------------------------------------
// CPU twin.

/// Target rows of the `S` block one task computes (`rows × M` floats ≈ 256 KiB).
const BLOCK_FLOATS: usize = 1 << 16;
/// Query tokens per task (columns of `S`).
const MAX_BLOCK_TOKENS: usize = 256;

/// CPU twin of [`maxsim_matrix`] on checked inputs (`offsets`: `n + 1` row
/// offsets): `nq × n` scores; tasks are (query block, document block) pairs.
pub fn maxsim_matrix_cpu(
    queries: &[f32],
    nq: usize,
    qlen: usize,
    docs: &[f32],
    offsets: &[usize],
    dim: usize,
) -> Vec<f32> {
    let n = offsets.len().saturating_sub(1);
    let qb = (MAX_BLOCK_TOKENS / qlen).clamp(1, nq.max(1));
    let q_blocks: Vec<(usize, usize)> = (0..nq)
        .step_by(qb)
        .map(|q0| (q0, (q0 + qb).min(nq)))
        .collect();
    let d_blocks = doc_blocks(offsets, 0..n, qb * qlen);
    let tasks: Vec<BlockTask> = q_blocks
        .iter()
        .flat_map(|&qs| {
            d_blocks.iter().map(move |&ds| BlockTask {
                queries: qs,
                docs: ds,
            })
        })
        .collect();
    let parts = score_blocks(&tasks, queries, qlen, docs, offsets, dim);
    let mut scores = vec![0.0f32; nq * n];
    for (t, part) in tasks.iter().zip(&parts) {
        let ((q0, q1), (d0, d1)) = (t.queries, t.docs);
        let w = d1 - d0;
        for (qi, src) in (q0..q1).zip(part.chunks(w)) {
            scores[qi * n + d0..qi * n + d1].copy_from_slice(src);
        }
    }
    scores
}

/// CPU twin of [`maxsim_scores`], for a request that [`ScoreRequest::validate`]
/// accepts (it panics on others): runs of consecutive documents with the same
/// owner are scored in blocks, one gemm each.
pub fn maxsim_cpu(req: &ScoreRequest) -> Vec<f32> {
    let (queries, qlen, docs, offsets, query_of, dim) = (
        req.queries,
        req.qlen,
        req.docs,
        req.offsets,
        req.owner,
        req.dim,
    );
    let n = query_of.len();
    let mut tasks = Vec::new();
    let mut d = 0;
    while d < n {
        let q = query_of[d];
        let mut e = d + 1;
        while e < n && query_of[e] == q {
            e += 1;
        }
        let q = q as usize;
        for blk in doc_blocks(offsets, d..e, qlen) {
            tasks.push(BlockTask {
                queries: (q, q + 1),
                docs: blk,
            });
        }
        d = e;
    }
    let parts = score_blocks(&tasks, queries, qlen, docs, offsets, dim);
    let mut scores = Vec::with_capacity(n);
    for p in parts {
        scores.extend_from_slice(&p);
    }
    scores
}

/// One task of the CPU twins: queries `q0..q1` against documents `d0..d1`.
struct BlockTask {
    queries: (usize, usize),
    docs: (usize, usize),
}

/// Scores every task in parallel: task t's block is `(q1 − q0) × (d1 − d0)`,
/// query-major.
fn score_blocks(
    tasks: &[BlockTask],
    queries: &[f32],
    qlen: usize,
    docs: &[f32],
    offsets: &[usize],
    dim: usize,
) -> Vec<Vec<f32>> {
    tasks
        .par_iter()
        .map_init(Vec::new, |scratch, t| {
            let ((q0, q1), (d0, d1)) = (t.queries, t.docs);
            let mut out = vec![0.0f32; (q1 - q0) * (d1 - d0)];
            score_block(
                &queries[q0 * qlen * dim..q1 * qlen * dim],
                q1 - q0,
                qlen,
                docs,
                &offsets[d0..=d1],
                dim,
                scratch,
                &mut out,
            );
            out
        })
        .collect()
}

/// Splits documents `range` into consecutive blocks of about
/// `BLOCK_FLOATS / tokens` rows (at least one document each).
fn doc_blocks(
    offsets: &[usize],
    range: std::ops::Range<usize>,
    tokens: usize,
) -> Vec<(usize, usize)> {
    let target = (BLOCK_FLOATS / tokens.max(1)).clamp(64, 4096);
    let mut blocks = Vec::new();
    let mut d0 = range.start;
    while d0 < range.end {
        let mut d1 = d0 + 1;
        while d1 < range.end && offsets[d1 + 1] - offsets[d0] <= target {
            d1 += 1;
        }
        blocks.push((d0, d1));
        d0 = d1;
    }
    blocks
}

/// Scores documents `offsets[0..=nd]` (row offsets into `docs`) against `nqb`
/// queries (`q`: `nqb × qlen × dim`) into `out` (`nqb × nd`, query-major).
#[allow(clippy::too_many_arguments)]
fn score_block(
    q: &[f32],
    nqb: usize,
    qlen: usize,
    docs: &[f32],
    offsets: &[usize],
    dim: usize,
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) {
    let nd = offsets.len() - 1;
    let (r0, r1) = (offsets[0], offsets[nd]);
    let rows = r1 - r0;
    let m = nqb * qlen;
    if rows == 0 {
        out.fill(0.0);
        return;
    }
    scratch.resize(rows * m, 0.0);
    let block = &docs[r0 * dim..r1 * dim];
    // S = block · qᵀ: rows × m, one row per document vector.
    crate::backend::cpu::matmul_transposed_serial(block, q, scratch, rows, m, dim);
    reduce_block(&scratch[..rows * m], offsets, m, nqb, qlen, out);
}

/// Column-wise maxima of each document's rows of `s` (`rows × m`), summed per
/// query over its `qlen` columns (non-finite maxima skipped). Compiled for
/// AVX2 only, not through `vecmath::dispatch_simd!`: its AVX-512 build is
/// ~30% slower here (maxsim/q32_d180_n10k/cpu 50.7 vs 38.3 ms).
fn reduce_block(s: &[f32], offsets: &[usize], m: usize, nqb: usize, qlen: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { reduce_block_avx2(s, offsets, m, nqb, qlen, out) };
            return;
        }
    }
    reduce_block_generic(s, offsets, m, nqb, qlen, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn reduce_block_avx2(
    s: &[f32],
    offsets: &[usize],
    m: usize,
    nqb: usize,
    qlen: usize,
    out: &mut [f32],
) {
    reduce_block_generic(s, offsets, m, nqb, qlen, out)
}

#[inline(always)]
fn reduce_block_generic(
    s: &[f32],
    offsets: &[usize],
    m: usize,
    nqb: usize,
    qlen: usize,
    out: &mut [f32],
) {
    let nd = offsets.len() - 1;
    let r0 = offsets[0];
    let mut acc = vec![f32::NEG_INFINITY; m];
    for d in 0..nd {
        acc.fill(f32::NEG_INFINITY);
        for row in s[(offsets[d] - r0) * m..(offsets[d + 1] - r0) * m].chunks_exact(m) {
            for (a, &x) in acc.iter_mut().zip(row) {
                // `x > a` is false for NaN: NaN products are ignored (maxps).
                *a = if x > *a { x } else { *a };
            }
        }
        for qi in 0..nqb {
            out[qi * nd + d] = acc[qi * qlen..(qi + 1) * qlen]
                .iter()
                .filter(|v| v.is_finite())
                .sum();
        }
    }
}

// ---------------------------------------------------------------------------
// GPU path.

/// The GPU kernel reads vec4: dims are padded to a multiple of 4 on upload.
fn gpu_dim(dim: usize) -> usize {
    dim.next_multiple_of(4)
}

/// `rows` (`dim` floats each) with every row zero-padded to [`gpu_dim`]
/// (borrowed when no padding is needed). Zeros leave every dot product as is.
fn pad_rows(rows: &[f32], dim: usize) -> std::borrow::Cow<'_, [f32]> {
    let d4 = gpu_dim(dim);
    if d4 == dim {
        return std::borrow::Cow::Borrowed(rows);
    }
    let mut out = vec![0.0f32; rows.len() / dim * d4];
    for (dst, src) in out.chunks_exact_mut(d4).zip(rows.chunks_exact(dim)) {
        dst[..dim].copy_from_slice(src);
    }
    std::borrow::Cow::Owned(out)
}

/// Bytes one document slice may occupy on the GPU.
pub(crate) fn slice_limit(ctx: &GpuContext) -> u64 {
    ctx.max_binding_bytes().min(128 << 20)
}

/// Uploads the corpus slice by slice (each slice the most consecutive
/// documents that fit one binding) and lets `rec` record one dispatch per
/// slice: `rec(encoder, d0, d1, slice rows, slice offsets rebased to 0)`.
/// Past four slices' worth of uploads (`4 · limit` bytes) the encoder is
/// submitted and waited on and a fresh one continues, so memory stays bounded; the returned encoder holds
/// the rest. Every buffer recorded stays alive in `keep` until the caller's
/// submit.
#[allow(clippy::too_many_arguments)]
fn record_sliced(
    ctx: &GpuContext,
    mut enc: wgpu::CommandEncoder,
    docs: &[f32],
    offsets: &[usize],
    dim: usize,
    limit: u64,
    keep: &mut Vec<wgpu::Buffer>,
    mut rec: impl FnMut(
        &mut wgpu::CommandEncoder,
        usize,
        usize,
        &wgpu::Buffer,
        &wgpu::Buffer,
        &mut Vec<wgpu::Buffer>,
    ) -> Result<()>,
) -> Result<wgpu::CommandEncoder> {
    let n = offsets.len() - 1;
    let row_bytes = (gpu_dim(dim) * 4) as u64;
    let mut pending = 0u64;
    let mut d0 = 0;
    while d0 < n {
        let r0 = offsets[d0];
        let mut d1 = d0 + 1;
        while d1 < n && (offsets[d1 + 1] - r0) as u64 * row_bytes <= limit {
            d1 += 1;
        }
        let r1 = offsets[d1];
        let bytes = (r1 - r0) as u64 * row_bytes;
        if bytes > limit {
            return Err(Error::LimitExceeded {
                what: format!("document {d0} ({} vectors) in one GPU binding", r1 - r0),
                needed: bytes,
                limit,
            });
        }
        // Rows of a slice are < limit / 4, so rebased offsets fit u32.
        let rebased: Vec<u32> = offsets[d0..=d1].iter().map(|&o| (o - r0) as u32).collect();
        let docs_buf = ctx.upload(
            "maxsim documents",
            &pad_rows(&docs[r0 * dim..r1 * dim], dim),
        )?;
        let offs_buf = ctx.upload("maxsim offsets", &rebased)?;
        rec(&mut enc, d0, d1, &docs_buf, &offs_buf, keep)?;
        keep.push(docs_buf);
        keep.push(offs_buf);
        pending += bytes;
        if pending >= 4 * limit && d1 < n {
            ctx.submit_and_wait(std::mem::replace(&mut enc, ctx.encoder("maxsim")))?;
            keep.clear();
            pending = 0;
        }
        d0 = d1;
    }
    Ok(enc)
}

/// Records all-pairs MaxSim of uploaded queries (`nq`) against a host corpus
/// into `scores` (`[nq, n]`).
#[allow(clippy::too_many_arguments)]
fn record_matrix(
    ctx: &GpuContext,
    enc: wgpu::CommandEncoder,
    q_buf: &wgpu::Buffer,
    nq: usize,
    qlen: usize,
    docs: &[f32],
    offsets: &[usize],
    dim: usize,
    scores: &wgpu::Buffer,
    limit: u64,
    keep: &mut Vec<wgpu::Buffer>,
) -> Result<wgpu::CommandEncoder> {
    let n = offsets.len() - 1;
    record_sliced(
        ctx,
        enc,
        docs,
        offsets,
        dim,
        limit,
        keep,
        |enc, d0, d1, d, o, _| {
            kernels::maxsim::record_all_pairs(
                ctx,
                enc,
                &kernels::maxsim::Buffers {
                    queries: q_buf,
                    docs: d,
                    doc_offsets: o,
                    owner: None,
                    scores,
                },
                kernels::maxsim::AllPairs {
                    num_queries: nq,
                    qlen,
                    dim: gpu_dim(dim),
                    num_docs: d1 - d0,
                    out_stride: n,
                    out_offset: d0,
                },
            )
        },
    )
}

/// Queries per GPU pass so that the `[nq, n]` score matrix fits one binding.
fn query_groups(limit: u64, nq: usize, n: usize) -> usize {
    ((limit / 4) as usize / n.max(1)).clamp(1, nq.max(1))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn maxsim_matrix_gpu(
    ctx: &GpuContext,
    queries: &[f32],
    nq: usize,
    qlen: usize,
    docs: &[f32],
    offsets: &[usize],
    dim: usize,
    limit: u64,
) -> Result<Vec<f32>> {
    let n = offsets.len() - 1;
    let group = query_groups(limit, nq, n);
    let mut out = Vec::with_capacity(nq * n);
    for q in queries.chunks(group * qlen * dim) {
        let g = q.len() / (qlen * dim);
        let q_buf = ctx.upload("maxsim queries", &pad_rows(q, dim))?;
        let scores = ctx.pool().get((g * n * 4) as u64);
        let mut keep = Vec::new();
        let enc = record_matrix(
            ctx,
            ctx.encoder("maxsim"),
            &q_buf,
            g,
            qlen,
            docs,
            offsets,
            dim,
            scores.buffer(),
            limit,
            &mut keep,
        )?;
        let back = ctx.submit_and_read::<f32>(enc, &[(scores.buffer(), g * n)])?;
        out.extend(back.into_iter().flatten());
    }
    Ok(out)
}

pub(crate) fn maxsim_assigned_gpu(
    ctx: &GpuContext,
    req: &ScoreRequest,
    nq: usize,
    limit: u64,
) -> Result<Vec<f32>> {
    let n = req.owner.len();
    let q_buf = ctx.upload("maxsim queries", &pad_rows(req.queries, req.dim))?;
    ctx.check_binding_size("maxsim scores", (n * 4) as u64)?;
    let scores = ctx.pool().get((n * 4) as u64);
    let mut keep = Vec::new();
    let enc = record_sliced(
        ctx,
        ctx.encoder("maxsim"),
        req.docs,
        req.offsets,
        req.dim,
        limit,
        &mut keep,
        |enc, d0, d1, d, o, keep| {
            let owner = ctx.upload("maxsim owners", &req.owner[d0..d1])?;
            kernels::maxsim::record_assigned(
                ctx,
                enc,
                &kernels::maxsim::Buffers {
                    queries: &q_buf,
                    docs: d,
                    doc_offsets: o,
                    owner: Some(&owner),
                    scores: scores.buffer(),
                },
                kernels::maxsim::Assigned {
                    num_queries: nq,
                    qlen: req.qlen,
                    dim: gpu_dim(req.dim),
                    num_docs: d1 - d0,
                    out_offset: d0,
                },
            )?;
            keep.push(owner);
            Ok(())
        },
    )?;
    Ok(ctx
        .submit_and_read::<f32>(enc, &[(scores.buffer(), n)])?
        .remove(0))
}

/// MaxSim and top-k in one submit per query group; only the top-k come back.
#[allow(clippy::too_many_arguments)]
pub(crate) fn exhaustive_gpu(
    ctx: &GpuContext,
    queries: &[f32],
    nq: usize,
    qlen: usize,
    docs: &[f32],
    offsets: &[usize],
    dim: usize,
    k: usize,
    limit: u64,
) -> Result<TopK> {
    let n = offsets.len() - 1;
    let ke = k.min(n);
    let group = query_groups(limit, nq, n);
    let mut indices = Vec::with_capacity(nq * ke);
    let mut top = Vec::with_capacity(nq * ke);
    for q in queries.chunks(group * qlen * dim) {
        let g = q.len() / (qlen * dim);
        let q_buf = ctx.upload("maxsim queries", &pad_rows(q, dim))?;
        let scores = ctx.pool().get((g * n * 4) as u64);
        let idx = ctx.pool().get((g * ke * 4) as u64);
        let best = ctx.pool().get((g * ke * 4) as u64);
        let mut keep = Vec::new();
        let mut enc = record_matrix(
            ctx,
            ctx.encoder("exhaustive search"),
            &q_buf,
            g,
            qlen,
            docs,
            offsets,
            dim,
            scores.buffer(),
            limit,
            &mut keep,
        )?;
        kernels::topk::record(
            ctx,
            &mut enc,
            &kernels::topk::Buffers {
                scores: scores.buffer(),
                out_idx: idx.buffer(),
                out_scores: best.buffer(),
            },
            kernels::topk::Shape {
                rows: g,
                n,
                k: ke,
                in_stride: n,
            },
        )?;
        let mut back =
            ctx.submit_and_read::<u32>(enc, &[(idx.buffer(), g * ke), (best.buffer(), g * ke)])?;
        let s = back.pop().unwrap_or_default();
        indices.extend(back.pop().unwrap_or_default());
        top.extend(s.into_iter().map(f32::from_bits));
    }
    Ok(TopK {
        rows: nq,
        k: ke,
        indices,
        scores: top,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiny binding limits force many slices, mid-way flushes and several
    /// query groups; results must not change. (tests/search.rs covers the rest.)
    #[test]
    fn sliced_gpu_scoring_matches_the_cpu_twin() {
        let ctx = GpuContext::new(&Default::default()).expect("GPU tests need an adapter");
        let dim = 10; // padded to 12 floats = 48 bytes per row on the GPU
        let mut seed = 3u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for (lens, nq, limit) in [
            (
                vec![3usize, 0, 7, 1, 5, 2, 9, 4, 0, 6, 8, 1],
                2usize,
                48 * 10,
            ),
            (vec![1, 2, 0, 2, 1, 1, 2, 0, 1, 2], 3, 48 * 2),
        ] {
            let mut offsets = vec![0usize];
            for l in &lens {
                offsets.push(offsets.last().unwrap() + l);
            }
            let rows = *offsets.last().unwrap();
            let n = lens.len();
            let docs: Vec<f32> = (0..rows * dim).map(|_| next()).collect();
            let qlen = 5;
            let queries: Vec<f32> = (0..nq * qlen * dim).map(|_| next()).collect();
            let want = maxsim_matrix_cpu(&queries, nq, qlen, &docs, &offsets, dim);
            let got =
                maxsim_matrix_gpu(&ctx, &queries, nq, qlen, &docs, &offsets, dim, limit).unwrap();
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-5, "matrix: max |Δ| {worst}");

            let owner: Vec<u32> = (0..n).map(|d| (d % nq) as u32).collect();
            let req = ScoreRequest {
                queries: &queries,
                qlen,
                dim,
                docs: &docs,
                offsets: &offsets,
                owner: &owner,
            };
            let got = maxsim_assigned_gpu(&ctx, &req, nq, limit).unwrap();
            for (d, g) in got.iter().enumerate() {
                assert!(
                    (g - want[(d % nq) * n + d]).abs() < 1e-5,
                    "owner mode doc {d}"
                );
            }

            let top =
                exhaustive_gpu(&ctx, &queries, nq, qlen, &docs, &offsets, dim, 4, limit).unwrap();
            let cpu_top = super::super::topk::topk_cpu(&want, n, 4).unwrap();
            assert_eq!(top.indices, cpu_top.indices);
        }
        // A document larger than one binding is an error naming it.
        let docs = vec![0.0f32; 4 * dim];
        let e = maxsim_matrix_gpu(&ctx, &docs[..dim], 1, 1, &docs, &[0, 4], dim, 48 * 3);
        assert!(e.unwrap_err().to_string().contains("document 0"));
    }
}
