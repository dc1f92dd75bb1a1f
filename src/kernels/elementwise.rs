//! `shaders/elementwise.wgsl`: residual add, quick_gelu, exact GELU, SwiGLU,
//! tanh GELU, GeGLU.

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

const BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Uniform,
];

const fn spec(entry: &'static str) -> KernelSpec {
    KernelSpec {
        shader: "elementwise.wgsl",
        entry,
        bindings: BINDINGS,
    }
}

pub const ADD: KernelSpec = spec("add");
pub const QUICK_GELU: KernelSpec = spec("quick_gelu");
pub const GELU: KernelSpec = spec("gelu_exact");
pub const SWIGLU: KernelSpec = spec("swiglu");
pub const GELU_TANH: KernelSpec = spec("gelu_tanh");
pub const GEGLU: KernelSpec = spec("geglu");

/// Which element-wise op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `a + b`.
    Add,
    /// `a · σ(1.702·a)`.
    QuickGelu,
    /// `0.5·a·(1 + erf(a/√2))`.
    Gelu,
    /// `silu(gate) · up` over the halves of `a` (`[rows, 2·cols]`).
    SwiGlu,
    /// GELU, tanh approximation (`gelu_pytorch_tanh`).
    GeluTanh,
    /// `gelu_tanh(a) · b` (gate and up projections, each `[rows, cols]`).
    GeGlu,
}

super::kernel_buffers! {
    /// What `elementwise.wgsl` binds.
    pub struct Buffers<'a> {
        /// `[rows, cols]` (`[rows, 2·cols]` for [`Op::SwiGlu`]).
        a: &'a wgpu::Buffer,
        /// `[rows, cols]`; read by [`Op::Add`] and [`Op::GeGlu`] only.
        b: Option<&'a wgpu::Buffer>,
        /// `[rows, cols]`.
        out: &'a wgpu::Buffer,
    }
}

/// Records `op` producing `out` of `[rows, cols]`.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    op: Op,
    b: &Buffers,
    (rows, cols): (usize, usize),
) -> Result<()> {
    let params = Params {
        rows: rows as u32,
        cols: cols as u32,
        _pad0: 0,
        _pad1: 0,
    };
    let spec = match op {
        Op::Add => ADD,
        Op::QuickGelu => QUICK_GELU,
        Op::Gelu => GELU,
        Op::SwiGlu => SWIGLU,
        Op::GeluTanh => GELU_TANH,
        Op::GeGlu => GEGLU,
    };
    let n = (rows * cols) as u32;
    let wg = [("WG_SIZE", ROW_WG as f64)];
    ctx.record_kernel(
        encoder,
        &spec,
        &wg,
        &b.in_order(),
        &params,
        ctx.grid(n.div_ceil(ROW_WG)),
    )
}
