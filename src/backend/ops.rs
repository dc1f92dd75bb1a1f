//! The index and search operations behind the backend, as the encoder's are
//! behind [`super::Backend`]: k-means assignment, residual compress / pack /
//! decompress, MaxSim (all pairs, per owner, fused with top-k), top-k, and a
//! whole PLAID search over a resident index. Each op dispatches here, once, to
//! the native CPU twin or to the WGSL path on a GPU context; `src/index/` and
//! `src/search/` validate their inputs and call these without knowing which
//! backend runs. (The CPU twins stay beside the math they mirror in `index/`
//! and `search/`, where the tests name them; the GPU host code that records
//! each kernel sits beside them too, behind these entry points.)

use std::ops::Deref;
use std::sync::Arc;

use super::Compute;
use crate::error::Result;
use crate::index::codec::{Compressed, GpuCodec, ResidualCodec};
use crate::index::kmeans::{self, GpuAssigner};
use crate::index::Index;
use crate::search::maxsim::{self, ScoreRequest};
use crate::search::searcher::{GpuIndex, Hit, SearchOptions, Searcher};
use crate::search::topk::{self, TopK};

/// Vectors ready for repeated nearest-centroid assignment (k-means training
/// assigns the same vectors every iteration: on the GPU they are uploaded once).
pub enum Assigner<'a> {
    Cpu { x: &'a [f32], dim: usize },
    Gpu(GpuAssigner<'a>),
}

impl Assigner<'_> {
    /// `(codes, best scores)` of every vector against `centroids` (ties → lower id).
    pub fn assign(&self, centroids: &[f32]) -> Result<(Vec<u32>, Vec<f32>)> {
        match self {
            Assigner::Cpu { x, dim } => Ok(kmeans::assign_cpu(x, *dim, centroids)),
            Assigner::Gpu(g) => g.assign(centroids),
        }
    }
}

/// A residual codec on the backend (on the GPU: its centroids, cutoffs and
/// weights uploaded once). Inputs are assumed validated by the caller.
pub enum CodecOps<'a> {
    Cpu(&'a ResidualCodec),
    Gpu(Arc<GpuCodec>),
}

impl CodecOps<'_> {
    /// Codes and packed residuals of `x` (`n × dim`, finite).
    pub fn compress(&self, x: &[f32]) -> Result<Compressed> {
        match self {
            CodecOps::Cpu(c) => Ok(c.compress_cpu(x)),
            CodecOps::Gpu(g) => g.compress(x),
        }
    }

    /// Packed residuals of `x` against given `codes`.
    pub fn pack(&self, x: &[f32], codes: &[u32]) -> Result<Vec<u32>> {
        match self {
            CodecOps::Cpu(c) => Ok(c.pack_cpu(x, codes)),
            CodecOps::Gpu(g) => g.pack(x, codes),
        }
    }

    /// Unit vectors `centroid[code] + weights[buckets]`, re-normalised.
    pub fn decompress(&self, codes: &[u32], packed: &[u32]) -> Result<Vec<f32>> {
        match self {
            CodecOps::Cpu(c) => Ok(c.decompress_cpu(codes, packed)),
            CodecOps::Gpu(g) => g.decompress(codes, packed),
        }
    }
}

/// An index's arrays where its searches read them: in place on the host, or
/// uploaded once to the GPU.
pub enum ResidentIndex {
    Host,
    Gpu(Box<GpuIndex>),
}

impl ResidentIndex {
    /// Runs one query batch (shapes already checked): PLAID or exhaustive on
    /// the CPU twins, or recorded into one command encoder and submitted once.
    pub(crate) fn search<I: Deref<Target = Index> + Sync>(
        &self,
        searcher: &Searcher<I>,
        queries: &[f32],
        qlen: usize,
        options: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>> {
        match self {
            ResidentIndex::Host => searcher.search_host(queries, qlen, options),
            ResidentIndex::Gpu(g) => searcher.search_gpu(g, queries, qlen, options),
        }
    }
}

impl Compute {
    /// `x` (`n × dim`) ready for repeated assignment.
    pub fn assigner<'a>(&'a self, x: &'a [f32], dim: usize) -> Result<Assigner<'a>> {
        Ok(match self {
            Compute::Cpu => Assigner::Cpu { x, dim },
            Compute::Gpu(ctx) => Assigner::Gpu(GpuAssigner::new(ctx, x, dim)?),
        })
    }

