//! The ColBERTv2 residual codec.
//!
//! A unit vector `x` is stored as its nearest centroid `code = argmax_c x·c`
//! plus its residual `r = x − centroid[code]` quantised to `nbits` ∈ {1, 2, 4}
//! bits per dimension:
//!
//! * **training** (ColBERTv2's recipe): over a sample of residuals, the
//!   `2^nbits − 1` bucket cutoffs are the quantiles of *all* residual values at
//!   `i / 2^nbits` (i = 1 … 2^nbits − 1) and the `2^nbits` bucket weights the
//!   quantiles at the bucket midpoints `(i + ½) / 2^nbits` (i = 0 … 2^nbits − 1);
//!   quantiles interpolate linearly between order statistics, as `torch.quantile`;
//! * **compression**: `bucket_d = #{ i : cutoffs[i] ≤ r_d }` (numpy's
//!   `searchsorted(side="right")`), bit-packed: dimension `d` at bit `d·nbits`
//!   of the vector's little-endian bit string; a vector takes
//!   `W = ceil(dim·nbits / 32)` u32 words (`4·W` bytes; bits past `dim·nbits`
//!   are zero, so dims whose `dim·nbits` is not a multiple of 32 are padded to
//!   a whole word);
//! * **decompression**: `y_d = centroid[code]_d + weights[bucket_d]`, then
//!   `y / max(‖y‖, 1e-12)`.
//!
//! Every step runs as WGSL (`shaders/kmeans.wgsl`, `shaders/residual_codec.wgsl`)
//! on [`Compute::Gpu`] and as native Rust twins (rayon) on [`Compute::Cpu`].
//! Given the same codes, both produce bit-identical packed residuals (the
//! residual is one f32 subtraction and the bucket a comparison count).

use std::sync::Arc;

use rayon::prelude::*;

use super::kmeans::{self, rows_per_binding};
use crate::backend::Compute;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::kernels;

/// Centroids, bucket cutoffs and bucket weights: everything needed to compress
/// and decompress vectors of one index.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidualCodec {
    pub dim: usize,
    pub nbits: usize,
    /// `num_centroids × dim`, row-major.
    pub centroids: Vec<f32>,
    /// `2^nbits − 1` ascending cutoffs.
    pub bucket_cutoffs: Vec<f32>,
    /// `2^nbits` reconstruction values.
    pub bucket_weights: Vec<f32>,
}

/// Compressed vectors: one code and `words_per_vector` packed u32 words each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Compressed {
    pub codes: Vec<u32>,
    pub packed: Vec<u32>,
}

/// `q`-quantile of ascending `sorted` with linear interpolation between order
/// statistics (`torch.quantile`'s default).
fn quantile(sorted: &[f32], q: f64) -> f32 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    (sorted[lo] as f64 + (sorted[hi] as f64 - sorted[lo] as f64) * frac) as f32
}

/// Errors naming the first non-finite value of `x` (`n × dim`), if any.
pub(crate) fn check_finite(what: &str, x: &[f32], dim: usize) -> Result<()> {
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::Input(format!(
            "{what}: vector {} has a non-finite value ({}) at dimension {}",
            i / dim.max(1),
            x[i],
            i % dim.max(1)
        )));
    }
    Ok(())
}

