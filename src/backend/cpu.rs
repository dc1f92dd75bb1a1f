//! The native CPU backend: f32 linear layers as exact three-part bf16 splits
//! on the AMX tiles where the CPU has AMX-BF16 ([`bf16`]), else on the AVX-512
//! kernel with weights packed once ([`sgemm`]) where it has AVX-512F,
//! otherwise (and for the attention products) through the `gemm` crate
//! (AVX2/FMA when the CPU has them); everything else row-parallel with rayon. It is both the fast
//! path on machines without a hardware GPU and the reference the WGSL kernels
//! are tested against.

use std::time::Instant;

use rayon::prelude::*;

use super::vecmath::{gelu_in_place, layernorm_in_place, softmax_in_place};
use super::{
    check_attention, check_attention_gqa, check_batch, check_linear, check_norm, check_reshape,
    check_rotary, check_same, check_swiglu, Activation, Backend, EmbeddingTables, HostMatrix,
    KeySpans, Shaped, TokenBatch, Unary,
};
use super::blocks::OutPtr;
use super::{bf16, lanes, sgemm, PackCache, Precision};
use crate::error::{Error, Result};

/// A host matrix is both the CPU backend's tensor and its weight.
pub type CpuTensor = HostMatrix;

impl Shaped for HostMatrix {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
}

/// Per-op (calls, seconds), by op name.
pub type OpProfile = std::collections::BTreeMap<&'static str, (usize, f64)>;

/// The native CPU backend.
#[derive(Debug, Clone, Default)]
pub struct CpuBackend {
    /// When set, the wall time of every op is added here by op name (ops are
    /// synchronous, so this costs nothing but the clock reads).
    profile: Option<OpProfile>,
    /// Buffers of recycled activations, reused for new outputs: a fresh
    /// allocation of tens of MB is a fresh mmap, page-faulted in 4 KiB at a time.
    pool: Vec<Vec<f32>>,
    /// Arithmetic of the linear layers.
    precision: Precision,
    /// f32 linear layers as exact bf16 splits on AMX: `None` (the default)
    /// where the CPU has AMX-BF16 and `COLWGPU_F32_GEMM` does not name an
    /// FMA kernel, for weights where it pays ([`bf16::split_pays`]) within
    /// the packing budget; `Some(true)` always on AMX
    /// ([`CpuBackend::amx_split_f32`]); `Some(false)` never
    /// ([`CpuBackend::fma_f32`]).
    amx_split: Option<bool>,
    /// f32 linear layers on the packed kernel at every batch size
    /// ([`CpuBackend::batch_invariant_f32`]).
    batch_invariant: bool,
    /// The copies of this backend that run jobs side by side, one per lane
    /// ([`Backend::run_jobs`], [`super::lanes`]), made on first use and kept
    /// with their recycled buffers.
    forks: Vec<CpuBackend>,
}

/// Rows per forward pass ([`Backend::max_pass_rows`]): a BERT layer's
/// activations for about a thousand rows (the FFN's 1,536 columns of MiniLM
/// are 6 MB) stay near the core, where 32 documents of 180 tokens spill
/// every pass over them to memory. 500 SciFact documents encoded 7–10%
/// faster in passes of 4–6 documents than of 32 (interleaved, Intel Xeon with
/// AVX-512); queries of 32 tokens are within 2% from 16 to 32 per pass.
const CPU_PASS_ROWS: usize = 1024;

