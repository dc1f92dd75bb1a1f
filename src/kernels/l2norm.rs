//! `shaders/l2norm.wgsl`: out[r] = x[r] / max(‖x[r]‖₂, 1e-12).

use super::ROW_WG;
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelSpec};

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub rows: u32,
    pub cols: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

pub const SPEC: KernelSpec = KernelSpec {
    shader: "l2norm.wgsl",
    entry: "main",
    bindings: &[Binding::Read, Binding::ReadWrite, Binding::Uniform],
};

super::kernel_buffers! {
    /// What `l2norm.wgsl` binds.
    pub struct Buffers<'a> {
        /// `[rows, cols]` in.
        x: &'a wgpu::Buffer,
        /// `[rows, cols]` out.
        out: &'a wgpu::Buffer,
    }
}

/// Records the row-wise L2 normalisation of `x` [rows, cols] into `out`.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    (rows, cols): (usize, usize),
) -> Result<()> {
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        _pad0: 0,
        _pad1: 0,
    };
    let groups = ctx.grid((rows as u32).div_ceil(ROW_WG));
    let wg = [("WG_SIZE", ROW_WG as f64)];
    ctx.record_kernel(encoder, &SPEC, &wg, &b.in_order(), &params, groups)
}
