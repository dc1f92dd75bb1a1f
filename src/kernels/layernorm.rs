//! `shaders/layernorm.wgsl`: out = LayerNorm(x + residual) · gamma + beta.

use super::ROW_WG;
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelSpec};

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub rows: u32,
    pub hidden: u32,
    pub eps: f32,
    pub _pad: u32,
}

pub const SPEC: KernelSpec = KernelSpec {
    shader: "layernorm.wgsl",
    entry: "add_layernorm",
    bindings: &[
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::ReadWrite,
        Binding::Uniform,
    ],
};

super::kernel_buffers! {
    /// What `layernorm.wgsl` binds.
    pub struct Buffers<'a> {
        /// `[rows, hidden]`.
        x: &'a wgpu::Buffer,
        /// `[rows, hidden]`, added to `x` before normalising.
        residual: &'a wgpu::Buffer,
        /// `[hidden]`.
        gamma: &'a wgpu::Buffer,
        /// `[hidden]`.
        beta: &'a wgpu::Buffer,
        /// `[rows, hidden]`.
        out: &'a wgpu::Buffer,
    }
}

/// Records `out[r] = LayerNorm(x[r] + residual[r]) · gamma + beta`.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    (rows, hidden): (usize, usize),
    eps: f32,
) -> Result<()> {
    let params = Params {
        rows: rows as u32,
        hidden: hidden as u32,
        eps,
        _pad: 0,
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