/// Most buffers kept in [`CpuBackend::pool`] (a layer has ~8 activations alive).
const POOL_BUFFERS: usize = 8;

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// This backend with its f32 linear layers run as exact three-part bf16
    /// splits on the AMX tiles ([`bf16::PackedWeight::pack_split`]: six bf16
    /// products per f32 one, error measured below the FMA gemm's) wherever the
    /// CPU has AMX-BF16, whatever `COLWGPU_F32_GEMM` says and past the packing
    /// budget; elsewhere unchanged. The default already does this on AMX
    /// CPUs, within [`sgemm::PACK_BUDGET_BYTES`].
    pub fn amx_split_f32(mut self) -> Self {
        self.amx_split = Some(true);
        self
    }

    /// This backend with its f32 linear layers on the FMA kernels (the packed
    /// AVX-512 one and the `gemm` crate) even where the CPU has AMX-BF16, as
    /// `COLWGPU_F32_GEMM=fma` (or `gemm`, `packed`) does for a process. On AMX
    /// the default runs them as exact bf16 splits on the tiles, faster
    /// (`bf16::PackedWeight::pack_split`); this is for comparing the two.
    pub fn fma_f32(mut self) -> Self {
        self.amx_split = Some(false);
        self
    }

    /// This backend with its f32 linear layers on the packed AVX-512 kernel
    /// ([`sgemm`]) at every batch size, so a text's vectors are the same bits
    /// whatever it is batched with; by default batches past
    /// [`sgemm::PACKED_MAX_ROWS`] rows run on the `gemm` crate, faster there
    /// (see that constant) but with other roundings. `COLWGPU_F32_GEMM=packed` turns it on
    /// for a process. Without AVX-512F nothing changes: every f32 linear runs
    /// on the `gemm` crate, whose rows do not depend on the batch.
    pub fn batch_invariant_f32(mut self) -> Self {
        self.batch_invariant = true;
        self
    }

    /// True when f32 linears of `rows` rows run on the packed kernel.
    fn packs_f32(&self, rows: usize) -> bool {
        rows <= sgemm::PACKED_MAX_ROWS || self.batch_invariant || sgemm::packed_requested()
    }

    /// Which kernel this backend's f32 linear layers run: "amx-bf16x3-split",
    /// "avx512-packed ≤96 rows, fma-gemm above" (weights packed once,
    /// [`sgemm`], up to [`sgemm::PACKED_MAX_ROWS`] rows), "avx512-packed"
    /// (at every size, [`CpuBackend::batch_invariant_f32`]) or "fma-gemm" (the
    /// `gemm` crate; also for weights past [`sgemm::PACK_BUDGET_BYTES`]).
    pub fn f32_linear_kernel(&self) -> &'static str {
        const _: () = assert!(sgemm::PACKED_MAX_ROWS == 96, "update the kernel name");
        if self.uses_split() {
            "amx-bf16x3-split"
        } else if sgemm::available() && self.packs_f32(usize::MAX) {
            "avx512-packed"
        } else if sgemm::available() {
            "avx512-packed ≤96 rows, fma-gemm above"
        } else {
            "fma-gemm"
        }
    }

    /// True when f32 linears run as bf16 splits on AMX (unless forced, for
    /// the weights where it pays, [`bf16::split_pays`], within the packing
    /// budget).
    fn uses_split(&self) -> bool {
        self.amx_split.unwrap_or_else(bf16::split_by_default) && bf16::split_available()
    }

    /// A backend whose linear layers run at `precision`; bf16 needs a CPU
    /// with AMX-BF16 or AVX512-BF16 and is refused with a clear error elsewhere;
    /// f16 (the gpu backend's weight storage) is always refused.
    pub fn with_precision(precision: Precision) -> Result<Self> {
        if precision == Precision::F16 {
            return Err(Error::Input(
                "--precision f16 (f16 weight storage) is a gpu backend mode, for adapters with \
                 SHADER_F16; the cpu backend runs f32 or bf16: use --precision bf16 on the CPU, \
                 or --device gpu"
                    .into(),
            ));
        }
        if precision == Precision::Bf16 && !bf16::available() {
            return Err(Error::Input(
                "--precision bf16 needs an x86-64 CPU with AVX512-BF16 (or AMX-BF16); \
                 this CPU has neither: use --precision f32"
                    .into(),
            ));
        }
        Ok(Self {
            precision,
            ..Self::default()
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Turns per-op timing on.
    pub fn enable_profiling(&mut self) {
        self.profile = Some(OpProfile::new());
    }

    /// How many lane copies of this backend exist: made by the first run of
    /// jobs side by side ([`Backend::run_jobs`]), 0 before.
    pub fn lane_backends(&self) -> usize {
        self.forks.len()
    }

    /// Per-op (calls, seconds) since profiling was enabled.
    pub fn profile(&self) -> Option<&OpProfile> {
        self.profile.as_ref()
    }

    /// A copy with this backend's arithmetic and none of its state: a lane's
    /// backend.
    fn fork(&self) -> Self {
        Self {
            profile: self.profile.as_ref().map(|_| OpProfile::new()),
            precision: self.precision,
            amx_split: self.amx_split,
            batch_invariant: self.batch_invariant,
            ..Self::default()
        }
    }

    /// A buffer of `len` elements with unspecified (stale) contents: the
    /// smallest pooled one that is long enough, or a new one.
    fn take_buffer(&mut self, len: usize) -> Vec<f32> {
        let best = self
            .pool
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= len)
            .min_by_key(|(_, b)| b.len())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut buffer = self.pool.swap_remove(i);
                buffer.truncate(len);
                buffer
            }
            None => vec![0.0f32; len],
        }
    }

    /// In profiling mode: books the time since `start` to `op`.
    fn finish_op(&mut self, op: &'static str, start: std::time::Instant) {
        if let Some(p) = self.profile.as_mut() {
            let e = p.entry(op).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += start.elapsed().as_secs_f64();
        }
    }
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` into `y` (overwritten), with `gemm`, on the
/// rayon pool when the product is large enough to share.
pub fn matmul_transposed(x: &[f32], w: &[f32], y: &mut [f32], m: usize, n: usize, k: usize) {
    gemm_x_wt(x, Weight::Rows(w), y, m, n, k, false, gemm_parallelism(m, n, k));
}

/// `y[m, n] = x[m, k] · wt[k, n]` into `y` (overwritten): [`matmul_transposed`]
/// with the weight stored transposed, which the `gemm` crate reads in place
/// (given `w[n, k]` it packs `w` on the calling thread, every call).
pub fn matmul_kn(x: &[f32], wt: &[f32], y: &mut [f32], m: usize, n: usize, k: usize) {
    gemm_x_wt(x, Weight::Cols(wt), y, m, n, k, false, gemm_parallelism(m, n, k));
}

/// [`matmul_transposed`] on the calling thread: for callers that already run
/// as one of many rayon tasks.
pub fn matmul_transposed_serial(x: &[f32], w: &[f32], y: &mut [f32], m: usize, n: usize, k: usize) {
    gemm_x_wt(x, Weight::Rows(w), y, m, n, k, false, gemm::Parallelism::None);
}

/// gemm on the whole rayon pool when the product is worth sharing.
fn gemm_parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && m * n * k > 64 * 64 * 64 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// A linear weight as the `gemm` crate is given it.
#[derive(Clone, Copy)]
enum Weight<'a> {
    /// `w[n, k]`, as loaded (one row per output feature).
    Rows(&'a [f32]),
    /// `wᵀ[k, n]` ([`PackCache::get_transposed`]).
    Cols(&'a [f32]),
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ`, plus the old `y` when `accumulate` (how a
/// bias pre-filled into `y` is added for free), with `gemm` on `par`.
#[allow(clippy::too_many_arguments)]
fn gemm_x_wt(
    x: &[f32],
    w: Weight<'_>,
    y: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    par: gemm::Parallelism,
) {
    // w(j, p), read as rhs(p, j) = w[p·rs + j·cs].
    let (w, rs, cs) = match w {
        Weight::Rows(w) => (w, 1, k),
        Weight::Cols(wt) => (wt, n, 1),
    };
    // Real checks, not debug ones: the unsafe gemm call below relies on them.
    assert_eq!(x.len(), m * k, "gemm: x is not m × k");
    assert_eq!(w.len(), n * k, "gemm: w is not n × k");
    assert_eq!(y.len(), m * n, "gemm: y is not m × n");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            y.fill(0.0);
        }
        return;
    }
    // SAFETY: the three slices hold exactly m·k, n·k and m·n elements (checked
    // above), and the strides below address only inside them:
    // x(i, p) = x[i·k + p], rhs(p, j) = w[p·rs + j·cs] with (rs, cs) = (1, k)
    // or (n, 1), y(i, j) = y[i·n + j]. gemm computes
    // dst := alpha·dst + beta·lhs·rhs, reading dst only when `accumulate`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            cs as isize,
            rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

/// Attention for one (sequence, head): `q` points at the sequence's first query
/// row of this head inside the fused QKV tensor (row stride `stride`; K and V
/// are `hidden` and `2·hidden` columns further on). Writes `seq × d` outputs at
/// `out` with row stride `hidden`.
///
/// # Safety
/// `q` must address `seq` rows of `3·hidden` columns; `out` must address `seq`
/// rows of stride `hidden` with `d` writable columns; `scores` holds `seq·n_keys`.
#[allow(clippy::too_many_arguments)]
unsafe fn attention_head(
    q: *const f32,
    stride: usize,
    seq: usize,
    n_keys: usize,
    d: usize,
    hidden: usize,
    scores: &mut [f32],
    out: *mut f32,
) {
    let scale = 1.0 / (d as f32).sqrt();
    let k = q.add(hidden);
    let v = q.add(2 * hidden);
    scaled_scores(seq, n_keys, d, q, k, stride, scale, scores);
    for row in scores.chunks_mut(n_keys) {
        softmax_in_place(row);
    }
    weighted_values(seq, d, n_keys, scores, v, stride, out, hidden);
}

