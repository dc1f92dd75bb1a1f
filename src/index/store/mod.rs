//! The on-disk index: a directory of little-endian arrays plus `metadata.json`
//! (format in `docs/INDEX_FORMAT.md`).
//!
//! * **Writing** goes to `<target>.tmp-<pid>` beside the target; every file is
//!   fsynced, `metadata.json` is written last, then the directory is renamed
//!   into place. An existing index at the target is moved aside
//!   (`<target>.old-<pid>`) only once the new one is complete, and deleted after
//!   the new one is in place. A failed build removes its temporary directory;
//!   one killed outright (Ctrl-C) leaves only `<target>.tmp-<pid>`, which the
//!   next build at that target removes. Neither ever touches the existing index.
//! * **Loading** checks the format version, every file's size against
//!   `metadata.json` and against the counts it implies, CRC-32 checksums (on by
//!   default), and the invariants search relies on (codes below the centroid
//!   count, offsets ascending, document indices in range), naming the file at
//!   fault. Large arrays are memory-mapped, not read.
//! * **Widths.** Centroid codes and inverted-list entries are stored as u16
//!   when every value fits (at most 65,536 centroids, resp. documents), else as
//!   u32; the file name says which (`codes.u16` / `codes.u32`, `ivf.u16` /
//!   `ivf.u32`). u32 files are memory-mapped; u16 files are widened to u32 in
//!   memory at load (2 extra bytes per vector in RAM, none on disk).
//!
//! Layout of this module: [`meta`] (what `metadata.json` holds, the model
//! fingerprint), [`write`] (the temporary directory, file writers, the atomic
//! commit), [`read`] ([`Index`]: opening by stage, the accessors).

mod meta;
pub(crate) mod read;
mod write;

pub use meta::{
    metadata_json, read_metadata, seal_metadata, FileEntry, Metadata, ModelInfo, Settings, Stats,
    METADATA_CHECKSUM,
};
pub use read::{Index, OpenOptions};
pub(crate) use write::TempIndexDir;

use crate::error::Error;
use std::path::Path;

/// The format this build writes and reads (3: centroids stored as f16, as
/// colbert-ai stores them; 2 added u16 codes / inverted lists where they fit).
pub const FORMAT_VERSION: u32 = 3;
/// The format of a base that has become live (its first add or delete):
/// the same files as [`FORMAT_VERSION`] plus the live index's
/// (`live.json`, segments, `metadata.sqlite`; see [`crate::index::live`]).
/// A binary that knows only version 3 would open such an index and silently
/// ignore every add and delete; with 4 in `metadata.json` it refuses it with
/// its "index format version" error instead. `compact` writes version 3 again
/// (a plain index, nothing live left to ignore).
pub const LIVE_FORMAT_VERSION: u32 = 4;

pub const METADATA: &str = "metadata.json";
pub const CENTROIDS: &str = "centroids.f16";
pub const BUCKET_CUTOFFS: &str = "bucket_cutoffs.f32";
pub const BUCKET_WEIGHTS: &str = "bucket_weights.f32";
pub const RESIDUALS: &str = "residuals.bin";
pub const DOCLENS: &str = "doclens.u32";
pub const IVF_OFFSETS: &str = "ivf_offsets.u64";
pub const DOC_IDS: &str = "doc_ids.json";

/// Largest count whose indices (0 … count − 1) are stored as u16.
const U16_COUNT: usize = 1 << 16;

/// Bytes per stored index for values below `count`: 2 (u16) or 4 (u32).
pub fn index_width(count: usize) -> usize {
    if count <= U16_COUNT {
        2
    } else {
        4
    }
}

/// The codes file of an index with `num_centroids` centroids.
pub fn codes_file(num_centroids: usize) -> &'static str {
    if index_width(num_centroids) == 2 {
        "codes.u16"
    } else {
        "codes.u32"
    }
}

/// The inverted-lists file of an index with `num_docs` documents.
pub fn ivf_file(num_docs: usize) -> &'static str {
    if index_width(num_docs) == 2 {
        "ivf.u16"
    } else {
        "ivf.u32"
    }
}

/// Every data file of an index with these counts (all but `metadata.json`).
pub fn data_files(num_centroids: usize, num_docs: usize) -> [&'static str; 9] {
    [
        CENTROIDS,
        BUCKET_CUTOFFS,
        BUCKET_WEIGHTS,
        codes_file(num_centroids),
        RESIDUALS,
        DOCLENS,
        ivf_file(num_docs),
        IVF_OFFSETS,
        DOC_IDS,
    ]
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::IndexFormat {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
