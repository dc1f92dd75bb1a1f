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

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::codec::{GpuCodec, ResidualCodec};
use crate::backend::Compute;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;

/// The format this build writes and reads (2: u16 codes / inverted lists where
/// they fit).
pub const FORMAT_VERSION: u32 = 2;

pub const METADATA: &str = "metadata.json";
pub const CENTROIDS: &str = "centroids.f32";
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
    /// "colwgpu <version>".
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
    /// Every data file with its size and CRC-32.
    pub files: BTreeMap<String, FileEntry>,
}

// ---------------------------------------------------------------- writing ---

/// A data file being written: buffered, size and CRC-32 kept as it goes.
pub(crate) struct FileWriter {
    path: PathBuf,
    name: &'static str,
    out: BufWriter<File>,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl FileWriter {
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<()> {
        self.out
            .write_all(data)
            .map_err(|e| Error::io(&self.path, e))?;
        self.crc.update(data);
        self.bytes += data.len() as u64;
        Ok(())
    }

    pub(crate) fn write_pod<T: bytemuck::Pod>(&mut self, data: &[T]) -> Result<()> {
        self.write(bytemuck::cast_slice(data))
    }

    /// Flushes and fsyncs; records the file in `files`.
    pub(crate) fn finish(self, files: &mut BTreeMap<String, FileEntry>) -> Result<()> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        files.insert(
            self.name.to_string(),
            FileEntry {
                bytes: self.bytes,
                crc32: self.crc.finalize(),
            },
        );
        Ok(())
    }
}

/// The temporary directory of a build in progress: removed on drop unless
/// committed.
pub(crate) struct TempIndexDir {
    target: PathBuf,
    tmp: PathBuf,
    committed: bool,
    /// Held from creation to commit (or failure): one writer per index path.
    _lock: super::lock::IndexLock,
}

fn sibling(target: &Path, tag: &str, pid: u32) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "index".into());
    target.with_file_name(format!("{name}.{tag}-{pid}"))
}

/// Whether process `pid` is alive (Linux: `/proc/<pid>`; elsewhere assume so).
fn process_alive(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        pid == std::process::id()
    }
}

/// Leftovers of builds at `target` whose process is gone: `(path, is_old)`.
fn stale_siblings(target: &Path) -> Vec<(PathBuf, bool)> {
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Vec::new();
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let name = name.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let fname = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = fname.strip_prefix(&name) else {
            continue;
        };
        let (is_old, pid) = if let Some(p) = rest.strip_prefix(".tmp-") {
            (false, p)
        } else if let Some(p) = rest.strip_prefix(".old-") {
            (true, p)
        } else {
            continue;
        };
        if let Ok(pid) = pid.parse::<u32>() {
            if pid == std::process::id() || !process_alive(pid) {
                out.push((e.path(), is_old));
            }
        }
    }
    out
}

fn fsync_dir(dir: &Path) -> Result<()> {
    // Directories can be opened and fsynced on Unix; elsewhere this is best effort.
    match File::open(dir) {
        Ok(f) => {
            #[cfg(unix)]
            f.sync_all().map_err(|e| Error::io(dir, e))?;
            drop(f);
            Ok(())
        }
        Err(e) if cfg!(unix) => Err(Error::io(dir, e)),
        Err(_) => Ok(()),
    }
}

/// Errors unless `target` is free, an empty directory or a colwgpu index
/// (what a build may replace): never a device, FIFO, file or other directory.
fn check_replaceable(target: &Path) -> Result<()> {
    let Ok(m) = std::fs::metadata(target) else {
        return Ok(());
    };
    if let Some(kind) = crate::io::output::describe_non_regular(&m).filter(|_| !m.is_dir()) {
        return Err(Error::Input(format!(
            "'{}' is {kind}, not an index directory; refusing to replace it",
            target.display()
        )));
    }
    let is_index = m.is_dir() && target.join(METADATA).is_file();
    let is_empty_dir = m.is_dir()
        && std::fs::read_dir(target)
            .map_err(|e| Error::io(target, e))?
            .next()
            .is_none();
    if !is_index && !is_empty_dir {
        return Err(Error::Input(format!(
            "'{}' exists and is not a colwgpu index (no {METADATA}); refusing to replace it",
            target.display()
        )));
    }
    Ok(())
}

