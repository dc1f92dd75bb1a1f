//! `shaders/residual_codec.wgsl`: ColBERTv2 residual compression (bucketise
//! `x − centroid[code]` against the cutoffs and bit-pack) and decompression
//! (`centroid[code] + bucket_weight[bucket]`, then L2 re-normalise).
//! The packed layout is documented in the shader and in `docs/INDEX_FORMAT.md`.

use super::ROW_WG;
use crate::error::{Error, Result};
use crate::gpu::{Binding, GpuContext, KernelSpec};

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub n: u32,
    pub dim: u32,
    pub nbits: u32,
    /// u32 words per packed vector: `ceil(dim·nbits / 32)`.
    pub words: u32,
    /// `decompress`: first stored vector when not gathering.
    pub first: u32,
    /// `decompress`: 1 = source rows from the `rows` binding.
    pub gather: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

const BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Uniform,
    // `rows`, read by `decompress` when gathering (otherwise any buffer).
    Binding::Read,
];

pub const COMPRESS: KernelSpec = KernelSpec {
    shader: "residual_codec.wgsl",
    entry: "compress",
    bindings: BINDINGS,
};

pub const DECOMPRESS: KernelSpec = KernelSpec {
    shader: "residual_codec.wgsl",
    entry: "decompress",
    bindings: BINDINGS,
};

/// u32 words one packed vector takes: `ceil(dim·nbits / 32)`.
pub fn words_per_vector(dim: usize, nbits: usize) -> usize {
    (dim * nbits).div_ceil(32)
}

fn params(n: usize, dim: usize, nbits: usize) -> Result<Params> {
    if !matches!(nbits, 1 | 2 | 4) || dim == 0 {
        return Err(Error::shape(
            "residual codec",
            format!("nbits {nbits} (expected 1, 2 or 4), dim {dim}"),
        ));
    }
    Ok(Params {
        n: n as u32,
        dim: dim as u32,
        nbits: nbits as u32,
        words: words_per_vector(dim, nbits) as u32,
        first: 0,
        gather: 0,
        _pad0: 0,
        _pad1: 0,
    })
}

/// Records `packed[n, words] = pack(bucketise(x − centroids[codes]))`.
#[allow(clippy::too_many_arguments)]
pub fn record_compress(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    centroids: &wgpu::Buffer,
    codes: &wgpu::Buffer,
    cutoffs: &wgpu::Buffer,
    packed: &wgpu::Buffer,
    (n, dim, nbits): (usize, usize, usize),
) -> Result<()> {
    let p = params(n, dim, nbits)?;
    if n == 0 {
        return Ok(());
    }
    let items = n as u64 * p.words as u64;
    let groups = ctx.grid(items.div_ceil(ROW_WG as u64) as u32);
    // The `rows` binding (decompress only) gets `codes`.
    let buffers = [x, centroids, codes, cutoffs, packed, codes];
    let wg = [("WG_SIZE", ROW_WG as f64)];
    ctx.record_kernel(encoder, &COMPRESS, &wg, &buffers, &p, groups)
}

/// Records `out[n, dim] = normalise(centroids[codes] + weights[unpack(packed)])`.
#[allow(clippy::too_many_arguments)]
pub fn record_decompress(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    codes: &wgpu::Buffer,
    packed: &wgpu::Buffer,
    centroids: &wgpu::Buffer,
    weights: &wgpu::Buffer,
    out: &wgpu::Buffer,
    shape: (usize, usize, usize),
) -> Result<()> {
    let rows = Rows::Range { first: 0 };
    record_decompress_rows(
        ctx, encoder, codes, packed, centroids, weights, out, rows, shape,
    )
}

/// Which stored vectors [`record_decompress_rows`] decompresses.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// Output row v ← stored vector `first + v`.
    Range { first: usize },
    /// Output row v ← stored vector `rows[v]` (u32; `u32::MAX` leaves row v untouched).
    Gather(&'a wgpu::Buffer),
}

/// Records `out[v, :] = decompress(stored vector src(v))` for `v < n`, reading
/// `codes` and `packed` of a whole index in place (see [`Rows`] for `src`).
#[allow(clippy::too_many_arguments)]
pub fn record_decompress_rows(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    codes: &wgpu::Buffer,
    packed: &wgpu::Buffer,
    centroids: &wgpu::Buffer,
    weights: &wgpu::Buffer,
    out: &wgpu::Buffer,
    rows: Rows,
    (n, dim, nbits): (usize, usize, usize),
) -> Result<()> {
    let mut p = params(n, dim, nbits)?;
    let rows_buf = match rows {
        Rows::Range { first } => {
            p.first = u32::try_from(first).map_err(|_| {
                Error::shape(
                    "residual codec",
                    format!("first vector {first} exceeds u32"),
                )
            })?;
            codes
        }
        Rows::Gather(b) => {
            p.gather = 1;
            b
        }
    };
    if n == 0 {
        return Ok(());
    }
    let groups = ctx.grid((n as u32).div_ceil(ROW_WG));
    let buffers = [codes, packed, centroids, weights, out, rows_buf];
    let wg = [("WG_SIZE", ROW_WG as f64)];
    ctx.record_kernel(encoder, &DECOMPRESS, &wg, &buffers, &p, groups)
}