impl ResidualCodec {
    /// A codec from its arrays, validated (shapes, finiteness, ascending cutoffs).
    pub fn new(
        dim: usize,
        nbits: usize,
        centroids: Vec<f32>,
        bucket_cutoffs: Vec<f32>,
        bucket_weights: Vec<f32>,
    ) -> Result<Self> {
        if !matches!(nbits, 1 | 2 | 4) {
            return Err(Error::Input(format!(
                "nbits must be 1, 2 or 4, got {nbits}"
            )));
        }
        if dim == 0 || centroids.is_empty() || !centroids.len().is_multiple_of(dim) {
            return Err(Error::shape(
                "residual codec",
                format!("{} centroid values for dimension {dim}", centroids.len()),
            ));
        }
        let buckets = 1usize << nbits;
        if bucket_cutoffs.len() != buckets - 1 || bucket_weights.len() != buckets {
            return Err(Error::shape(
                "residual codec",
                format!(
                    "{} cutoffs and {} weights for nbits {nbits} (expected {} and {buckets})",
                    bucket_cutoffs.len(),
                    bucket_weights.len(),
                    buckets - 1
                ),
            ));
        }
        check_finite("centroids", &centroids, dim)?;
        check_finite("bucket cutoffs", &bucket_cutoffs, 1)?;
        check_finite("bucket weights", &bucket_weights, 1)?;
        if bucket_cutoffs.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::Input(format!(
                "bucket cutoffs are not ascending: {bucket_cutoffs:?}"
            )));
        }
        Ok(Self {
            dim,
            nbits,
            centroids,
            bucket_cutoffs,
            bucket_weights,
        })
    }

    /// Learns cutoffs and weights from the residuals of `sample` (`n × dim`)
    /// against `centroids` (codes assigned on `compute`).
    pub fn train(
        compute: &Compute,
        centroids: Vec<f32>,
        dim: usize,
        nbits: usize,
        sample: &[f32],
    ) -> Result<Self> {
        // Validate shapes first with placeholder buckets.
        let buckets = 1usize << nbits.min(8);
        let mut codec = Self::new(
            dim,
            nbits,
            centroids,
            vec![0.0; buckets - 1],
            vec![0.0; buckets],
        )?;
        if sample.is_empty() || !sample.len().is_multiple_of(dim) {
            return Err(Error::shape(
                "residual codec training",
                format!("{} sample values for dimension {dim}", sample.len()),
            ));
        }
        check_finite("codec training sample", sample, dim)?;
        let (codes, _) = kmeans::assign(compute, sample, dim, &codec.centroids)?;
        let mut residuals: Vec<f32> = sample
            .par_chunks(dim)
            .zip(codes.par_iter())
            .flat_map_iter(|(x, &c)| {
                let cen = &codec.centroids[c as usize * dim..(c as usize + 1) * dim];
                x.iter().zip(cen).map(|(a, b)| a - b).collect::<Vec<_>>()
            })
            .collect();
        residuals.par_sort_unstable_by(f32::total_cmp);
        let b = buckets as f64;
        codec.bucket_cutoffs = (1..buckets)
            .map(|i| quantile(&residuals, i as f64 / b))
            .collect();
        codec.bucket_weights = (0..buckets)
            .map(|i| quantile(&residuals, (i as f64 + 0.5) / b))
            .collect();
        Ok(codec)
    }

    pub fn num_centroids(&self) -> usize {
        self.centroids.len() / self.dim
    }

    /// u32 words of one packed vector: `ceil(dim·nbits / 32)`.
    pub fn words_per_vector(&self) -> usize {
        kernels::residual_codec::words_per_vector(self.dim, self.nbits)
    }

    /// Bytes of one packed residual on disk: `4·ceil(dim·nbits / 32)`
    /// (`dim·nbits / 8` when that is a multiple of 4, e.g. 32 for dim 128, 2 bits).
    pub fn packed_bytes_per_vector(&self) -> usize {
        4 * self.words_per_vector()
    }

    /// Bytes one stored vector costs: packed residual + its code (u16 up to
    /// 65,536 centroids, else u32; see [`super::store::index_width`]).
    pub fn bytes_per_vector(&self) -> usize {
        self.packed_bytes_per_vector() + super::store::index_width(self.num_centroids())
    }

    fn check_vectors(&self, what: &str, x: &[f32]) -> Result<usize> {
        if !x.len().is_multiple_of(self.dim) {
            return Err(Error::shape(
                "residual codec",
                format!("{what}: {} values for dimension {}", x.len(), self.dim),
            ));
        }
        check_finite(what, x, self.dim)?;
        Ok(x.len() / self.dim)
    }

    fn check_compressed(&self, codes: &[u32], packed: &[u32]) -> Result<()> {
        let w = self.words_per_vector();
        if packed.len() != codes.len() * w {
            return Err(Error::shape(
                "residual decompress",
                format!(
                    "{} packed words for {} vectors of {w} words",
                    packed.len(),
                    codes.len()
                ),
            ));
        }
        let k = self.num_centroids();
        if let Some(i) = codes.iter().position(|&c| c as usize >= k) {
            return Err(Error::Input(format!(
                "code {} of vector {i} is not below the {k} centroids",
                codes[i]
            )));
        }
        Ok(())
    }

    /// Codes and packed residuals of `x` (`n × dim`, finite) on `compute`.
    pub fn compress(&self, compute: &Compute, x: &[f32]) -> Result<Compressed> {
        self.check_vectors("vectors to compress", x)?;
        compute.codec(self)?.compress(x)
    }

    /// Packed residuals of `x` against the given `codes` (the compression step
    /// without the assignment).
    pub fn pack(&self, compute: &Compute, x: &[f32], codes: &[u32]) -> Result<Vec<u32>> {
        let n = self.check_vectors("vectors to pack", x)?;
        self.check_codes(codes, n)?;
        compute.codec(self)?.pack(x, codes)
    }

    fn check_codes(&self, codes: &[u32], n: usize) -> Result<()> {
        if codes.len() != n {
            return Err(Error::shape(
                "residual pack",
                format!("{} codes for {n} vectors", codes.len()),
            ));
        }
        let k = self.num_centroids();
        if let Some(i) = codes.iter().position(|&c| c as usize >= k) {
            return Err(Error::Input(format!(
                "code {} of vector {i} is not below the {k} centroids",
                codes[i]
            )));
        }
        Ok(())
    }

    /// Decompressed unit vectors (`n × dim`) on `compute`.
    pub fn decompress(&self, compute: &Compute, codes: &[u32], packed: &[u32]) -> Result<Vec<f32>> {
        self.check_compressed(codes, packed)?;
        compute.codec(self)?.decompress(codes, packed)
    }

    /// CPU twin of assignment + `compress` (inputs assumed valid).
    pub fn compress_cpu(&self, x: &[f32]) -> Compressed {
        let (codes, _) = kmeans::assign_cpu(x, self.dim, &self.centroids);
        let packed = self.pack_cpu(x, &codes);
        Compressed { codes, packed }
    }

    /// CPU twin of `shaders/residual_codec.wgsl:compress` (inputs assumed valid).
    pub fn pack_cpu(&self, x: &[f32], codes: &[u32]) -> Vec<u32> {
        let dim = self.dim;
        let nbits = self.nbits;
        let w = self.words_per_vector();
        let per_word = 32 / nbits;
        let mut packed = vec![0u32; codes.len() * w];
        if codes.is_empty() {
            return packed;
        }
        packed
            .par_chunks_mut(w)
            .zip(x.par_chunks(dim))
            .zip(codes.par_iter())
            .with_min_len(64)
            .for_each(|((out, xv), &c)| {
                let cen = &self.centroids[c as usize * dim..(c as usize + 1) * dim];
                for (d, (&a, &b)) in xv.iter().zip(cen).enumerate() {
                    let r = a - b;
                    let bucket = self.bucket_cutoffs.iter().filter(|&&t| t <= r).count() as u32;
                    out[d / per_word] |= bucket << ((d % per_word) * nbits);
                }
            });
        packed
    }

    /// CPU twin of `shaders/residual_codec.wgsl:decompress` (inputs assumed
    /// valid): byte-wise, through a table of the weights every packed byte
    /// stands for.
    pub fn decompress_cpu(&self, codes: &[u32], packed: &[u32]) -> Vec<f32> {
        let dim = self.dim;
        let nbits = self.nbits;
        let w = self.words_per_vector();
        let per_byte = 8 / nbits;
        let mask = (1u32 << nbits) - 1;
        // table[byte · per_byte + j] = weights[bucket j of byte]
        let table: Vec<f32> = (0..256u32)
            .flat_map(|byte| (0..per_byte).map(move |j| (byte >> (j * nbits)) & mask))
            .map(|b| self.bucket_weights[b as usize])
            .collect();
        let mut out = vec![0f32; codes.len() * dim];
        if codes.is_empty() {
            return out;
        }
        out.par_chunks_mut(dim)
            .zip(packed.par_chunks(w))
            .zip(codes.par_iter())
            .with_min_len(64)
            .for_each(|((y, words), &c)| {
                let cen = &self.centroids[c as usize * dim..(c as usize + 1) * dim];
                let mut d = 0;
                'outer: for word in words {
                    for byte in word.to_le_bytes() {
                        let t = &table[byte as usize * per_byte..][..per_byte];
                        for &tw in t {
                            if d == dim {
                                break 'outer;
                            }
                            y[d] = cen[d] + tw;
                            d += 1;
                        }
                    }
                }
                let inv = 1.0 / sq_norm(y).sqrt().max(1e-12);
                y.iter_mut().for_each(|v| *v *= inv);
            });
        out
    }

    /// The codec's arrays on `ctx`, for repeated GPU compression/decompression.
    pub fn upload(&self, ctx: &Arc<GpuContext>) -> Result<GpuCodec> {
        Ok(GpuCodec {
            ctx: ctx.clone(),
            centroids: ctx.upload("codec centroids", &self.centroids)?,
            cutoffs: ctx.upload("codec cutoffs", &self.bucket_cutoffs)?,
            weights: ctx.upload("codec weights", &self.bucket_weights)?,
            dim: self.dim,
            nbits: self.nbits,
            num_centroids: self.num_centroids(),
        })
    }
}

