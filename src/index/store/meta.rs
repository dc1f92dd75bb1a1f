//! `metadata.json`: format version, the model an index was built with,
//! settings, stats, and each data file's size and CRC-32.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::write::stale_siblings;
use super::{bad, FORMAT_VERSION, LIVE_FORMAT_VERSION, METADATA};
use crate::error::{Error, Result};

/// The model an index was built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model directory's name (informative).
    pub name: String,
    /// `crc32:` + CRC-32 of the model's files (see [`ModelInfo::from_dir`]):
    /// what search compares to refuse an index built with another model.
    pub fingerprint: String,
    /// Output dimension of the token vectors.
    pub dim: usize,
    /// The model directory (absolute) the index was built with, so search can
    /// load the model without being told; `None` for indexes built from
    /// vectors of an unknown model.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// Files that define a model's outputs, hashed into its fingerprint when present.
const MODEL_FILES: &[&str] = &[
    "config.json",
    "config_sentence_transformers.json",
    "tokenizer.json",
    "model.safetensors",
    "1_Dense/config.json",
    "1_Dense/model.safetensors",
    // Page-image models (ColQwen2): the image processor, and LoRA adapters.
    "preprocessor_config.json",
    "processor_config.json",
    "adapter_config.json",
    "adapter_model.safetensors",
];

impl ModelInfo {
    /// Fingerprints the model in `dir`: the CRC-32 over, for each of
    /// `config.json`, `config_sentence_transformers.json`, `tokenizer.json`,
    /// `model.safetensors`, `1_Dense/config.json`, `1_Dense/model.safetensors`
    /// that exists, its relative name, its size and its full contents (weights
    /// included: any change of weights, head, tokenizer or settings changes it).
    /// Costs one read of the model files (tens of ms for MiniLM).
    pub fn from_dir(dir: &Path, dim: usize) -> Result<Self> {
        let mut hasher = crc32fast::Hasher::new();
        let mut found = 0;
        for name in MODEL_FILES {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            found += 1;
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
            hasher.update(name.as_bytes());
            hasher.update(&len.to_le_bytes());
            if len > 0 {
                // SAFETY: read-only map of a model file we only hash; a
                // concurrent writer would at worst give a wrong fingerprint.
                let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
                hasher.update(&map);
            }
        }
        if found == 0 {
            return Err(Error::io(
                dir.join("config.json"),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model files to fingerprint (config.json, model.safetensors, …)",
                ),
            ));
        }
        let path = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Self {
            name,
            fingerprint: format!("crc32:{:08x}", hasher.finalize()),
            dim,
            path: Some(path),
        })
    }
}

/// Size and checksum of one data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub bytes: u64,
    pub crc32: u32,
}

/// How the index was built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub kmeans_iters: usize,
    pub sample_fraction: f64,
    pub max_points_per_centroid: usize,
    pub seed: u64,
    /// Centroid count asked for (`None`: ColBERTv2's rule).
    pub num_centroids_requested: Option<usize>,
    /// Token vectors k-means was trained on.
    pub num_sample_vectors: usize,
    /// Documents those came from.
    pub num_sample_docs: usize,
    /// Residual vectors the bucket cutoffs and weights were learnt from.
    pub num_codec_sample_vectors: usize,
    /// Where the index kernels ran ("cpu" or the GPU adapter).
    pub compute: String,
}

/// Facts about the built index, for reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub avg_doclen: f64,
    pub max_doclen: usize,
    /// Mean cosine between sample vectors and their decompressed versions.
    pub codec_mean_cosine: f64,
    /// Mean cosine of the sample vectors to their nearest centroid (after k-means).
    pub kmeans_mean_cosine: f64,
    pub build_seconds: f64,
}

/// `metadata.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub format_version: u32,
    /// `"colwgpu <version>"`.
    pub created_by: String,
    pub model: ModelInfo,
    pub dim: usize,
    pub nbits: usize,
    pub num_docs: usize,
    pub num_vectors: usize,
    pub num_centroids: usize,
    /// `4·ceil(dim·nbits / 32)`: bytes of one vector in `residuals.bin`.
    pub packed_bytes_per_vector: usize,
    /// Packed residual + code (2 bytes up to 65,536 centroids, else 4).
    pub bytes_per_vector: usize,
    pub settings: Settings,
    pub stats: Stats,
    /// Page documents (page-image indexes built from image files or PDFs):
    /// each page's source and patch grid, in document order. Absent in text
    /// indexes and in indexes written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<Vec<crate::pages::PageRecord>>,
    /// Token pooling applied to the documents' vectors before indexing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<crate::index::pool::Pooling>,
    /// Every data file with its size and CRC-32.
    pub files: BTreeMap<String, FileEntry>,
}

