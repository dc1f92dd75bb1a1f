//! `shaders/maxsim.wgsl`: MaxSim of variable-length documents (flat rows plus
//! offsets, no padding) against queries, recorded into a caller's encoder so a
//! search can chain decompress → MaxSim → top-k in one submit.
//!
//! Two entry points over the same kernel:
//! * [`record_all_pairs`]: every query against every document, into a
//!   `[num_queries, out_stride]` score matrix (column `out_offset + d`), so a
//!   corpus too large for one binding is scored slice by slice into one matrix;
//! * [`record_assigned`] (and [`record`], its `out_offset = 0` form): each
//!   document against the one query `owner[d]` names (per-query candidate
//!   lists reranked in one dispatch).
//!
//! The kernel reads vectors as `vec4<f32>`: `dim` must be a multiple of 4
//! (ColBERT's 128, 96, 64 are); the host APIs in [`crate::search::maxsim`] pad
//! other dims with zeros on upload. Buffers hold f32 rows back to back.

use crate::error::{Error, Result};
use crate::gpu::{Binding, GpuContext, KernelSpec};

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub num_docs: u32,
    pub qlen: u32,
    pub dim: u32,
    pub num_queries: u32,
    /// 0 = all pairs, 1 = owner.
    pub mode: u32,
    pub out_stride: u32,
    pub out_offset: u32,
    pub _pad: u32,
}

pub const SPEC: KernelSpec = KernelSpec {
    shader: "maxsim.wgsl",
    entry: "main",
    bindings: &[
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::ReadWrite,
        Binding::Uniform,
    ],
};

/// The kernel's (`WG_SIZE`, `TOKENS`) for queries of `qlen` tokens: on GPUs
/// one token per invocation (ColBERT's 32 → 32 invocations, between 8 and 64);
/// on software adapters (lavapipe) 8 invocations, its SIMD width, each taking
/// up to 4 tokens, so every document word loaded feeds 16 multiply-adds:
/// 2.5× faster there (17k vs 6.7k documents/s at 32 × 128 vs 180 tokens).
pub fn tuning(software: bool, qlen: usize) -> (u32, u32) {
    if software {
        let tokens = match qlen {
            0..=8 => 1,
            9..=16 => 2,
            _ => 4,
        };
        (8, tokens)
    } else {
        (qlen.next_power_of_two().clamp(8, 64) as u32, 1)
    }
}

/// Shapes of an all-pairs dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllPairs {
    pub num_queries: usize,
    pub qlen: usize,
    pub dim: usize,
    /// Documents in this dispatch (`doc_offsets` holds `num_docs + 1` entries).
    pub num_docs: usize,
    /// Row stride of the score matrix: documents in the whole corpus.
    pub out_stride: usize,
    /// Column of this dispatch's first document in the score matrix.
    pub out_offset: usize,
}

fn check(op: &'static str, num_queries: usize, qlen: usize, dim: usize) -> Result<()> {
    if num_queries == 0 || qlen == 0 || dim == 0 || !dim.is_multiple_of(4) {
        return Err(Error::shape(
            op,
            format!(
                "{num_queries} queries of {qlen}×{dim} (the kernel reads vec4: need at least \
                 one query token and dim a positive multiple of 4)"
            ),
        ));
    }
    Ok(())
}

fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::shape(op, format!("{what} = {v} exceeds u32")))
}

/// Checks the shapes and builds the kernel's `Params` (every count it holds
/// must fit u32).
fn params(
    num_queries: usize,
    qlen: usize,
    dim: usize,
    num_docs: usize,
    mode: u32,
    out_stride: usize,
    out_offset: usize,
) -> Result<Params> {
    let op = "maxsim";
    check(op, num_queries, qlen, dim)?;
    Ok(Params {
        num_docs: u32_of(op, "num_docs", num_docs)?,
        qlen: u32_of(op, "qlen", qlen)?,
        dim: u32_of(op, "dim", dim)?,
        num_queries: u32_of(op, "num_queries", num_queries)?,
        mode,
        out_stride: u32_of(op, "out_stride", out_stride)?,
        out_offset: u32_of(op, "out_offset", out_offset)?,
        _pad: 0,
    })
}