/// `Σ v²` with eight independent lanes (vectorises; f32 like the shader).
fn sq_norm(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x * x;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &x in rest {
        s += x * x;
    }
    s
}

/// Which stored vectors [`GpuCodec::record_decompress_rows`] decompresses.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// Output row v ← stored vector `first + v`.
    Range { first: usize },
    /// Output row v ← stored vector `rows[v]` (u32; `u32::MAX` leaves row v untouched).
    Gather(&'a wgpu::Buffer),
}

/// A codec resident on a GPU: its centroids, cutoffs and weights uploaded once.
/// The `record_*` methods add dispatches to a caller's encoder (so search can
/// keep a whole query batch in one submit); the others run and read back.
pub struct GpuCodec {
    pub ctx: Arc<GpuContext>,
    pub centroids: wgpu::Buffer,
    pub cutoffs: wgpu::Buffer,
    pub weights: wgpu::Buffer,
    pub dim: usize,
    pub nbits: usize,
    pub num_centroids: usize,
}

impl GpuCodec {
    fn words(&self) -> usize {
        kernels::residual_codec::words_per_vector(self.dim, self.nbits)
    }

    /// Rows per dispatch so every binding stays under the adapter's limit.
    fn rows(&self) -> usize {
        rows_per_binding(&self.ctx, self.dim.max(self.words()))
    }

