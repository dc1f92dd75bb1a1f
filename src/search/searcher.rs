//! Searching an [`Index`]: PLAID's candidate stages, then exact MaxSim on the
//! decompressed residuals of the surviving documents, then top-k.
//! On `Compute::Gpu` every stage runs as WGSL kernels; on `Compute::Cpu` as
//! their native twins.

use rayon::prelude::*;

use super::maxsim;
use super::plaid::{self, CodesView, PlaidParams};
use crate::backend::Compute;
use crate::error::{Error, Result};
use std::sync::Arc;

use crate::gpu::GpuContext;
use crate::index::Index;

/// One result: document index in the index, its corpus id, its MaxSim score.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub doc: u32,
    pub id: String,
    pub score: f32,
}

/// How to search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchOptions {
    pub k: usize,
    /// PLAID's knobs; `None` = the defaults for `k` ([`PlaidParams::for_k`]).
    pub plaid: Option<PlaidParams>,
    /// Skip PLAID: exact MaxSim against every document.
    pub exhaustive: bool,
}

impl SearchOptions {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            plaid: None,
            exhaustive: false,
        }
    }
    pub fn params(&self) -> PlaidParams {
        self.plaid.unwrap_or_else(|| PlaidParams::for_k(self.k))
    }
}

/// A searcher over one open index.
pub struct Searcher<'a> {
    index: &'a Index,
    compute: Compute,
    /// The index arrays the GPU stages read, uploaded once.
    gpu: Option<GpuIndex>,
}

/// Index arrays resident on the GPU.
struct GpuIndex {
    ctx: Arc<GpuContext>,
    centroids: wgpu::Buffer,
    codes: wgpu::Buffer,
    doc_offsets: wgpu::Buffer,
    ivf: wgpu::Buffer,
    ivf_offsets: wgpu::Buffer,
    codec: Arc<crate::index::GpuCodec>,
}

fn to_u32(what: &str, v: &[u64]) -> Result<Vec<u32>> {
    v.iter()
        .map(|&x| {
            u32::try_from(x).map_err(|_| Error::LimitExceeded {
                what: format!("{what} offsets on the GPU (u32)"),
                needed: x,
                limit: u32::MAX as u64,
            })
        })
        .collect()
}

impl<'a> Searcher<'a> {
    /// A searcher; on `Compute::Gpu` this uploads the index's centroids, codes
    /// and inverted lists once.
    pub fn new(index: &'a Index, compute: Compute) -> Result<Self> {
        let gpu = match &compute {
            Compute::Cpu => None,
            Compute::Gpu(ctx) => Some(GpuIndex {
                ctx: ctx.clone(),
                centroids: ctx.upload("centroids", index.centroids())?,
                codes: ctx.upload("codes", index.codes())?,
                doc_offsets: ctx
                    .upload("doc offsets", &to_u32("document", index.doc_offsets())?)?,
                ivf: ctx.upload("inverted lists", index.ivf())?,
                ivf_offsets: ctx.upload(
                    "ivf offsets",
                    &to_u32("inverted list", index.ivf_offsets())?,
                )?,
                codec: index.gpu_codec(ctx)?,
            }),
        };
        Ok(Self {
            index,
            compute,
            gpu,
        })
    }

    pub fn index(&self) -> &Index {
        self.index
    }

