//! `shaders/embed.wgsl`: word + position + token-type embeddings, then LayerNorm.

use super::ROW_WG;
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelSpec};

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub rows: u32,
    pub seq_len: u32,
    pub hidden: u32,
    pub eps: f32,
}

pub const SPEC: KernelSpec = KernelSpec {
    shader: "embed.wgsl",
    entry: "main",
    bindings: &[
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::ReadWrite,
        Binding::Uniform,
    ],
};

/// The embedding tables and their LayerNorm.
pub struct Tables<'a> {
    pub word: &'a wgpu::Buffer,
    pub position: &'a wgpu::Buffer,
    pub token_type: &'a wgpu::Buffer,
    pub gamma: &'a wgpu::Buffer,
    pub beta: &'a wgpu::Buffer,
}

/// Records `out[r] = LayerNorm(word[ids[r]] + pos[r % seq_len] + type[type_ids[r]])`.
#[allow(clippy::too_many_arguments)]
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    ids: &wgpu::Buffer,
    type_ids: &wgpu::Buffer,
    tables: &Tables,
    out: &wgpu::Buffer,
    (rows, seq_len, hidden): (usize, usize, usize),
    eps: f32,
) -> Result<()> {
    let params = Params {
        rows: rows as u32,
        seq_len: seq_len as u32,
        hidden: hidden as u32,
        eps,
    };
    let buffers = [
        ids,
        type_ids,
        tables.word,
        tables.position,
        tables.token_type,
        tables.gamma,
        tables.beta,
        out,
    ];
    let wg = [("WG_SIZE", ROW_WG as f64)];
    ctx.record_kernel(
        encoder,
        &SPEC,
        &wg,
        &buffers,
        &params,
        ctx.grid(rows as u32),
    )
}
