//! `shaders/matmul.wgsl`: Y = act(X · Wᵀ + b), W in PyTorch [out, in] layout.

use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelSpec};

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub has_bias: u32,
}

pub const SPEC: KernelSpec = KernelSpec {
    shader: "matmul.wgsl",
    entry: "main",
    bindings: &[
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::ReadWrite,
        Binding::Uniform,
    ],
};

/// The activation fused into the matmul's epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    /// GELU, erf form.
    Gelu,
}

/// Workgroup shape (invocations along N, along M); each invocation does 4 × 4.
pub const WG: (u32, u32) = (8, 8);

super::kernel_buffers! {
    /// What `matmul.wgsl` binds.
    pub struct Buffers<'a> {
        /// `[m, k]`.
        x: &'a wgpu::Buffer,
        /// `[n, k]` (PyTorch's `[out, in]`).
        w: &'a wgpu::Buffer,
        /// `[n]`, or none.
        bias: Option<&'a wgpu::Buffer>,
        /// `[m, n]` out.
        y: &'a wgpu::Buffer,
    }
}

/// Records `y[m, n] = act(x[m, k] · w[n, k]ᵀ + bias[n])`.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    (m, n, k): (usize, usize, usize),
    act: Activation,
) -> Result<()> {
    let constants = [
        ("WG_X", WG.0 as f64),
        ("WG_Y", WG.1 as f64),
        (
            "ACTIVATION",
            if act == Activation::Gelu { 1.0 } else { 0.0 },
        ),
    ];
    let params = Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        has_bias: b.bias.is_some() as u32,
    };
    let groups = [
        (n as u32).div_ceil(4 * WG.0),
        (m as u32).div_ceil(4 * WG.1),
        1,
    ];
    ctx.record_kernel(encoder, &SPEC, &constants, &b.in_order(), &params, groups)
}
