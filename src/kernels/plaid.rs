//! `shaders/plaid.wgsl`: PLAID's candidate stages (cell selection, centroid
//! pruning, candidates from the inverted lists, centroid interaction).

use super::ROW_WG;
use crate::error::{Error, Result};
use crate::gpu::{Binding, GpuContext, KernelSpec};

/// Most centroids probed per query token by `select_cells`.
pub const MAX_NCELLS: usize = 16;
/// Longest query the interaction entries handle.
pub const MAX_QLEN: usize = 128;

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub num_queries: u32,
    pub qlen: u32,
    pub num_centroids: u32,
    pub num_docs: u32,
    pub list_len: u32,
    pub threshold: f32,
    /// `approx_list`: 1 = write `approx[q·N + d]` instead of `approx[q, r]`.
    pub scatter: u32,
    pub _pad1: u32,
}

const BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::Uniform,
];

const fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec {
        shader: "plaid.wgsl",
        entry,
        bindings: BINDINGS,
    }
}

pub const SELECT_CELLS: KernelSpec = spec("select_cells");
pub const KEEP_CENTROIDS: KernelSpec = spec("keep_centroids");
pub const MARK_CANDIDATES: KernelSpec = spec("mark_candidates");
pub const APPROX_ALL: KernelSpec = spec("approx_all");
pub const APPROX_LIST: KernelSpec = spec("approx_list");

super::kernel_buffers! {
    /// The buffers every PLAID entry binds (in binding order).
    pub struct Buffers<'a> {
        scores: &'a wgpu::Buffer,
        codes: &'a wgpu::Buffer,
        doc_offsets: &'a wgpu::Buffer,
        ivf: &'a wgpu::Buffer,
        ivf_offsets: &'a wgpu::Buffer,
        doc_list: &'a wgpu::Buffer,
        cells: &'a wgpu::Buffer,
        keep: &'a wgpu::Buffer,
        candidates: &'a wgpu::Buffer,
        approx: &'a wgpu::Buffer,
    }
}

/// Which stage to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    SelectCells { ncells: usize },
    KeepCentroids,
    MarkCandidates,
    ApproxAll,
    ApproxList,
}

/// Records one PLAID stage.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    stage: Stage,
    b: &Buffers,
    params: Params,
) -> Result<()> {
    if params.qlen as usize > MAX_QLEN {
        return Err(Error::shape(
            "plaid",
            format!(
                "queries of {} vectors exceed the supported {MAX_QLEN}",
                params.qlen
            ),
        ));
    }
    let (spec, ncells, items, per_workgroup) = match stage {
        Stage::SelectCells { ncells } => {
            if ncells == 0 || ncells > MAX_NCELLS {
                return Err(Error::Input(format!(
                    "ncells must be in 1..={MAX_NCELLS}, got {ncells}"
                )));
            }
            (
                SELECT_CELLS,
                ncells,
                params.num_queries * params.qlen,
                false,
            )
        }
        Stage::KeepCentroids => (
            KEEP_CENTROIDS,
            1,
            params.num_queries * params.num_centroids,
            false,
        ),
        Stage::MarkCandidates => (
            MARK_CANDIDATES,
            1,
            params.num_queries * params.num_centroids,
            true,
        ),
        Stage::ApproxAll => (APPROX_ALL, 1, params.num_queries * params.num_docs, false),
        Stage::ApproxList => (APPROX_LIST, 1, params.num_queries * params.list_len, false),
    };
    let workgroups = if per_workgroup {
        items
    } else {
        items.div_ceil(ROW_WG)
    };
    let constants = [("WG_SIZE", ROW_WG as f64), ("NCELLS", ncells as f64)];
    ctx.record_kernel(
        encoder,
        &spec,
        &constants,
        &b.in_order(),
        &params,
        ctx.grid(workgroups),
    )
}
