//! `shaders/attention_gqa.wgsl`: attention with grouped key/value heads and a
//! key span per query row (causal, bidirectional, block-diagonal, left padding).

use super::ROW_WG;
use crate::error::{Error, Result};
use crate::gpu::{Binding, GpuContext, KernelSpec};

/// Largest head dimension the shader's private arrays hold (Gemma's 256).
pub const MAX_HEAD_DIM: usize = 256;
/// Output columns one invocation accumulates (the shader's `VALUE_TILE`).
pub const VALUE_TILE: usize = 128;

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub rows: u32,
    pub q_heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub scale: f32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

pub const SPEC: KernelSpec = KernelSpec {
    shader: "attention_gqa.wgsl",
    entry: "main",
    bindings: &[
        Binding::Read,
        Binding::Read,
        Binding::ReadWrite,
        Binding::Uniform,
    ],
};

super::kernel_buffers! {
    /// What `attention_gqa.wgsl` binds.
    pub struct Buffers<'a> {
        /// `[rows, (q_heads + 2·kv_heads)·head_dim]`: Q, then K, then V.
        qkv: &'a wgpu::Buffer,
        /// `[rows, 2]` u32: the half-open key span of each query row.
        spans: &'a wgpu::Buffer,
        /// `[rows, q_heads·head_dim]`.
        out: &'a wgpu::Buffer,
    }
}

/// Records the attention of `rows` query rows.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    (rows, q_heads, kv_heads, head_dim): (usize, usize, usize, usize),
) -> Result<()> {
    if head_dim == 0 || head_dim > MAX_HEAD_DIM {
        return Err(Error::shape(
            "attention_gqa",
            format!("head_dim {head_dim} must be in 1..={MAX_HEAD_DIM}"),
        ));
    }
    let max = ctx.limits.max_compute_workgroups_per_dimension as usize;
    let ys = q_heads * head_dim.div_ceil(VALUE_TILE);
    if ys > max {
        return Err(Error::LimitExceeded {
            what: format!("attention over {q_heads} heads (workgroups along y)"),
            needed: ys as u64,
            limit: max as u64,
        });
    }
    let params = Params {
        rows: rows as u32,
        q_heads: q_heads as u32,
        kv_heads: kv_heads as u32,
        head_dim: head_dim as u32,
        scale: 1.0 / (head_dim as f32).sqrt(),
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    let constants = [("WG_SIZE", ROW_WG as f64), ("HEAD_DIM", head_dim as f64)];
    let groups = [(rows as u32).div_ceil(ROW_WG).max(1), ys as u32, 1];
    ctx.record_kernel(encoder, &SPEC, &constants, &b.in_order(), &params, groups)
}
