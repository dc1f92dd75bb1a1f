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

/// Records `out[r] = LayerNorm(x[r] + residual[r]) · gamma + beta`.
#[allow(clippy::too_many_arguments)]
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    residual: &wgpu::Buffer,
    gamma: &wgpu::Buffer,
    beta: &wgpu::Buffer,
    out: &wgpu::Buffer,
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
    let buffers = [x, residual, gamma, beta, out];
    ctx.record_kernel(
        encoder,
        &SPEC,
        &wg,
        &buffers,
        &params,
        ctx.grid(rows as u32),
    )
}