impl TempIndexDir {
    /// Checks that `target` may be (re)placed by an index, tidies leftovers of
    /// dead builds there, and creates `<target>.tmp-<pid>`.
    /// Takes the index's writer lock first ([`super::lock::IndexLock`]; with
    /// `wait`, waits for another writer to finish instead of failing).
    pub(crate) fn create(target: &Path, wait: bool) -> Result<Self> {
        if target.file_name().is_none() {
            return Err(Error::Input(format!(
                "index path '{}' has no directory name",
                target.display()
            )));
        }
        // Checked before taking the lock (no lock file beside a wrong target)
        // and again under it.
        check_replaceable(target)?;
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let lock = super::lock::IndexLock::acquire(target, wait)?;
        // A crash between the two renames of a commit leaves the previous index
        // as `<target>.old-<pid>` and no target: put it back first.
        let stale = stale_siblings(target);
        if !target.exists() {
            if let Some((old, _)) = stale.iter().find(|(_, is_old)| *is_old) {
                std::fs::rename(old, target).map_err(|e| Error::io(old, e))?;
            }
        }
        for (p, _) in stale_siblings(target) {
            std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
        check_replaceable(target)?;
        let tmp = sibling(target, "tmp", std::process::id());
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            tmp,
            committed: false,
            _lock: lock,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.tmp
    }

    pub(crate) fn file(&self, name: &'static str) -> Result<FileWriter> {
        let path = self.tmp.join(name);
        let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(FileWriter {
            path,
            name,
            out: BufWriter::with_capacity(1 << 20, f),
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        })
    }

    /// Writes a whole data file.
    pub(crate) fn write_file<T: bytemuck::Pod>(
        &self,
        name: &'static str,
        data: &[T],
        files: &mut BTreeMap<String, FileEntry>,
    ) -> Result<()> {
        let mut w = self.file(name)?;
        w.write_pod(data)?;
        w.finish(files)
    }

    /// Writes indices (values below 2^16 when `name` ends in `.u16`, as
    /// [`codes_file`] / [`ivf_file`] choose) at the width its name says.
    pub(crate) fn write_indices(
        &self,
        name: &'static str,
        data: &[u32],
        files: &mut BTreeMap<String, FileEntry>,
    ) -> Result<()> {
        if !name.ends_with(".u16") {
            return self.write_file(name, data, files);
        }
        let mut w = self.file(name)?;
        for chunk in data.chunks(1 << 16) {
            let narrow = chunk
                .iter()
                .map(|&v| {
                    u16::try_from(v).map_err(|_| {
                        bad(
                            &self.tmp.join(name),
                            format!("value {v} does not fit the u16 file"),
                        )
                    })
                })
                .collect::<Result<Vec<u16>>>()?;
            w.write_pod(&narrow)?;
        }
        w.finish(files)
    }

    /// Writes `metadata.json`, fsyncs, and moves the index into place.
    pub(crate) fn commit(mut self, metadata: &Metadata) -> Result<()> {
        let path = self.tmp.join(METADATA);
        let json = metadata_json(metadata).map_err(|e| Error::IndexFormat {
            path: path.clone(),
            message: e.to_string(),
        })?;
        {
            let mut f = File::create(&path).map_err(|e| Error::io(&path, e))?;
            f.write_all(&json).map_err(|e| Error::io(&path, e))?;
            f.sync_all().map_err(|e| Error::io(&path, e))?;
        }
        fsync_dir(&self.tmp)?;
        let target = self.target.clone();
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if target.exists() {
            let old = sibling(&target, "old", std::process::id());
            std::fs::rename(&target, &old).map_err(|e| Error::io(&target, e))?;
            if let Err(e) = std::fs::rename(&self.tmp, &target) {
                // Put the previous index back; the temporary one is removed on drop.
                let _ = std::fs::rename(&old, &target);
                return Err(Error::io(&target, e));
            }
            self.committed = true;
            fsync_dir(&parent)?;
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        } else {
            std::fs::rename(&self.tmp, &target).map_err(|e| Error::io(&target, e))?;
            self.committed = true;
        }
        fsync_dir(&parent)
    }
}

impl Drop for TempIndexDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
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

// ---------------------------------------------------------------- reading ---

/// The bytes of one file: memory-mapped, or owned in 8-byte-aligned storage
/// (empty files, which cannot be mapped).
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u64>, usize),
}

