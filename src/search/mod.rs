//! Search: PLAID candidate stages, exact MaxSim on decompressed residuals, top-k.

pub mod maxsim;
pub mod plaid;
pub mod searcher;
pub mod sharded;
pub mod survivors;
pub mod topk;

pub use maxsim::{exhaustive_search, maxsim_matrix, maxsim_scores, DocOffset, ScoreRequest};
pub use plaid::PlaidParams;
pub use searcher::{Hit, SearchOptions, Searcher};
pub use topk::{topk, TopK};
