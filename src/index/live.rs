//! A live index: documents added, updated and deleted after the build,
//! without rebuilding, every mutation atomic.
//!
//! **On disk.** The built (format 3) files stay as they are: the *base*.
//! Mutations add files beside them, never change one:
//!
//! * `seg-<generation>.bin`: the documents one add brought (ids, lengths,
//!   centroid codes, packed residuals), compressed with the base's codec;
//! * `centroids-<generation>.f16`: centroids appended to the codebook (all of
//!   them, rewritten whole when outliers are clustered);
//! * `outliers-<generation>.f32`: the buffer of outlier vectors not yet clustered;
//! * `metadata.sqlite`: document metadata ([`crate::index::metadb`]);
//! * `live.json`: the **manifest**: the generation, the segments (size and
//!   CRC-32 of each), the deleted documents, the centroid and outlier files.
//!
//! Documents have stable *global numbers*: the base's documents 0…B−1, then
//! each segment's in order. A delete adds numbers to the manifest's deleted
//! list (tombstones, hidden from search at once); an update is a delete and an
//! add under the same id, in one manifest. `compact` writes a new format 3
//! base without the deleted documents (the build's atomic directory swap).
//!
//! **The commit point** of every mutation is the rename of `live.json.tmp`
//! onto `live.json` (file fsynced before, directory after). Everything a
//! manifest names is written and fsynced before it; nothing it names is ever
//! changed. Killed at any instant, the index is the old manifest's or the new
//! one's; files of an uncommitted mutation are removed by the next writer.
//! Readers open the manifest they find and read what it names into memory, so
//! they keep that snapshot while a writer works (a reader that finds a file
//! already gone, because a compaction superseded its manifest, starts over).
//!
//! **One writer**: the index's lock ([`crate::index::lock`]), as for builds.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::lock::IndexLock;
use super::metadb::{self, MetaDb};
use super::store::{self, Index, OpenOptions};
use crate::backend::Compute;
use crate::error::{Error, Result};
use crate::index::codec::ResidualCodec;
use crate::index::store::read::LiveView;

/// The manifest of a live index.
pub const MANIFEST: &str = "live.json";
const MANIFEST_TMP: &str = "live.json.tmp";
/// The temporary name `metadata.json` is rewritten under when a base becomes
/// live ([`store::LIVE_FORMAT_VERSION`]).
const METADATA_TMP: &str = "metadata.json.live-tmp";
/// The manifest format this build writes and reads.
pub const LIVE_VERSION: u32 = 1;
const SEGMENT_MAGIC: &[u8; 8] = b"CWSEG001";

/// Distance (‖v − c‖ for unit vectors, `sqrt(2 − 2·cos)`) to the nearest
/// centroid above which an added vector is an outlier: 0.66 (cosine below
/// 0.78).
///
/// Measured, on full SciFact with colbert-minilm (`scripts/live_quality.sh`:
/// 8,192 centroids trained on a seeded half, ~408,000 vectors; the other
/// half added in ten batches; five k-means/split seeds; nDCG@10 over all
/// 1,109 judged queries, PLAID). Nearest-centroid cosine, percentiles:
///
/// | vectors | 0.01 % | 0.1 % | 1 % | 5 % | 50 % |
/// |---|---|---|---|---|---|
/// | base half (trained on) | 0.383 | 0.428 | 0.514 | 0.631 | 0.847 |
/// | added half (unseen) | 0.354 | 0.391 | 0.463 | 0.568 | 0.803 |
///
/// At 0.66, 27 % of the base's own vectors and 44 % of the added half count
/// as outliers, and ~2,750 centroids are appended over the ten adds (+34 %
/// for a corpus that doubles). Against 1.07 (the base's 0.1th percentile,
/// which buffers ~0.4 % and appends none), paired on the same five splits:
///
/// | distance | nDCG@10 Δ vs rebuild, per split | mean | added-half cosine |
/// |---|---|---|---|
/// | 0.66 | −0.0031, −0.0003, +0.0047, +0.0043, −0.0009 | +0.0010 | 0.960 |
/// | 1.07 | −0.0066, −0.0039, +0.0041, +0.0025, −0.0002 | −0.0008 | 0.952 |
///
/// 0.66 is better on four of five splits (mean +0.0018), keeps every split
/// within 0.005 of its rebuild, reconstructs the added vectors better, and
/// halves the extra MaxSim that noisier reconstruction gives added documents;
/// add time is the same (2.1–2.6 ms per document). An earlier single-split
/// reading that preferred 1.07 was within the seed-to-seed spread of
/// rebuilds (up to 0.013). [`Writer::set_outlier_policy`] sets it per index;
/// an index records the distance it was made live with.
pub const DEFAULT_OUTLIER_DISTANCE: f32 = 0.66;
/// Outlier vectors buffered before they are clustered into new centroids.
pub const DEFAULT_CLUSTER_AT: usize = 2048;
/// Buffered outliers per new centroid.
const OUTLIERS_PER_CENTROID: usize = 64;

