//! `shaders/topk.wgsl`: per-row top-k of a score matrix (radix select, then a
//! bitonic sort of the k survivors), recorded into a caller's encoder so it can
//! follow MaxSim in the same submit.

use crate::error::{Error, Result};
use crate::gpu::{Binding, GpuContext, KernelSpec};

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub rows: u32,
    pub n: u32,
    pub k: u32,
    pub in_stride: u32,
    pub sort_size: u32,
    /// Bits: [`UNSORTED`], [`NEG_INF_IS_EMPTY`].
    pub flags: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

pub const SPEC: KernelSpec = KernelSpec {
    shader: "topk.wgsl",
    entry: "main",
    bindings: &[
        Binding::Read,
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::Uniform,
    ],
};

/// `Params::flags`: write the selection unsorted (any k ≤ n).
pub const UNSORTED: u32 = 1;
/// `Params::flags`: an entry scoring −inf is padding: its index is written as `u32::MAX`.
pub const NEG_INF_IS_EMPTY: u32 = 2;

/// How a top-k dispatch writes its results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// The k selected in no particular order, straight from the selection:
    /// any k ≤ n (not bounded by [`MAX_K`]), e.g. for a set of survivors.
    pub unsorted: bool,
    /// Entries scoring −inf are padding: their index is written as `u32::MAX`
    /// (CPU twin: [`crate::search::topk::TopK::mark_neg_inf_empty`]).
    pub neg_inf_is_empty: bool,
}

/// Invocations per row.
pub const WG: u32 = 256;

/// Largest k the kernel sorts in workgroup memory (`SORT_CAP` in the shader).
pub const MAX_K: usize = 1024;

/// Shapes of a top-k dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub rows: usize,
    /// Elements per row.
    pub n: usize,
    /// Results per row wanted; `min(k, n)` are written, row stride `min(k, n)`.
    pub k: usize,
    /// Row stride of the input (≥ n).
    pub in_stride: usize,
}

impl Shape {
    /// Results per row actually written (and the output row stride).
    pub fn k_eff(&self) -> usize {
        self.k.min(self.n)
    }
}

super::kernel_buffers! {
    /// What `topk.wgsl` binds.
    pub struct Buffers<'a> {
        /// `[rows, in_stride]` f32 scores.
        scores: &'a wgpu::Buffer,
        /// `[rows, min(k, n)]` u32 columns out.
        out_idx: &'a wgpu::Buffer,
        /// `[rows, min(k, n)]` f32 scores out.
        out_scores: &'a wgpu::Buffer,
    }
}

/// Records, for each row r < rows of `scores` ([rows, in_stride]), the
/// `min(k, n)` best of its first n entries, best first (score descending, ties
/// to the lower column, NaN last) into `out_idx` (u32 columns) and `out_scores`,
/// both `[rows, min(k, n)]`.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    shape: Shape,
) -> Result<()> {
    record_with(ctx, encoder, b, shape, Options::default())
}

/// [`record`] with output [`Options`].
pub fn record_with(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    shape: Shape,
    options: Options,
) -> Result<()> {
    let k = shape.k_eff();
    if shape.k == 0 {
        return Err(Error::Input("top-k: k must be at least 1".into()));
    }
    if k > MAX_K && !options.unsorted {
        return Err(Error::LimitExceeded {
            what: format!("top-k on the GPU with k = {k} (sort slots)"),
            needed: k as u64,
            limit: MAX_K as u64,
        });
    }
    if shape.in_stride < shape.n {
        return Err(Error::shape(
            "topk",
            format!("row stride {} < row length {}", shape.in_stride, shape.n),
        ));
    }
    if shape.rows == 0 || k == 0 {
        return Ok(());
    }
    let too_big = |what: &str, v: usize| Error::shape("topk", format!("{what} = {v} exceeds u32"));
    let u = |what: &str, v: usize| u32::try_from(v).map_err(|_| too_big(what, v));
    let flags = if options.unsorted { UNSORTED } else { 0 }
        | if options.neg_inf_is_empty {
            NEG_INF_IS_EMPTY
        } else {
            0
        };
    let params = Params {
        rows: u("rows", shape.rows)?,
        n: u("n", shape.n)?,
        k: u("k", k)?,
        in_stride: u("in_stride", shape.in_stride)?,
        sort_size: (k as u32).next_power_of_two().min(MAX_K as u32),
        flags,
        _pad1: 0,
        _pad2: 0,
    };
    // Every index the shader forms must fit u32.
    u(
        "rows × in_stride",
        shape.rows.saturating_mul(shape.in_stride),
    )?;
    let groups = ctx.grid(shape.rows as u32);
    let wg = [("WG_SIZE", WG as f64)];
    ctx.record_kernel(encoder, &SPEC, &wg, &b.in_order(), &params, groups)
}
