//! PLAID over shards, equal to PLAID over one index of the same documents.
//!
//! The shards must share one set of centroids and one residual codec (built
//! with `IndexOptions::codec_from`), so a document's codes, residuals and so
//! every score it gets are the same whichever shard holds it. PLAID's stages
//! then split in two kinds: per-document work (centroid scores, candidate
//! lists, the pruned and full centroid interactions, exact MaxSim), which each
//! shard does for its own documents, and three cuts of a ranked list (the best
//! `ndocs` after the pruned interaction, the best `ndocs / 4` after the full
//! one, the best `k` after exact MaxSim), which must see every shard's
//! documents at once. Each shard keeping its own `ndocs` would rerank up to
//! S× more documents than one index does, and so return different (better or
//! equal) results. A coordinator therefore takes each cut once, over all
//! shards, with [`merge_ranked`]:
//!
//! 1. every shard: stages 1–3 on its documents, its best `ndocs` with their
//!    pruned scores ([`crate::api::Index::shard_candidates`]). The corpus's best
//!    `ndocs` are among the union; the coordinator keeps them.
//! 2. every shard: the full interaction of its documents kept in 1
//!    ([`crate::api::Index::shard_full_scores`]); the coordinator keeps the best
//!    `ndocs / 4` overall.
//! 3. every shard: exact MaxSim of its documents kept in 2
//!    ([`crate::api::Index::shard_exact_scores`]); the coordinator keeps the best `k`.
//!
//! Under a metadata filter, round 1 pools each shard's allowed candidates
//! and also counts them ([`crate::api::Index::shard_candidates_filtered`]);
//! when the counts sum to fewer than `ndocs`, it runs again with every allowed
//! document in the pool, the rule one index's filtered search applies.
//!
//! Ties: one index breaks ties by document index. When documents are dealt
//! round-robin (document `i` of the corpus to shard `i mod S`, at local
//! index `i div S`, as `colwgpu.distributed.build_sharded` does), ordering
//! ties by (local index, shard) is that same order, so the merged lists equal
//! one index's bit for bit.

use super::{Hit, SearchOptions};
use crate::error::Result;
use crate::index::metadb::Filter;

/// A shard's round-1 answer for one query under a filter: its best
/// documents, their pruned-interaction scores, and its number of allowed
/// candidates.
pub type FilteredCandidates = (Vec<u32>, Vec<f32>, usize);

/// The best `n` of several shards' scored lists: `(shard, local document,
/// score)`, score descending, ties to the lower local document index and then
/// to the lower shard. `per_shard[s]` is shard `s`'s documents and scores
/// (equal lengths; a shorter score list ends the shard's list there).
pub fn merge_ranked(per_shard: &[(&[u32], &[f32])], n: usize) -> Vec<(usize, u32, f32)> {
    let mut all: Vec<(usize, u32, f32)> = per_shard
        .iter()
        .enumerate()
        .flat_map(|(s, (docs, scores))| docs.iter().zip(scores.iter()).map(move |(&d, &x)| (s, d, x)))
        .collect();
    let cmp = |a: &(usize, u32, f32), b: &(usize, u32, f32)| {
        b.2.total_cmp(&a.2).then(a.1.cmp(&b.1)).then(a.0.cmp(&b.0))
    };
    if n < all.len() {
        all.select_nth_unstable_by(n, cmp);
        all.truncate(n);
    }
    all.sort_by(cmp);
    all
}

/// [`merge_ranked`]'s choice grouped by shard: for each shard, its kept
/// documents in ascending order (what the next round asks it to score).
pub fn kept_by_shard(ranked: &[(usize, u32, f32)], num_shards: usize) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); num_shards];
    for &(s, d, _) in ranked {
        if let Some(list) = out.get_mut(s) {
            list.push(d);
        }
    }
    out.iter_mut().for_each(|l| l.sort_unstable());
    out
}

