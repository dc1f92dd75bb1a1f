//! `shaders/attention.wgsl`: multi-head self-attention over a fused QKV tensor
//! with a per-sequence key length (padding / expansion-token mask).

use super::ROW_WG;
use crate::error::{Error, Result};
use crate::gpu::{Binding, GpuContext, KernelSpec};

/// Largest head dimension the shader's private arrays hold.
pub const MAX_HEAD_DIM: usize = 128;

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub batch: u32,
    pub seq_len: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub scale: f32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

pub const SPEC: KernelSpec = KernelSpec {
    shader: "attention.wgsl",
    entry: "main",
    bindings: &[
        Binding::Read,
        Binding::Read,
        Binding::ReadWrite,
        Binding::Uniform,
    ],
};

super::kernel_buffers! {
    /// What `attention.wgsl` binds.
    pub struct Buffers<'a> {
        /// `[batch·seq_len, 3·heads·head_dim]` fused Q, K, V.
        qkv: &'a wgpu::Buffer,
        /// `[batch]` u32 keys attended to per sequence.
        key_lens: &'a wgpu::Buffer,
        /// `[batch·seq_len, heads·head_dim]` output (the shader's `ctx`).
        out as "ctx": &'a wgpu::Buffer,
    }
}

/// Records `out = attention(qkv)` for `batch` sequences of `seq_len` rows.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    (batch, seq_len, heads, head_dim): (usize, usize, usize, usize),
) -> Result<()> {
    if head_dim > MAX_HEAD_DIM || head_dim == 0 {
        return Err(Error::shape(
            "attention",
            format!("head_dim {head_dim} must be in 1..={MAX_HEAD_DIM}"),
        ));
    }
    let constants = [("WG_SIZE", ROW_WG as f64), ("HEAD_DIM", head_dim as f64)];
    let params = Params {
        batch: batch as u32,
        seq_len: seq_len as u32,
        heads: heads as u32,
        head_dim: head_dim as u32,
        scale: 1.0 / (head_dim as f32).sqrt(),
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    let pairs = (batch * heads) as u32;
    let max = ctx.limits.max_compute_workgroups_per_dimension;
    if pairs > max {
        return Err(Error::LimitExceeded {
            what: format!("attention over {batch} sequences × {heads} heads (workgroups along y)"),
            needed: pairs as u64,
            limit: max as u64,
        });
    }
    let groups = [(seq_len as u32).div_ceil(ROW_WG), pairs, 1];
    ctx.record_kernel(encoder, &SPEC, &constants, &b.in_order(), &params, groups)
}
