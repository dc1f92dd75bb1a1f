//! `shaders/survivors.wgsl`: the glue that keeps a PLAID search on the device
//! between its selection stages: fill a `[Q, N]` score matrix with −inf, lay out
//! the rows of a survivor list's documents (offsets, then a source vector per
//! row), and scatter exact scores back into `[Q, N]`. CPU twins:
//! [`crate::search::survivors`].

use super::ROW_WG;
use crate::error::{Error, Result};
use crate::gpu::{Binding, GpuContext, KernelSpec};

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub num_queries: u32,
    pub num_docs: u32,
    /// Entries per query in the survivor list.
    pub list_len: u32,
    /// First list entry of this group (flat).
    pub first: u32,
    /// List entries in this group.
    pub count: u32,
    /// Output rows `map_rows` fills (an upper bound on the group's vectors).
    pub rows: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

const BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::Uniform,
];

const fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec {
        shader: "survivors.wgsl",
        entry,
        bindings: BINDINGS,
    }
}

pub const FILL: KernelSpec = spec("fill");
pub const OFFSETS: KernelSpec = spec("offsets_scan");
pub const MAP_ROWS: KernelSpec = spec("map_rows");
pub const SCATTER: KernelSpec = spec("scatter");

/// Invocations of the single `offsets_scan` workgroup.
const SCAN_WG: u32 = 256;

super::kernel_buffers! {
    /// The buffers every entry binds (in binding order; unused ones may be any buffer).
    pub struct Buffers<'a> {
        /// `[Q, list_len]` document ids, `u32::MAX` = empty slot.
        list: &'a wgpu::Buffer,
        /// `[N + 1]` u32 offsets of the documents' vectors.
        doc_offsets: &'a wgpu::Buffer,
        /// `[Q, list_len]` exact scores (scatter).
        exact: &'a wgpu::Buffer,
        /// `[count + 1]` row offsets of the group's entries.
        offsets: &'a wgpu::Buffer,
        /// `[rows]` source vector per output row.
        rows: &'a wgpu::Buffer,
        /// `[Q, N]` scores.
        dense: &'a wgpu::Buffer,
    }
}

/// Which entry to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `dense[t] = −inf` for `t < Q·N`.
    Fill,
    /// `offsets[r]`: where the group's entry r starts, `r ≤ count`.
    Offsets,
    /// `rows[v]`: the stored vector output row `v < rows` decompresses.
    MapRows,
    /// `dense[q, L[e]] = exact[e]` for the group's entries.
    Scatter,
}

/// Records one entry.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    stage: Stage,
    b: &Buffers,
    params: Params,
) -> Result<()> {
    let items = |a: u32, b: u32| {
        a.checked_mul(b).ok_or_else(|| {
            Error::shape(
                "survivors",
                format!("{a} × {b} entries exceed u32 indexing"),
            )
        })
    };
    let (spec, wg, workgroups) = match stage {
        Stage::Fill => {
            let n = items(params.num_queries, params.num_docs)?;
            (FILL, ROW_WG, n.div_ceil(ROW_WG))
        }
        Stage::Offsets => (OFFSETS, SCAN_WG, 1),
        Stage::MapRows => (MAP_ROWS, ROW_WG, params.rows.div_ceil(ROW_WG)),
        Stage::Scatter => (SCATTER, ROW_WG, params.count.div_ceil(ROW_WG)),
    };
    if workgroups == 0 {
        return Ok(());
    }
    let wg = [("WG_SIZE", wg as f64)];
    ctx.record_kernel(
        encoder,
        &spec,
        &wg,
        &b.in_order(),
        &params,
        ctx.grid(workgroups),
    )
}
