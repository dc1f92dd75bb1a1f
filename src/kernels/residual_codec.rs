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

super::kernel_buffers! {
    /// What `compress` binds.
    pub struct CompressBuffers<'a> {
        /// `[n, dim]` vectors.
        x: &'a wgpu::Buffer,
        /// `[k, dim]`.
        centroids: &'a wgpu::Buffer,
        /// `[n]` u32 centroid of each vector.
        codes: &'a wgpu::Buffer,
        /// `[2^nbits − 1]` bucket cutoffs.
        cutoffs: &'a wgpu::Buffer,
        /// `[n, words]` u32 out.
        packed: &'a wgpu::Buffer,
        /// `decompress`'s gather list: not read by `compress` (leave `None`).
        rows: Option<&'a wgpu::Buffer>,
    }
}

super::kernel_buffers! {
    /// What `decompress` binds.
    pub struct DecompressBuffers<'a> {
        /// u32 centroid of each stored vector.
        codes as "dcodes": &'a wgpu::Buffer,
        /// u32 packed residuals, `words` per stored vector.
        packed as "dpacked": &'a wgpu::Buffer,
        /// `[k, dim]`.
        centroids as "dcentroids": &'a wgpu::Buffer,
        /// `[2^nbits]` bucket weights.
        weights: &'a wgpu::Buffer,
        /// `[n, dim]` out.
        out: &'a wgpu::Buffer,
        /// `[n]` u32 stored vector of each output row (`u32::MAX` leaves the
        /// row untouched); `None`: output row v is stored vector `first + v`.
        rows: Option<&'a wgpu::Buffer>,
    }
}

/// Records `packed[n, words] = pack(bucketise(x − centroids[codes]))`.
pub fn record_compress(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &CompressBuffers,
    (n, dim, nbits): (usize, usize, usize),
) -> Result<()> {
    let p = params(n, dim, nbits)?;
    if n == 0 {
        return Ok(());
    }
    let items = n as u64 * p.words as u64;
    let groups = ctx.grid(items.div_ceil(ROW_WG as u64) as u32);
    let wg = [("WG_SIZE", ROW_WG as f64)];
    ctx.record_kernel(encoder, &COMPRESS, &wg, &b.in_order(), &p, groups)
}

/// Records `out[v, :] = decompress(stored vector src(v))` for `v < n`, reading
/// `codes` and `packed` of a whole index in place: `src(v) = rows[v]` when
/// `b.rows` is set, else `first + v`.
pub fn record_decompress(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    b: &DecompressBuffers,
    first: usize,
    (n, dim, nbits): (usize, usize, usize),
) -> Result<()> {
    let mut p = params(n, dim, nbits)?;
    if b.rows.is_some() {
        p.gather = 1;
    } else {
        p.first = u32::try_from(first).map_err(|_| {
            Error::shape(
                "residual codec",
                format!("first vector {first} exceeds u32"),
            )
        })?;
    }
    if n == 0 {
        return Ok(());
    }
    let groups = ctx.grid((n as u32).div_ceil(ROW_WG));
    let wg = [("WG_SIZE", ROW_WG as f64)];
    ctx.record_kernel(encoder, &DECOMPRESS, &wg, &b.in_order(), &p, groups)
}