/// A file the manifest names, with its size and CRC-32.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub name: String,
    pub bytes: u64,
    pub crc32: u32,
}

/// One segment: the documents of one add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    pub file: FileRef,
    pub num_docs: usize,
    pub num_vectors: usize,
}

/// `live.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub live_version: u32,
    /// Incremented by every mutation.
    pub generation: u64,
    /// CRC-32 of the base's `metadata.json`: ties the manifest to its base.
    pub base_crc32: u32,
    pub base_docs: usize,
    pub segments: Vec<SegmentEntry>,
    /// Global numbers of deleted documents, ascending.
    pub deleted: Vec<u32>,
    /// Centroids appended to the base's codebook (f16), and how many.
    pub extra_centroids: Option<FileRef>,
    pub num_extra_centroids: usize,
    /// Outlier vectors waiting to be clustered (f32), and how many.
    pub outliers: Option<FileRef>,
    pub num_outliers: usize,
    pub outlier_distance: f32,
    pub cluster_at: usize,
}

impl Manifest {
    fn new(base_crc32: u32, base_docs: usize) -> Self {
        Self {
            live_version: LIVE_VERSION,
            generation: 0,
            base_crc32,
            base_docs,
            segments: Vec::new(),
            deleted: Vec::new(),
            extra_centroids: None,
            num_extra_centroids: 0,
            outliers: None,
            num_outliers: 0,
            outlier_distance: DEFAULT_OUTLIER_DISTANCE,
            cluster_at: DEFAULT_CLUSTER_AT,
        }
    }

    /// Global numbers allotted (base and every segment, deleted included).
    pub fn total_globals(&self) -> usize {
        self.base_docs + self.segments.iter().map(|s| s.num_docs).sum::<usize>()
    }

    fn files(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.segments.iter().map(|s| s.file.name.as_str()).collect();
        v.extend(self.extra_centroids.iter().map(|f| f.name.as_str()));
        v.extend(self.outliers.iter().map(|f| f.name.as_str()));
        v
    }
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::IndexFormat {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    manifest: Manifest,
    crc32: u32,
}

fn manifest_crc(m: &Manifest) -> Result<u32> {
    let bytes = serde_json::to_vec(m).map_err(|e| bad(Path::new(MANIFEST), e.to_string()))?;
    Ok(crc32fast::hash(&bytes))
}

/// Reads and verifies `live.json` of the index in `dir`.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let sealed: Sealed =
        serde_json::from_slice(&text).map_err(|e| bad(&path, format!("not a manifest: {e}")))?;
    if sealed.manifest.live_version != LIVE_VERSION {
        return Err(bad(
            &path,
            format!(
                "live manifest version {}, but this colwgpu reads version {LIVE_VERSION}",
                sealed.manifest.live_version
            ),
        ));
    }
    let crc = manifest_crc(&sealed.manifest)?;
    if crc != sealed.crc32 {
        return Err(bad(
            &path,
            format!(
                "checksum mismatch (CRC-32 {crc:08x}, the file says {:08x})",
                sealed.crc32
            ),
        ));
    }
    Ok(sealed.manifest)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io(dir, e))?;
    #[cfg(unix)]
    f.sync_all().map_err(|e| Error::io(dir, e))?;
    drop(f);
    Ok(())
}

/// Writes `bytes` to `dir/name` and fsyncs it (the name must be new).
fn write_new_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<FileRef> {
    let path = dir.join(name);
    let mut f = File::create(&path).map_err(|e| Error::io(&path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&path, e))?;
    f.sync_all().map_err(|e| Error::io(&path, e))?;
    Ok(FileRef {
        name: name.to_string(),
        bytes: bytes.len() as u64,
        crc32: crc32fast::hash(bytes),
    })
}

/// The commit point: `live.json.tmp` written and fsynced, renamed onto
/// `live.json`, the directory fsynced.
fn commit_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let sealed = Sealed {
        manifest: m.clone(),
        crc32: manifest_crc(m)?,
    };
    let json =
        serde_json::to_vec_pretty(&sealed).map_err(|e| bad(&dir.join(MANIFEST), e.to_string()))?;
    replace_file(dir, MANIFEST_TMP, MANIFEST, &json)
}

