//! PLAID's candidate stages (Santhanam et al., 2022), on the CPU; the WGSL path
//! runs the same stages as kernels. Given query vectors Q (`qlen × dim`) and an
//! index of centroid codes:
//!
//! 1. centroid scores `S[c, i] = centroid_c · q_i` (one matmul);
//! 2. candidates: for every query token its `ncells` best centroids; the union
//!    of their inverted lists;
//! 3. pruned centroid interaction: with only the centroids whose best score
//!    over the query tokens reaches `centroid_score_threshold`,
//!    `approx(d) = Σ_i max_{c ∈ codes(d)} S[c, i]`; keep the best `ndocs`;
//! 4. full centroid interaction (all of the document's codes) on those; keep
//!    the best `ndocs / 4`;
//! 5. (caller) decompress those documents' residuals, exact MaxSim, top-k.
//!
//! Over shards that share centroids, [`super::sharded`] runs the same stages
//! with a global cut after 3 and 4.

use rayon::prelude::*;

/// PLAID's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlaidParams {
    /// Centroids probed per query token.
    pub ncells: usize,
    /// Centroids whose best score over the query stays below this are ignored
    /// by the pruned interaction stage.
    pub centroid_score_threshold: f32,
    /// Documents kept after the pruned stage (a quarter of them after the full one).
    pub ndocs: usize,
}

impl PlaidParams {
    /// The defaults the PLAID authors use for a given k.
    pub fn for_k(k: usize) -> Self {
        if k <= 10 {
            Self {
                ncells: 1,
                centroid_score_threshold: 0.5,
                ndocs: 256,
            }
        } else if k <= 100 {
            Self {
                ncells: 2,
                centroid_score_threshold: 0.45,
                ndocs: 1024,
            }
        } else {
            Self {
                ncells: 4,
                centroid_score_threshold: 0.4,
                ndocs: (k * 4).max(4096),
            }
        }
    }

    /// Errors unless every knob is in its range: `ncells` ≥ 1, `ndocs` ≥ 1,
    /// `centroid_score_threshold` a number ≤ 1 (centroid and query vectors are
    /// unit vectors, so scores lie in [−1, 1]; −∞ disables pruning; NaN or a
    /// threshold above 1 would prune every centroid).
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::Input(m));
        if self.ncells == 0 {
            return bad("ncells must be at least 1 (centroids probed per query token)".into());
        }
        if self.ndocs == 0 {
            return bad("ndocs must be at least 1 (documents kept after pruning)".into());
        }
        let t = self.centroid_score_threshold;
        if t.is_nan() || t > 1.0 {
            return bad(format!(
                "centroid score threshold {t} is out of range: expected a number from -inf to 1 \
                 (scores of unit vectors lie in [-1, 1])"
            ));
        }
        Ok(())
    }

    /// Probe every cell, prune nothing, keep every candidate: PLAID then
    /// reranks the whole corpus exactly, i.e. equals exhaustive MaxSim.
    pub fn exhaustive(num_centroids: usize, num_docs: usize) -> Self {
        Self {
            ncells: num_centroids,
            centroid_score_threshold: f32::NEG_INFINITY,
            ndocs: num_docs.saturating_mul(4).max(4),
        }
    }
}

/// What the candidate stages read of an index.
#[derive(Debug, Clone, Copy)]
pub struct CodesView<'a> {
    pub num_centroids: usize,
    /// Centroid id of every token vector, documents back to back.
    pub codes: &'a [u32],
    /// `num_docs + 1` offsets into `codes`.
    pub doc_offsets: &'a [u64],
    /// Document indices per centroid, back to back.
    pub ivf: &'a [u32],
    /// `num_centroids + 1` offsets into `ivf`.
    pub ivf_offsets: &'a [u64],
}

impl CodesView<'_> {
    pub fn num_docs(&self) -> usize {
        self.doc_offsets.len().saturating_sub(1)
    }
    fn doc_codes(&self, d: u32) -> &[u32] {
        let d = d as usize;
        &self.codes[self.doc_offsets[d] as usize..self.doc_offsets[d + 1] as usize]
    }
}