/// The whole protocol over shards held in this process: for each query
/// (`len × dim`), the corpus's top `options.k` as `(shard, hit)`, equal to one
/// index's search over the shards' documents dealt round-robin (see the
/// module's text), with or without a metadata filter (each shard evaluates it
/// on its own metadata). Exhaustive search merges each shard's exhaustive
/// top-k. A distributed coordinator (`colwgpu.distributed.ShardedIndex`) runs
/// the same rounds with each shard in its own worker.
pub fn search_shards(
    shards: &[&crate::api::Index],
    queries: &[&[f32]],
    options: &SearchOptions,
    filter: Option<&Filter>,
) -> Result<Vec<Vec<(usize, Hit)>>> {
    let total: usize = shards.iter().map(|s| s.num_docs()).sum();
    options.validate(total)?;
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let one = [*q];
        let per_shard: Vec<Vec<Hit>> = if options.exhaustive {
            shards
                .iter()
                .map(|s| {
                    let mut hits = match filter {
                        Some(f) => s.search_vectors_filtered(&one, options, f)?,
                        None => s.search_vectors(&one, options)?,
                    };
                    Ok(hits.pop().unwrap_or_default())
                })
                .collect::<Result<_>>()?
        } else {
            let params = options.params();
            // Round 1: each shard's best ndocs by the pruned interaction.
            let round1 = |all_allowed: bool| -> Result<Vec<FilteredCandidates>> {
                shards
                    .iter()
                    .map(|s| {
                        let mut r = match filter {
                            Some(f) => s.shard_candidates_filtered(&one, &params, f, all_allowed)?,
                            None => s
                                .shard_candidates(&one, &params)?
                                .into_iter()
                                .map(|(d, x)| (d, x, 0))
                                .collect(),
                        };
                        Ok(r.pop().unwrap_or_default())
                    })
                    .collect()
            };
            let mut first = round1(false)?;
            // Under a filter, fewer allowed candidates than ndocs over all
            // shards: every allowed document enters the pool (one index's rule).
            if filter.is_some() && first.iter().map(|r| r.2).sum::<usize>() < params.ndocs {
                first = round1(true)?;
            }
            let kept = cut(first.iter().map(|(d, x, _)| (d.as_slice(), x.as_slice())), params.ndocs);
            // Round 2: the full interaction of the kept ones; one cut.
            let full: Vec<Vec<f32>> = shards
                .iter()
                .zip(&kept)
                .map(|(s, d)| {
                    Ok(s.shard_full_scores(&one, std::slice::from_ref(d))?
                        .pop()
                        .unwrap_or_default())
                })
                .collect::<Result<_>>()?;
            let reranked = cut(
                kept.iter().zip(&full).map(|(d, x)| (d.as_slice(), x.as_slice())),
                (params.ndocs / 4).max(1),
            );
            // Round 3: exact MaxSim of those.
            shards
                .iter()
                .zip(&reranked)
                .map(|(s, d)| {
                    Ok(s.shard_exact_scores(&one, std::slice::from_ref(d))?
                        .pop()
                        .unwrap_or_default())
                })
                .collect::<Result<_>>()?
        };
        let lists: Vec<(Vec<u32>, Vec<f32>)> = per_shard
            .iter()
            .map(|h| h.iter().map(|x| (x.doc, x.score)).unzip())
            .collect();
        let views: Vec<(&[u32], &[f32])> = lists
            .iter()
            .map(|(d, s)| (d.as_slice(), s.as_slice()))
            .collect();
        out.push(
            merge_ranked(&views, options.k)
                .into_iter()
                .filter_map(|(s, d, _)| {
                    per_shard[s]
                        .iter()
                        .find(|h| h.doc == d)
                        .map(|h| (s, h.clone()))
                })
                .collect(),
        );
    }
    Ok(out)
}

/// One cut over all shards: each shard's documents among the best `n`.
fn cut<'a>(lists: impl Iterator<Item = (&'a [u32], &'a [f32])>, n: usize) -> Vec<Vec<u32>> {
    let views: Vec<(&[u32], &[f32])> = lists.collect();
    kept_by_shard(&merge_ranked(&views, n), views.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_orders_by_score_then_local_index_then_shard() {
        let a_docs = [0u32, 1, 2];
        let a_scores = [0.5f32, 0.9, 0.5];
        let b_docs = [0u32, 2];
        let b_scores = [0.5f32, 1.0];
        let ranked = merge_ranked(&[(&a_docs, &a_scores), (&b_docs, &b_scores)], 4);
        // 1.0 (b,2); 0.9 (a,1); then three ties at 0.5: (a,0), (b,0), (a,2) by local index then shard.
        assert_eq!(
            ranked.iter().map(|&(s, d, _)| (s, d)).collect::<Vec<_>>(),
            vec![(1, 2), (0, 1), (0, 0), (1, 0)]
        );
        assert_eq!(kept_by_shard(&ranked, 2), vec![vec![0, 1], vec![0, 2]]);
    }

    #[test]
    fn merge_of_fewer_than_n_keeps_all() {
        let ranked = merge_ranked(&[(&[3u32], &[0.1f32]), (&[], &[])], 10);
        assert_eq!(ranked, vec![(0, 3, 0.1)]);
    }
}