/// Writes `bytes` to `dir/tmp_name`, fsyncs it, renames it onto `dir/name`
/// and fsyncs the directory.
fn replace_file(dir: &Path, tmp_name: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(tmp_name);
    {
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    fsync_dir(dir)
}

/// Marks a base that is becoming live (no `live.json` yet) with
/// [`store::LIVE_FORMAT_VERSION`] in `metadata.json` (rewritten atomically),
/// and returns the new file's CRC-32 for the first manifest. Killed after the
/// rename and before the first manifest, the index is a version 4 base with
/// no manifest: it opens as the plain index it was, and the next writer
/// starts from there. A base already live under version 3 (written before
/// version 4 existed) keeps its version: its manifest is tied to the CRC of
/// that `metadata.json`, and rewriting both would not be one atomic step.
fn mark_live(dir: &Path) -> Result<u32> {
    let mut meta = store::read_metadata(dir)?;
    meta.format_version = store::LIVE_FORMAT_VERSION;
    let json = store::metadata_json(&meta)?;
    replace_file(dir, METADATA_TMP, store::METADATA, &json)?;
    Ok(crc32fast::hash(&json))
}

/// Reads a file the manifest names, checking its size and CRC-32.
fn read_named(dir: &Path, f: &FileRef) -> Result<Vec<u8>> {
    let path = dir.join(&f.name);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    if bytes.len() as u64 != f.bytes {
        return Err(bad(
            &path,
            format!(
                "is {} bytes but {MANIFEST} says {} (truncated or replaced?)",
                bytes.len(),
                f.bytes
            ),
        ));
    }
    let crc = crc32fast::hash(&bytes);
    if crc != f.crc32 {
        return Err(bad(
            &path,
            format!(
                "checksum mismatch (CRC-32 {crc:08x}, {MANIFEST} says {:08x})",
                f.crc32
            ),
        ));
    }
    Ok(bytes)
}

/// A segment's contents.
struct Segment {
    ids: Vec<String>,
    doclens: Vec<u32>,
    codes: Vec<u32>,
    residuals: Vec<u32>,
}

fn encode_segment(seg: &Segment, words: usize) -> Result<Vec<u8>> {
    let ids = serde_json::to_vec(&seg.ids).map_err(|e| Error::Input(e.to_string()))?;
    let mut out = Vec::with_capacity(
        24 + 4 * (seg.doclens.len() + seg.codes.len() + seg.residuals.len()) + ids.len(),
    );
    out.extend_from_slice(SEGMENT_MAGIC);
    for v in [
        seg.doclens.len() as u32,
        seg.codes.len() as u32,
        words as u32,
        ids.len() as u32,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(bytemuck::cast_slice(&seg.doclens));
    out.extend_from_slice(bytemuck::cast_slice(&seg.codes));
    out.extend_from_slice(bytemuck::cast_slice(&seg.residuals));
    out.extend_from_slice(&ids);
    Ok(out)
}

fn decode_segment(path: &Path, b: &[u8], entry: &SegmentEntry, words: usize) -> Result<Segment> {
    let word = |i: usize| -> u32 {
        let s = 8 + 4 * i;
        u32::from_le_bytes([b[s], b[s + 1], b[s + 2], b[s + 3]])
    };
    if b.len() < 24 || &b[..8] != SEGMENT_MAGIC {
        return Err(bad(path, "not a colwgpu segment file"));
    }
    let (nd, nv, w, idlen) = (
        word(0) as usize,
        word(1) as usize,
        word(2) as usize,
        word(3) as usize,
    );
    if nd != entry.num_docs || nv != entry.num_vectors || w != words {
        return Err(bad(
            path,
            format!(
                "holds {nd} documents, {nv} vectors, {w} words per vector; the manifest \
                 says {} and {}, the codec {words}",
                entry.num_docs, entry.num_vectors
            ),
        ));
    }
    let need = 24 + 4 * (nd + nv + nv * w) + idlen;
    if b.len() != need {
        return Err(bad(
            path,
            format!("is {} bytes, expected {need}", b.len()),
        ));
    }
    let u32s = |from: usize, n: usize| -> Vec<u32> {
        b[from..from + 4 * n]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut at = 24;
    let doclens = u32s(at, nd);
    at += 4 * nd;
    let codes = u32s(at, nv);
    at += 4 * nv;
    let residuals = u32s(at, nv * w);
    at += 4 * nv * w;
    let ids: Vec<String> = serde_json::from_slice(&b[at..])
        .map_err(|e| bad(path, format!("ids are not a JSON list of strings: {e}")))?;
    if ids.len() != nd || doclens.iter().map(|&l| l as usize).sum::<usize>() != nv {
        return Err(bad(path, "ids or document lengths do not match the counts"));
    }
    Ok(Segment {
        ids,
        doclens,
        codes,
        residuals,
    })
}

fn base_crc(dir: &Path) -> Result<u32> {
    let path = dir.join(store::METADATA);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    Ok(crc32fast::hash(&bytes))
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
    bytemuck::cast_slice(&h).to_vec()
}

fn f32s_of(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Everything a manifest names, read and checked.
struct Snapshot {
    manifest: Manifest,
    base: Index,
    segments: Vec<Segment>,
    codec: ResidualCodec,
    outliers: Vec<f32>,
}

fn read_snapshot(dir: &Path, options: &OpenOptions) -> Result<Snapshot> {
    let manifest = read_manifest(dir)?;
    let base = Index::open_base(dir, options)?;
    let mpath = dir.join(MANIFEST);
    if manifest.base_crc32 != base_crc(dir)? || manifest.base_docs != base.num_docs() {
        return Err(bad(
            &mpath,
            "belongs to another base index (its metadata.json changed)",
        ));
    }
    let dim = base.dim();
    let words = base.words_per_vector();
    let mut centroids = base.centroids().to_vec();
    if let Some(f) = &manifest.extra_centroids {
        let b = read_named(dir, f)?;
        if b.len() != manifest.num_extra_centroids * dim * 2 {
            return Err(bad(&dir.join(&f.name), "size does not match the centroid count"));
        }
        let h: &[half::f16] = bytemuck::try_cast_slice(&b)
            .map_err(|_| bad(&dir.join(&f.name), "misaligned centroid file"))?;
        centroids.extend(h.iter().map(|x| x.to_f32()));
    }
    let k = centroids.len() / dim;
    let c = base.codec();
    let codec = ResidualCodec::new(
        dim,
        c.nbits,
        centroids,
        c.bucket_cutoffs.clone(),
        c.bucket_weights.clone(),
    )?;
    let mut segments = Vec::with_capacity(manifest.segments.len());
    for s in &manifest.segments {
        let path = dir.join(&s.file.name);
        let seg = decode_segment(&path, &read_named(dir, &s.file)?, s, words)?;
        if let Some(c) = seg.codes.iter().find(|&&c| c as usize >= k) {
            return Err(bad(&path, format!("code {c} is not below the {k} centroids")));
        }
        segments.push(seg);
    }
    let outliers = match &manifest.outliers {
        Some(f) => {
            let v = f32s_of(&read_named(dir, f)?);
            if v.len() != manifest.num_outliers * dim {
                return Err(bad(&dir.join(&f.name), "size does not match the outlier count"));
            }
            v
        }
        None => Vec::new(),
    };
    let total = manifest.total_globals();
    if manifest.deleted.iter().any(|&g| g as usize >= total)
        || manifest.deleted.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(bad(&mpath, "deleted documents out of range or not ascending"));
    }
    Ok(Snapshot {
        manifest,
        base,
        segments,
        codec,
        outliers,
    })
}

/// The merged index of a snapshot: the live documents of the base, then of
/// each segment, in global order.
fn merge(dir: &Path, snap: Snapshot) -> Index {
    let Snapshot {
        manifest,
        base,
        segments,
        codec,
        ..
    } = snap;
    let total = manifest.total_globals();
    let mut dead = vec![false; total];
    for &g in &manifest.deleted {
        dead[g as usize] = true;
    }
    let mut codes = Vec::new();
    let mut residuals = Vec::new();
    let mut doclens = Vec::new();
    let mut ids = Vec::new();
    let mut globals = Vec::new();
    for (d, &gone) in dead.iter().enumerate().take(base.num_docs()) {
        if gone {
            continue;
        }
        codes.extend_from_slice(base.doc_codes(d));
        residuals.extend_from_slice(base.doc_residuals(d));
        doclens.push(base.doclens()[d]);
        ids.push(base.doc_ids()[d].clone());
        globals.push(d as u32);
    }
    let words = codec.words_per_vector();
    let mut g = base.num_docs();
    for seg in segments {
        let mut at = 0usize;
        for (i, &len) in seg.doclens.iter().enumerate() {
            let len = len as usize;
            if !dead[g] {
                codes.extend_from_slice(&seg.codes[at..at + len]);
                residuals.extend_from_slice(&seg.residuals[at * words..(at + len) * words]);
                doclens.push(len as u32);
                ids.push(seg.ids[i].clone());
                globals.push(g as u32);
            }
            at += len;
            g += 1;
        }
    }
    let live = LiveView {
        generation: manifest.generation,
        globals,
        total_globals: total as u32,
    };
    Index::from_memory(
        dir,
        base.metadata().clone(),
        codec,
        codes,
        residuals,
        doclens,
        ids,
        live,
    )
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
}

/// Opens the snapshot `live.json` names (see [`Index::open`]). A file gone
/// under it (a compaction replaced the index meanwhile) makes it start over.
pub(crate) fn open_snapshot(dir: &Path, options: &OpenOptions) -> Result<Index> {
    let mut attempt = 0;
    loop {
        let r = if dir.join(MANIFEST).is_file() {
            read_snapshot(dir, options).map(|s| merge(dir, s))
        } else {
            Index::open_base(dir, options)
        };
        match r {
            Err(e) if is_not_found(&e) && attempt < 20 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(5 * attempt));
            }
            r => return r,
        }
    }
}

/// A document to add: external id, `len × dim` token vectors (unit rows),
/// optional metadata (a JSON object).
#[derive(Debug, Clone)]
pub struct NewDoc {
    pub id: String,
    pub vectors: Vec<f32>,
    pub metadata: Option<serde_json::Value>,
}

/// What one add did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddSummary {
    pub generation: u64,
    pub docs: usize,
    pub vectors: usize,
    /// Vectors farther than the outlier distance from every centroid.
    pub outliers: usize,
    /// Centroids appended by clustering the outlier buffer in this add.
    pub new_centroids: usize,
    /// Documents replaced (updates).
    pub replaced: usize,
}

