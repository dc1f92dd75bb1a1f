//! The ColBERTv2 compressed index: spherical k-means over token vectors, the
//! residual codec (centroid id + `nbits`-bit residual per dimension), and the
//! on-disk directory (format in `docs/INDEX_FORMAT.md`).
//!
//! ```no_run
//! # use std::path::Path;
//! # use colwgpu::{index, model, io, backend::Compute};
//! # fn main() -> colwgpu::Result<()> {
//! let dir = Path::new("models/colbert-minilm");
//! let mut enc = model::Encoder::open(dir, model::DeviceChoice::Cpu, &Default::default())?;
//! let model = index::ModelInfo::from_dir(dir, enc.dim())?;
//! let docs = io::read_records(Path::new("corpus.jsonl"))?;
//! let opts = index::IndexOptions { nbits: 2, compute: Compute::Cpu, ..Default::default() };
//! index::build_index(&mut enc, &model, &docs, Path::new("my.index"), &opts, &mut |_| {})?;
//! let idx = index::Index::open(Path::new("my.index"))?;
//! idx.check_model(&model)?;
//! let (vectors, offsets) = idx.decompress_docs(&Compute::Cpu, &[0, 1])?;
//! # Ok(()) }
//! ```

pub mod builder;
pub mod codec;
pub mod kmeans;
pub mod live;
pub mod lock;
pub mod pool;
pub mod metadb;
mod rng;
pub mod store;

pub use builder::{
    build_index, build_index_with, inverted_lists, BuildSummary, EncoderSource, InMemorySource,
    IndexOptions, Progress, Stage, VectorSource,
};
pub use codec::{Compressed, GpuCodec, ResidualCodec};
pub use store::{
    read_metadata, FileEntry, Index, Metadata, ModelInfo, OpenOptions, Settings, Stats,
    FORMAT_VERSION, LIVE_FORMAT_VERSION,
};
