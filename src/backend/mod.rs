//! The operations the models need, behind one trait with two implementations:
//! [`cpu::CpuBackend`] (native Rust: gemm + rayon; also the reference the WGSL
//! is tested against) and [`gpu::GpuBackend`] (the WGSL kernels on any wgpu
//! adapter). `src/model/` is written once against [`Backend`].

#[cfg(target_arch = "x86_64")]
mod attend;
pub mod cpu;
pub mod device;
pub mod gpu;
pub mod ops;
pub mod bf16;
mod blocks;
pub mod lanes;
pub mod sgemm;
pub mod vecmath;

pub use crate::kernels::matmul::Activation;
pub use device::{resolve_device, DeviceChoice};
pub use vecmath::gelu;

use crate::error::{Error, Result};

/// A row-major 2-D f32 matrix on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
    /// The CPU backend's packings of this matrix as a linear weight, each made
    /// on its first use (weights are never modified after loading; a matrix
    /// whose `data` is changed, or a clone of it, must not be reused as a
    /// weight on the CPU backend).
    pub(crate) packed: PackCache,
}

/// Lazily packed forms of a weight (see [`HostMatrix::packed`]): the f32
/// panels of the AVX-512 kernel and the transpose the `gemm` crate reads in
/// place (the f32 paths without AMX, by batch size), the bf16 rounding
/// (`--precision bf16`) and the exact three-term split (the default f32 path
/// on AMX: budgeted, or forced by `CpuBackend::amx_split_f32`), each made on
/// first use.
#[derive(Default, Clone)]
pub(crate) struct PackCache {
    f32: std::sync::OnceLock<Option<std::sync::Arc<sgemm::PackedF32>>>,
    transposed: std::sync::OnceLock<Option<std::sync::Arc<sgemm::TransposedF32>>>,
    rounded: std::sync::OnceLock<std::sync::Arc<bf16::PackedWeight>>,
    split: std::sync::OnceLock<std::sync::Arc<bf16::PackedWeight>>,
    /// The split made within the packing budget (the default f32 path on
    /// AMX), with its reservation; `None` once the budget was spent.
    split_budgeted: std::sync::OnceLock<Option<std::sync::Arc<BudgetedSplit>>>,
}

/// A split packing counted against [`sgemm::PACK_BUDGET_BYTES`] while alive.
#[derive(Debug)]
pub(crate) struct BudgetedSplit {
    weight: bf16::PackedWeight,
    _reserved: sgemm::Reservation,
}

impl PackCache {
    /// The f32 panel packing of `m` for [`sgemm::linear`], made on first
    /// call; `None` when this CPU lacks AVX-512F or the packing budget
    /// ([`sgemm::PACK_BUDGET_BYTES`]) is spent (then the `gemm` crate runs).
    pub(crate) fn get_f32(m: &HostMatrix) -> Option<&sgemm::PackedF32> {
        m.packed
            .f32
            .get_or_init(|| {
                sgemm::available()
                    .then(|| sgemm::PackedF32::pack_within_budget(&m.data, m.rows, m.cols))
                    .flatten()
                    .map(std::sync::Arc::new)
            })
            .as_deref()
    }

    /// `m` transposed for the `gemm` crate, made on first call; `None` when
    /// the packing budget ([`sgemm::PACK_BUDGET_BYTES`]) is spent (then the
    /// crate reads `m` itself, packing it at every call).
    pub(crate) fn get_transposed(m: &HostMatrix) -> Option<&sgemm::TransposedF32> {
        m.packed
            .transposed
            .get_or_init(|| {
                sgemm::TransposedF32::within_budget(&m.data, m.rows, m.cols)
                    .map(std::sync::Arc::new)
            })
            .as_deref()
    }

    /// The bf16-rounded packing of `m`, made on first call.
    pub(crate) fn get(m: &HostMatrix) -> &bf16::PackedWeight {
        m.packed
            .rounded
            .get_or_init(|| std::sync::Arc::new(bf16::PackedWeight::pack(&m.data, m.rows, m.cols)))
    }