/// `scores[i, j] = scale · q_i · k_j` for `m` query rows and `nk` key rows of
/// `d` columns, both with row stride `stride` (single-threaded gemm).
///
/// # Safety
/// `q` must address `m` rows and `k` `nk` rows of `d` readable values at row
/// stride `stride`; `scores` holds at least `m·nk` values.
#[allow(clippy::too_many_arguments)]
unsafe fn scaled_scores(
    m: usize,
    nk: usize,
    d: usize,
    q: *const f32,
    k: *const f32,
    stride: usize,
    scale: f32,
    scores: &mut [f32],
) {
    gemm::gemm(
        m,
        nk,
        d,
        scores.as_mut_ptr(),
        1,
        nk as isize,
        false,
        q,
        1,
        stride as isize,
        k,
        stride as isize,
        1,
        0.0f32,
        scale,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// `out[i, c] = Σ_j p[i, j] · v_j[c]` for `m` rows of probabilities over `nk`
/// value rows of `d` columns (row stride `stride`); `out` has row stride
/// `out_stride` (single-threaded gemm).
///
/// # Safety
/// `v` must address `nk` rows of `d` readable values at stride `stride`; `out`
/// `m` rows of `d` writable values at stride `out_stride`, written by no one else.
#[allow(clippy::too_many_arguments)]
unsafe fn weighted_values(
    m: usize,
    d: usize,
    nk: usize,
    p: &[f32],
    v: *const f32,
    stride: usize,
    out: *mut f32,
    out_stride: usize,
) {
    gemm::gemm(
        m,
        d,
        nk,
        out,
        1,
        out_stride as isize,
        false,
        p.as_ptr(),
        1,
        nk as isize,
        v,
        1,
        stride as isize,
        0.0f32,
        1.0f32,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Rows per task of the passes over a gemm's output (bias, GELU).
const OUTPUT_ROWS_PER_TASK: usize = 64;

/// Embedding sum (word + position + token type) and LayerNorm, one row per token.
fn embed_tokens(
    batch: &TokenBatch,
    t: &EmbeddingTables<HostMatrix>,
    eps: f32,
    mut out: Vec<f32>,
) -> Result<HostMatrix> {
    check_batch(batch, t.word.rows, t.position.rows, t.token_type.rows)?;
    let hidden = t.word.cols;
    let rows = batch.batch * batch.seq_len;
    out.resize(rows * hidden, 0.0);
    out.par_chunks_mut(hidden.max(1))
        .enumerate()
        .for_each(|(r, row)| {
            let w = &t.word.data[batch.ids[r] as usize * hidden..][..hidden];
            let p = &t.position.data[(r % batch.seq_len) * hidden..][..hidden];
            let ty = &t.token_type.data[batch.type_ids[r] as usize * hidden..][..hidden];
            for c in 0..hidden {
                row[c] = w[c] + p[c] + ty[c];
            }
            layernorm_in_place(row, &t.gamma.data, &t.beta.data, eps);
        });
    HostMatrix::new(rows, hidden, out)
}

/// `x · wᵀ (+ bias)`, then the activation.
fn linear_forward(
    x: &HostMatrix,
    w: &HostMatrix,
    bias: Option<&HostMatrix>,
    act: Activation,
    mut y: Vec<f32>,
) -> Result<HostMatrix> {
    check_linear(x, w, bias)?;
    let (m, n, k) = (x.rows, w.rows, x.cols);
    y.resize(m * n, 0.0);
    if n == 0 {
        return HostMatrix::new(m, n, y);
    }
    // Every pass over y runs on the pool: on the calling thread alone a copy
    // of a few MB leaves the other cores idle. Without GELU the bias is
    // pre-filled into y and gemm accumulates onto it; with GELU it is added
    // in the GELU pass, which reads y anyway. Either way y = bias + x·wᵀ in
    // one f32 addition, the same bits.
    let chunk = OUTPUT_ROWS_PER_TASK * n;
    let prefill = act == Activation::Identity && bias.is_some();
    if let (true, Some(b)) = (prefill, bias) {
        y.par_chunks_mut(chunk).for_each(|rows| {
            for row in rows.chunks_exact_mut(n) {
                row.copy_from_slice(&b.data);
            }
        });
    }
    let weight = match PackCache::get_transposed(w) {
        Some(wt) => Weight::Cols(wt.data()),
        None => Weight::Rows(&w.data),
    };
    gemm_x_wt(
        &x.data,
        weight,
        &mut y,
        m,
        n,
        k,
        prefill,
        gemm_parallelism(m, n, k),
    );
    if act == Activation::Gelu {
        y.par_chunks_mut(chunk).for_each(|rows| {
            if let Some(b) = bias {
                for row in rows.chunks_exact_mut(n) {
                    for (v, &bv) in row.iter_mut().zip(&b.data) {
                        *v += bv;
                    }
                }
            }
            gelu_in_place(rows)
        });
    }
    HostMatrix::new(m, n, y)
}

/// The output's shape for `kernel(x, m, bias, y, gelu)`, which writes all of
/// `y` (`m × n`): the CPU's own linear kernels ([`sgemm`], [`bf16`]) behind
/// the one shape check and output buffer.
fn linear_with(
    x: &HostMatrix,
    w: &HostMatrix,
    bias: Option<&HostMatrix>,
    act: Activation,
    mut y: Vec<f32>,
    kernel: impl FnOnce(&[f32], usize, Option<&[f32]>, &mut [f32], bool),
) -> Result<HostMatrix> {
    check_linear(x, w, bias)?;
    let (m, n) = (x.rows, w.rows);
    y.resize(m * n, 0.0);
    kernel(
        &x.data,
        m,
        bias.map(|b| &b.data[..]),
        &mut y,
        act == Activation::Gelu,
    );
    HostMatrix::new(m, n, y)
}

/// Multi-head self-attention over the fused QKV tensor, key padding masked.
fn multi_head_attention(
    qkv: &HostMatrix,
    batch: &TokenBatch,
    heads: usize,
    mut out: Vec<f32>,
) -> Result<HostMatrix> {
    let d = check_attention(qkv, batch, heads)?;
    let hidden = heads * d;
    let seq = batch.seq_len;
    let rows = batch.batch * seq;
    out.resize(rows * hidden, 0.0);
    // One (sequence, head) pair per task: S = Q·Kᵀ·scale over the attended keys,
    // row softmax, O = P·V: on AVX-512 with heads of 16·k ≤ 128 columns by
    // `attend` (register tiles, about twice as fast on query-sized heads),
    // else both products with gemm reading the fused QKV tensor in place
    // through strides. Tasks write disjoint column blocks of `out`, so the
    // output pointer is shared across them.
    let out_ptr = OutPtr(out.as_mut_ptr());
    #[cfg(target_arch = "x86_64")]
    let small_heads = super::attend::supports(d);
    // A scores buffer per rayon split, reused across its tasks.
    (0..batch.batch * heads)
        .into_par_iter()
        .for_each_init(Vec::new, |scores, task| {
            let (b, h) = (task / heads, task % heads);
            let n_keys = (batch.key_lens[b] as usize).min(seq);
            let out_ptr = &out_ptr;
            if n_keys == 0 {
                // Fully masked: zeros.
                for i in 0..seq {
                    // SAFETY: row i of sequence b, columns h·d..h·d+d of `out`,
                    // written by this task alone.
                    unsafe {
                        std::slice::from_raw_parts_mut(
                            out_ptr.ptr().add((b * seq + i) * hidden + h * d),
                            d,
                        )
                        .fill(0.0);
                    }
                }
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if small_heads {
                let q = qkv.data[b * seq * 3 * hidden + h * d..].as_ptr();
                // SAFETY: q, k and v address rows b·seq..b·seq+seq (n_keys ≤ seq
                // of them for k and v) of head h's Q, K and V columns inside
                // `qkv.data` (checked by check_attention); the destination
                // block is this task's alone; supports(d) holds.
                unsafe {
                    super::attend::head(
                        q,
                        q.add(hidden),
                        q.add(2 * hidden),
                        3 * hidden,
                        seq,
                        n_keys,
                        d,
                        out_ptr.ptr().add(b * seq * hidden + h * d),
                        hidden,
                        scores,
                    )
                };
                return;
            }
            scores.clear();
            scores.resize(seq * n_keys, 0.0);
            // SAFETY: every address below lies inside `qkv.data` (rows b·seq..b·seq+seq,
            // columns of head h in the Q, K or V block) or inside `scores`; the
            // destination block (rows of sequence b, columns h·d..h·d+d of `out`) is
            // written by this task alone.
            unsafe {
                attention_head(
                    qkv.data.as_ptr().add(b * seq * 3 * hidden + h * d),
                    3 * hidden,
                    seq,
                    n_keys,
                    d,
                    hidden,
                    scores,
                    out_ptr.ptr().add(b * seq * hidden + h * d),
                );
            }
        });
    HostMatrix::new(rows, hidden, out)
}

/// `LayerNorm(x + residual)`, row by row.
fn add_and_layernorm(
    x: &HostMatrix,
    residual: &HostMatrix,
    gamma: &HostMatrix,
    beta: &HostMatrix,
    eps: f32,
    mut out: Vec<f32>,
) -> Result<HostMatrix> {
    check_same("add_layernorm", x, residual)?;
    let hidden = x.cols.max(1);
    out.resize(x.data.len(), 0.0);
    out.par_chunks_mut(hidden)
        .zip(x.data.par_chunks(hidden))
        .zip(residual.data.par_chunks(hidden))
        .for_each(|((row, x_row), residual_row)| {
            for ((o, a), b) in row.iter_mut().zip(x_row).zip(residual_row) {
                *o = a + b;
            }
            layernorm_in_place(row, &gamma.data, &beta.data, eps);
        });
    HostMatrix::new(x.rows, x.cols, out)
}

/// Every row scaled to unit L2 norm.
fn l2_normalize_rows(x: &HostMatrix, mut out: Vec<f32>) -> Result<HostMatrix> {
    out.clear();
    out.extend_from_slice(&x.data);
    out.par_chunks_mut(x.cols.max(1)).for_each(|row| {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        let inv = 1.0 / norm.max(1e-12);
        row.iter_mut().for_each(|v| *v *= inv);
    });
    HostMatrix::new(x.rows, x.cols, out)
}

// ---- Vision-language ops (Qwen2-VL): the CPU twins of norm.wgsl,
// elementwise.wgsl, rotary.wgsl and attention_gqa.wgsl.

/// `σ(x) = 1 / (1 + e⁻ˣ)`.
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Rows of `cols` values per rayon task in the element-wise ops.
fn rows_per_task(cols: usize) -> usize {
    (16_384 / cols.max(1)).max(1)
}

/// LayerNorm or RMSNorm of every row.
fn norm_rows(
    x: &HostMatrix,
    gamma: &HostMatrix,
    beta: Option<&HostMatrix>,
    eps: f32,
    mut out: Vec<f32>,
) -> Result<HostMatrix> {
    check_norm(
        if beta.is_some() {
            "layer_norm"
        } else {
            "rms_norm"
        },
        x,
        gamma,
        beta,
    )?;
    let hidden = x.cols.max(1);
    out.clear();
    out.extend_from_slice(&x.data);
    out.par_chunks_mut(hidden).for_each(|row| match beta {
        Some(b) => layernorm_in_place(row, &gamma.data, &b.data, eps),
        None => {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            for (v, g) in row.iter_mut().zip(&gamma.data) {
                *v = *v * inv * g;
            }
        }
    });
    HostMatrix::new(x.rows, x.cols, out)
}

/// Element-wise sum.
fn add_elementwise(x: &HostMatrix, y: &HostMatrix, mut out: Vec<f32>) -> Result<HostMatrix> {
    check_same("add", x, y)?;
    out.resize(x.data.len(), 0.0);
    let chunk = rows_per_task(x.cols) * x.cols.max(1);
    out.par_chunks_mut(chunk)
        .zip(x.data.par_chunks(chunk))
        .zip(y.data.par_chunks(chunk))
        .for_each(|((o, a), b)| {
            for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                *o = a + b;
            }
        });
    HostMatrix::new(x.rows, x.cols, out)
}

/// quick_gelu or exact GELU, element-wise.
fn unary_elementwise(x: &HostMatrix, op: Unary, mut out: Vec<f32>) -> Result<HostMatrix> {
    out.clear();
    out.extend_from_slice(&x.data);
    let chunk = rows_per_task(x.cols) * x.cols.max(1);
    out.par_chunks_mut(chunk).for_each(|c| match op {
        Unary::QuickGelu => c.iter_mut().for_each(|v| *v *= sigmoid(1.702 * *v)),
        Unary::Gelu => gelu_in_place(c),
        Unary::GeluTanh => c.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
    });
    HostMatrix::new(x.rows, x.cols, out)
}

/// GELU, tanh approximation (as torch's `gelu(approximate="tanh")`).
pub fn gelu_tanh(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // √(2/π)
    0.5 * x * (1.0 + (K * (x + 0.044_715 * x * x * x)).tanh())
}

/// `gelu_tanh(gate) · up`, element-wise.
fn geglu_elementwise(gate: &HostMatrix, up: &HostMatrix, mut out: Vec<f32>) -> Result<HostMatrix> {
    check_same("geglu", gate, up)?;
    out.resize(gate.data.len(), 0.0);
    let chunk = rows_per_task(gate.cols) * gate.cols.max(1);
    out.par_chunks_mut(chunk)
        .zip(gate.data.par_chunks(chunk))
        .zip(up.data.par_chunks(chunk))
        .for_each(|((o, g), u)| {
            for ((o, g), u) in o.iter_mut().zip(g).zip(u) {
                *o = gelu_tanh(*g) * u;
            }
        });
    HostMatrix::new(gate.rows, gate.cols, out)
}

/// `silu(gate) · up` over the halves of each row.
fn swiglu_rows(x: &HostMatrix, mut out: Vec<f32>) -> Result<HostMatrix> {
    let f = check_swiglu(x)?;
    out.resize(x.rows * f, 0.0);
    if f == 0 {
        return HostMatrix::new(x.rows, 0, out);
    }
    out.par_chunks_mut(f)
        .zip(x.data.par_chunks(2 * f))
        .for_each(|(o, row)| {
            let (gate, up) = row.split_at(f);
            for ((o, g), u) in o.iter_mut().zip(gate).zip(up) {
                *o = g * sigmoid(*g) * u;
            }
        });
    HostMatrix::new(x.rows, f, out)
}

/// Rotate-half rotary embeddings on heads `0..heads` of every row.
fn rotary_rows(
    x: &HostMatrix,
    table: &HostMatrix,
    heads: usize,
    d: usize,
    mut out: Vec<f32>,
) -> Result<HostMatrix> {
    check_rotary(x, table, heads, d)?;
    out.clear();
    out.extend_from_slice(&x.data);
    let half = d / 2;
    out.par_chunks_mut(x.cols.max(1))
        .zip(table.data.par_chunks(d))
        .for_each(|(row, t)| {
            let (cos, sin) = t.split_at(half);
            for head in row[..heads * d].chunks_exact_mut(d) {
                let (a, b) = head.split_at_mut(half);
                for c in 0..half {
                    let (x1, x2) = (a[c], b[c]);
                    a[c] = x1 * cos[c] - x2 * sin[c];
                    b[c] = x2 * cos[c] + x1 * sin[c];
                }
            }
        });
    HostMatrix::new(x.rows, x.cols, out)
}

/// Query rows per attention task: one gemm covers the union of their spans.
const SPAN_BLOCK: usize = 32;

/// Grouped-query attention with a key span per row. Each task takes a block
/// of [`SPAN_BLOCK`] query rows and one query head: S = Q·Kᵀ·scale over the
/// union of the block's spans (gemm, strided reads of the fused tensor), a
/// softmax over each row's own span (zeros elsewhere), O = P·V (gemm).
fn attention_spans(
    qkv: &HostMatrix,
    spans: &KeySpans,
    qh: usize,
    kvh: usize,
    d: usize,
    mut out: Vec<f32>,
) -> Result<HostMatrix> {
    check_attention_gqa(qkv, spans, qh, kvh, d)?;
    let rows = qkv.rows;
    let stride = qkv.cols;
    let hidden = qh * d;
    let group = qh / kvh;
    let scale = 1.0 / (d as f32).sqrt();
    out.clear();
    out.resize(rows * hidden, 0.0);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let blocks = rows.div_ceil(SPAN_BLOCK);
    (0..blocks * qh)
        .into_par_iter()
        .for_each_init(Vec::new, |scores: &mut Vec<f32>, task| {
            let out_ptr = &out_ptr;
            let (blk, h) = (task / qh, task % qh);
            let r0 = blk * SPAN_BLOCK;
            let r1 = (r0 + SPAN_BLOCK).min(rows);
            let live = spans.spans[r0..r1].iter().filter(|s| s[1] > s[0]);
            let lo = live.clone().map(|s| s[0] as usize).min();
            let hi = live.map(|s| s[1] as usize).max();
            let (Some(lo), Some(hi)) = (lo, hi) else {
                return; // every row masked: the zeros already there
            };
            let (m, nk) = (r1 - r0, hi - lo);
            scores.clear();
            scores.resize(m * nk, 0.0);
            let g = h / group;
            let q = qkv.data[r0 * stride + h * d..].as_ptr();
            let k = qkv.data[lo * stride + (qh + g) * d..].as_ptr();
            let v = qkv.data[lo * stride + (qh + kvh + g) * d..].as_ptr();
            // SAFETY: q addresses rows r0..r1 (stride `stride`, d columns of head h),
            // k and v rows lo..hi of key/value head g, all inside qkv.data (spans
            // were checked to lie in 0..rows); `scores` holds m·nk values.
            unsafe { scaled_scores(m, nk, d, q, k, stride, scale, scores) };
            for (i, row) in scores.chunks_mut(nk).enumerate() {
                let [s, e] = spans.spans[r0 + i];
                let (s, e) = (s as usize, e as usize);
                if e <= s {
                    row.fill(0.0);
                    continue;
                }
                row[..s - lo].fill(0.0);
                row[e - lo..].fill(0.0);
                softmax_in_place(&mut row[s - lo..e - lo]);
            }
            // SAFETY: v as above; the destination is rows r0..r1, columns
            // h·d..h·d+d of `out` (row stride `hidden`), written by this task alone.
            unsafe {
                weighted_values(
                    m,
                    d,
                    nk,
                    scores,
                    v,
                    stride,
                    out_ptr.ptr().add(r0 * hidden + h * d),
                    hidden,
                )
            };
        });
    HostMatrix::new(rows, hidden, out)
}

impl Backend for CpuBackend {
    type Tensor = HostMatrix;
    type Weight = HostMatrix;

    fn describe(&self) -> String {
        match self.precision {
            Precision::F32 | Precision::F16 => format!(
                "cpu (native, {} threads, f32 linears on {})",
                rayon::current_num_threads(),
                self.f32_linear_kernel()
            ),
            Precision::Bf16 => format!(
                "cpu (native, {} threads, bf16 linears on {})",
                rayon::current_num_threads(),
                bf16::kernel_name()
            ),
        }
    }

    fn weight(&self, _label: &str, m: &HostMatrix) -> Result<HostMatrix> {
        Ok(m.clone())
    }

    fn embed(
        &mut self,
        batch: &TokenBatch,
        t: &EmbeddingTables<HostMatrix>,
        eps: f32,
    ) -> Result<HostMatrix> {
        let start = Instant::now();
        let buffer = self.take_buffer(batch.batch * batch.seq_len * t.word.cols);
        let out = embed_tokens(batch, t, eps, buffer);
        self.finish_op("embed", start);
        out
    }

    fn linear(
        &mut self,
        x: &HostMatrix,
        w: &HostMatrix,
        bias: Option<&HostMatrix>,
        act: Activation,
    ) -> Result<HostMatrix> {
        let start = Instant::now();
        let buffer = self.take_buffer(x.rows * w.rows);
        // bf16 packings ([`PackCache::get`] for `--precision bf16`, the
        // exact split [`PackCache::get_split`] for f32 on AMX) and the f32
        // panels are made once, on first use, and kept with the weight.
        let f32_split = match self.precision {
            Precision::F32 | Precision::F16 if self.uses_split() => {
                if self.amx_split == Some(true) {
                    Some(PackCache::get_split(w))
                } else if bf16::split_pays(w.rows, w.cols) {
                    PackCache::get_split_within_budget(w)
                } else {
                    None
                }
            }
            _ => None,
        };
        let out = match (self.precision, f32_split) {
            // F16 is refused by `with_precision`.
            (Precision::F32 | Precision::F16, Some(packed)) => {
                linear_with(x, w, bias, act, buffer, |x, m, b, y, gelu| {
                    bf16::linear(x, m, packed, b, y, gelu, true)
                })
            }
            // A few rows (one query) read the weight in place: no packing
            // for a one-off call, the same bits as the packed kernel.
            (Precision::F32 | Precision::F16, None)
                if x.rows <= sgemm::IN_PLACE_ROWS && sgemm::available() =>
            {
                linear_with(x, w, bias, act, buffer, |x, m, b, y, gelu| {
                    sgemm::linear_in_place(x, m, &w.data, w.rows, b, y, gelu, true)
                })
            }
            // Up to about a hundred rows the weight packed once wins; larger
            // batches run faster on the `gemm` crate (`PACKED_MAX_ROWS`).
            (Precision::F32 | Precision::F16, None) if self.packs_f32(x.rows) => {
                match PackCache::get_f32(w) {
                    Some(packed) => linear_with(x, w, bias, act, buffer, |x, m, b, y, gelu| {
                        sgemm::linear(x, m, packed, b, y, gelu, true)
                    }),
                    None => linear_forward(x, w, bias, act, buffer),
                }
            }
            (Precision::F32 | Precision::F16, None) => linear_forward(x, w, bias, act, buffer),
            (Precision::Bf16, _) => linear_with(x, w, bias, act, buffer, |x, m, b, y, gelu| {
                bf16::linear(x, m, PackCache::get(w), b, y, gelu, true)
            }),
        };
        let op = match act {
            Activation::Identity => "linear",
            Activation::Gelu => "linear+gelu",
        };
        self.finish_op(op, start);
        out
    }

    fn attention(
        &mut self,
        qkv: &HostMatrix,
        batch: &TokenBatch,
        heads: usize,
    ) -> Result<HostMatrix> {
        let start = Instant::now();
        let buffer = self.take_buffer(qkv.rows * qkv.cols / 3);
        let out = multi_head_attention(qkv, batch, heads, buffer);
        self.finish_op("attention", start);
        out
    }

    fn add_layernorm(
        &mut self,
        x: &HostMatrix,
        residual: &HostMatrix,
        gamma: &HostMatrix,
        beta: &HostMatrix,
        eps: f32,
    ) -> Result<HostMatrix> {
        let start = Instant::now();
        let buffer = self.take_buffer(x.data.len());
        let out = add_and_layernorm(x, residual, gamma, beta, eps, buffer);
        self.finish_op("add+layernorm", start);
        out
    }

    fn l2_normalize(&mut self, x: &HostMatrix) -> Result<HostMatrix> {
        let start = Instant::now();
        let buffer = self.take_buffer(x.data.len());
        let out = l2_normalize_rows(x, buffer);
        self.finish_op("l2norm", start);
        out
    }

    fn read(&mut self, x: &HostMatrix) -> Result<HostMatrix> {
        Ok(x.clone())
    }

    fn max_pass_rows(&self) -> Option<usize> {
        Some(CPU_PASS_ROWS)
    }

    /// The rayon pool's thread count capped at [`lanes::MAX_LANES`], or
    /// `COLWGPU_CPU_LANES` (1 turns lanes off).
    fn lanes(&self) -> usize {
        lanes::count(rayon::current_num_threads())
    }

    /// With two or more jobs and lanes: the jobs spread over forks of this
    /// backend, one per lane and single-threaded up to 8 threads ([`super::lanes`]), their op times added to this
    /// one's profile; otherwise one after another here, each op on all threads.
    fn run_jobs<T, F>(&mut self, jobs: usize, job: F) -> Result<Vec<T>>
    where
        T: Send,
        F: Fn(&mut Self, usize) -> Result<T> + Sync,
    {
        let threads = rayon::current_num_threads();
        let lanes = self.lanes().min(jobs);
        let pools = if lanes >= 2 {
            lanes::pools(lanes, threads)
        } else {
            None
        };
        let Some(pools) = pools else {
            return (0..jobs).map(|j| job(self, j)).collect();
        };
        while self.forks.len() < lanes {
            let fork = self.fork();
            self.forks.push(fork);
        }
        for fork in &mut self.forks {
            fork.profile = self.profile.as_ref().map(|_| OpProfile::new());
        }
        let done = lanes::run(&mut self.forks[..lanes], &pools, jobs, &job);
        if let Some(profile) = self.profile.as_mut() {
            for fork in &mut self.forks {
                for (op, (calls, seconds)) in fork.profile.take().unwrap_or_default() {
                    let e = profile.entry(op).or_insert((0, 0.0));
                    e.0 += calls;
                    e.1 += seconds;
                }
            }
        }
        lanes::in_order(done, jobs)
    }

    fn recycle(&mut self, x: HostMatrix) {
        if self.pool.len() >= POOL_BUFFERS {
            // Keep the largest buffers: drop the smallest of the pool and `x`.
            if let Some((i, _)) = self.pool.iter().enumerate().min_by_key(|(_, b)| b.len()) {
                if self.pool[i].len() < x.data.len() {
                    self.pool.swap_remove(i);
                } else {
                    return;
                }
            }
        }
        self.pool.push(x.data);
    }

    fn weight_owned(&self, _label: &str, m: HostMatrix) -> Result<HostMatrix> {
        Ok(m)
    }

    fn upload_tensor(&mut self, m: &HostMatrix) -> Result<HostMatrix> {
        Ok(m.clone())
    }

    fn reshape(&mut self, x: HostMatrix, rows: usize, cols: usize) -> Result<HostMatrix> {
        check_reshape(&x, rows, cols)?;
        HostMatrix::new(rows, cols, x.data)
    }

    fn add(&mut self, x: &HostMatrix, y: &HostMatrix) -> Result<HostMatrix> {
        let start = Instant::now();
        let buffer = self.take_buffer(x.data.len());
        let out = add_elementwise(x, y, buffer);
        self.finish_op("add", start);
        out
    }

    fn layer_norm(
        &mut self,
        x: &HostMatrix,
        gamma: &HostMatrix,
        beta: &HostMatrix,
        eps: f32,
    ) -> Result<HostMatrix> {
        let start = Instant::now();
        let buffer = self.take_buffer(x.data.len());
        let out = norm_rows(x, gamma, Some(beta), eps, buffer);
        self.finish_op("layernorm", start);
        out
    }

    fn rms_norm(&mut self, x: &HostMatrix, w: &HostMatrix, eps: f32) -> Result<HostMatrix> {
        let start = Instant::now();
        let buffer = self.take_buffer(x.data.len());
        let out = norm_rows(x, w, None, eps, buffer);
        self.finish_op("rmsnorm", start);
        out
    }

    fn unary(&mut self, x: &HostMatrix, op: Unary) -> Result<HostMatrix> {
        let start = Instant::now();
        let buffer = self.take_buffer(x.data.len());
        let out = unary_elementwise(x, op, buffer);
        self.finish_op("unary", start);
        out
    }

    fn swiglu(&mut self, x: &HostMatrix) -> Result<HostMatrix> {
        let start = Instant::now();
        let buffer = self.take_buffer(x.data.len() / 2);
        let out = swiglu_rows(x, buffer);
        self.finish_op("swiglu", start);
        out
    }

    fn geglu(&mut self, gate: &HostMatrix, up: &HostMatrix) -> Result<HostMatrix> {
        let start = Instant::now();
        let buffer = self.take_buffer(gate.data.len());
        let out = geglu_elementwise(gate, up, buffer);
        self.finish_op("geglu", start);
        out
    }

    fn rotary(
        &mut self,
        x: &HostMatrix,
        table: &HostMatrix,
        heads: usize,
        head_dim: usize,
    ) -> Result<HostMatrix> {
        let start = Instant::now();
        let buffer = self.take_buffer(x.data.len());
        let out = rotary_rows(x, table, heads, head_dim, buffer);
        self.finish_op("rotary", start);
        out
    }

    fn attention_gqa(
        &mut self,
        qkv: &HostMatrix,
        spans: &KeySpans,
        q_heads: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<HostMatrix> {
        let start = Instant::now();
        let buffer = self.take_buffer(qkv.rows * q_heads * head_dim);
        let out = attention_spans(qkv, spans, q_heads, kv_heads, head_dim, buffer);
        self.finish_op("attention_gqa", start);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest |a[i] − b[i]|.
    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
    }

    fn matrix(rows: usize, cols: usize, seed: usize) -> HostMatrix {
        let data = (0..rows * cols)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 * 2e-3 - 1.0)
            .collect();
        HostMatrix::new(rows, cols, data).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Outputs written into recycled buffers (stale contents, here NaN) must equal
    /// those written into fresh ones: every op overwrites every element.
    #[test]
    fn recycled_buffers_do_not_leak_into_outputs() {
        let mut backend = CpuBackend::new();
        let (seq, heads, d) = (3, 2, 2);
        let batch = TokenBatch {
            ids: vec![0; 2 * seq],
            type_ids: vec![0; 2 * seq],
            batch: 2,
            seq_len: seq,
            key_lens: vec![2, 0], // the second sequence is fully masked
        };
        let qkv = matrix(2 * seq, 3 * heads * d, 1);
        let w = matrix(5, heads * d, 2);
        let gamma = matrix(1, heads * d, 3);
        let beta = matrix(1, heads * d, 4);
        let run = |backend: &mut CpuBackend| {
            let ctx = backend.attention(&qkv, &batch, heads)?;
            let lin = backend.linear(&ctx, &w, None, Activation::Gelu)?;
            let norm = backend.add_layernorm(&ctx, &ctx, &gamma, &beta, 1e-12)?;
            let unit = backend.l2_normalize(&lin)?;
            Ok::<_, crate::error::Error>([ctx, lin, norm, unit])
        };
        let fresh = run(&mut backend).unwrap_or_else(|e| panic!("{e}"));
        assert!(fresh[0].data[seq * heads * d..].iter().all(|&v| v == 0.0));
        for size in [24, 30, 24, 24, 64] {
            backend.recycle(
                HostMatrix::new(1, size, vec![f32::NAN; size]).unwrap_or_else(|e| panic!("{e}")),
            );
        }
        let reused = run(&mut backend).unwrap_or_else(|e| panic!("{e}"));
        for (a, b) in fresh.iter().zip(&reused) {
            assert_eq!(a.data, b.data);
        }
    }

    /// With `batch_invariant_f32`, a batch past `PACKED_MAX_ROWS` stays on
    /// the packed kernel: its rows equal, bit for bit, the same rows computed
    /// alone (a few rows, on the in-place path).
    #[test]
    fn batch_invariant_f32_keeps_rows_independent_of_the_batch() {
        if !sgemm::available() {
            return;
        }
        let mut backend = CpuBackend::new().fma_f32().batch_invariant_f32();
        assert_eq!(backend.f32_linear_kernel(), "avx512-packed");
        let run = batch_and_last_rows(&mut backend, sgemm::PACKED_MAX_ROWS + 20, 10);
        assert_eq!(format!("{:?}", run.w.packed), "f32");
        assert_eq!(run.alone_packed, "-");
        assert_eq!(run.y_last.data, run.y.data[(run.x.rows - 5) * run.w.rows..]);
    }

    /// A GELU linear (n = 70, k = 300) of an `m`-row batch (inputs seeded
    /// from `seed`), and of its last five rows alone against a fresh copy of
    /// the weight, with the copy's packing as left by that call.
    struct BatchAndLastRows {
        x: HostMatrix,
        w: HostMatrix,
        b: HostMatrix,
        y: HostMatrix,
        y_last: HostMatrix,
        alone_packed: String,
    }

    fn batch_and_last_rows(backend: &mut CpuBackend, m: usize, seed: usize) -> BatchAndLastRows {
        let (n, k) = (70, 300);
        let x = matrix(m, k, seed);
        let w = matrix(n, k, seed + 1);
        let b = matrix(1, n, seed + 2);
        let y = backend
            .linear(&x, &w, Some(&b), Activation::Gelu)
            .unwrap_or_else(|e| panic!("{e}"));
        let last = HostMatrix::new(5, k, x.data[(m - 5) * k..].to_vec())
            .unwrap_or_else(|e| panic!("{e}"));
        let alone = matrix(n, k, seed + 1);
        let y_last = backend
            .linear(&last, &alone, Some(&b), Activation::Gelu)
            .unwrap_or_else(|e| panic!("{e}"));
        let alone_packed = format!("{:?}", alone.packed);
        BatchAndLastRows { x, w, b, y, y_last, alone_packed }
    }

    /// Where AMX-BF16 is granted, the default f32 linear is the exact bf16
    /// split (the weight packed once, within the budget): a batch's rows
    /// equal the same rows computed alone, bit for bit, and stay within f32
    /// rounding of the FMA kernels' (bias and GELU included).
    #[test]
    fn default_f32_on_amx_is_the_split_and_batch_invariant() {
        if !(bf16::split_available() && bf16::split_by_default()) {
            eprintln!("skipped: no AMX-BF16 here (or COLWGPU_F32_GEMM names an FMA kernel)");
            return;
        }
        let mut backend = CpuBackend::new();
        assert_eq!(backend.f32_linear_kernel(), "amx-bf16x3-split");
        let BatchAndLastRows { x, w, b, y, y_last, alone_packed } =
            batch_and_last_rows(&mut backend, 300, 13);
        assert_eq!(format!("{:?}", w.packed), "split");
        assert_eq!(alone_packed, "split");
        assert_eq!(y_last.data, y.data[(x.rows - 5) * w.rows..]);
        let fma = CpuBackend::new()
            .fma_f32()
            .linear(&x, &w, Some(&b), Activation::Gelu)
            .unwrap_or_else(|e| panic!("{e}"));
        let worst = max_abs_diff(&y.data, &fma.data);
        // |y| reaches ~100 here (k = 300 terms of size ≤ 1): a few f32 ulps.
        assert!(worst < 1e-4, "split vs fma: max |Δ| {worst}");
        assert_ne!(y.data, fma.data, "the split did not run");
        // A weight with more inputs than the split pays for stays on FMA.
        let k = 4100;
        assert!(!bf16::split_pays(16, k));
        let wide = matrix(16, k, 16);
        backend
            .linear(&matrix(40, k, 17), &wide, None, Activation::Identity)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{:?}", wide.packed).contains("split"), "{:?}", wide.packed);
    }

    /// Where the CPU has AVX-512F, the FMA f32 linear (the default without
    /// AMX) runs the packed kernel: past `IN_PLACE_ROWS` rows the weight is packed on first use and
    /// kept (the second call reuses it), and the result stays within f32
    /// rounding of the `gemm` crate's on the same inputs (bias and GELU
    /// included); a few rows on a fresh weight pack nothing and give the same
    /// bits; past `PACKED_MAX_ROWS` rows the crate runs, packing nothing.
    /// Elsewhere nothing is packed.
    #[test]
    fn f32_linear_packs_weights_once_and_agrees_with_gemm() {
        let mut backend = CpuBackend::new().fma_f32();
        // Between the rows that read the weight in place and the crate's.
        const { assert!(sgemm::IN_PLACE_ROWS + 8 < sgemm::PACKED_MAX_ROWS) };
        let (m, n, k) = ((sgemm::IN_PLACE_ROWS + sgemm::PACKED_MAX_ROWS) / 2 + 1, 70, 300);
        let x = matrix(m, k, 5);
        let w = matrix(n, k, 6);
        let b = matrix(1, n, 7);
        assert_eq!(format!("{:?}", w.packed), "-");
        let y = backend
            .linear(&x, &w, Some(&b), Activation::Gelu)
            .unwrap_or_else(|e| panic!("{e}"));
        if !sgemm::available() {
            assert_eq!(backend.f32_linear_kernel(), "fma-gemm");
            assert_eq!(format!("{:?}", w.packed), "-");
            return;
        }
        assert!(backend.f32_linear_kernel().starts_with("avx512-packed"));
        assert_eq!(format!("{:?}", w.packed), "f32");
        let first = PackCache::get_f32(&w).map(|p| p as *const sgemm::PackedF32);
        let again = backend
            .linear(&x, &w, Some(&b), Activation::Gelu)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(y.data, again.data);
        assert_eq!(
            PackCache::get_f32(&w).map(|p| p as *const sgemm::PackedF32),
            first
        );
        let gemm = linear_forward(&x, &w, Some(&b), Activation::Gelu, Vec::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let worst = max_abs_diff(&y.data, &gemm.data);
        // |y| reaches ~100 here (k = 300 terms of size ≤ 1): a few f32 ulps.
        assert!(worst < 1e-4, "packed kernel vs gemm crate: max |Δ| {worst}");
        // A few rows read a fresh weight in place: nothing is packed, and the
        // rows equal the packed kernel's bit for bit.
        let fresh = matrix(n, k, 6);
        let few = HostMatrix::new(5, k, x.data[..5 * k].to_vec()).unwrap_or_else(|e| panic!("{e}"));
        let y_few = backend
            .linear(&few, &fresh, Some(&b), Activation::Gelu)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("{:?}", fresh.packed), "-");
        assert_eq!(y_few.data, y.data[..5 * n]);
        // Past PACKED_MAX_ROWS a fresh weight runs on the gemm crate: only
        // its transpose is made, and the bits are the crate's on w itself.
        let m = sgemm::PACKED_MAX_ROWS + 1;
        let many = matrix(m, k, 8);
        let fresh = matrix(n, k, 9);
        let y_many = backend
            .linear(&many, &fresh, Some(&b), Activation::Gelu)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format!("{:?}", fresh.packed), "f32ᵀ");
        let mut on_w = vec![0.0; m * n];
        matmul_transposed(&many.data, &fresh.data, &mut on_w, m, n, k);
        for row in on_w.chunks_exact_mut(n) {
            for (v, bv) in row.iter_mut().zip(&b.data) {
                *v += bv;
            }
            gelu_in_place(row);
        }
        assert_eq!(y_many.data, on_w);
    }

    /// The `gemm` crate on a weight's transpose (read in place instead of
    /// packed) computes `x·wᵀ` to f32 rounding, like the crate on the weight,
    /// at tiny, odd and MiniLM shapes, on the pool and on one thread.
    #[test]
    fn gemm_on_transposed_weight_is_an_f32_product() {
        for (m, n, k) in [(1, 7, 5), (37, 33, 17), (130, 96, 300), (600, 384, 384)] {
            let x = matrix(m, k, 11);
            let w = matrix(n, k, 12);
            let wt = sgemm::TransposedF32::within_budget(&w.data, n, k)
                .unwrap_or_else(|| panic!("packing budget spent by a test"));
            for (i, v) in wt.data().iter().enumerate() {
                assert_eq!(*v, w.data[(i % n) * k + i / n], "wᵀ[{}, {}]", i / n, i % n);
            }
            let mut pool = vec![f32::NAN; m * n];
            let mut serial = vec![f32::NAN; m * n];
            matmul_kn(&x.data, wt.data(), &mut pool, m, n, k);
            let par = gemm::Parallelism::None;
            gemm_x_wt(&x.data, Weight::Cols(wt.data()), &mut serial, m, n, k, false, par);
            for (i, (a, b)) in pool.iter().zip(&serial).enumerate() {
                let (r, c) = (i / n, i % n);
                let (xr, wc) = (&x.data[r * k..][..k], &w.data[c * k..][..k]);
                let exact: f64 = xr.iter().zip(wc).map(|(&p, &q)| p as f64 * q as f64).sum();
                let scale: f64 = xr.iter().zip(wc).map(|(&p, &q)| (p * q).abs() as f64).sum();
                // k products summed in f32: within k·2⁻²⁴ of Σ|x·w|.
                let bound = k as f64 * 6e-8 * scale + 1e-30;
                for got in [a, b] {
                    assert!(
                        (*got as f64 - exact).abs() <= bound,
                        "{m}×{n}×{k} [{r}, {c}]: {got} vs {exact}"
                    );
                }
            }
        }
    }
}