    /// Records `out = decompress(codes, packed)` for `n` vectors.
    pub fn record_decompress(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        codes: &wgpu::Buffer,
        packed: &wgpu::Buffer,
        out: &wgpu::Buffer,
        n: usize,
    ) -> Result<()> {
        self.record_decompress_rows(encoder, codes, packed, out, Rows::Range { first: 0 }, n)
    }

    /// Records `out[v] = decompress(stored vector src(v))` for `n` rows, reading
    /// `codes` and `packed` of a whole index in place (`rows` says which).
    pub fn record_decompress_rows(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        codes: &wgpu::Buffer,
        packed: &wgpu::Buffer,
        out: &wgpu::Buffer,
        rows: Rows,
        n: usize,
    ) -> Result<()> {
        let (first, gather) = match rows {
            Rows::Range { first } => (first, None),
            Rows::Gather(b) => (0, Some(b)),
        };
        kernels::residual_codec::record_decompress(
            &self.ctx,
            encoder,
            &kernels::residual_codec::DecompressBuffers {
                codes,
                packed,
                centroids: &self.centroids,
                weights: &self.weights,
                out,
                rows: gather,
            },
            first,
            (n, self.dim, self.nbits),
        )
    }

    /// Records the assignment (`codes`, `scores`) and packing (`packed`) of `n`
    /// vectors in `x`.
    pub fn record_compress(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        codes: &wgpu::Buffer,
        scores: &wgpu::Buffer,
        packed: &wgpu::Buffer,
        n: usize,
    ) -> Result<()> {
        kernels::kmeans::record_assign(
            &self.ctx,
            encoder,
            &kernels::kmeans::Buffers {
                x,
                centroids: &self.centroids,
                codes,
                scores,
            },
            (n, self.num_centroids, self.dim),
        )?;
        kernels::residual_codec::record_compress(
            &self.ctx,
            encoder,
            &kernels::residual_codec::CompressBuffers {
                x,
                centroids: &self.centroids,
                codes,
                cutoffs: &self.cutoffs,
                packed,
                rows: None,
            },
            (n, self.dim, self.nbits),
        )
    }