    /// The split packing of `m` for the default f32 path on AMX, made on
    /// first call when the packed weights alive stay within
    /// [`sgemm::PACK_BUDGET_BYTES`]; `None` otherwise (then an FMA kernel runs).
    pub(crate) fn get_split_within_budget(m: &HostMatrix) -> Option<&bf16::PackedWeight> {
        m.packed
            .split_budgeted
            .get_or_init(|| {
                let bytes = bf16::PackedWeight::split_bytes(m.rows, m.cols);
                sgemm::Reservation::within_budget(bytes).map(|reserved| {
                    std::sync::Arc::new(BudgetedSplit {
                        weight: bf16::PackedWeight::pack_split(&m.data, m.rows, m.cols),
                        _reserved: reserved,
                    })
                })
            })
            .as_ref()
            .map(|s| &s.weight)
    }

    /// The split packing of `m` (`hi + mid + lo`, exact), made on first call.
    pub(crate) fn get_split(m: &HostMatrix) -> &bf16::PackedWeight {
        m.packed.split.get_or_init(|| {
            std::sync::Arc::new(bf16::PackedWeight::pack_split(&m.data, m.rows, m.cols))
        })
    }
}

impl std::fmt::Debug for PackCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let forms: Vec<&str> = [
            (self.f32.get().is_some_and(|p| p.is_some()), "f32"),
            (self.transposed.get().is_some_and(|p| p.is_some()), "f32ᵀ"),
            (self.rounded.get().is_some(), "bf16"),
            (
                self.split.get().is_some()
                    || self.split_budgeted.get().is_some_and(|p| p.is_some()),
                "split",
            ),
        ]
        .iter()
        .filter_map(|&(made, name)| made.then_some(name))
        .collect();
        if forms.is_empty() {
            f.write_str("-")
        } else {
            f.write_str(&forms.join("+"))
        }
    }
}

/// A cache, not part of the value.
impl PartialEq for PackCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Arithmetic of the linear layers. Each reduced precision belongs to one
/// backend; the other refuses it with an error naming the one to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 everywhere (the default).
    #[default]
    F32,
    /// CPU backend: linear layers with bf16 weights and activations, f32
    /// accumulation (AMX-BF16 or AVX512-BF16; refused on CPUs without
    /// either). Attention, norms and GELU stay f32.
    Bf16,
    /// GPU backend: linear-layer weights stored as f16 (half the memory and
    /// bandwidth), activations and accumulation f32 (adapters with
    /// SHADER_F16; refused elsewhere). Everything else stays f32.
    F16,
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" | "fp16" => Ok(Precision::F16),
            _ => Err(Error::Input(format!(
                "unknown precision '{s}' (expected f32, bf16 (cpu backend) or f16 (gpu backend))"
            ))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl HostMatrix {
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != rows * cols {
            return Err(Error::shape(
                "matrix",
                format!("{} values for a {rows}×{cols} matrix", data.len()),
            ));
        }
        Ok(Self {
            rows,
            cols,
            data,
            packed: PackCache::default(),
        })
    }

    /// A 1-row matrix (vectors: biases, LayerNorm parameters).
    pub fn vector(data: Vec<f32>) -> Self {
        Self {
            rows: 1,
            cols: data.len(),
            data,
            packed: PackCache::default(),
        }
    }

    /// Rows stacked in order (e.g. Q, K and V weights into one QKV weight).
    pub fn vstack(parts: &[&HostMatrix]) -> Result<Self> {
        let cols = parts.first().map(|p| p.cols).unwrap_or(0);
        if parts.iter().any(|p| p.cols != cols) {
            return Err(Error::shape("vstack", "parts differ in column count"));
        }
        let data = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        Ok(Self {
            rows: parts.iter().map(|p| p.rows).sum(),
            cols,
            data,
            packed: PackCache::default(),
        })
    }

    /// Vectors concatenated (e.g. Q, K and V biases).
    pub fn hconcat_vectors(parts: &[&HostMatrix]) -> Self {
        Self::vector(parts.iter().flat_map(|p| p.data.iter().copied()).collect())
    }
}

/// Anything with a 2-D shape.
pub trait Shaped {
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
}

/// BERT's embedding tables and their LayerNorm, resident on a backend.
pub struct EmbeddingTables<W> {
    pub word: W,
    pub position: W,
    pub token_type: W,
    pub gamma: W,
    pub beta: W,
}

