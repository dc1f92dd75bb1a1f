//! Retrieval metrics with the definitions of pytrec_eval / trec_eval, which
//! BEIR reports, for one query's ranking (document ids, best first) against its
//! judgments:
//!
//! * **nDCG@k** = DCG@k / IDCG@k, DCG@k = Σ_{r=1..k} rel(d_r) / log2(r + 1),
//!   gains = the graded relevance itself (trec_eval's `ndcg_cut`, not 2^rel − 1),
//!   grades ≤ 0 gaining nothing; IDCG@k is the DCG@k of the query's judged
//!   documents sorted by grade (all of them, retrieved or not);
//! * **Recall@k** = |relevant ∩ top k| / |relevant|, relevant = grade > 0;
//! * **MRR@k** = 1 / rank of the first relevant document within the top k,
//!   0 if none (BEIR's own `mrr`).
//!
//! A document id that appears more than once in a ranking counts at its first
//! position only (a run in pytrec_eval is a map, so cannot repeat one).
//! Averages ([`evaluate_metrics`]) run over the judged queries that have at
//! least one relevant document: queries without any are skipped, as in BEIR.
//! A judged query that the run does not contain scores 0 on every metric (and
//! is counted in [`Evaluation::missing`]); pytrec_eval would leave it out of
//! the mean, which flatters a run that drops queries.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::qrels::Qrels;
use crate::error::{Error, Result};

/// The ranking with repeated document ids removed (first position kept),
/// truncated to `k`.
fn top_unique<S: AsRef<str>>(ranking: &[S], k: usize) -> Vec<&str> {
    let mut seen = HashSet::new();
    ranking
        .iter()
        .map(|d| d.as_ref())
        .filter(|d| seen.insert(*d))
        .take(k)
        .collect()
}

fn grade(judged: &HashMap<String, i32>, d: &str) -> i32 {
    judged.get(d).copied().unwrap_or(0)
}

/// nDCG@k (graded gains, log2(rank + 1) discount, ideal from all judged
/// documents of the query). 0 when the query has no relevant document.
pub fn ndcg_at<S: AsRef<str>>(ranking: &[S], judged: &HashMap<String, i32>, k: usize) -> f64 {
    let dcg: f64 = top_unique(ranking, k)
        .iter()
        .enumerate()
        .map(|(i, d)| grade(judged, d).max(0) as f64 / ((i + 2) as f64).log2())
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

/// Recall@k: relevant (grade > 0) documents in the top k over all relevant
/// ones. 0 when the query has no relevant document.
pub fn recall_at<S: AsRef<str>>(ranking: &[S], judged: &HashMap<String, i32>, k: usize) -> f64 {
    let relevant = judged.values().filter(|&&r| r > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = top_unique(ranking, k)
        .iter()
        .filter(|d| grade(judged, d) > 0)
        .count();
    found as f64 / relevant as f64
}

/// MRR@k: 1 / rank of the first relevant document within the top k, else 0.
pub fn mrr_at<S: AsRef<str>>(ranking: &[S], judged: &HashMap<String, i32>, k: usize) -> f64 {
    top_unique(ranking, k)
        .iter()
        .position(|d| grade(judged, d) > 0)
        .map(|i| 1.0 / (i + 1) as f64)
        .unwrap_or(0.0)
}

/// One metric at a cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Ndcg(usize),
    Recall(usize),
    Mrr(usize),
}

impl Metric {
    /// The metric of one query's ranking.
    pub fn score<S: AsRef<str>>(&self, ranking: &[S], judged: &HashMap<String, i32>) -> f64 {
        match *self {
            Metric::Ndcg(k) => ndcg_at(ranking, judged, k),
            Metric::Recall(k) => recall_at(ranking, judged, k),
            Metric::Mrr(k) => mrr_at(ranking, judged, k),
        }
    }

    /// Parses `ndcg@10`, `recall@100`, `mrr@10` (case-insensitive; `nDCG@10`
    /// as printed parses too).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::Input(format!(
                "unknown metric '{s}' (expected ndcg@K, recall@K or mrr@K with K ≥ 1)"
            ))
        };
        let (name, k) = s.trim().split_once('@').ok_or_else(bad)?;
        let k: usize = k.parse().map_err(|_| bad())?;
        if k == 0 {
            return Err(bad());
        }
        match name.to_ascii_lowercase().as_str() {
            "ndcg" => Ok(Metric::Ndcg(k)),
            "recall" => Ok(Metric::Recall(k)),
            "mrr" => Ok(Metric::Mrr(k)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Ndcg(k) => write!(f, "nDCG@{k}"),
            Metric::Recall(k) => write!(f, "Recall@{k}"),
            Metric::Mrr(k) => write!(f, "MRR@{k}"),
        }
    }
}