    /// `codec` on this backend (uploaded on the GPU).
    pub fn codec<'a>(&self, codec: &'a ResidualCodec) -> Result<CodecOps<'a>> {
        Ok(match self {
            Compute::Cpu => CodecOps::Cpu(codec),
            Compute::Gpu(ctx) => CodecOps::Gpu(Arc::new(codec.upload(ctx)?)),
        })
    }

    /// An open index's codec on this backend (on the GPU the upload is cached
    /// in the index and reused).
    pub fn index_codec<'a>(&self, index: &'a Index) -> Result<CodecOps<'a>> {
        Ok(match self {
            Compute::Cpu => CodecOps::Cpu(index.codec()),
            Compute::Gpu(ctx) => CodecOps::Gpu(index.gpu_codec(ctx)?),
        })
    }

    /// The arrays a searcher over `index` reads, where this backend reads them.
    pub fn resident_index(&self, index: &Index) -> Result<ResidentIndex> {
        Ok(match self {
            Compute::Cpu => ResidentIndex::Host,
            Compute::Gpu(ctx) => ResidentIndex::Gpu(Box::new(GpuIndex::upload(ctx, index)?)),
        })
    }

    /// All-pairs MaxSim, `nq × n` (shapes checked; `offs` has `n + 1` entries).
    pub(crate) fn maxsim_matrix(
        &self,
        queries: &[f32],
        (nq, qlen, dim): (usize, usize, usize),
        docs: &[f32],
        offs: &[usize],
    ) -> Result<Vec<f32>> {
        match self {
            Compute::Cpu => Ok(maxsim::maxsim_matrix_cpu(
                queries, nq, qlen, docs, offs, dim,
            )),
            Compute::Gpu(ctx) => maxsim::maxsim_matrix_gpu(
                ctx,
                queries,
                nq,
                qlen,
                docs,
                offs,
                dim,
                maxsim::slice_limit(ctx),
            ),
        }
    }

    /// MaxSim of each document of a validated request against its owner query.
    pub(crate) fn maxsim_assigned(&self, req: &ScoreRequest, nq: usize) -> Result<Vec<f32>> {
        match self {
            Compute::Cpu => Ok(maxsim::maxsim_cpu(req)),
            Compute::Gpu(ctx) => {
                maxsim::maxsim_assigned_gpu(ctx, req, nq, maxsim::slice_limit(ctx))
            }
        }
    }

    /// All-pairs MaxSim then the best `k` per query; on the GPU the scores
    /// stay on the device (one submit per query group) while `k` fits the
    /// kernel's sort, else they are ranked on the host.
    pub(crate) fn maxsim_topk(
        &self,
        queries: &[f32],
        (nq, qlen, dim): (usize, usize, usize),
        docs: &[f32],
        offs: &[usize],
        k: usize,
    ) -> Result<TopK> {
        let n = offs.len() - 1;
        match self {
            Compute::Gpu(ctx) if k.min(n) <= crate::kernels::topk::MAX_K => maxsim::exhaustive_gpu(
                ctx,
                queries,
                nq,
                qlen,
                docs,
                offs,
                dim,
                k,
                maxsim::slice_limit(ctx),
            ),
            _ => {
                let scores = self.maxsim_matrix(queries, (nq, qlen, dim), docs, offs)?;
                topk::topk_cpu(&scores, n, k)
            }
        }
    }

    /// Top-k of every row of `scores` (`rows` rows of `n`, checked); on the
    /// GPU while `k` fits the kernel's sort, else on the host.
    pub(crate) fn topk(&self, scores: &[f32], rows: usize, n: usize, k: usize) -> Result<TopK> {
        match self {
            Compute::Gpu(ctx) if k.min(n) <= crate::kernels::topk::MAX_K => {
                topk::topk_gpu(ctx, scores, rows, n, k)
            }
            _ => topk::topk_cpu(scores, n, k),
        }
    }
}

/// `s = q · dᵀ` (`q`: `m × dim`, `d`: `n × dim`, row-major) on the backend:
/// every query-token × document-token similarity, `m × n` row-major (what an
/// explanation of a MaxSim score needs; the GPU path is the `matmul` kernel
/// behind `Backend::linear`).
pub fn similarity(compute: &Compute, q: &[f32], d: &[f32], dim: usize) -> Result<Vec<f32>> {
    use super::{Activation, Backend, HostMatrix};
    let (m, n) = (q.len() / dim.max(1), d.len() / dim.max(1));
    if m == 0 || n == 0 {
        return Ok(vec![0.0; m * n]);
    }
    let qm = HostMatrix::new(m, dim, q.to_vec())?;
    let dm = HostMatrix::new(n, dim, d.to_vec())?;
    fn run<B: Backend>(b: &mut B, q: &HostMatrix, d: &HostMatrix) -> Result<Vec<f32>> {
        let w = b.weight("document vectors", d)?;
        let x = b.upload_tensor(q)?;
        let y = b.linear(&x, &w, None, Activation::Identity)?;
        Ok(b.read(&y)?.data)
    }
    match compute {
        Compute::Cpu => run(&mut super::cpu::CpuBackend::new(), &qm, &dm),
        Compute::Gpu(ctx) => run(&mut super::gpu::GpuBackend::new(ctx.clone()), &qm, &dm),
    }
}