/// A padded batch of token sequences.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// `batch * seq_len` ids, row-major, right-padded.
    pub ids: Vec<u32>,
    /// Token type ids, same shape as `ids`.
    pub type_ids: Vec<u32>,
    pub batch: usize,
    pub seq_len: usize,
    /// Per sequence: keys `j < key_lens[b]` are attended to; the rest are masked.
    pub key_lens: Vec<u32>,
}

/// Element-wise activations of the vision-language models (outside a matmul).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    /// `x · σ(1.702·x)` (Qwen2-VL's vision MLP).
    QuickGelu,
    /// Exact GELU, `0.5·x·(1 + erf(x/√2))` (Qwen2-VL's patch merger).
    Gelu,
    /// GELU, tanh approximation `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`
    /// (SigLIP's MLP, `gelu_pytorch_tanh`).
    GeluTanh,
}

/// Which keys each query row of an attention attends to: row `r` attends rows
/// `spans[r][0] .. spans[r][1]` of the same tensor (half-open; an empty span
/// yields zeros). Causal, bidirectional, block-diagonal and left-padding masks
/// are all such spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpans {
    pub spans: Vec<[u32; 2]>,
}

impl KeySpans {
    /// Block-diagonal bidirectional attention over consecutive segments of the
    /// given lengths (a vision tower's images): every row sees its whole segment.
    pub fn blocks(lengths: &[usize]) -> Self {
        let mut spans = Vec::with_capacity(lengths.iter().sum());
        let mut start = 0u32;
        for &n in lengths {
            let end = start + n as u32;
            spans.extend(std::iter::repeat_n([start, end], n));
            start = end;
        }
        Self { spans }
    }

    /// Causal attention over `pads.len()` sequences of `seq_len` rows, sequence
    /// `b` left-padded with `pads[b]` rows: a real row sees the real rows up to
    /// itself, a padding row sees nothing.
    pub fn causal_left_padded(seq_len: usize, pads: &[usize]) -> Self {
        let mut spans = Vec::with_capacity(seq_len * pads.len());
        for (b, &pad) in pads.iter().enumerate() {
            let base = (b * seq_len) as u32;
            for i in 0..seq_len {
                let r = base + i as u32;
                spans.push(if i < pad {
                    [r, r]
                } else {
                    [base + pad as u32, r + 1]
                });
            }
        }
        Self { spans }
    }

    /// Errors unless there is one span per row and each lies inside `0..rows`.
    pub fn check(&self, rows: usize) -> Result<()> {
        if self.spans.len() != rows {
            return Err(Error::shape(
                "attention_gqa",
                format!("{} key spans for {rows} rows", self.spans.len()),
            ));
        }
        if let Some((r, s)) = self
            .spans
            .iter()
            .enumerate()
            .find(|(_, s)| s[0] > s[1] || s[1] as usize > rows)
        {
            return Err(Error::shape(
                "attention_gqa",
                format!("row {r}: key span {}..{} outside 0..{rows}", s[0], s[1]),
            ));
        }
        Ok(())
    }
}

/// The operations a transformer encoder needs. GPU implementations may record
/// lazily and run everything at [`Backend::read`]: only `read` returns host data.
pub trait Backend {
    /// Activations: a `[rows, cols]` matrix resident on the backend.
    type Tensor: Shaped;
    /// Parameters, uploaded once (shared by the jobs of [`Backend::run_jobs`]).
    type Weight: Shaped + Sync;

    /// One line naming the backend and its device.
    fn describe(&self) -> String;

    /// Refuses a model whose attention heads this backend cannot run (the WGSL
    /// attention kernel holds a head in private arrays of bounded size; the
    /// CPU backend takes any head dimension).
    fn check_head_dim(&self, head_dim: usize) -> Result<()> {
        let _ = head_dim;
        Ok(())
    }

    /// Uploads a parameter matrix.
    fn weight(&self, label: &str, m: &HostMatrix) -> Result<Self::Weight>;

    /// Uploads the `[out, in]` weight of a linear layer: a weight only ever
    /// passed to [`Backend::linear`] as `w`, so the backend may store it at
    /// its reduced precision (the gpu backend's `--precision f16`). By default
    /// the same as [`Backend::weight`].
    fn linear_weight(&self, label: &str, m: &HostMatrix) -> Result<Self::Weight> {
        self.weight(label, m)
    }

