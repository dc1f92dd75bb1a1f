//! Searching an [`Index`]: PLAID's candidate stages, then exact MaxSim on the
//! decompressed residuals of the surviving documents, then top-k.
//! The backend decides where ([`crate::backend::ops::ResidentIndex`]): on a
//! GPU every stage runs as WGSL kernels, a query batch recorded into one
//! command encoder and submitted once; on the CPU as their native twins.

use rayon::prelude::*;

use super::maxsim;
use super::plaid::{self, CodesView, PlaidParams};
use super::survivors;
use crate::backend::ops::ResidentIndex;
use crate::backend::Compute;
use crate::error::{Error, Result};
use std::ops::Deref;
use std::sync::Arc;

use crate::gpu::{GpuContext, PooledBuffer};
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

    /// Errors unless the options can give `k` results from `num_docs`
    /// documents: `k` ≥ 1, PLAID's knobs in range ([`PlaidParams::validate`]),
    /// and `ndocs` large enough that the quarter of it reranked exactly holds
    /// `min(k, num_docs)` documents.
    pub fn validate(&self, num_docs: usize) -> Result<()> {
        if self.k == 0 {
            return Err(Error::Input("k must be at least 1".into()));
        }
        if self.exhaustive {
            return Ok(());
        }
        let p = self.params();
        p.validate()?;
        let reranked = (p.ndocs / 4).max(1);
        let want = self.k.min(num_docs);
        if reranked < want {
            return Err(Error::Input(format!(
                "ndocs {} reranks {reranked} documents exactly (a quarter), fewer than the {want} \
                 results asked for: use ndocs of at least {}",
                p.ndocs,
                want.saturating_mul(4)
            )));
        }
        Ok(())
    }
}

/// A searcher over one open index, held by reference (`Searcher<&Index>`) or
/// shared (`Searcher<Arc<Index>>`, which is `'static` and can live beside the
/// index in a long-lived handle).
pub struct Searcher<I: Deref<Target = Index> + Sync = Arc<Index>> {
    index: I,
    compute: Compute,
    /// The index arrays where the backend's stages read them (on the GPU:
    /// uploaded once).
    resident: ResidentIndex,
}

/// Index arrays resident on the GPU.
pub struct GpuIndex {
    ctx: Arc<GpuContext>,
    centroids: wgpu::Buffer,
    codes: wgpu::Buffer,
    doc_offsets: wgpu::Buffer,
    ivf: wgpu::Buffer,
    ivf_offsets: wgpu::Buffer,
    /// The index's codes and packed residuals (u32 words), read in place by
    /// the decompression of PLAID's survivors.
    residuals: wgpu::Buffer,
    codec: Arc<crate::index::GpuCodec>,
    /// Document lengths, longest first: bounds on the vectors of m survivors.
    lens_desc: Vec<u32>,
}

