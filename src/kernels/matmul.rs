//! `shaders/matmul.wgsl`: Y = act(X · Wᵀ + b), W in PyTorch [out, in] layout,
//! W stored as f32 or (variant `matmul.wgsl#f16`, SHADER_F16 adapters) as f16.

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

const BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Uniform,
];

pub const SPEC: KernelSpec = KernelSpec {
    shader: "matmul.wgsl",
    entry: "main",
    bindings: BINDINGS,
};

/// The same kernel reading f16 weights (f32 products and sums); its pipeline
/// needs a device created with `wgpu::Features::SHADER_F16`.
pub const SPEC_F16: KernelSpec = KernelSpec {
    shader: "matmul.wgsl#f16",
    entry: "main",
    bindings: BINDINGS,
};

/// How a weight buffer holds its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightStorage {
    /// `array<f32>`.
    #[default]
    F32,
    /// `array<f16>`, each weight rounded to nearest binary16 (half the bytes).
    F16,
}

impl WeightStorage {
    /// Bytes per weight.
    pub fn bytes(self) -> usize {
        match self {
            WeightStorage::F32 => 4,
            WeightStorage::F16 => 2,
        }
    }
}

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

/// Records `y[m, n] = act(x[m, k] · w[n, k]ᵀ + bias[n])`, `w` f32.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    shape: (usize, usize, usize),
    act: Activation,
) -> Result<()> {
    record_with(ctx, encoder, b, shape, act, WeightStorage::F32)
}

/// [`record`] with `w` stored as `storage` (f16 needs SHADER_F16: checked).
pub fn record_with(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &Buffers,
    (m, n, k): (usize, usize, usize),
    act: Activation,
    storage: WeightStorage,
) -> Result<()> {
    let spec = match storage {
        WeightStorage::F32 => &SPEC,
        WeightStorage::F16 => {
            ctx.require_f16("f16 matmul weights")?;
            &SPEC_F16
        }
    };
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
    ctx.record_kernel(encoder, spec, &constants, &b.in_order(), &params, groups)
}