/// Stage 1: `S[c · qlen + i] = centroid_c · q_i`, centroid-major so a document's
/// code reads `qlen` contiguous scores.
pub fn centroid_scores(
    centroids: &[f32],
    num_centroids: usize,
    q: &[f32],
    qlen: usize,
    dim: usize,
) -> Vec<f32> {
    let mut s = vec![0.0f32; num_centroids * qlen];
    crate::backend::cpu::matmul_transposed(centroids, q, &mut s, num_centroids, qlen, dim);
    s
}

/// Stage 2: the union (sorted, unique) of the inverted lists of every query
/// token's `ncells` best centroids.
pub fn candidates(scores: &[f32], qlen: usize, view: &CodesView, ncells: usize) -> Vec<u32> {
    let k = view.num_centroids;
    let ncells = ncells.min(k);
    let mut cells = vec![false; k];
    let mut order: Vec<u32> = (0..k as u32).collect();
    for i in 0..qlen {
        let score = |c: u32| scores[c as usize * qlen + i];
        if ncells == k {
            cells.iter_mut().for_each(|c| *c = true);
            break;
        }
        // Best `ncells` by score, ties to the lower centroid id.
        order.select_nth_unstable_by(ncells - 1, |&a, &b| {
            score(b).total_cmp(&score(a)).then(a.cmp(&b))
        });
        for &c in &order[..ncells] {
            cells[c as usize] = true;
        }
    }
    let mut seen = vec![false; view.num_docs()];
    for (c, _) in cells.iter().enumerate().filter(|(_, &on)| on) {
        for &d in &view.ivf[view.ivf_offsets[c] as usize..view.ivf_offsets[c + 1] as usize] {
            seen[d as usize] = true;
        }
    }
    seen.iter()
        .enumerate()
        .filter(|(_, &s)| s)
        .map(|(d, _)| d as u32)
        .collect()
}

/// Stages 3 and 4: `Σ_i max_{c ∈ codes(d), keep[c]} S[c, i]` for each document;
/// a document none of whose codes is kept scores `f32::MIN`.
pub fn approx_scores(
    scores: &[f32],
    qlen: usize,
    view: &CodesView,
    docs: &[u32],
    keep: Option<&[bool]>,
) -> Vec<f32> {
    docs.par_iter()
        .map_init(
            || vec![f32::NEG_INFINITY; qlen],
            |best, &d| {
                best.iter_mut().for_each(|b| *b = f32::NEG_INFINITY);
                let mut any = false;
                for &c in view.doc_codes(d) {
                    if keep.is_some_and(|k| !k[c as usize]) {
                        continue;
                    }
                    any = true;
                    let row = &scores[c as usize * qlen..][..qlen];
                    for (b, &s) in best.iter_mut().zip(row) {
                        *b = b.max(s);
                    }
                }
                if any {
                    best.iter().sum()
                } else {
                    f32::MIN
                }
            },
        )
        .collect()
}

/// The `n` best of `docs` by `scores` (descending, ties to the lower document index).
pub fn best(docs: &[u32], scores: &[f32], n: usize) -> Vec<u32> {
    best_positions(docs, scores, n)
        .into_iter()
        .map(|i| docs[i])
        .collect()
}

/// [`best`], with the scores of the chosen documents.
pub fn best_scored(docs: &[u32], scores: &[f32], n: usize) -> (Vec<u32>, Vec<f32>) {
    best_positions(docs, scores, n)
        .into_iter()
        .map(|i| (docs[i], scores[i]))
        .unzip()
}

/// Positions in `docs` of [`best`]'s choice, best first.
fn best_positions(docs: &[u32], scores: &[f32], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..docs.len()).collect();
    let cmp = |a: &usize, b: &usize| {
        scores[*b]
            .total_cmp(&scores[*a])
            .then(docs[*a].cmp(&docs[*b]))
    };
    if n < idx.len() {
        idx.select_nth_unstable_by(n, cmp);
        idx.truncate(n);
    }
    idx.sort_by(cmp);
    idx
}

/// The centroids stage 3 reads: those whose best score over the query's
/// tokens reaches `threshold`.
fn kept_centroids(scores: &[f32], qlen: usize, num_centroids: usize, threshold: f32) -> Vec<bool> {
    (0..num_centroids)
        .map(|c| {
            scores[c * qlen..][..qlen]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max)
                >= threshold
        })
        .collect()
}

