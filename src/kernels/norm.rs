//! `shaders/norm.wgsl`: row-wise LayerNorm (no residual) and RMSNorm.

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

const BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Uniform,
];

pub const LAYER_NORM: KernelSpec = KernelSpec {
    shader: "norm.wgsl",
    entry: "layer_norm",
    bindings: BINDINGS,
};

pub const RMS_NORM: KernelSpec = KernelSpec {
    shader: "norm.wgsl",
    entry: "rms_norm",
    bindings: BINDINGS,
};

/// Which normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// `(x − μ) / √(σ² + eps) · gamma + beta`.
    Layer,
    /// `x / √(mean(x²) + eps) · gamma` (`beta` unused).
    Rms,
}

super::kernel_buffers! {
    /// What `norm.wgsl` binds.
    pub struct Buffers<'a> {
        /// `[rows, hidden]`.
        x: &'a wgpu::Buffer,
        /// `[hidden]`.
        gamma: &'a wgpu::Buffer,
        /// `[hidden]`; read by [`Norm::Layer`] only.
        beta: Option<&'a wgpu::Buffer>,
        /// `[rows, hidden]`.
        out: &'a wgpu::Buffer,
    }
}

/// Records the normalisation of `rows` rows of `hidden` values.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    norm: Norm,
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
    let spec = match norm {
        Norm::Layer => LAYER_NORM,
        Norm::Rms => RMS_NORM,
    };
    let wg = [("WG_SIZE", ROW_WG as f64)];
    ctx.record_kernel(
        encoder,
        &spec,
        &wg,
        &b.in_order(),
        &params,
        ctx.grid(rows as u32),
    )
}
