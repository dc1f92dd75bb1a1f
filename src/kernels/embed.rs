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

super::kernel_buffers! {
    /// What `embed.wgsl` binds: the ids, the embedding tables and their
    /// LayerNorm, the output.
    pub struct Buffers<'a> {
        /// `[rows]` u32 token ids.
        ids: &'a wgpu::Buffer,
        /// `[rows]` u32 token type ids.
        type_ids: &'a wgpu::Buffer,
        word: &'a wgpu::Buffer,
        position as "pos": &'a wgpu::Buffer,
        token_type: &'a wgpu::Buffer,
        gamma: &'a wgpu::Buffer,
        beta: &'a wgpu::Buffer,
        /// `[rows, hidden]`.
        out: &'a wgpu::Buffer,
    }
}

/// Records `out[r] = LayerNorm(word[ids[r]] + pos[r % seq_len] + type[type_ids[r]])`.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    (rows, seq_len, hidden): (usize, usize, usize),
    eps: f32,
) -> Result<()> {
    let params = Params {
        rows: rows as u32,
        seq_len: seq_len as u32,
        hidden: hidden as u32,
        eps,
    };
    let wg = [("WG_SIZE", ROW_WG as f64)];
    ctx.record_kernel(
        encoder,
        &SPEC,
        &wg,
        &b.in_order(),
        &params,
        ctx.grid(rows as u32),
    )
}