/// Metrics of a run, per query and averaged.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub metrics: Vec<Metric>,
    /// Every evaluated query (sorted by id) with its value of each metric, in
    /// the order of `metrics`.
    pub per_query: Vec<(String, Vec<f64>)>,
    /// Mean over `per_query` of each metric (0 when no query was evaluated).
    pub mean: Vec<f64>,
    /// Judged queries skipped because none of their documents is relevant.
    pub skipped: usize,
    /// Evaluated queries absent from the run (they score 0).
    pub missing: usize,
}

impl Evaluation {
    /// Number of queries averaged.
    pub fn queries(&self) -> usize {
        self.per_query.len()
    }

    /// The mean of `metric`, if it was computed.
    pub fn mean_of(&self, metric: Metric) -> Option<f64> {
        self.metrics
            .iter()
            .position(|m| *m == metric)
            .map(|i| self.mean[i])
    }
}

/// Evaluates `runs` (query id → ranked document ids, best first) against
/// `qrels` on `metrics` (see the module documentation for which queries count).
pub fn evaluate_metrics<S: AsRef<str>>(
    runs: &HashMap<String, Vec<S>>,
    qrels: &Qrels,
    metrics: &[Metric],
) -> Evaluation {
    let mut ids: Vec<&String> = qrels.keys().collect();
    ids.sort();
    let mut per_query = Vec::new();
    let (mut skipped, mut missing) = (0, 0);
    for q in ids {
        let judged = &qrels[q];
        if !judged.values().any(|&r| r > 0) {
            skipped += 1;
            continue;
        }
        let ranking: &[S] = match runs.get(q) {
            Some(r) => r,
            None => {
                missing += 1;
                &[]
            }
        };
        let values: Vec<f64> = metrics.iter().map(|m| m.score(ranking, judged)).collect();
        per_query.push((q.clone(), values));
    }
    let n = per_query.len().max(1) as f64;
    let mean = (0..metrics.len())
        .map(|i| per_query.iter().map(|(_, v)| v[i]).sum::<f64>() / n)
        .collect();
    Evaluation {
        metrics: metrics.to_vec(),
        per_query,
        mean,
        skipped,
        missing,
    }
}

/// The metrics the CLI reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueryMetrics {
    pub ndcg_at_10: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
    pub mrr_at_10: f64,
}

const REPORTED: [Metric; 4] = [
    Metric::Ndcg(10),
    Metric::Recall(10),
    Metric::Recall(100),
    Metric::Mrr(10),
];

fn reported(v: &[f64]) -> QueryMetrics {
    QueryMetrics {
        ndcg_at_10: v[0],
        recall_at_10: v[1],
        recall_at_100: v[2],
        mrr_at_10: v[3],
    }
}

/// nDCG@10, Recall@10, Recall@100 and MRR@10 of one query's ranking.
pub fn query_metrics<S: AsRef<str>>(ranking: &[S], judged: &HashMap<String, i32>) -> QueryMetrics {
    let v: Vec<f64> = REPORTED.iter().map(|m| m.score(ranking, judged)).collect();
    reported(&v)
}