super::kernel_buffers! {
    /// What `maxsim.wgsl` binds.
    pub struct Buffers<'a> {
        /// `[num_queries·qlen, dim]` query vectors (vec4-read: dim % 4 = 0).
        queries: &'a wgpu::Buffer,
        /// Document vectors, rows back to back.
        docs: &'a wgpu::Buffer,
        /// `[num_docs + 1]` u32 row offsets into `docs`.
        doc_offsets: &'a wgpu::Buffer,
        /// `[num_docs]` u32 query of each document ([`record_assigned`] only).
        owner: Option<&'a wgpu::Buffer>,
        /// f32 scores out.
        scores: &'a wgpu::Buffer,
    }
}

fn dispatch(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    params: Params,
    pairs: usize,
    (wg, tokens): (u32, u32),
) -> Result<()> {
    if !wg.is_power_of_two() || wg > 256 || ![1, 2, 4].contains(&tokens) {
        return Err(Error::Input(format!(
            "maxsim tuning ({wg}, {tokens}): WG_SIZE must be a power of two ≤ 256 and \
             TOKENS 1, 2 or 4"
        )));
    }
    let constants = [("WG_SIZE", wg as f64), ("TOKENS", tokens as f64)];
    let groups = ctx.grid(u32_of("maxsim", "scored pairs", pairs)?);
    ctx.record_kernel(encoder, &SPEC, &constants, &b.in_order(), &params, groups)
}

/// Records `scores[q · out_stride + out_offset + d] = Σ_i max_{j ∈ doc d} q_i · d_j`
/// for every query `q < num_queries` and document `d < num_docs`.
/// `doc_offsets` (u32, `num_docs + 1` entries) index rows of `docs`; `owner`
/// is not read.
pub fn record_all_pairs(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    shape: AllPairs,
) -> Result<()> {
    let t = tuning(ctx.is_software(), shape.qlen);
    record_all_pairs_tuned(ctx, encoder, b, shape, t)
}

/// [`record_all_pairs`] with an explicit (`WG_SIZE`, `TOKENS`) instead of
/// [`tuning`]'s choice for the adapter (tests, tuning experiments).
pub fn record_all_pairs_tuned(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    shape: AllPairs,
    tuning: (u32, u32),
) -> Result<()> {
    let (q, s) = (shape.num_queries, shape.qlen);
    let params = params(
        q,
        s,
        shape.dim,
        shape.num_docs,
        0,
        shape.out_stride,
        shape.out_offset,
    )?;
    if shape.out_offset + shape.num_docs > shape.out_stride {
        return Err(Error::shape(
            "maxsim",
            format!(
                "documents {}..{} do not fit score rows of {}",
                shape.out_offset,
                shape.out_offset + shape.num_docs,
                shape.out_stride
            ),
        ));
    }
    if shape.num_docs == 0 {
        return Ok(());
    }
    dispatch(
        ctx,
        encoder,
        b,
        params,
        shape.num_queries * shape.num_docs,
        tuning,
    )
}

/// Shapes of an owner-mode dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    pub num_queries: usize,
    pub qlen: usize,
    pub dim: usize,
    /// Documents in this dispatch (`doc_offsets` and `owner` cover them).
    pub num_docs: usize,
    /// Index in `scores` of this dispatch's first document.
    pub out_offset: usize,
}

/// Records `scores[out_offset + r] = Σ_i max_j q_{owner[r], i} · d_j` over the
/// rows of document r: each document scored against the one query `owner[r]`
/// names (owners past the last query are clamped to it). `b.owner` is required.
pub fn record_assigned(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    shape: Assigned,
) -> Result<()> {
    let (q, s) = (shape.num_queries, shape.qlen);
    let params = params(q, s, shape.dim, shape.num_docs, 1, 0, shape.out_offset)?;
    if b.owner.is_none() {
        return Err(Error::Input(
            "maxsim (assigned): the owner buffer is required".into(),
        ));
    }
    if shape.num_docs == 0 {
        return Ok(());
    }
    dispatch(
        ctx,
        encoder,
        b,
        params,
        shape.num_docs,
        tuning(ctx.is_software(), shape.qlen),
    )
}
