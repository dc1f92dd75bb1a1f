//! `shaders/rotary.wgsl`: rotary position embeddings (rotate-half form) from a
//! per-row cos | sin table computed on the host (1-D, M-RoPE, 2-D vision).

use super::ROW_WG;
use crate::error::{Error, Result};
use crate::gpu::{Binding, GpuContext, KernelSpec};

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub rows: u32,
    pub cols: u32,
    pub heads: u32,
    pub head_dim: u32,
}

pub const SPEC: KernelSpec = KernelSpec {
    shader: "rotary.wgsl",
    entry: "main",
    bindings: &[
        Binding::Read,
        Binding::Read,
        Binding::ReadWrite,
        Binding::Uniform,
    ],
};

super::kernel_buffers! {
    /// What `rotary.wgsl` binds.
    pub struct Buffers<'a> {
        /// `[rows, cols]`.
        x: &'a wgpu::Buffer,
        /// `[rows, head_dim]`: cos of the row's angles, then their sin.
        table: &'a wgpu::Buffer,
        /// `[rows, cols]`.
        out: &'a wgpu::Buffer,
    }
}

/// Records the rotation of heads `0..heads` of every row of `x` `[rows, cols]`.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    (rows, cols, heads, head_dim): (usize, usize, usize, usize),
) -> Result<()> {
    if head_dim == 0 || head_dim % 2 != 0 || heads * head_dim > cols {
        return Err(Error::shape(
            "rotary",
            format!("{heads} heads of {head_dim} (even) must fit in {cols} columns"),
        ));
    }
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        heads: heads as u32,
        head_dim: head_dim as u32,
    };
    let n = (rows * cols) as u32;
    let wg = [("WG_SIZE", ROW_WG as f64)];
    ctx.record_kernel(
        encoder,
        &SPEC,
        &wg,
        &b.in_order(),
        &params,
        ctx.grid(n.div_ceil(ROW_WG)),
    )
}
