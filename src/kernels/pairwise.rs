//! `shaders/pairwise.wgsl`: per block of row vectors, every pair's cosine
//! distance (`1 − x_i·x_j`, mode 0) or squared Euclidean distance (mode 1).

use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelSpec};

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub blocks: u32,
    pub total: u32,
    pub mode: u32,
    pub _pad: u32,
}

pub const SPEC: KernelSpec = KernelSpec {
    shader: "pairwise.wgsl",
    entry: "main",
    bindings: &[
        Binding::Read,
        Binding::Read,
        Binding::ReadWrite,
        Binding::Uniform,
    ],
};

/// Invocations per workgroup.
pub const WG: u32 = 64;

super::kernel_buffers! {
    /// What `pairwise.wgsl` binds.
    pub struct Buffers<'a> {
        /// All blocks' rows back to back.
        x: &'a wgpu::Buffer,
        /// `[blocks, 4]` u32: input offset, rows, cols, output offset.
        spans: &'a wgpu::Buffer,
        /// `[Σ rows²]` out.
        out: &'a wgpu::Buffer,
    }
}

/// Records the pairwise distances of `blocks` blocks (`total` = Σ rows²
/// outputs); `mode` 0 = cosine distance, 1 = squared Euclidean.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    (blocks, total, mode): (usize, usize, u32),
) -> Result<()> {
    if blocks == 0 || total == 0 {
        return Ok(());
    }
    let params = Params {
        blocks: blocks as u32,
        total: total as u32,
        mode,
        _pad: 0,
    };
    let groups = ctx.grid((total as u32).div_ceil(WG));
    let wg = [("WG_SIZE", WG as f64)];
    ctx.record_kernel(encoder, &SPEC, &wg, &b.in_order(), &params, groups)
}