/// The one writer of a live index (holds the index lock until dropped).
pub struct Writer {
    dir: PathBuf,
    lock: Option<IndexLock>,
    manifest: Manifest,
    codec: ResidualCodec,
    outliers: Vec<f32>,
    /// Live documents: external id → global number.
    ids: HashMap<String, u32>,
    compute: Compute,
    /// Whether the base's `metadata.json` needs no [`mark_live`] before the
    /// next commit (it has a manifest, or is already version 4).
    marked_live: bool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Writer({}, generation {})",
            self.dir.display(),
            self.manifest.generation
        )
    }
}

/// Takes the lock of `dir`, waiting up to `wait` (zero: fail at once).
fn lock_within(dir: &Path, wait: Duration) -> Result<IndexLock> {
    let start = Instant::now();
    loop {
        match IndexLock::acquire(dir, false) {
            Err(Error::Locked { path, holder }) => {
                if start.elapsed() >= wait {
                    let mut holder = holder;
                    if !wait.is_zero() {
                        holder = format!("{holder}; waited {:.1} s", wait.as_secs_f64());
                    }
                    return Err(Error::Locked { path, holder });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

impl Writer {
    /// Opens the index in `dir` for writing: takes its lock (waiting up to
    /// `wait`), removes what a killed writer left uncommitted, and loads the
    /// live state. A plain format 3 index becomes live at its first mutation.
    pub fn open(dir: &Path, wait: Duration, compute: Compute) -> Result<Self> {
        if !dir.join(store::METADATA).is_file() {
            // Lets the usual "no index here" message (and its hints) through.
            store::read_metadata(dir)?;
        }
        let lock = lock_within(dir, wait)?;
        let marked_live = dir.join(MANIFEST).is_file()
            || store::read_metadata(dir)?.format_version == store::LIVE_FORMAT_VERSION;
        let (manifest, codec, outliers, merged) = if dir.join(MANIFEST).is_file() {
            let snap = read_snapshot(dir, &OpenOptions::default())?;
            let (m, c, o) = (
                snap.manifest.clone(),
                snap.codec.clone(),
                snap.outliers.clone(),
            );
            (m, c, o, merge(dir, snap))
        } else {
            let base = Index::open_base(dir, &OpenOptions::default())?;
            let m = Manifest::new(base_crc(dir)?, base.num_docs());
            let c = base.codec().clone();
            (m, c, Vec::new(), base)
        };
        let mut ids = HashMap::with_capacity(merged.num_docs());
        for (d, id) in merged.doc_ids().iter().enumerate() {
            ids.insert(id.clone(), merged.global_doc(d));
        }
        drop(merged);
        let w = Self {
            dir: dir.to_path_buf(),
            lock: Some(lock),
            manifest,
            codec,
            outliers,
            ids,
            compute,
            marked_live,
        };
        w.recover()?;
        Ok(w)
    }

    /// Removes files no committed manifest names and metadata rows no
    /// committed mutation published.
    fn recover(&self) -> Result<()> {
        let named: HashSet<&str> = self.manifest.files().into_iter().collect();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = (name.starts_with("seg-") && name.ends_with(".bin"))
                || (name.starts_with("centroids-") && name.ends_with(".f16"))
                || (name.starts_with("outliers-") && name.ends_with(".f32"))
                || name == MANIFEST_TMP
                || name == METADATA_TMP;
            if ours && !named.contains(name.as_str()) {
                let p = e.path();
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
        if self.dir.join(metadb::METADATA_DB).is_file() {
            MetaDb::open_rw(&self.dir)?.rollback_beyond(self.manifest.total_globals() as u32)?;
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn generation(&self) -> u64 {
        self.manifest.generation
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// Live documents.
    pub fn num_docs(&self) -> usize {
        self.ids.len()
    }
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }
    pub fn dim(&self) -> usize {
        self.codec.dim
    }
    /// Sets the outlier distance and the buffer size that triggers clustering
    /// (recorded in the manifest at the next mutation).
    pub fn set_outlier_policy(&mut self, distance: f32, cluster_at: usize) -> Result<()> {
        if !(distance.is_finite() && distance > 0.0) || cluster_at == 0 {
            return Err(Error::Input(format!(
                "outlier distance must be a positive number and the cluster size at least 1 \
                 (got {distance}, {cluster_at})"
            )));
        }
        self.manifest.outlier_distance = distance;
        self.manifest.cluster_at = cluster_at;
        Ok(())
    }

    fn check_docs(&self, docs: &[NewDoc], update: bool) -> Result<()> {
        let dim = self.dim();
        let mut seen = HashSet::with_capacity(docs.len());
        for d in docs {
            if d.id.is_empty() {
                return Err(Error::Input("a document id is empty".into()));
            }
            if !seen.insert(d.id.as_str()) {
                return Err(Error::Input(format!(
                    "document id '{}' appears twice in one add",
                    d.id
                )));
            }
            match (self.ids.contains_key(&d.id), update) {
                (true, false) => {
                    return Err(Error::Input(format!(
                        "document id '{}' is already in the index (update it instead)",
                        d.id
                    )))
                }
                (false, true) => {
                    return Err(Error::Input(format!(
                        "document id '{}' is not in the index: nothing to update (add it)",
                        d.id
                    )))
                }
                _ => {}
            }
            if d.vectors.is_empty() || !d.vectors.len().is_multiple_of(dim) {
                return Err(Error::Input(format!(
                    "document '{}': {} values are not a non-empty whole number of {dim}-d vectors",
                    d.id,
                    d.vectors.len()
                )));
            }
            crate::index::codec::check_finite(&format!("document '{}'", d.id), &d.vectors, dim)?;
            if let Some(m) = &d.metadata {
                metadb::check_object(&d.id, m)?;
            }
        }
        Ok(())
    }

    /// Adds documents (`update`: replaces documents with these ids, which
    /// must exist; otherwise the ids must be new). One atomic commit.
    pub fn add(&mut self, docs: &[NewDoc], update: bool) -> Result<AddSummary> {
        self.check_docs(docs, update)?;
        if docs.is_empty() {
            return Ok(AddSummary {
                generation: self.manifest.generation,
                ..Default::default()
            });
        }
        let dim = self.dim();
        let gen = self.manifest.generation + 1;
        let x: Vec<f32> = docs.iter().flat_map(|d| d.vectors.iter().copied()).collect();
        let n = x.len() / dim;
        // Nearest centroids, once: the outlier test and the codes below.
        let (mut codes, best) =
            crate::index::kmeans::assign(&self.compute, &x, dim, &self.codec.centroids)?;
        // Outliers: farther than the threshold from every centroid.
        let limit = self.manifest.outlier_distance;
        let mut outliers = self.outliers.clone();
        let mut num_outliers = 0;
        for (i, &s) in best.iter().enumerate() {
            if (2.0 - 2.0 * s).max(0.0).sqrt() > limit {
                outliers.extend_from_slice(&x[i * dim..(i + 1) * dim]);
                num_outliers += 1;
            }
        }
        let mut codec = self.codec.clone();
        let mut new_centroids = 0;
        let mut extra = self.manifest.extra_centroids.clone();
        let mut num_extra = self.manifest.num_extra_centroids;
        if outliers.len() / dim >= self.manifest.cluster_at {
            let k_new = (outliers.len() / dim / OUTLIERS_PER_CENTROID).max(1);
            let km =
                crate::index::kmeans::train(&Compute::Cpu, &outliers, dim, k_new, 4, gen, &mut |_| {})?;
            // Stored as f16, used as stored (as the base's are).
            let rounded: Vec<f32> = km
                .centroids
                .iter()
                .map(|&v| half::f16::from_f32(v).to_f32())
                .collect();
            // A vector moves to a new centroid only when it is strictly
            // nearer (ties keep the lower id, as an argmax over all would).
            let first_new = codec.num_centroids() as u32;
            let (near, sims) = crate::index::kmeans::assign(&self.compute, &x, dim, &rounded)?;
            for ((c, &old), (&n, &s)) in codes.iter_mut().zip(&best).zip(near.iter().zip(&sims)) {
                if s > old {
                    *c = first_new + n;
                }
            }
            let base_k = codec.num_centroids() - num_extra;
            let mut all_extra = codec.centroids[base_k * dim..].to_vec();
            all_extra.extend_from_slice(&rounded);
            let mut cents = codec.centroids.clone();
            cents.extend_from_slice(&rounded);
            codec = ResidualCodec::new(
                dim,
                codec.nbits,
                cents,
                codec.bucket_cutoffs.clone(),
                codec.bucket_weights.clone(),
            )?;
            num_extra += k_new;
            new_centroids = k_new;
            extra = Some(write_new_file(
                &self.dir,
                &format!("centroids-{gen:010}.f16"),
                &f16_bytes(&all_extra),
            )?);
            outliers.clear();
        }
        let residuals = codec.pack(&self.compute, &x, &codes)?;
        let seg = Segment {
            ids: docs.iter().map(|d| d.id.clone()).collect(),
            doclens: docs.iter().map(|d| (d.vectors.len() / dim) as u32).collect(),
            codes,
            residuals,
        };
        let words = codec.words_per_vector();
        let seg_file = write_new_file(
            &self.dir,
            &format!("seg-{gen:010}.bin"),
            &encode_segment(&seg, words)?,
        )?;
        let outlier_file = if outliers.is_empty() {
            None
        } else if outliers.len() == self.outliers.len() && !outliers.is_empty() {
            self.manifest.outliers.clone()
        } else {
            Some(write_new_file(
                &self.dir,
                &format!("outliers-{gen:010}.f32"),
                bytemuck::cast_slice(&outliers),
            )?)
        };
        fsync_dir(&self.dir)?;

        let first = self.manifest.total_globals() as u32;
        let rows: Vec<(u32, &str, &serde_json::Value)> = docs
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.metadata.as_ref().map(|m| (first + i as u32, d.id.as_str(), m)))
            .collect();
        if !rows.is_empty() {
            MetaDb::open_rw(&self.dir)?.insert(&rows)?;
        }

        let mut m = self.manifest.clone();
        m.generation = gen;
        let mut replaced = Vec::new();
        if update {
            for d in docs {
                if let Some(&g) = self.ids.get(&d.id) {
                    replaced.push(g);
                }
            }
            m.deleted.extend_from_slice(&replaced);
            m.deleted.sort_unstable();
        }
        m.segments.push(SegmentEntry {
            file: seg_file,
            num_docs: docs.len(),
            num_vectors: n,
        });
        m.extra_centroids = extra;
        m.num_extra_centroids = num_extra;
        m.num_outliers = outliers.len() / dim;
        m.outliers = outlier_file;
        self.mark_live(&mut m)?;
        commit_manifest(&self.dir, &m)?;
        // Committed: superseded files can go.
        let old: Vec<String> = self.manifest.files().iter().map(|s| s.to_string()).collect();
        self.manifest = m;
        self.codec = codec;
        self.outliers = outliers;
        for (i, d) in docs.iter().enumerate() {
            self.ids.insert(d.id.clone(), first + i as u32);
        }
        self.remove_unnamed(&old);
        Ok(AddSummary {
            generation: gen,
            docs: docs.len(),
            vectors: n,
            outliers: num_outliers,
            new_centroids,
            replaced: replaced.len(),
        })
    }

    /// Before the first commit on a plain base: [`mark_live`], and ties `m`
    /// to the rewritten `metadata.json`.
    fn mark_live(&mut self, m: &mut Manifest) -> Result<()> {
        if !self.marked_live {
            let crc = mark_live(&self.dir)?;
            // Also in the writer's own manifest: a commit that fails after
            // this must not leave a later one tied to the old file.
            self.manifest.base_crc32 = crc;
            m.base_crc32 = crc;
            self.marked_live = true;
        }
        Ok(())
    }

    /// Removes files of `old` the current manifest no longer names.
    fn remove_unnamed(&self, old: &[String]) {
        let named: HashSet<&str> = self.manifest.files().into_iter().collect();
        for f in old {
            if !named.contains(f.as_str()) {
                let _ = std::fs::remove_file(self.dir.join(f));
            }
        }
    }

    /// Deletes documents by id (all must exist; none is deleted otherwise).
    /// One atomic commit; returns the new generation.
    pub fn delete(&mut self, ids: &[&str]) -> Result<u64> {
        let mut globals = Vec::with_capacity(ids.len());
        let mut seen = HashSet::new();
        for id in ids {
            let g = self.ids.get(*id).ok_or_else(|| {
                Error::Input(format!("document id '{id}' is not in the index: nothing deleted"))
            })?;
            if seen.insert(*id) {
                globals.push(*g);
            }
        }
        if globals.is_empty() {
            return Ok(self.manifest.generation);
        }
        let mut m = self.manifest.clone();
        m.generation += 1;
        m.deleted.extend_from_slice(&globals);
        m.deleted.sort_unstable();
        self.mark_live(&mut m)?;
        commit_manifest(&self.dir, &m)?;
        self.manifest = m;
        for id in ids {
            self.ids.remove(*id);
        }
        Ok(self.manifest.generation)
    }

    /// Sets (replaces) the metadata of existing documents. Atomic (one SQLite
    /// transaction); the manifest is unchanged.
    pub fn set_metadata(&mut self, items: &[(&str, serde_json::Value)]) -> Result<()> {
        let mut rows = Vec::with_capacity(items.len());
        for (id, v) in items {
            let g = self.ids.get(*id).ok_or_else(|| {
                Error::Input(format!("document id '{id}' is not in the index"))
            })?;
            metadb::check_object(id, v)?;
            rows.push((*g, *id, v));
        }
        MetaDb::open_rw(&self.dir)?.insert(&rows)
    }

    /// Rewrites the index as a plain format 3 index without the deleted
    /// documents (centroids appended so far kept, inverted lists rebuilt,
    /// metadata renumbered), swapped in atomically like a build. Returns the
    /// documents kept.
    pub fn compact(mut self) -> Result<usize> {
        let snap = if self.dir.join(MANIFEST).is_file() {
            merge(&self.dir, read_snapshot(&self.dir, &OpenOptions::default())?)
        } else {
            Index::open_base(&self.dir, &OpenOptions::default())?
        };
        let lock = self
            .lock
            .take()
            .ok_or_else(|| Error::Input("writer has no lock".into()))?;
        let tmp = store::TempIndexDir::create_locked(&self.dir, lock)?;
        let mut files = std::collections::BTreeMap::new();
        crate::index::builder::write_arrays(
            &tmp,
            snap.codec(),
            snap.codes(),
            snap.doclens(),
            snap.doc_ids(),
            &mut files,
        )?;
        let mut residuals = tmp.file(store::RESIDUALS)?;
        residuals.write_pod(snap.residuals())?;
        residuals.finish(&mut files)?;
        if self.dir.join(metadb::METADATA_DB).is_file() {
            let old = MetaDb::open_rw(&self.dir)?.rows()?;
            let local: HashMap<u32, u32> = (0..snap.num_docs())
                .map(|d| (snap.global_doc(d), d as u32))
                .collect();
            let kept: Vec<(u32, String, serde_json::Value)> = old
                .into_iter()
                .filter_map(|(g, id, json)| {
                    let d = *local.get(&g)?;
                    let v = serde_json::from_str(&json).ok()?;
                    Some((d, id, v))
                })
                .collect();
            let rows: Vec<(u32, &str, &serde_json::Value)> =
                kept.iter().map(|(d, id, v)| (*d, id.as_str(), v)).collect();
            let mut db = MetaDb::open_rw(tmp.path())?;
            db.insert(&rows)?;
            drop(db);
        }
        let mut meta = snap.metadata().clone();
        meta.format_version = store::FORMAT_VERSION;
        meta.files = files;
        let kept = snap.num_docs();
        drop(snap);
        tmp.commit(&meta)?;
        Ok(kept)
    }
}