impl GpuIndex {
    /// Uploads the index's centroids, codes, inverted lists and residuals.
    pub(crate) fn upload(ctx: &Arc<GpuContext>, index: &Index) -> Result<Self> {
        Ok(GpuIndex {
            ctx: ctx.clone(),
            centroids: ctx.upload("centroids", index.centroids())?,
            codes: ctx.upload("codes", index.codes())?,
            doc_offsets: ctx.upload("doc offsets", &to_u32("document", index.doc_offsets())?)?,
            ivf: ctx.upload("inverted lists", index.ivf())?,
            ivf_offsets: ctx.upload(
                "ivf offsets",
                &to_u32("inverted list", index.ivf_offsets())?,
            )?,
            residuals: ctx.upload("residuals", index.residuals())?,
            codec: index.gpu_codec(ctx)?,
            lens_desc: {
                let mut l = index.doclens().to_vec();
                l.sort_unstable_by(|a, b| b.cmp(a));
                l
            },
        })
    }
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

impl<I: Deref<Target = Index> + Sync> Searcher<I> {
    /// A searcher; on a GPU backend this uploads the index's centroids, codes,
    /// inverted lists and residuals once.
    pub fn new(index: I, compute: Compute) -> Result<Self> {
        let resident = compute.resident_index(&index)?;
        Ok(Self {
            index,
            compute,
            resident,
        })
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Where the search kernels run.
    pub fn compute(&self) -> &Compute {
        &self.compute
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
        if qlen == 0 || !queries.len().is_multiple_of(qlen * dim) {
            return Err(Error::shape(
                "search",
                format!(
                    "{} query values are not a whole number of {qlen}×{dim} queries",
                    queries.len()
                ),
            ));
        }
        options.validate(self.index.num_docs())?;
        self.resident.search(self, queries, qlen, options)
    }

    /// Searches only the documents `allowed[d]` (one flag per document of
    /// the index; from a metadata filter). The filter restricts PLAID's
    /// candidates before scoring ([`plaid::rerank_set_filtered`]); runs on the
    /// CPU twins whatever the backend.
    pub fn search_filtered(
        &self,
        queries: &[f32],
        qlen: usize,
        options: &SearchOptions,
        allowed: &[bool],
    ) -> Result<Vec<Vec<Hit>>> {
        let dim = self.index.dim();
        if qlen == 0 || !queries.len().is_multiple_of(qlen * dim) {
            return Err(Error::shape(
                "search",
                format!(
                    "{} query values are not a whole number of {qlen}×{dim} queries",
                    queries.len()
                ),
            ));
        }
        if allowed.len() != self.index.num_docs() {
            return Err(Error::shape(
                "filtered search",
                format!(
                    "{} filter flags for {} documents",
                    allowed.len(),
                    self.index.num_docs()
                ),
            ));
        }
        options.validate(self.index.num_docs())?;
        self.search_host_masked(queries, qlen, options, Some(allowed))
    }

    /// The batch on the CPU twins: PLAID stages 1–4 per query (rayon), then
    /// decompression and exact MaxSim of each query's survivors, then top-k.
    pub(crate) fn search_host(
        &self,
        queries: &[f32],
        qlen: usize,
        options: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>> {
        self.search_host_masked(queries, qlen, options, None)
    }

    fn search_host_masked(
        &self,
        queries: &[f32],
        qlen: usize,
        options: &SearchOptions,
        allowed: Option<&[bool]>,
    ) -> Result<Vec<Vec<Hit>>> {
        let dim = self.index.dim();
        let nq = queries.len() / (qlen * dim);
        let sets: Vec<Vec<u32>> = if options.exhaustive {
            let all: Vec<u32> = (0..self.index.num_docs() as u32)
                .filter(|&d| allowed.is_none_or(|a| a[d as usize]))
                .collect();
            vec![all; nq]
        } else {
            self.rerank_sets(queries, qlen, &options.params(), allowed)?
        };
        let mut out = Vec::with_capacity(nq);
        for (qi, set) in sets.iter().enumerate() {
            let q = &queries[qi * qlen * dim..(qi + 1) * qlen * dim];
            let scores = self.exact_scores(q, qlen, set)?;
            out.push(self.top_k(set, &scores, options.k));
        }
        Ok(out)
    }

    /// Exact MaxSim of one query (`qlen × dim`) against the documents `set`
    /// (decompressed on the backend, scored by the CPU twin).
    fn exact_scores(&self, q: &[f32], qlen: usize, set: &[u32]) -> Result<Vec<f32>> {
        let (vectors, offsets) = self.index.decompress_docs(&self.compute, set)?;
        let owner = vec![0u32; set.len()];
        Ok(maxsim::maxsim_cpu(&maxsim::ScoreRequest {
            queries: q,
            qlen,
            dim: self.index.dim(),
            docs: &vectors,
            offsets: &offsets,
            owner: &owner,
        }))
    }

    /// Round 1 of PLAID over shards ([`super::sharded`]): PLAID stages 1–3 for
    /// one query (`qlen × dim`) on this shard, its best `ndocs` documents
    /// (best first) and their pruned-interaction scores.
    pub fn shard_candidates(
        &self,
        q: &[f32],
        qlen: usize,
        params: &PlaidParams,
    ) -> (Vec<u32>, Vec<f32>) {
        let k = self.index.num_centroids();
        let s = plaid::centroid_scores(self.index.centroids(), k, q, qlen, self.index.dim());
        plaid::pruned_stage(&s, qlen, &self.view(), params)
    }

    /// Round 1 under a filter (`allowed[d]` per document of this shard): see
    /// [`plaid::pruned_stage_filtered`].
    pub fn shard_candidates_filtered(
        &self,
        q: &[f32],
        qlen: usize,
        params: &PlaidParams,
        allowed: &[bool],
        all_allowed: bool,
    ) -> (Vec<u32>, Vec<f32>, usize) {
        let k = self.index.num_centroids();
        let s = plaid::centroid_scores(self.index.centroids(), k, q, qlen, self.index.dim());
        plaid::pruned_stage_filtered(&s, qlen, &self.view(), params, allowed, all_allowed)
    }

    /// Round 2 of PLAID over shards: the full centroid interaction of one
    /// query with the documents `docs` of this shard.
    pub fn shard_full_scores(&self, q: &[f32], qlen: usize, docs: &[u32]) -> Vec<f32> {
        let k = self.index.num_centroids();
        let s = plaid::centroid_scores(self.index.centroids(), k, q, qlen, self.index.dim());
        plaid::approx_scores(&s, qlen, &self.view(), docs, None)
    }

    /// Round 3 of PLAID over shards: exact MaxSim of one query with the
    /// documents `docs` of this shard, as search scores them.
    pub fn shard_exact_scores(&self, q: &[f32], qlen: usize, docs: &[u32]) -> Result<Vec<f32>> {
        self.exact_scores(q, qlen, docs)
    }

    /// PLAID stages 1–4 for every query: the documents to rerank exactly.
    fn rerank_sets(
        &self,
        queries: &[f32],
        qlen: usize,
        params: &PlaidParams,
        allowed: Option<&[bool]>,
    ) -> Result<Vec<Vec<u32>>> {
        let dim = self.index.dim();
        let view = self.view();
        let k = self.index.num_centroids();
        Ok(queries
            .par_chunks(qlen * dim)
            .map(|q| {
                let s = plaid::centroid_scores(self.index.centroids(), k, q, qlen, dim);
                match allowed {
                    Some(a) => plaid::rerank_set_filtered(&s, qlen, &view, params, a),
                    None => plaid::rerank_set(&s, qlen, &view, params),
                }
            })
            .collect())
    }

    /// The whole search on the GPU, recorded into one command encoder and
    /// submitted once; only the final top-k (ids and scores) is read back.
    ///
    /// PLAID: centroid scores → cells → candidates → pruned interaction `A`
    /// (`[Q, N]`, −inf for non-candidates) → top `min(ndocs, N)` (unsorted,
    /// −inf slots empty) → full interaction scattered back into `A` (reset to
    /// −inf) → top `min(ndocs / 4, ·)` survivors → their rows laid out on the
    /// device (`survivors.wgsl`), decompressed from the resident residuals,
    /// exact MaxSim → scattered into `A` again → top-k. Exhaustive: every
    /// document decompressed in slices, all-pairs MaxSim into `A` → top-k.
    /// Scores in `[Q, N]` make every top-k break ties by document id, as the
    /// CPU path does.
    pub(crate) fn search_gpu(
        &self,
        g: &GpuIndex,
        queries: &[f32],
        qlen: usize,
        options: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>> {
        use crate::kernels::topk;
        let ctx = &g.ctx;
        let dim = self.index.dim();
        let nq = queries.len() / (qlen * dim);
        let n = self.index.num_docs();
        if nq == 0 || n == 0 {
            return Ok(vec![Vec::new(); nq]);
        }
        ctx.check_binding_size("query × document scores", (nq * n * 4) as u64)?;
        let q = ctx.upload("queries", queries)?;
        let dense = ctx.pool().get((nq * n * 4) as u64);
        // Every pooled temporary the recorded commands use stays out of the
        // context's pool until they have run (`held` outlives the submit):
        // another thread's search could otherwise take one, and a queued
        // `write_buffer` into it would land at that thread's submit.
        let mut held = Vec::new();
        let mut enc = ctx.encoder("search");
        if options.exhaustive {
            self.record_exhaustive(g, &mut enc, &q, qlen, nq, dense.buffer(), &mut held)?;
        } else {
            let (list, list_len) = self.record_plaid(
                g,
                &mut enc,
                &q,
                qlen,
                nq,
                dense.buffer(),
                &options.params(),
                &mut held,
            )?;
            self.record_rerank(g, &mut enc, &q, qlen, nq, &list, list_len, dense.buffer(), &mut held)?;
            held.push(list);
        }
        let k = options.k.min(n);
        let idx = ctx.pool().get((nq * k * 4) as u64);
        let sc = ctx.pool().get((nq * k * 4) as u64);
        let unsorted = k > topk::MAX_K;
        topk::record_with(
            ctx,
            &mut enc,
            &topk::Buffers {
                scores: dense.buffer(),
                out_idx: idx.buffer(),
                out_scores: sc.buffer(),
            },
            topk::Shape {
                rows: nq,
                n,
                k,
                in_stride: n,
            },
            topk::Options {
                unsorted,
                neg_inf_is_empty: true,
            },
        )?;
        let mut back =
            ctx.submit_and_read::<u32>(enc, &[(idx.buffer(), nq * k), (sc.buffer(), nq * k)])?;
        let scores = back.pop().unwrap_or_default();
        let ids = back.pop().unwrap_or_default();
        Ok(ids
            .chunks(k)
            .zip(scores.chunks(k))
            .map(|(ids, scores)| {
                let mut row: Vec<(u32, f32)> = ids
                    .iter()
                    .zip(scores)
                    .filter(|(&d, _)| (d as usize) < n)
                    .map(|(&d, &s)| (d, f32::from_bits(s)))
                    .collect();
                if unsorted {
                    row.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                }
                row.into_iter()
                    .map(|(doc, score)| Hit {
                        doc,
                        id: self.index.doc_ids()[doc as usize].clone(),
                        score,
                    })
                    .collect()
            })
            .collect())
    }

    /// Exact MaxSim of every query against every document into `dense`
    /// (`[Q, N]`): documents decompressed slice by slice, each slice's
    /// vectors within one storage binding.
    #[allow(clippy::too_many_arguments)]
    fn record_exhaustive(
        &self,
        g: &GpuIndex,
        enc: &mut wgpu::CommandEncoder,
        q: &wgpu::Buffer,
        qlen: usize,
        nq: usize,
        dense: &wgpu::Buffer,
        held: &mut Vec<PooledBuffer>,
    ) -> Result<()> {
        let ctx = &g.ctx;
        let dim = self.index.dim();
        let n = self.index.num_docs();
        let offs = self.index.doc_offsets();
        let budget = ctx.rows_per_binding(dim);
        let longest = self.index.doclens().iter().copied().max().unwrap_or(0) as usize;
        let rows = longest.max(budget.min(self.index.num_vectors())).max(1);
        ctx.check_binding_size("decompressed document vectors", (rows * dim * 4) as u64)?;
        let vectors = ctx.pool().get((rows * dim * 4) as u64);
        let mut d0 = 0;
        while d0 < n {
            let mut d1 = d0 + 1;
            while d1 < n && (offs[d1 + 1] - offs[d0]) as usize <= budget {
                d1 += 1;
            }
            let base = offs[d0];
            let rel: Vec<u32> = offs[d0..=d1].iter().map(|&o| (o - base) as u32).collect();
            let rel = ctx.upload("slice offsets", &rel)?;
            g.codec.record_decompress_rows(
                enc,
                &g.codes,
                &g.residuals,
                vectors.buffer(),
                crate::index::codec::Rows::Range {
                    first: base as usize,
                },
                (offs[d1] - base) as usize,
            )?;
            crate::kernels::maxsim::record_all_pairs(
                ctx,
                enc,
                &crate::kernels::maxsim::Buffers {
                    queries: q,
                    docs: vectors.buffer(),
                    doc_offsets: &rel,
                    owner: None,
                    scores: dense,
                },
                crate::kernels::maxsim::AllPairs {
                    num_queries: nq,
                    qlen,
                    dim,
                    num_docs: d1 - d0,
                    out_stride: n,
                    out_offset: d0,
                },
            )?;
            d0 = d1;
        }
        held.push(vectors);
        Ok(())
    }

    /// PLAID stages 1–4: returns the survivor list (`[Q, list_len]` document
    /// ids, `u32::MAX` = empty) and `list_len`. Uses `dense` as scratch.
    #[allow(clippy::too_many_arguments)]
    fn record_plaid(
        &self,
        g: &GpuIndex,
        enc: &mut wgpu::CommandEncoder,
        q: &wgpu::Buffer,
        qlen: usize,
        nq: usize,
        dense: &wgpu::Buffer,
        params: &PlaidParams,
        held: &mut Vec<PooledBuffer>,
    ) -> Result<(PooledBuffer, usize)> {
        use crate::kernels::plaid::{self as k, Stage};
        use crate::kernels::{survivors, topk};
        let ctx = &g.ctx;
        let dim = self.index.dim();
        let (kc, n) = (self.index.num_centroids(), self.index.num_docs());
        let pool = ctx.pool();
        ctx.check_binding_size("centroid scores", (kc * nq * qlen * 4) as u64)?;
        let scores = pool.get((kc * nq * qlen * 4) as u64);
        let cells = pool.get((nq * kc * 4) as u64);
        let keep = pool.get((nq * kc * 4) as u64);
        let cand = pool.get((nq * n * 4) as u64);
        // Stage 3 keeps min(ndocs, N) documents, stage 4 a quarter of them.
        let k1 = params.ndocs.max(1).min(n);
        let k2 = (params.ndocs / 4).max(1).min(k1);
        let l1 = pool.get((nq * k1 * 4) as u64);
        let l2 = pool.get((nq * k2 * 4) as u64);
        let l_scores = pool.get((nq * k1 * 4) as u64);
        let bufs = k::Buffers {
            scores: scores.buffer(),
            codes: &g.codes,
            doc_offsets: &g.doc_offsets,
            ivf: &g.ivf,
            ivf_offsets: &g.ivf_offsets,
            doc_list: l1.buffer(),
            cells: cells.buffer(),
            keep: keep.buffer(),
            candidates: cand.buffer(),
            approx: dense,
        };
        let p = k::Params {
            num_queries: nq as u32,
            qlen: qlen as u32,
            num_centroids: kc as u32,
            num_docs: n as u32,
            list_len: k1 as u32,
            threshold: params.centroid_score_threshold,
            scatter: 1,
            _pad1: 0,
        };
        // S[c, q·L + i] = centroid_c · q_i: the encoder's matmul with the
        // centroids as the left operand.
        crate::kernels::matmul::record(
            ctx,
            enc,
            &crate::kernels::matmul::Buffers {
                x: &g.centroids,
                w: q,
                bias: None,
                y: scores.buffer(),
            },
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
                enc,
                Stage::SelectCells {
                    ncells: params.ncells.max(1),
                },
                &bufs,
                p,
            )?;
        }
        k::record(ctx, enc, Stage::KeepCentroids, &bufs, p)?;
        k::record(ctx, enc, Stage::MarkCandidates, &bufs, p)?;
        k::record(ctx, enc, Stage::ApproxAll, &bufs, p)?;
        let select = |enc: &mut wgpu::CommandEncoder, out: &wgpu::Buffer, k: usize| {
            topk::record_with(
                ctx,
                enc,
                &topk::Buffers {
                    scores: dense,
                    out_idx: out,
                    out_scores: l_scores.buffer(),
                },
                topk::Shape {
                    rows: nq,
                    n,
                    k,
                    in_stride: n,
                },
                topk::Options {
                    unsorted: true,
                    neg_inf_is_empty: true,
                },
            )
        };
        let sv = survivors::Params {
            num_queries: nq as u32,
            num_docs: n as u32,
            ..Default::default()
        };
        let fill = |enc: &mut wgpu::CommandEncoder| {
            survivors::record(
                ctx,
                enc,
                survivors::Stage::Fill,
                &survivors::Buffers {
                    list: &g.doc_offsets,
                    doc_offsets: &g.doc_offsets,
                    exact: &g.doc_offsets,
                    offsets: cells.buffer(),
                    rows: keep.buffer(),
                    dense,
                },
                sv,
            )
        };
        // Stage 3: the best min(ndocs, N) candidates by the pruned interaction.
        select(enc, l1.buffer(), k1)?;
        // Stage 4: their full interaction, scattered into a −inf matrix.
        fill(enc)?;
        k::record(ctx, enc, Stage::ApproxList, &bufs, p)?;
        select(enc, l2.buffer(), k2)?;
        fill(enc)?;
        held.extend([scores, cells, keep, cand, l1, l_scores]);
        Ok((l2, k2))
    }

    /// Decompression and exact MaxSim of the survivors `list`
    /// (`[Q, list_len]`), scattered into `dense` (already −inf). The entries
    /// are split into groups whose vectors (an upper bound known on the host:
    /// [`survivors::plan_groups`]) fit one storage binding.
    #[allow(clippy::too_many_arguments)]
    fn record_rerank(
        &self,
        g: &GpuIndex,
        enc: &mut wgpu::CommandEncoder,
        q: &wgpu::Buffer,
        qlen: usize,
        nq: usize,
        list: &PooledBuffer,
        list_len: usize,
        dense: &wgpu::Buffer,
        held: &mut Vec<PooledBuffer>,
    ) -> Result<()> {
        use crate::kernels::survivors as k;
        let ctx = &g.ctx;
        let dim = self.index.dim();
        let n = self.index.num_docs();
        let pool = ctx.pool();
        let groups = survivors::plan_groups(nq, list_len, &g.lens_desc, ctx.rows_per_binding(dim))?;
        let max_rows = groups.iter().map(|gr| gr.rows).max().unwrap_or(0).max(1);
        ctx.check_binding_size("decompressed survivor vectors", (max_rows * dim * 4) as u64)?;
        let vectors = pool.get((max_rows * dim * 4) as u64);
        let exact = pool.get((nq * list_len * 4) as u64);
        // Stand-ins for the bindings an entry does not use.
        let (unused_r, unused_w) = (pool.get(16), pool.get(16));
        let p = k::Params {
            num_queries: nq as u32,
            num_docs: n as u32,
            list_len: list_len as u32,
            ..Default::default()
        };
        for gr in &groups {
            let offsets = pool.get(((gr.count + 1) * 4) as u64);
            let rows = pool.get((gr.rows.max(1) * 4) as u64);
            let bufs = k::Buffers {
                list: list.buffer(),
                doc_offsets: &g.doc_offsets,
                exact: unused_r.buffer(),
                offsets: offsets.buffer(),
                rows: rows.buffer(),
                dense,
            };
            let p = k::Params {
                first: gr.first as u32,
                count: gr.count as u32,
                rows: gr.rows as u32,
                ..p
            };
            k::record(ctx, enc, k::Stage::Offsets, &bufs, p)?;
            k::record(ctx, enc, k::Stage::MapRows, &bufs, p)?;
            g.codec.record_decompress_rows(
                enc,
                &g.codes,
                &g.residuals,
                vectors.buffer(),
                crate::index::codec::Rows::Gather(rows.buffer()),
                gr.rows,
            )?;
            let owner: Vec<u32> = (gr.first..gr.first + gr.count)
                .map(|e| (e / list_len) as u32)
                .collect();
            let owner = ctx.upload("survivor owners", &owner)?;
            crate::kernels::maxsim::record_assigned(
                ctx,
                enc,
                &crate::kernels::maxsim::Buffers {
                    queries: q,
                    docs: vectors.buffer(),
                    doc_offsets: offsets.buffer(),
                    owner: Some(&owner),
                    scores: exact.buffer(),
                },
                crate::kernels::maxsim::Assigned {
                    num_queries: nq,
                    qlen,
                    dim,
                    num_docs: gr.count,
                    out_offset: gr.first,
                },
            )?;
            held.extend([offsets, rows]);
        }
        k::record(
            ctx,
            enc,
            k::Stage::Scatter,
            &k::Buffers {
                list: list.buffer(),
                doc_offsets: &g.doc_offsets,
                exact: exact.buffer(),
                offsets: unused_w.buffer(),
                rows: vectors.buffer(),
                dense,
            },
            k::Params {
                first: 0,
                count: (nq * list_len) as u32,
                ..p
            },
        )?;
        held.extend([vectors, exact, unused_r, unused_w]);
        Ok(())
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