/// Mean nDCG@10, Recall@10, Recall@100 and MRR@10 over the queries with at
/// least one relevant judgment, and how many were averaged.
pub fn evaluate<S: AsRef<str>>(
    runs: &HashMap<String, Vec<S>>,
    qrels: &Qrels,
) -> (QueryMetrics, usize) {
    let e = evaluate_metrics(runs, qrels, &REPORTED);
    (reported(&e.mean), e.queries())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, i32)]) -> HashMap<String, i32> {
        pairs.iter().map(|(d, r)| (d.to_string(), *r)).collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    // Graded judgments: d1 = 3, d2 = 2, d3 = 0, d4 = 1, d5 = 2 (4 relevant);
    // ranking d3 d1 d6 d5 d2 d4 (d6 unjudged).
    const RANKING: [&str; 6] = ["d3", "d1", "d6", "d5", "d2", "d4"];
    fn example() -> HashMap<String, i32> {
        judged(&[("d1", 3), ("d2", 2), ("d3", 0), ("d4", 1), ("d5", 2)])
    }

    #[test]
    fn ndcg_by_hand() {
        let j = example();
        // DCG@5 = 0/log2 2 + 3/log2 3 + 0/log2 4 + 2/log2 5 + 2/log2 6
        //       = 0 + 1.892789 + 0 + 0.861353 + 0.773706 = 3.527848
        // IDCG@5 = grades 3,2,2,1 sorted: 3/1 + 2/log2 3 + 2/log2 4 + 1/log2 5
        //        = 3 + 1.261860 + 1 + 0.430677 = 5.692536
        // nDCG@5 = 3.527848 / 5.692536 = 0.619732
        let dcg5 = 3.0 / 3f64.log2() + 2.0 / 5f64.log2() + 2.0 / 6f64.log2();
        let idcg = 3.0 + 2.0 / 3f64.log2() + 1.0 + 1.0 / 5f64.log2();
        close(ndcg_at(&RANKING, &j, 5), dcg5 / idcg);
        assert!((ndcg_at(&RANKING, &j, 5) - 0.619732).abs() < 1e-6);
        // @10 adds d4 at rank 6: + 1/log2 7 = 0.356207 → 3.884055 / 5.692536 = 0.682307
        assert!((ndcg_at(&RANKING, &j, 10) - 0.682307).abs() < 1e-6);
        // @1: d3 gains nothing.
        close(ndcg_at(&RANKING, &j, 1), 0.0);
        // A perfect ranking scores 1; unjudged documents gain nothing.
        close(ndcg_at(&["d1", "d2", "d5", "d4"], &j, 10), 1.0);
        close(ndcg_at(&["x", "y"], &j, 10), 0.0);
        // No relevant documents: 0 (the query is skipped by evaluate_metrics).
        close(ndcg_at(&["d3"], &judged(&[("d3", 0)]), 10), 0.0);
    }

    #[test]
    fn recall_and_mrr_by_hand() {
        let j = example();
        // Top 5 holds d1, d5, d2 of the 4 relevant; top 3 only d1; top 6 all.
        close(recall_at(&RANKING, &j, 5), 0.75);
        close(recall_at(&RANKING, &j, 3), 0.25);
        close(recall_at(&RANKING, &j, 100), 1.0);
        // The first relevant document (d1) is at rank 2.
        close(mrr_at(&RANKING, &j, 1), 0.0);
        close(mrr_at(&RANKING, &j, 2), 0.5);
        close(mrr_at(&RANKING, &j, 10), 0.5);
        // Negative grades are not relevant.
        close(recall_at(&["a"], &judged(&[("a", -1), ("b", 1)]), 10), 0.0);
    }

    #[test]
    fn repeated_ids_count_once() {
        let j = judged(&[("a", 1), ("b", 1)]);
        // Unique ranking a, b: DCG@2 = 1 + 1/log2 3 = IDCG@2.
        close(ndcg_at(&["a", "a", "b"], &j, 2), 1.0);
        close(recall_at(&["a", "a"], &j, 2), 0.5);
    }

    #[test]
    fn evaluation_skips_unjudged_and_zeroes_missing_queries() {
        let mut qrels = Qrels::new();
        qrels.insert("q1".into(), example());
        qrels.insert("q2".into(), judged(&[("x", 0)]));
        qrels.insert("q3".into(), judged(&[("y", 1)]));
        let mut runs: HashMap<String, Vec<&str>> = HashMap::new();
        runs.insert("q1".into(), RANKING.to_vec());
        runs.insert("q2".into(), vec!["x"]);
        runs.insert("q9".into(), vec!["y"]); // not judged: ignored
        let metrics = [Metric::Ndcg(5), Metric::Recall(5), Metric::Mrr(10)];
        let e = evaluate_metrics(&runs, &qrels, &metrics);
        assert_eq!((e.queries(), e.skipped, e.missing), (2, 1, 1));
        assert_eq!(e.per_query[0].0, "q1");
        assert_eq!(e.per_query[1], ("q3".to_string(), vec![0.0, 0.0, 0.0]));
        // Means over q1 and q3 (which scores 0).
        assert!((e.mean_of(Metric::Ndcg(5)).unwrap() - 0.619732 / 2.0).abs() < 1e-6);
        close(e.mean_of(Metric::Recall(5)).unwrap(), 0.375);
        close(e.mean_of(Metric::Mrr(10)).unwrap(), 0.25);
        assert_eq!(e.mean_of(Metric::Ndcg(10)), None);
        let (m, n) = evaluate(&runs, &qrels);
        assert_eq!(n, 2);
        close(m.mrr_at_10, 0.25);
        close(m.recall_at_100, 0.5);
    }

    #[test]
    fn metric_names_parse_and_print() {
        assert_eq!(Metric::parse("ndcg@10").unwrap(), Metric::Ndcg(10));
        assert_eq!(Metric::parse("Recall@100").unwrap(), Metric::Recall(100));
        assert_eq!(
            Metric::parse(&Metric::Mrr(10).to_string()).unwrap(),
            Metric::Mrr(10)
        );
        assert_eq!(Metric::Ndcg(10).to_string(), "nDCG@10");
        for bad in ["ndcg", "ndcg@0", "map@10", "mrr@x"] {
            assert!(Metric::parse(bad).is_err(), "{bad}");
        }
    }
}
