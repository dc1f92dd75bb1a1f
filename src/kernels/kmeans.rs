//! `shaders/kmeans.wgsl`: nearest centroid by inner product,
//! `codes[i] = argmax_c x[i]·centroids[c]` (ties → lower c), with the best score.

use crate::error::{Error, Result};
use crate::gpu::{Binding, GpuContext, KernelSpec};

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub n: u32,
    pub k: u32,
    pub dim: u32,
    pub _pad: u32,
}

pub const ASSIGN: KernelSpec = KernelSpec {
    shader: "kmeans.wgsl",
    entry: "assign",
    bindings: &[
        Binding::Read,
        Binding::Read,
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::Uniform,
    ],
};

/// Workgroup shape: invocations along vectors (each owns 4 vectors) and along
/// centroids (cooperating on the same vectors). 4·WG_V vectors per workgroup.
pub const WG: (u32, u32) = (16, 4);

super::kernel_buffers! {
    /// What `kmeans.wgsl` binds.
    pub struct Buffers<'a> {
        /// `[n, dim]` vectors.
        x: &'a wgpu::Buffer,
        /// `[k, dim]`.
        centroids: &'a wgpu::Buffer,
        /// `[n]` u32 out: nearest centroid.
        codes: &'a wgpu::Buffer,
        /// `[n]` f32 out: its score.
        scores: &'a wgpu::Buffer,
    }
}

/// Records `codes[i], scores[i] = argmax/max_c x[i]·centroids[c]` for `n`
/// vectors of `dim` against `k` centroids.
pub fn record_assign(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    (n, k, dim): (usize, usize, usize),
) -> Result<()> {
    if k == 0 || dim == 0 {
        return Err(Error::shape(
            "kmeans assign",
            format!("{k} centroids of dimension {dim}"),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    let params = Params {
        n: n as u32,
        k: k as u32,
        dim: dim as u32,
        _pad: 0,
    };
    let wg = [("WG_V", WG.0 as f64), ("WG_C", WG.1 as f64)];
    let groups = ctx.grid((n as u32).div_ceil(4 * WG.0));
    ctx.record_kernel(encoder, &ASSIGN, &wg, &b.in_order(), &params, groups)
}
