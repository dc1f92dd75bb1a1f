//! Retrieval evaluation the BEIR way: qrels in, nDCG@k / Recall@k / MRR@k out,
//! with the definitions of pytrec_eval (which BEIR uses).

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

/// Relevance judgments: query id → (document id → graded relevance).
pub type Qrels = HashMap<String, HashMap<String, i32>>;

/// Reads a BEIR qrels TSV (`query-id<TAB>corpus-id<TAB>score`), with or without a
/// header line. Errors name the file and line.
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut qrels = Qrels::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        if n == 0 && cols.len() >= 3 && cols[2].trim().parse::<i32>().is_err() {
            continue; // header
        }
        let bad = |why: &str| {
            Error::Input(format!(
                "{} line {}: {why}: {line:?}",
                path.display(),
                n + 1
            ))
        };
        if cols.len() < 3 {
            return Err(bad("expected query-id<TAB>corpus-id<TAB>score"));
        }
        // TREC style "qid 0 docid score" has 4 columns; BEIR has 3.
        let (q, d, s) = if cols.len() == 4 {
            (cols[0], cols[2], cols[3])
        } else {
            (cols[0], cols[1], cols[2])
        };
        let score: i32 = s
            .trim()
            .parse()
            .map_err(|_| bad("score is not an integer"))?;
        qrels
            .entry(q.trim().to_string())
            .or_default()
            .insert(d.trim().to_string(), score);
    }
    if qrels.is_empty() {
        return Err(Error::Input(format!(
            "{}: no judgments found",
            path.display()
        )));
    }
    Ok(qrels)
}

/// Metrics of one query's ranking (document ids, best first).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueryMetrics {
    pub ndcg_at_10: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
    pub mrr_at_10: f64,
}

/// nDCG@k with gains = graded relevance and discount 1/log2(rank + 1); the ideal
/// ranking orders all judged documents of the query by relevance.
pub fn ndcg_at(ranking: &[String], judged: &HashMap<String, i32>, k: usize) -> f64 {
    let dcg: f64 = ranking
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| judged.get(d).copied().unwrap_or(0).max(0) as f64 / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<i32> = judged.values().copied().filter(|&r| r > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &r)| r as f64 / ((i + 2) as f64).log2())
        .sum();
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}

/// Recall@k: relevant (score > 0) documents in the top k over all relevant ones.
pub fn recall_at(ranking: &[String], judged: &HashMap<String, i32>, k: usize) -> f64 {
    let relevant = judged.values().filter(|&&r| r > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranking
        .iter()
        .take(k)
        .filter(|d| judged.get(*d).is_some_and(|&r| r > 0))
        .count();
    found as f64 / relevant as f64
}

/// MRR@k: 1 / rank of the first relevant document within the top k, else 0.
pub fn mrr_at(ranking: &[String], judged: &HashMap<String, i32>, k: usize) -> f64 {
    ranking
        .iter()
        .take(k)
        .position(|d| judged.get(d).is_some_and(|&r| r > 0))
        .map(|i| 1.0 / (i + 1) as f64)
        .unwrap_or(0.0)
}

pub fn query_metrics(ranking: &[String], judged: &HashMap<String, i32>) -> QueryMetrics {
    QueryMetrics {
        ndcg_at_10: ndcg_at(ranking, judged, 10),
        recall_at_10: recall_at(ranking, judged, 10),
        recall_at_100: recall_at(ranking, judged, 100),
        mrr_at_10: mrr_at(ranking, judged, 10),
    }
}

/// Mean metrics over the queries that have at least one relevant judgment
/// (queries without any are skipped, as BEIR does), and how many were averaged.
pub fn evaluate(runs: &HashMap<String, Vec<String>>, qrels: &Qrels) -> (QueryMetrics, usize) {
    let mut sum = QueryMetrics::default();
    let mut n = 0usize;
    for (q, judged) in qrels {
        if !judged.values().any(|&r| r > 0) {
            continue;
        }
        let empty = Vec::new();
        let m = query_metrics(runs.get(q).unwrap_or(&empty), judged);
        sum.ndcg_at_10 += m.ndcg_at_10;
        sum.recall_at_10 += m.recall_at_10;
        sum.recall_at_100 += m.recall_at_100;
        sum.mrr_at_10 += m.mrr_at_10;
        n += 1;
    }
    let d = n.max(1) as f64;
    (
        QueryMetrics {
            ndcg_at_10: sum.ndcg_at_10 / d,
            recall_at_10: sum.recall_at_10 / d,
            recall_at_100: sum.recall_at_100 / d,
            mrr_at_10: sum.mrr_at_10 / d,
        },
        n,
    )
}