    /// Compresses `x` (`n × dim`, assumed finite): one submit for all chunks.
    pub fn compress(&self, x: &[f32]) -> Result<Compressed> {
        let ctx = &self.ctx;
        let dim = self.dim;
        let w = self.words();
        if x.is_empty() {
            return Ok(Compressed::default());
        }
        let mut encoder = ctx.encoder("residual compress");
        let mut outs = Vec::new();
        for chunk in x.chunks(self.rows() * dim) {
            let n = chunk.len() / dim;
            let xbuf = ctx.upload("compress vectors", chunk)?;
            let codes = ctx.pool().get(n as u64 * 4);
            let scores = ctx.pool().get(n as u64 * 4);
            let packed = ctx.pool().get((n * w) as u64 * 4);
            self.record_compress(
                &mut encoder,
                &xbuf,
                codes.buffer(),
                scores.buffer(),
                packed.buffer(),
                n,
            )?;
            outs.push((codes, scores, packed, n));
        }
        let mut sources = Vec::new();
        for (c, _, p, n) in &outs {
            sources.push((c.buffer(), *n));
            sources.push((p.buffer(), *n * w));
        }
        let read: Vec<Vec<u32>> = ctx.submit_and_read(encoder, &sources)?;
        let mut out = Compressed::default();
        for pair in read.chunks_exact(2) {
            out.codes.extend_from_slice(&pair[0]);
            out.packed.extend_from_slice(&pair[1]);
        }
        Ok(out)
    }

    /// Packs the residuals of `x` against given `codes`: one submit.
    pub fn pack(&self, x: &[f32], codes: &[u32]) -> Result<Vec<u32>> {
        let ctx = &self.ctx;
        let dim = self.dim;
        let w = self.words();
        if x.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.rows();
        let mut encoder = ctx.encoder("residual pack");
        let mut outs = Vec::new();
        for (chunk, cchunk) in x.chunks(rows * dim).zip(codes.chunks(rows)) {
            let n = cchunk.len();
            let xbuf = ctx.upload("pack vectors", chunk)?;
            let cbuf = ctx.upload("pack codes", cchunk)?;
            let packed = ctx.pool().get((n * w) as u64 * 4);
            kernels::residual_codec::record_compress(
                ctx,
                &mut encoder,
                &kernels::residual_codec::CompressBuffers {
                    x: &xbuf,
                    centroids: &self.centroids,
                    codes: &cbuf,
                    cutoffs: &self.cutoffs,
                    packed: packed.buffer(),
                    rows: None,
                },
                (n, dim, self.nbits),
            )?;
            outs.push((packed, n));
        }
        let sources: Vec<_> = outs.iter().map(|(p, n)| (p.buffer(), n * w)).collect();
        let read: Vec<Vec<u32>> = ctx.submit_and_read(encoder, &sources)?;
        Ok(read.concat())
    }

    /// Decompresses (`codes`, `packed`) (assumed valid): one submit.
    pub fn decompress(&self, codes: &[u32], packed: &[u32]) -> Result<Vec<f32>> {
        let ctx = &self.ctx;
        let dim = self.dim;
        let w = self.words();
        if codes.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.rows();
        let mut encoder = ctx.encoder("residual decompress");
        let mut outs = Vec::new();
        for (cchunk, pchunk) in codes.chunks(rows).zip(packed.chunks(rows * w)) {
            let n = cchunk.len();
            let cbuf = ctx.upload("decompress codes", cchunk)?;
            let pbuf = ctx.upload("decompress residuals", pchunk)?;
            let out = ctx.pool().get((n * dim) as u64 * 4);
            self.record_decompress(&mut encoder, &cbuf, &pbuf, out.buffer(), n)?;
            outs.push((out, n));
        }
        let sources: Vec<_> = outs.iter().map(|(o, n)| (o.buffer(), n * dim)).collect();
        let read: Vec<Vec<f32>> = ctx.submit_and_read(encoder, &sources)?;
        Ok(read.concat())
    }
}
