//! `shaders/maxsim.wgsl`: MaxSim of variable-length documents against their queries.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, Binding, GpuContext, KernelSpec};

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub num_docs: u32,
    pub qlen: u32,
    pub dim: u32,
    pub num_queries: u32,
}

pub const SPEC: KernelSpec = KernelSpec {
    shader: "maxsim.wgsl",
    entry: "main",
    bindings: &[
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::ReadWrite,
        Binding::Uniform,
    ],
};

/// Invocations per document (one per query token for ColBERT's 32).
pub const WG: u32 = 32;

/// Records `scores[r] = Σ_i max_j q_{owner[r], i} · d_j` over the rows of document r.
#[allow(clippy::too_many_arguments)]
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    queries: &wgpu::Buffer,
    docs: &wgpu::Buffer,
    doc_offsets: &wgpu::Buffer,
    owner: &wgpu::Buffer,
    scores: &wgpu::Buffer,
    (num_docs, num_queries, qlen, dim): (usize, usize, usize, usize),
) -> Result<()> {
    if num_queries == 0 || qlen == 0 || dim == 0 {
        return Err(Error::shape(
            "maxsim",
            format!("{num_queries} queries of {qlen}×{dim}"),
        ));
    }
    if num_docs == 0 {
        return Ok(());
    }
    let pipeline = ctx.pipeline(&SPEC, &[("WG_SIZE", WG as f64)])?;
    let params = ctx.uniform(
        "maxsim params",
        &Params {
            num_docs: num_docs as u32,
            qlen: qlen as u32,
            dim: dim as u32,
            num_queries: num_queries as u32,
        },
    );
    let groups = grid_1d(
        num_docs as u32,
        ctx.limits.max_compute_workgroups_per_dimension,
    );
    ctx.dispatch(
        encoder,
        &pipeline,
        &[queries, docs, doc_offsets, owner, scores, &params],
        groups,
    );
    Ok(())
}