    /// [`Backend::linear_weight`] of a matrix the caller no longer needs (see
    /// [`Backend::weight_owned`]).
    fn linear_weight_owned(&self, label: &str, m: HostMatrix) -> Result<Self::Weight> {
        self.weight_owned(label, m)
    }

    /// `h[r] = LayerNorm(word[ids[r]] + position[r % seq_len] + token_type[type_ids[r]])`.
    fn embed(
        &mut self,
        batch: &TokenBatch,
        tables: &EmbeddingTables<Self::Weight>,
        eps: f32,
    ) -> Result<Self::Tensor>;

    /// `y = act(x · wᵀ + bias)`, `w` in `[out, in]` layout.
    fn linear(
        &mut self,
        x: &Self::Tensor,
        w: &Self::Weight,
        bias: Option<&Self::Weight>,
        act: Activation,
    ) -> Result<Self::Tensor>;

    /// Multi-head self-attention over a fused `[batch·seq, 3·hidden]` QKV tensor.
    fn attention(
        &mut self,
        qkv: &Self::Tensor,
        batch: &TokenBatch,
        heads: usize,
    ) -> Result<Self::Tensor>;

    /// `LayerNorm(x + residual) · gamma + beta`, row-wise.
    fn add_layernorm(
        &mut self,
        x: &Self::Tensor,
        residual: &Self::Tensor,
        gamma: &Self::Weight,
        beta: &Self::Weight,
        eps: f32,
    ) -> Result<Self::Tensor>;

