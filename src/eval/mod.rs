//! Retrieval evaluation the BEIR way: qrels in ([`qrels`]), nDCG@k /
//! Recall@k / MRR@k out ([`metrics`]), with the definitions of pytrec_eval
//! (which BEIR uses); per query and averaged.

pub mod metrics;
pub mod qrels;

pub use metrics::{
    evaluate, evaluate_metrics, mrr_at, ndcg_at, query_metrics, recall_at, Evaluation, Metric,
    QueryMetrics,
};
pub use qrels::{parse_qrels, read_qrels, Qrels};