    fn view(&self) -> CodesView<'_> {
        CodesView {
            num_centroids: self.index.num_centroids(),
            codes: self.index.codes(),
            doc_offsets: self.index.doc_offsets(),
            ivf: self.index.ivf(),
            ivf_offsets: self.index.ivf_offsets(),
        }
    }

    /// Searches a batch of queries, each `qlen × dim` (row-major, back to back).
    pub fn search(
        &self,
        queries: &[f32],
        qlen: usize,
        options: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>> {
        let dim = self.index.dim();
        if qlen == 0 || queries.len() % (qlen * dim) != 0 {
            return Err(Error::shape(
                "search",
                format!(
                    "{} query values are not a whole number of {qlen}×{dim} queries",
                    queries.len()
                ),
            ));
        }
        if options.k == 0 {
            return Err(Error::Input("k must be at least 1".into()));
        }
        let nq = queries.len() / (qlen * dim);
        let sets: Vec<Vec<u32>> = if options.exhaustive {
            let all: Vec<u32> = (0..self.index.num_docs() as u32).collect();
            vec![all; nq]
        } else if let Some(g) = &self.gpu {
            self.rerank_sets_gpu(g, queries, qlen, &options.params())?
        } else {
            self.rerank_sets(queries, qlen, &options.params())?
        };
        if let Some(g) = &self.gpu {
            let scores = self.maxsim_gpu(g, queries, qlen, &sets)?;
            return Ok(sets
                .iter()
                .zip(&scores)
                .map(|(set, sc)| self.top_k(set, sc, options.k))
                .collect());
        }
        let mut out = Vec::with_capacity(nq);
        for (qi, set) in sets.iter().enumerate() {
            let q = &queries[qi * qlen * dim..(qi + 1) * qlen * dim];
            let (vectors, offsets) = self.index.decompress_docs(&self.compute, set)?;
            let owner = vec![0u32; set.len()];
            let scores = maxsim::maxsim_cpu(&maxsim::ScoreRequest {
                queries: q,
                qlen,
                dim,
                docs: &vectors,
                offsets: &offsets,
                owner: &owner,
            });
            out.push(self.top_k(set, &scores, options.k));
        }
        Ok(out)
    }

    /// PLAID stages 1–4 for every query: the documents to rerank exactly.
    fn rerank_sets(
        &self,
        queries: &[f32],
        qlen: usize,
        params: &PlaidParams,
    ) -> Result<Vec<Vec<u32>>> {
        let dim = self.index.dim();
        let view = self.view();
        let k = self.index.num_centroids();
        Ok(queries
            .par_chunks(qlen * dim)
            .map(|q| {
                let s = plaid::centroid_scores(self.index.centroids(), k, q, qlen, dim);
                plaid::rerank_set(&s, qlen, &view, params)
            })
            .collect())
    }

    /// PLAID stages 1–4 on the GPU: one submit for centroid scores, cells,
    /// pruning, candidates and the pruned interaction; the best `ndocs` per query
    /// are picked from the read-back scores (one float per document) and a second
    /// submit runs the full interaction on them.
    fn rerank_sets_gpu(
        &self,
        g: &GpuIndex,
        queries: &[f32],
        qlen: usize,
        params: &PlaidParams,
    ) -> Result<Vec<Vec<u32>>> {
        use crate::kernels::plaid::{self as k, Stage};
        let ctx = &g.ctx;
        let dim = self.index.dim();
        let nq = queries.len() / (qlen * dim);
        let (kc, n) = (self.index.num_centroids(), self.index.num_docs());
        let q = ctx.upload("queries", queries)?;
        let pool = ctx.pool();
        let scores = pool.get((kc * nq * qlen * 4) as u64);
        let cells = pool.get((nq * kc * 4) as u64);
        let keep = pool.get((nq * kc * 4) as u64);
        let cand = pool.get((nq * n * 4) as u64);
        let approx = pool.get((nq * n * 4) as u64);
        ctx.check_binding_size("centroid scores", (kc * nq * qlen * 4) as u64)?;
        ctx.check_binding_size("candidate flags", (nq * n * 4) as u64)?;
        let dummy = ctx.upload("no list", &[u32::MAX])?;
        let bufs = k::Buffers {
            scores: scores.buffer(),
            codes: &g.codes,
            doc_offsets: &g.doc_offsets,
            ivf: &g.ivf,
            ivf_offsets: &g.ivf_offsets,
            doc_list: &dummy,
            cells: cells.buffer(),
            keep: keep.buffer(),
            candidates: cand.buffer(),
            approx: approx.buffer(),
        };
        let p = k::Params {
            num_queries: nq as u32,
            qlen: qlen as u32,
            num_centroids: kc as u32,
            num_docs: n as u32,
            list_len: 0,
            threshold: params.centroid_score_threshold,
            _pad0: 0,
            _pad1: 0,
        };
        let mut enc = ctx.encoder("plaid candidates");
        // S[c, q·L + i] = centroid_c · q_i: the encoder's matmul with the
        // centroids as the left operand.
        crate::kernels::matmul::record(
            ctx,
            &mut enc,
            &g.centroids,
            &q,
            None,
            scores.buffer(),
            (kc, nq * qlen, dim),
            crate::kernels::matmul::Activation::Identity,
        )?;
        enc.clear_buffer(cand.buffer(), 0, None);
        if params.ncells >= kc || params.ncells > k::MAX_NCELLS {
            ctx.queue.write_buffer(
                cells.buffer(),
                0,
                bytemuck::cast_slice(&vec![1u32; nq * kc]),
            );
        } else {
            enc.clear_buffer(cells.buffer(), 0, None);
            k::record(
                ctx,
                &mut enc,
                Stage::SelectCells {
                    ncells: params.ncells.max(1),
                },
                &bufs,
                p,
            )?;
        }
        k::record(ctx, &mut enc, Stage::KeepCentroids, &bufs, p)?;
        k::record(ctx, &mut enc, Stage::MarkCandidates, &bufs, p)?;
        k::record(ctx, &mut enc, Stage::ApproxAll, &bufs, p)?;
        // Scores and candidate flags come back together (scores as raw bits).
        let mut back =
            ctx.submit_and_read::<u32>(enc, &[(approx.buffer(), nq * n), (cand.buffer(), nq * n)])?;
        let is_candidate = back.pop().unwrap_or_default();
        let pruned: Vec<f32> = back
            .pop()
            .unwrap_or_default()
            .into_iter()
            .map(f32::from_bits)
            .collect();

        // Best `ndocs` candidates per query.
        let ndocs = params.ndocs.max(1);
        let all: Vec<u32> = (0..n as u32).collect();
        let mut lists = Vec::with_capacity(nq);
        for (row, flags) in pruned
            .chunks(n.max(1))
            .zip(is_candidate.chunks(n.max(1)))
            .take(nq)
        {
            // Candidates none of whose codes survives pruning stay in (scored lowest), as on the CPU.
            let cands: Vec<u32> = all
                .iter()
                .copied()
                .filter(|&d| flags[d as usize] != 0)
                .collect();
            let sc: Vec<f32> = cands.iter().map(|&d| row[d as usize]).collect();
            lists.push(plaid::best(&cands, &sc, ndocs));
        }
        let list_len = lists.iter().map(Vec::len).max().unwrap_or(0);
        if list_len == 0 {
            return Ok(vec![Vec::new(); nq]);
        }
        let mut flat = vec![u32::MAX; nq * list_len];
        for (qi, l) in lists.iter().enumerate() {
            flat[qi * list_len..][..l.len()].copy_from_slice(l);
        }
        let doc_list = ctx.upload("ndocs lists", &flat)?;
        let bufs = k::Buffers {
            doc_list: &doc_list,
            ..bufs
        };
        let p = k::Params {
            list_len: list_len as u32,
            ..p
        };
        let mut enc = ctx.encoder("plaid full interaction");
        k::record(ctx, &mut enc, Stage::ApproxList, &bufs, p)?;
        let full = ctx
            .submit_and_read::<f32>(enc, &[(approx.buffer(), nq * list_len)])?
            .remove(0);
        Ok(lists
            .iter()
            .enumerate()
            .map(|(qi, l)| {
                let sc = &full[qi * list_len..][..l.len()];
                let mut keep = plaid::best(l, sc, (params.ndocs / 4).max(1));
                keep.sort_unstable();
                keep
            })
            .collect())
    }

    /// Decompression and exact MaxSim of every query's documents: one submit per
    /// group of documents whose decompressed vectors fit one storage binding
    /// (usually one group per batch).
    fn maxsim_gpu(
        &self,
        g: &GpuIndex,
        queries: &[f32],
        qlen: usize,
        sets: &[Vec<u32>],
    ) -> Result<Vec<Vec<f32>>> {
        let ctx = &g.ctx;
        let dim = self.index.dim();
        let nq = sets.len();
        let limit =
            (ctx.limits.max_storage_buffer_binding_size as u64).min(ctx.limits.max_buffer_size);
        let budget = (limit / (dim as u64 * 4)).max(1) as usize; // vectors per group
                                                                 // (query, document) pairs in order, split into groups under the budget.
        let pairs: Vec<(u32, u32)> = sets
            .iter()
            .enumerate()
            .flat_map(|(qi, set)| set.iter().map(move |&d| (qi as u32, d)))
            .collect();
        let q = ctx.upload("queries", queries)?;
        let mut flat = Vec::with_capacity(pairs.len());
        let mut at = 0;
        while at < pairs.len() {
            let (mut codes, mut packed, mut offsets, mut owner) =
                (Vec::new(), Vec::new(), vec![0u32], Vec::new());
            while at < pairs.len() {
                let (qi, d) = pairs[at];
                let len = self.index.doc_codes(d as usize).len();
                if !owner.is_empty() && codes.len() + len > budget {
                    break;
                }
                codes.extend_from_slice(self.index.doc_codes(d as usize));
                packed.extend_from_slice(self.index.doc_residuals(d as usize));
                offsets.push(codes.len() as u32);
                owner.push(qi);
                at += 1;
            }
            ctx.check_binding_size(
                "decompressed document vectors",
                (codes.len() * dim * 4) as u64,
            )?;
            let codes_b = ctx.upload("candidate codes", &codes)?;
            let packed_b = ctx.upload("candidate residuals", &packed)?;
            let offsets_b = ctx.upload("candidate offsets", &offsets)?;
            let owner_b = ctx.upload("candidate owners", &owner)?;
            let vectors = ctx.pool().get((codes.len().max(1) * dim * 4) as u64);
            let scores = ctx.pool().get((owner.len() * 4) as u64);
            let mut enc = ctx.encoder("decompress + maxsim");
            g.codec.record_decompress(
                &mut enc,
                &codes_b,
                &packed_b,
                vectors.buffer(),
                codes.len(),
            )?;
            crate::kernels::maxsim::record(
                ctx,
                &mut enc,
                &q,
                vectors.buffer(),
                &offsets_b,
                &owner_b,
                scores.buffer(),
                (owner.len(), nq, qlen, dim),
            )?;
            flat.extend(
                ctx.submit_and_read::<f32>(enc, &[(scores.buffer(), owner.len())])?
                    .remove(0),
            );
        }
        let mut out = Vec::with_capacity(nq);
        let mut at = 0;
        for set in sets {
            out.push(flat[at..at + set.len()].to_vec());
            at += set.len();
        }
        Ok(out)
    }

    fn top_k(&self, docs: &[u32], scores: &[f32], k: usize) -> Vec<Hit> {
        let best = plaid::best(docs, scores, k);
        let pos: std::collections::HashMap<u32, usize> =
            docs.iter().enumerate().map(|(i, &d)| (d, i)).collect();
        best.into_iter()
            .map(|d| Hit {
                doc: d,
                id: self.index.doc_ids()[d as usize].clone(),
                score: scores[pos[&d]],
            })
            .collect()
    }
}