/// Reads `metadata.json` of the index in `dir`, checking its format version.
pub fn read_metadata(dir: &Path) -> Result<Metadata> {
    let path = dir.join(METADATA);
    if !dir.is_dir() {
        let mut msg = "no index here (not a directory)".to_string();
        if let Some((old, _)) = stale_siblings(dir).into_iter().find(|(_, o)| *o) {
            msg = format!(
                "no index here; a build was interrupted while replacing it: the previous index is at {} (rename it back, or build again)",
                old.display()
            );
        }
        return Err(bad(dir, msg));
    }
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let value: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(&path, format!("not valid JSON: {e}")))?;
    let version = value.get("format_version").and_then(|v| v.as_u64());
    match version {
        Some(v) if v == FORMAT_VERSION as u64 || v == LIVE_FORMAT_VERSION as u64 => {}
        Some(v) => {
            return Err(bad(
                &path,
                format!(
                    "index format version {v}, but this colwgpu reads versions {FORMAT_VERSION} \
                     and {LIVE_FORMAT_VERSION} (live); rebuild the index"
                ),
            ))
        }
        None => return Err(bad(&path, "no format_version: not a colwgpu index")),
    }
    verify_metadata_checksum(&path, &text)?;
    serde_json::from_value(value).map_err(|e| bad(&path, format!("invalid metadata: {e}")))
}

// ------------------------------------------------- metadata.json checksum ---

/// The member of `metadata.json` holding the CRC-32 of the file itself.
pub const METADATA_CHECKSUM: &str = "metadata_crc32";
const CHECKSUM_PLACEHOLDER: &str = "00000000";

/// Where the 8 hex digits of the checksum member are in `json` (the one
/// occurrence of `"metadata_crc32": "`), if exactly one is there.
fn checksum_digits(json: &[u8]) -> Option<std::ops::Range<usize>> {
    let key = format!("\"{METADATA_CHECKSUM}\"");
    let key = key.as_bytes();
    let mut found = None;
    for start in (0..json.len()).filter(|&i| json[i..].starts_with(key)) {
        if found.is_some() {
            return None;
        }
        let mut i = start + key.len();
        while json.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        if json.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        while json.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
            i += 1;
        }
        if json.get(i) != Some(&b'"') || json.get(i + 9) != Some(&b'"') {
            return None;
        }
        found = Some(i + 1..i + 9);
    }
    found
}

/// The CRC-32 of `json` with the checksum digits read as `00000000`.
fn checksum_of(json: &[u8], digits: std::ops::Range<usize>) -> String {
    let mut h = crc32fast::Hasher::new();
    h.update(&json[..digits.start]);
    h.update(CHECKSUM_PLACEHOLDER.as_bytes());
    h.update(&json[digits.end..]);
    format!("{:08x}", h.finalize())
}

/// Sets the checksum member of a `metadata.json` text that has one (as
/// `"metadata_crc32": "<any 8 characters>"`): the CRC-32, in lowercase hex, of
/// the whole file with those 8 characters read as `00000000`. Any change to
/// any byte of the result is then caught by [`read_metadata`].
pub fn seal_metadata(json: &mut [u8]) -> Result<()> {
    let digits = checksum_digits(json).ok_or_else(|| {
        bad(
            Path::new(METADATA),
            format!("no single \"{METADATA_CHECKSUM}\" member to seal"),
        )
    })?;
    let crc = checksum_of(json, digits.clone());
    json[digits].copy_from_slice(crc.as_bytes());
    Ok(())
}

/// `metadata.json`'s bytes: the metadata, pretty-printed, with its checksum.
pub fn metadata_json(metadata: &Metadata) -> Result<Vec<u8>> {
    let mut value =
        serde_json::to_value(metadata).map_err(|e| bad(Path::new(METADATA), e.to_string()))?;
    if let serde_json::Value::Object(map) = &mut value {
        map.insert(METADATA_CHECKSUM.into(), CHECKSUM_PLACEHOLDER.into());
    }
    let mut json =
        serde_json::to_vec_pretty(&value).map_err(|e| bad(Path::new(METADATA), e.to_string()))?;
    seal_metadata(&mut json)?;
    Ok(json)
}

/// Errors unless `json` carries its own valid checksum.
fn verify_metadata_checksum(path: &Path, json: &[u8]) -> Result<()> {
    let Some(digits) = checksum_digits(json) else {
        return Err(bad(
            path,
            format!(
                "has no \"{METADATA_CHECKSUM}\" checksum (damaged, edited, or written by an \
                 older colwgpu): rebuild the index"
            ),
        ));
    };
    let want = checksum_of(json, digits.clone());
    if json[digits.clone()] != *want.as_bytes() {
        return Err(bad(
            path,
            format!(
                "checksum mismatch (CRC-32 {want}, the file says {}): the metadata is corrupt \
                 or was edited",
                String::from_utf8_lossy(&json[digits])
            ),
        ));
    }
    Ok(())
}