/// Stage 3 on the candidates `cands`: the best `params.ndocs` of them by the
/// pruned interaction, best first, with those scores.
fn pruned_best(
    scores: &[f32],
    qlen: usize,
    view: &CodesView,
    params: &PlaidParams,
    cands: &[u32],
) -> (Vec<u32>, Vec<f32>) {
    let keep = kept_centroids(scores, qlen, view.num_centroids, params.centroid_score_threshold);
    let pruned = approx_scores(scores, qlen, view, cands, Some(&keep));
    best_scored(cands, &pruned, params.ndocs)
}

/// Stages 2–3 alone: the documents that enter the full interaction, best
/// first, with their pruned-interaction scores. For PLAID over shards
/// ([`super::sharded`]): each shard's best `ndocs` hold the corpus's.
pub fn pruned_stage(
    scores: &[f32],
    qlen: usize,
    view: &CodesView,
    params: &PlaidParams,
) -> (Vec<u32>, Vec<f32>) {
    let cands = candidates(scores, qlen, view, params.ncells);
    pruned_best(scores, qlen, view, params, &cands)
}

/// Stages 2–4: the documents whose residuals PLAID decompresses for exact MaxSim.
pub fn rerank_set(scores: &[f32], qlen: usize, view: &CodesView, params: &PlaidParams) -> Vec<u32> {
    let (stage3, _) = pruned_stage(scores, qlen, view, params);
    let full = approx_scores(scores, qlen, view, &stage3, None);
    let mut out = best(&stage3, &full, (params.ndocs / 4).max(1));
    out.sort_unstable();
    out
}

/// [`rerank_set`] restricted to the documents `allowed[d]` (a metadata filter,
/// applied to the candidates *before* any scoring). When at most `ndocs / 4`
/// documents are allowed, all of them are reranked exactly; when the probed
/// cells hold fewer than `ndocs` allowed documents, every allowed document
/// enters the pruned interaction stage. Either way, `min(k, allowed)` results
/// come back whenever `ndocs / 4 ≥ k`.
pub fn rerank_set_filtered(
    scores: &[f32],
    qlen: usize,
    view: &CodesView,
    params: &PlaidParams,
    allowed: &[bool],
) -> Vec<u32> {
    let reranked = (params.ndocs / 4).max(1);
    let all = allowed_docs(view, allowed);
    if all.len() <= reranked {
        return all;
    }
    let cands = filtered_candidates(scores, qlen, view, params, allowed);
    let pool = if cands.len() < params.ndocs { all } else { cands };
    let (stage3, _) = pruned_best(scores, qlen, view, params, &pool);
    let full = approx_scores(scores, qlen, view, &stage3, None);
    let mut out = best(&stage3, &full, reranked);
    out.sort_unstable();
    out
}

/// The documents `allowed[d]`, ascending.
fn allowed_docs(view: &CodesView, allowed: &[bool]) -> Vec<u32> {
    (0..view.num_docs() as u32)
        .filter(|&d| allowed.get(d as usize).copied().unwrap_or(false))
        .collect()
}

/// Stage 2's candidates that are allowed.
fn filtered_candidates(
    scores: &[f32],
    qlen: usize,
    view: &CodesView,
    params: &PlaidParams,
    allowed: &[bool],
) -> Vec<u32> {
    candidates(scores, qlen, view, params.ncells)
        .into_iter()
        .filter(|&d| allowed.get(d as usize).copied().unwrap_or(false))
        .collect()
}

/// [`pruned_stage`] under a filter, for PLAID over shards: the pool is this
/// shard's allowed candidates, or (`all_allowed`, when the shards together
/// hold fewer than `ndocs` allowed candidates, the rule of
/// [`rerank_set_filtered`]) every allowed document. Returns the best `ndocs`
/// of the pool with their pruned scores, and the number of allowed
/// candidates (what the coordinator sums to choose the pool).
pub fn pruned_stage_filtered(
    scores: &[f32],
    qlen: usize,
    view: &CodesView,
    params: &PlaidParams,
    allowed: &[bool],
    all_allowed: bool,
) -> (Vec<u32>, Vec<f32>, usize) {
    let cands = filtered_candidates(scores, qlen, view, params, allowed);
    let n = cands.len();
    let pool = if all_allowed {
        allowed_docs(view, allowed)
    } else {
        cands
    };
    let (docs, s) = pruned_best(scores, qlen, view, params, &pool);
    (docs, s, n)
}