impl Bytes {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v, len) => &bytemuck::cast_slice(v)[..*len],
        }
    }
}

/// A typed view of a file: casts the whole (page- or 8-byte-aligned) file.
struct Array<T> {
    bytes: Bytes,
    _t: std::marker::PhantomData<T>,
}

fn array<T>(bytes: Bytes) -> Array<T> {
    Array {
        bytes,
        _t: std::marker::PhantomData,
    }
}

impl<T: bytemuck::Pod> Array<T> {
    fn as_slice(&self) -> &[T] {
        // Sizes are checked to be multiples of size_of::<T>() at load and both
        // storages are at least 8-byte aligned, so this cannot fail.
        bytemuck::try_cast_slice(self.bytes.as_bytes()).unwrap_or(&[])
    }
}

/// A u32 array from a u32 file (memory-mapped) or a u16 file (widened at load).
enum Indices {
    Mapped(Array<u32>),
    Widened(Vec<u32>),
}

impl Indices {
    /// The array in the file `name` (`.u16` or `.u32`), whose size is checked.
    fn from_file(name: &str, bytes: Bytes) -> Self {
        if name.ends_with(".u16") {
            let narrow: &[u16] = bytemuck::try_cast_slice(bytes.as_bytes()).unwrap_or(&[]);
            Indices::Widened(narrow.iter().map(|&v| v as u32).collect())
        } else {
            Indices::Mapped(array(bytes))
        }
    }

    fn as_slice(&self) -> &[u32] {
        match self {
            Indices::Mapped(a) => a.as_slice(),
            Indices::Widened(v) => v,
        }
    }
}

/// Options for [`Index::open_with`].
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Verify every file's CRC-32 (reads each file once). Default: on.
    pub verify_checksums: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            verify_checksums: true,
        }
    }
}

/// An opened index: the codec in memory, the large arrays memory-mapped.
pub struct Index {
    dir: PathBuf,
    metadata: Metadata,
    codec: ResidualCodec,
    codes: Indices,
    residuals: Array<u32>,
    doclens: Vec<u32>,
    doc_offsets: Vec<u64>,
    ivf: Indices,
    ivf_offsets: Array<u64>,
    doc_ids: Vec<String>,
    gpu_codec: Mutex<Option<Arc<GpuCodec>>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Index({}: {} docs, {} vectors, {} centroids, {} bits)",
            self.dir.display(),
            self.metadata.num_docs,
            self.metadata.num_vectors,
            self.metadata.num_centroids,
            self.metadata.nbits
        )
    }
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::IndexFormat {
        path: path.to_path_buf(),
        message: message.into(),
    }
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
        Some(v) if v == FORMAT_VERSION as u64 => {}
        Some(v) => {
            return Err(bad(
                &path,
                format!(
                    "index format version {v}, but this colwgpu reads version {FORMAT_VERSION}; rebuild the index"
                ),
            ))
        }
        None => return Err(bad(&path, "no format_version: not a colwgpu index")),
    }
    verify_metadata_checksum(&path, &text)?;
    serde_json::from_value(value).map_err(|e| bad(&path, format!("invalid metadata: {e}")))
}

