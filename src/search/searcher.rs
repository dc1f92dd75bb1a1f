//! Searching an [`Index`]: PLAID's candidate stages, then exact MaxSim on the
//! decompressed residuals of the surviving documents, then top-k.
//! On `Compute::Gpu` every stage runs as WGSL kernels; on `Compute::Cpu` as
//! their native twins.

use rayon::prelude::*;

use super::plaid::{self, CodesView, PlaidParams};
use crate::backend::Compute;
use crate::error::{Error, Result};
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
}

impl<'a> Searcher<'a> {
    pub fn new(index: &'a Index, compute: Compute) -> Self {
        Self { index, compute }
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
        } else {
            self.rerank_sets(queries, qlen, &options.params())?
        };
        let mut out = Vec::with_capacity(nq);
        for (qi, set) in sets.iter().enumerate() {
            let q = &queries[qi * qlen * dim..(qi + 1) * qlen * dim];
            let (vectors, offsets) = self.index.decompress_docs(&self.compute, set)?;
            let scores = maxsim_cpu(q, qlen, &vectors, &offsets, dim);
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

/// Σ_i max_j q_i · d_j for each document (offsets in vectors).
fn maxsim_cpu(q: &[f32], qlen: usize, docs: &[f32], offsets: &[usize], dim: usize) -> Vec<f32> {
    offsets
        .par_windows(2)
        .map(|w| {
            let (s, e) = (w[0], w[1]);
            if s == e {
                return 0.0;
            }
            let n = e - s;
            let mut sim = vec![0.0f32; qlen * n];
            crate::backend::cpu::matmul_transposed(
                q,
                &docs[s * dim..e * dim],
                &mut sim,
                qlen,
                n,
                dim,
            );
            sim.chunks(n)
                .map(|row| row.iter().copied().fold(f32::NEG_INFINITY, f32::max))
                .filter(|m| m.is_finite())
                .sum()
        })
        .collect()
}
