//! colwgpu: late-interaction (ColBERT) retrieval whose heavy math runs as WGSL
//! compute shaders through wgpu, with a native CPU backend for machines whose
//! only adapter is a software one.
//!
//! The front door is [`Model`] and [`Index`] ([`api`]):
//!
//! ```
//! use colwgpu::{Device, Document, Index, IndexOptions, Model};
//!
//! # fn main() -> colwgpu::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("colwgpu-doctest-{}", std::process::id()));
//! let model = Model::open("models/colbert-minilm", Device::Auto)?;
//! let docs = [
//!     Document::new("colbert", "ColBERT scores a document by late interaction: MaxSim over token vectors."),
//!     Document::new("paris", "Paris is the capital and largest city of France."),
//! ];
//! let index = model.index(&docs, dir.join("demo.index"), &IndexOptions::default())?;
//! let hits = index.search(&model, "how does late interaction score documents?", 2)?;
//! assert_eq!(hits[0].id, "colbert");
//!
//! // Later, elsewhere: the index knows its model.
//! let index = Index::open(dir.join("demo.index"))?;
//! let model = index.open_model(Device::Auto)?;
//! assert_eq!(index.search(&model, "capital of France", 1)?[0].id, "paris");
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
//!
//! Precomputed token vectors go in through [`VectorSet`] and
//! [`Index::build_from_vectors`]; query vectors through [`Index::search_vectors`].
//!
//! The data flow is the layout:
//! `text` (tokenize, markers, `[MASK]` augmentation, skiplist) →
//! `model` (embed → transformer layers → projection → L2 normalise, generic over a
//! `backend::Backend`) → token vectors.
//! `gpu` is plumbing only (device, pipelines, buffers); `kernels` are the typed
//! dispatches of the WGSL files in `shaders/`; `backend` holds the two
//! implementations (`cpu`, `gpu`) of the operations the models need.

pub mod api;
pub mod error;
pub mod eval;
pub mod io;
pub mod pages;
#[cfg(feature = "server")]
pub mod server;

/// The engine's internals (backends, kernels, models, index, search): public
/// only with the `internals` feature, which the crate's own tests and benches
/// turn on (they test every kernel against its CPU twin); library users go
/// through [`api`].
macro_rules! internal_modules {
    ($($name:ident),* $(,)?) => {
        $(
            #[cfg(feature = "internals")]
            pub mod $name;
            #[cfg(not(feature = "internals"))]
            #[allow(dead_code, unused_imports)]
            mod $name;
        )*
    };
}
internal_modules!(backend, gpu, index, kernels, model, search, text, vision);

pub use api::{
    Device, Document, Filter, Hit, Index, IndexOptions, IndexWriter, Model, ModelOptions,
    Precision, SearchOptions, TokenVectors, VectorSet,
};
pub use error::{Error, Result};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
