//! Search: PLAID candidate stages, exact MaxSim on decompressed residuals, top-k.

pub mod maxsim;
pub mod plaid;
pub mod searcher;

pub use maxsim::{maxsim_scores, ScoreRequest};
pub use plaid::PlaidParams;
pub use searcher::{Hit, SearchOptions, Searcher};