impl Index {
    /// Opens the index in `dir`, verifying checksums.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, &OpenOptions::default())
    }

    pub fn open_with(dir: &Path, options: &OpenOptions) -> Result<Self> {
        if cfg!(target_endian = "big") {
            return Err(bad(
                dir,
                "indexes are little-endian; this big-endian host cannot map them",
            ));
        }
        let meta = read_metadata(dir)?;
        let meta_path = dir.join(METADATA);
        // Bounds that keep every size computation below in range.
        if !matches!(meta.nbits, 1 | 2 | 4)
            || meta.dim == 0
            || meta.dim > 1 << 16
            || meta.num_centroids == 0
            || meta.num_centroids as u64 > u32::MAX as u64
            || meta.num_docs as u64 > u32::MAX as u64
            || meta.num_vectors as u64 > 1 << 40
        {
            return Err(bad(
                &meta_path,
                format!(
                    "invalid nbits {} / dim {} / num_centroids {} / num_docs {} / num_vectors {}",
                    meta.nbits, meta.dim, meta.num_centroids, meta.num_docs, meta.num_vectors
                ),
            ));
        }
        let packed = 4 * crate::kernels::residual_codec::words_per_vector(meta.dim, meta.nbits);
        if meta.packed_bytes_per_vector != packed {
            return Err(bad(
                &meta_path,
                format!(
                    "packed_bytes_per_vector {} but dim {} at {} bits packs into {packed}",
                    meta.packed_bytes_per_vector, meta.dim, meta.nbits
                ),
            ));
        }
        let buckets = 1u64 << meta.nbits;
        let k = meta.num_centroids as u64;
        let n = meta.num_vectors as u64;
        let codes_name = codes_file(meta.num_centroids);
        let ivf_name = ivf_file(meta.num_docs);
        let code_bytes = index_width(meta.num_centroids) as u64;
        // Sizes every file must have, where the metadata determines them.
        let expected: BTreeMap<&str, (Option<u64>, String)> = [
            (
                CENTROIDS,
                (
                    Some(k * meta.dim as u64 * 4),
                    format!("{k} centroids × {} dims × 4", meta.dim),
                ),
            ),
            (
                BUCKET_CUTOFFS,
                (
                    Some((buckets - 1) * 4),
                    format!("{} cutoffs × 4", buckets - 1),
                ),
            ),
            (
                BUCKET_WEIGHTS,
                (Some(buckets * 4), format!("{buckets} weights × 4")),
            ),
            (
                codes_name,
                (Some(n * code_bytes), format!("{n} vectors × {code_bytes}")),
            ),
            (
                RESIDUALS,
                (Some(n * packed as u64), format!("{n} vectors × {packed}")),
            ),
            (
                DOCLENS,
                (
                    Some(meta.num_docs as u64 * 4),
                    format!("{} docs × 4", meta.num_docs),
                ),
            ),
            (
                IVF_OFFSETS,
                (Some((k + 1) * 8), format!("({k} centroids + 1) × 8")),
            ),
            (ivf_name, (None, String::new())),
            (DOC_IDS, (None, String::new())),
        ]
        .into_iter()
        .collect();

        let mut maps: BTreeMap<&str, Bytes> = BTreeMap::new();
        for name in data_files(meta.num_centroids, meta.num_docs) {
            let path = dir.join(name);
            let entry = meta
                .files
                .get(name)
                .ok_or_else(|| bad(&meta_path, format!("lists no entry for {name}")))?;
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
            if len != entry.bytes {
                return Err(bad(
                    &path,
                    format!(
                        "is {len} bytes but {METADATA} says {} (truncated or replaced?)",
                        entry.bytes
                    ),
                ));
            }
            if let Some((Some(want), why)) = expected.get(name) {
                if len != *want {
                    return Err(bad(
                        &path,
                        format!("is {len} bytes, expected {want} ({why})"),
                    ));
                }
            }
            let bytes = if len == 0 {
                Bytes::Owned(Vec::new(), 0)
            } else {
                // SAFETY: read-only map. An index must not be modified while it
                // is open (documented in docs/INDEX_FORMAT.md).
                Bytes::Mapped(
                    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?,
                )
            };
            if options.verify_checksums {
                let crc = crc32fast::hash(bytes.as_bytes());
                if crc != entry.crc32 {
                    return Err(bad(
                        &path,
                        format!(
                            "checksum mismatch (CRC-32 {crc:08x}, {METADATA} says {:08x}): the file is corrupt",
                            entry.crc32
                        ),
                    ));
                }
            }
            maps.insert(name, bytes);
        }
        let mut take = |name: &str| maps.remove(name).unwrap_or(Bytes::Owned(Vec::new(), 0));
        let f32s = |b: &Bytes| -> Vec<f32> {
            bytemuck::try_cast_slice::<u8, f32>(b.as_bytes())
                .map(|s| s.to_vec())
                .unwrap_or_default()
        };
        let centroids = f32s(&take(CENTROIDS));
        let cutoffs = f32s(&take(BUCKET_CUTOFFS));
        let weights = f32s(&take(BUCKET_WEIGHTS));
        let codec = ResidualCodec::new(meta.dim, meta.nbits, centroids, cutoffs, weights)
            .map_err(|e| bad(&dir.join(CENTROIDS), format!("invalid codec: {e}")))?;
        let codes = Indices::from_file(codes_name, take(codes_name));
        let residuals: Array<u32> = array(take(RESIDUALS));
        let doclens_b = take(DOCLENS);
        let doclens: Vec<u32> = bytemuck::try_cast_slice(doclens_b.as_bytes())
            .map(|s: &[u32]| s.to_vec())
            .unwrap_or_default();
        let ivf_path = dir.join(ivf_name);
        let ivf_b = take(ivf_name);
        let ivf_width = index_width(meta.num_docs);
        if !ivf_b.as_bytes().len().is_multiple_of(ivf_width) {
            return Err(bad(
                &ivf_path,
                format!("size is not a multiple of {ivf_width}"),
            ));
        }
        let ivf = Indices::from_file(ivf_name, ivf_b);
        let ivf_offsets: Array<u64> = array(take(IVF_OFFSETS));
        let ids_path = dir.join(DOC_IDS);
        let doc_ids: Vec<String> = serde_json::from_slice(take(DOC_IDS).as_bytes())
            .map_err(|e| bad(&ids_path, format!("not a JSON list of strings: {e}")))?;

        // Invariants search relies on.
        if doc_ids.len() != meta.num_docs {
            return Err(bad(
                &ids_path,
                format!("{} ids for {} documents", doc_ids.len(), meta.num_docs),
            ));
        }
        let mut doc_offsets = Vec::with_capacity(doclens.len() + 1);
        let mut acc = 0u64;
        doc_offsets.push(0);
        for &l in &doclens {
            acc += l as u64;
            doc_offsets.push(acc);
        }
        if acc != n {
            return Err(bad(
                &dir.join(DOCLENS),
                format!("document lengths sum to {acc}, but the index has {n} vectors"),
            ));
        }
        if let Some(i) = codes.as_slice().iter().position(|&c| c as u64 >= k) {
            return Err(bad(
                &dir.join(codes_name),
                format!(
                    "code {} of vector {i} is not below the {k} centroids",
                    codes.as_slice()[i]
                ),
            ));
        }
        let offs = ivf_offsets.as_slice();
        let ivf_len = ivf.as_slice().len() as u64;
        if offs.first() != Some(&0)
            || offs.last() != Some(&ivf_len)
            || offs.windows(2).any(|w| w[0] > w[1])
        {
            return Err(bad(
                &dir.join(IVF_OFFSETS),
                format!("offsets must ascend from 0 to the {ivf_len} entries of {ivf_name}"),
            ));
        }
        if let Some(i) = ivf
            .as_slice()
            .iter()
            .position(|&d| d as usize >= meta.num_docs)
        {
            return Err(bad(
                &ivf_path,
                format!(
                    "entry {i} names document {} of {}",
                    ivf.as_slice()[i],
                    meta.num_docs
                ),
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            metadata: meta,
            codec,
            codes,
            residuals,
            doclens,
            doc_offsets,
            ivf,
            ivf_offsets,
            doc_ids,
            gpu_codec: Mutex::new(None),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    pub fn codec(&self) -> &ResidualCodec {
        &self.codec
    }
    pub fn dim(&self) -> usize {
        self.metadata.dim
    }
    pub fn nbits(&self) -> usize {
        self.metadata.nbits
    }
    pub fn num_docs(&self) -> usize {
        self.metadata.num_docs
    }
    pub fn num_vectors(&self) -> usize {
        self.metadata.num_vectors
    }
    pub fn num_centroids(&self) -> usize {
        self.metadata.num_centroids
    }
    /// `num_centroids × dim` unit rows.
    pub fn centroids(&self) -> &[f32] {
        &self.codec.centroids
    }
    /// Centroid id of every vector, documents back to back (memory-mapped, or
    /// widened from u16 at load).
    pub fn codes(&self) -> &[u32] {
        self.codes.as_slice()
    }
    /// Packed residuals, `words_per_vector` u32 words per vector (memory-mapped).
    pub fn residuals(&self) -> &[u32] {
        self.residuals.as_slice()
    }
    /// u32 words per packed vector.
    pub fn words_per_vector(&self) -> usize {
        self.codec.words_per_vector()
    }
    /// Vectors per document.
    pub fn doclens(&self) -> &[u32] {
        &self.doclens
    }
    /// `num_docs + 1` prefix sums of `doclens`: document `d` owns vectors
    /// `doc_offsets[d]..doc_offsets[d + 1]`.
    pub fn doc_offsets(&self) -> &[u64] {
        &self.doc_offsets
    }
    /// Document indices per centroid, back to back; each list ascending and
    /// without repeats (memory-mapped, or widened from u16 at load).
    pub fn ivf(&self) -> &[u32] {
        self.ivf.as_slice()
    }
    /// `num_centroids + 1` offsets into [`Index::ivf`].
    pub fn ivf_offsets(&self) -> &[u64] {
        self.ivf_offsets.as_slice()
    }
    /// The documents with at least one vector assigned to centroid `c`
    /// (panics if `c >= num_centroids`).
    pub fn ivf_list(&self, c: usize) -> &[u32] {
        let o = self.ivf_offsets();
        &self.ivf()[o[c] as usize..o[c + 1] as usize]
    }
    /// Document ids as given in the corpus, by document index.
    pub fn doc_ids(&self) -> &[String] {
        &self.doc_ids
    }
    /// Codes of document `d` (panics if `d >= num_docs`).
    pub fn doc_codes(&self, d: usize) -> &[u32] {
        let o = &self.doc_offsets;
        &self.codes()[o[d] as usize..o[d + 1] as usize]
    }
    /// Packed residuals of document `d` (panics if `d >= num_docs`).
    pub fn doc_residuals(&self, d: usize) -> &[u32] {
        let o = &self.doc_offsets;
        let w = self.words_per_vector();
        &self.residuals()[o[d] as usize * w..o[d + 1] as usize * w]
    }

    /// Errors unless `model` is the model this index was built with.
    pub fn check_model(&self, model: &ModelInfo) -> Result<()> {
        let m = &self.metadata.model;
        if m.fingerprint != model.fingerprint || m.dim != model.dim {
            return Err(bad(
                &self.dir,
                format!(
                    "was built with model '{}' ({}, dim {}), not with '{}' ({}, dim {}); \
                     search with the indexing model or rebuild the index",
                    m.name, m.fingerprint, m.dim, model.name, model.fingerprint, model.dim
                ),
            ));
        }
        Ok(())
    }

    /// The codec uploaded to `ctx` (once; kept for later calls on the same context).
    pub fn gpu_codec(&self, ctx: &Arc<GpuContext>) -> Result<Arc<GpuCodec>> {
        let mut slot = self.gpu_codec.lock().map_err(|_| Error::Gpu {
            label: "index codec".into(),
            message: "lock poisoned".into(),
        })?;
        if let Some(c) = slot.as_ref().filter(|c| Arc::ptr_eq(&c.ctx, ctx)) {
            return Ok(c.clone());
        }
        let c = Arc::new(self.codec.upload(ctx)?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Decompressed vectors of documents `docs` (in the given order, repeats
    /// allowed), back to back, and `docs.len() + 1` offsets into them (in vectors).
    pub fn decompress_docs(
        &self,
        compute: &Compute,
        docs: &[u32],
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        let w = self.words_per_vector();
        let mut offsets = Vec::with_capacity(docs.len() + 1);
        offsets.push(0usize);
        let mut total = 0usize;
        for &d in docs {
            if d as usize >= self.num_docs() {
                return Err(Error::Input(format!(
                    "document index {d} is not below the index's {} documents",
                    self.num_docs()
                )));
            }
            total += self.doclens[d as usize] as usize;
            offsets.push(total);
        }
        let mut codes = Vec::with_capacity(total);
        let mut packed = Vec::with_capacity(total * w);
        for &d in docs {
            codes.extend_from_slice(self.doc_codes(d as usize));
            packed.extend_from_slice(self.doc_residuals(d as usize));
        }
        // Codes and sizes were validated at open.
        let vectors = match compute {
            Compute::Cpu => self.codec.decompress_cpu(&codes, &packed),
            Compute::Gpu(ctx) => self.gpu_codec(ctx)?.decompress(&codes, &packed)?,
        };
        Ok((vectors, offsets))
    }
}