    /// Row-wise `x / max(‖x‖₂, 1e-12)`.
    fn l2_normalize(&mut self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Runs what is pending and returns `x` on the host.
    fn read(&mut self, x: &Self::Tensor) -> Result<HostMatrix>;

    /// Hands back an activation that is no longer needed, so the backend may
    /// reuse its memory for a later output (by default it is just dropped).
    fn recycle(&mut self, x: Self::Tensor) {
        drop(x);
    }

    /// Rows per forward pass (sequences × padded length) past which this
    /// backend runs slower, so encoders cut larger batches: `None` (no such
    /// limit) by default; the CPU backend's activations leave the cache.
    fn max_pass_rows(&self) -> Option<usize> {
        None
    }

    /// How many forward passes [`Backend::run_jobs`] runs side by side: 1
    /// by default (a GPU queue runs one at a time); the CPU backend's lanes
    /// ([`lanes`]).
    fn lanes(&self) -> usize {
        1
    }

    /// Runs `job(backend, j)` for every `j` in `0..jobs` and returns the
    /// results in `j` order, or the error of the lowest failing `j`. By
    /// default one after another on `self`; the CPU backend spreads them
    /// over its lanes, each a copy of itself on its own thread(s), so a job must
    /// not depend on which backend value runs it.
    fn run_jobs<T, F>(&mut self, jobs: usize, job: F) -> Result<Vec<T>>
    where
        Self: Sized,
        T: Send,
        F: Fn(&mut Self, usize) -> Result<T> + Sync,
    {
        (0..jobs).map(|j| job(self, j)).collect()
    }

    // Vision-language ops (Qwen2-VL and ColQwen2).

    /// Uploads a parameter matrix the caller no longer needs (the CPU
    /// backend keeps it without a copy: a full-size vision-language model is
    /// gigabytes).
    fn weight_owned(&self, label: &str, m: HostMatrix) -> Result<Self::Weight> {
        self.weight(label, &m)
    }

    /// Uploads activations computed on the host (token embeddings gathered on
    /// the host, pixel patches, rotary tables).
    fn upload_tensor(&mut self, m: &HostMatrix) -> Result<Self::Tensor>;

    /// The same row-major data seen as `[rows, cols]` (`rows·cols` unchanged):
    /// the patch merger's concatenation of 4 consecutive rows.
    fn reshape(&mut self, x: Self::Tensor, rows: usize, cols: usize) -> Result<Self::Tensor>;

    /// `x + y`, element-wise (residual connections).
    fn add(&mut self, x: &Self::Tensor, y: &Self::Tensor) -> Result<Self::Tensor>;

    /// Row-wise `LayerNorm(x) · gamma + beta` (no residual).
    fn layer_norm(
        &mut self,
        x: &Self::Tensor,
        gamma: &Self::Weight,
        beta: &Self::Weight,
        eps: f32,
    ) -> Result<Self::Tensor>;

    /// Row-wise RMSNorm `x / √(mean(x²) + eps) · w` (Qwen2).
    fn rms_norm(&mut self, x: &Self::Tensor, w: &Self::Weight, eps: f32) -> Result<Self::Tensor>;

    /// An element-wise activation.
    fn unary(&mut self, x: &Self::Tensor, op: Unary) -> Result<Self::Tensor>;

    /// SwiGLU over a fused gate|up projection `[rows, 2F]`: `silu(gate) · up`, `[rows, F]`.
    fn swiglu(&mut self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// GeGLU: `gelu_tanh(gate) · up`, element-wise over two `[rows, F]`
    /// projections (Gemma's MLP; kept apart, not fused like SwiGLU's gate|up,
    /// because Gemma-2B's fused weight exceeds a 128 MiB storage binding).
    fn geglu(&mut self, gate: &Self::Tensor, up: &Self::Tensor) -> Result<Self::Tensor>;

    /// Rotary embeddings (rotate-half form) on heads `0..heads` of every row of
    /// `x`, from `table` `[rows, head_dim]` holding each row's cos then sin (see
    /// `shaders/rotary.wgsl`); later columns pass through.
    fn rotary(
        &mut self,
        x: &Self::Tensor,
        table: &Self::Tensor,
        heads: usize,
        head_dim: usize,
    ) -> Result<Self::Tensor>;

    /// Attention over a fused `[rows, (q_heads + 2·kv_heads)·head_dim]` Q|K|V
    /// tensor with grouped key/value heads, each row attending its key span.
    fn attention_gqa(
        &mut self,
        qkv: &Self::Tensor,
        spans: &KeySpans,
        q_heads: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<Self::Tensor>;
}

// Shape checks shared by both backends, so both fail the same way.

pub(crate) fn check_linear(
    x: &impl Shaped,
    w: &impl Shaped,
    bias: Option<&impl Shaped>,
) -> Result<()> {
    if x.cols() != w.cols() {
        return Err(Error::shape(
            "linear",
            format!(
                "input is {}×{} but the weight is {}×{} ([out, in])",
                x.rows(),
                x.cols(),
                w.rows(),
                w.cols()
            ),
        ));
    }
    if let Some(b) = bias {
        if b.rows() * b.cols() != w.rows() {
            return Err(Error::shape(
                "linear",
                format!(
                    "bias has {} values for {} outputs",
                    b.rows() * b.cols(),
                    w.rows()
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn check_batch(
    batch: &TokenBatch,
    vocab: usize,
    positions: usize,
    types: usize,
) -> Result<()> {
    let n = batch.batch * batch.seq_len;
    if batch.ids.len() != n || batch.type_ids.len() != n || batch.key_lens.len() != batch.batch {
        return Err(Error::shape(
            "embed",
            format!(
                "{} ids / {} type ids / {} key lengths for a {}×{} batch",
                batch.ids.len(),
                batch.type_ids.len(),
                batch.key_lens.len(),
                batch.batch,
                batch.seq_len
            ),
        ));
    }
    if batch.seq_len > positions {
        return Err(Error::shape(
            "embed",
            format!(
                "sequence length {} exceeds the model's {positions} positions",
                batch.seq_len
            ),
        ));
    }
    if let Some(bad) = batch.ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(Error::shape(
            "embed",
            format!("token id {bad} outside the vocabulary of {vocab}"),
        ));
    }
    if let Some(bad) = batch.type_ids.iter().find(|&&i| i as usize >= types) {
        return Err(Error::shape(
            "embed",
            format!("token type {bad} outside the {types} types"),
        ));
    }
    Ok(())
}

pub(crate) fn check_attention(
    qkv: &impl Shaped,
    batch: &TokenBatch,
    heads: usize,
) -> Result<usize> {
    let rows = batch.batch * batch.seq_len;
    if qkv.rows() != rows || heads == 0 || !qkv.cols().is_multiple_of(3 * heads) {
        return Err(Error::shape(
            "attention",
            format!(
                "qkv is {}×{}, expected {rows}×(3·heads·head_dim) with {heads} heads",
                qkv.rows(),
                qkv.cols()
            ),
        ));
    }
    Ok(qkv.cols() / (3 * heads))
}

pub(crate) fn check_same(op: &'static str, a: &impl Shaped, b: &impl Shaped) -> Result<()> {
    if a.rows() != b.rows() || a.cols() != b.cols() {
        return Err(Error::shape(
            op,
            format!("{}×{} vs {}×{}", a.rows(), a.cols(), b.rows(), b.cols()),
        ));
    }
    Ok(())
}

pub(crate) fn check_rotary(
    x: &impl Shaped,
    table: &impl Shaped,
    heads: usize,
    head_dim: usize,
) -> Result<()> {
    if head_dim == 0
        || !head_dim.is_multiple_of(2)
        || heads * head_dim > x.cols()
        || table.rows() != x.rows()
        || table.cols() != head_dim
    {
        return Err(Error::shape(
            "rotary",
            format!(
                "x is {}×{}, table {}×{}: expected {heads} heads of an even {head_dim} \
                 within the columns and a table of {}×{head_dim}",
                x.rows(),
                x.cols(),
                table.rows(),
                table.cols(),
                x.rows()
            ),
        ));
    }
    Ok(())
}

pub(crate) fn check_attention_gqa(
    qkv: &impl Shaped,
    spans: &KeySpans,
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<()> {
    if q_heads == 0
        || kv_heads == 0
        || head_dim == 0
        || !q_heads.is_multiple_of(kv_heads)
        || qkv.cols() != (q_heads + 2 * kv_heads) * head_dim
    {
        return Err(Error::shape(
            "attention_gqa",
            format!(
                "qkv is {}×{}, expected (q_heads {q_heads} + 2 · kv_heads {kv_heads}) · \
                 head_dim {head_dim} columns, q_heads a multiple of kv_heads",
                qkv.rows(),
                qkv.cols()
            ),
        ));
    }
    spans.check(qkv.rows())
}

pub(crate) fn check_swiglu(x: &impl Shaped) -> Result<usize> {
    if !x.cols().is_multiple_of(2) {
        return Err(Error::shape(
            "swiglu",
            format!("gate|up input has an odd {} columns", x.cols()),
        ));
    }
    Ok(x.cols() / 2)
}

pub(crate) fn check_norm(
    op: &'static str,
    x: &impl Shaped,
    gamma: &impl Shaped,
    beta: Option<&impl Shaped>,
) -> Result<()> {
    let n = x.cols();
    let g = gamma.rows() * gamma.cols();
    let b = beta.map(|b| b.rows() * b.cols()).unwrap_or(n);
    if g != n || b != n {
        return Err(Error::shape(
            op,
            format!("rows of {n} values, parameters of {g} and {b}"),
        ));
    }
    Ok(())
}

pub(crate) fn check_reshape(x: &impl Shaped, rows: usize, cols: usize) -> Result<()> {
    if x.rows() * x.cols() != rows * cols {
        return Err(Error::shape(
            "reshape",
            format!("{}×{} cannot be seen as {rows}×{cols}", x.rows(), x.cols()),
        ));
    }
    Ok(())
}

/// Where the index and search kernels run: the native CPU twins, or the WGSL
/// kernels on a GPU context. Built from the same `--device` choice as the encoder.
#[derive(Clone, Debug)]
pub enum Compute {
    Cpu,
    Gpu(std::sync::Arc<crate::gpu::GpuContext>),
}

impl Compute {
    /// Resolves a device choice (`auto` = hardware GPU if present, else CPU).
    pub fn new(choice: DeviceChoice, options: &crate::gpu::GpuOptions) -> Result<Self> {
        Ok(match resolve_device(choice, options)? {
            Some(ctx) => Compute::Gpu(ctx),
            None => Compute::Cpu,
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Compute::Cpu => format!("cpu (native, {} threads)", rayon::current_num_threads()),
            Compute::Gpu(ctx) => format!("gpu ({})", ctx.describe()),
        }
    }
}
