//! The operations the models need, behind one trait with two implementations:
//! [`cpu::CpuBackend`] (native Rust: gemm + rayon; also the reference the WGSL
//! is tested against) and [`gpu::GpuBackend`] (the WGSL kernels on any wgpu
//! adapter). `src/model/` is written once against [`Backend`].

pub mod cpu;
pub mod device;
pub mod gpu;
pub mod ops;
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
}

impl HostMatrix {
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != rows * cols {
            return Err(Error::shape(
                "matrix",
                format!("{} values for a {rows}×{cols} matrix", data.len()),
            ));
        }
        Ok(Self { rows, cols, data })
    }

    /// A 1-row matrix (vectors: biases, LayerNorm parameters).
    pub fn vector(data: Vec<f32>) -> Self {
        Self {
            rows: 1,
            cols: data.len(),
            data,
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

/// The operations a transformer encoder needs. GPU implementations may record
/// lazily and run everything at [`Backend::read`]: only `read` returns host data.
pub trait Backend {
    /// Activations: a `[rows, cols]` matrix resident on the backend.
    type Tensor: Shaped;
    /// Parameters, uploaded once.
    type Weight: Shaped;

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
