//! Opening an index, stage by stage: check `metadata.json`, map every file
//! (sizes against the metadata, CRC-32s), decode the arrays, check the
//! invariants search relies on. Then the accessors.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::meta::{read_metadata, Metadata, ModelInfo};
use super::*;
use crate::backend::Compute;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::index::codec::{GpuCodec, ResidualCodec};

/// The bytes of one file: memory-mapped, or owned in 8-byte-aligned storage
/// (empty files, which cannot be mapped).
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u64>, usize),
    /// u32 words held in memory (the merged arrays of a live index).
    Words(Vec<u32>),
}

impl Bytes {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v, len) => &bytemuck::cast_slice(v)[..*len],
            Bytes::Words(v) => bytemuck::cast_slice(v),
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
    /// For an index with live changes (`live.json`): the snapshot's
    /// generation and, per document, its stable global number (base documents
    /// first, then each segment's, deleted ones included) — what the metadata
    /// database keys rows by. `None` for a plain (never mutated) index.
    live: Option<LiveView>,
}

/// What a live snapshot adds to an [`Index`].
#[derive(Debug, Clone)]
pub(crate) struct LiveView {
    pub generation: u64,
    pub globals: Vec<u32>,
    /// Global numbers allotted so far (deleted documents included).
    pub total_globals: u32,
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

impl Index {
    /// Opens the index in `dir`, verifying checksums.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, &OpenOptions::default())
    }

    /// Opens the index in `dir`: (1) checks `metadata.json`, (2) maps every
    /// data file, checking its size and checksum, (3) decodes the arrays,
    /// (4) checks the invariants search relies on. Errors name the file at fault.
    pub fn open_with(dir: &Path, options: &OpenOptions) -> Result<Self> {
        if dir.join(crate::index::live::MANIFEST).is_file() {
            return crate::index::live::open_snapshot(dir, options);
        }
        Self::open_base(dir, options)
    }

    /// Opens the base (format 3) arrays only, ignoring any live changes.
    pub(crate) fn open_base(dir: &Path, options: &OpenOptions) -> Result<Self> {
        let meta = check_metadata(dir)?;
        let maps = map_files(dir, &meta, options)?;
        let parts = decode(dir, &meta, maps)?;
        let doc_offsets = check_invariants(dir, &meta, &parts)?;
        let Parts {
            codec,
            codes,
            residuals,
            doclens,
            ivf,
            ivf_offsets,
            doc_ids,
        } = parts;
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
            live: None,
        })
    }

    /// An index held in memory: the merged arrays of a live snapshot
    /// (inverted lists rebuilt here). `metadata`'s counts are set from the arrays.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_memory(
        dir: &Path,
        mut metadata: Metadata,
        codec: ResidualCodec,
        codes: Vec<u32>,
        residuals: Vec<u32>,
        doclens: Vec<u32>,
        doc_ids: Vec<String>,
        live: LiveView,
    ) -> Self {
        let k = codec.num_centroids();
        let (ivf, ivf_offsets) = crate::index::builder::inverted_lists(&codes, &doclens, k);
        let mut doc_offsets = Vec::with_capacity(doclens.len() + 1);
        let mut acc = 0u64;
        doc_offsets.push(0);
        for &l in &doclens {
            acc += l as u64;
            doc_offsets.push(acc);
        }
        metadata.num_docs = doclens.len();
        metadata.num_vectors = codes.len();
        metadata.num_centroids = k;
        metadata.bytes_per_vector = codec.bytes_per_vector();
        if !doclens.is_empty() {
            metadata.stats.avg_doclen = codes.len() as f64 / doclens.len() as f64;
            metadata.stats.max_doclen = doclens.iter().copied().max().unwrap_or(0) as usize;
        }
        let n = ivf_offsets.len();
        Self {
            dir: dir.to_path_buf(),
            metadata,
            codec,
            codes: Indices::Widened(codes),
            residuals: array(Bytes::Words(residuals)),
            doclens,
            doc_offsets,
            ivf: Indices::Widened(ivf),
            ivf_offsets: array(Bytes::Owned(ivf_offsets, n * 8)),
            doc_ids,
            gpu_codec: Mutex::new(None),
            live: Some(live),
        }
    }

    /// The generation of the live snapshot this index shows (0: never mutated).
    pub fn generation(&self) -> u64 {
        self.live.as_ref().map_or(0, |l| l.generation)
    }

    /// The stable global number of document `d` (its row in the metadata
    /// database): `d` itself for a never-mutated index.
    pub fn global_doc(&self, d: usize) -> u32 {
        self.live
            .as_ref()
            .map_or(d as u32, |l| l.globals.get(d).copied().unwrap_or(u32::MAX))
    }

    /// Global numbers allotted so far (deleted documents included).
    pub fn total_globals(&self) -> u32 {
        self.live
            .as_ref()
            .map_or(self.num_docs() as u32, |l| l.total_globals)
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
        let vectors = compute.index_codec(self)?.decompress(&codes, &packed)?;
        Ok((vectors, offsets))
    }
}

// ------------------------------------------------------- opening, by stage ---

/// Stage 1: `metadata.json` read, its format version and its counts checked.
fn check_metadata(dir: &Path) -> Result<Metadata> {
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
    Ok(meta)
}

/// The size each data file must have, where the metadata determines it.
fn expected_sizes(meta: &Metadata) -> BTreeMap<&'static str, (Option<u64>, String)> {
    let packed = meta.packed_bytes_per_vector;
    let buckets = 1u64 << meta.nbits;
    let k = meta.num_centroids as u64;
    let n = meta.num_vectors as u64;
    let codes_name = codes_file(meta.num_centroids);
    let ivf_name = ivf_file(meta.num_docs);
    let code_bytes = index_width(meta.num_centroids) as u64;
    // Sizes every file must have, where the metadata determines them.
    [
        (
            CENTROIDS,
            (
                Some(k * meta.dim as u64 * 2),
                format!("{k} centroids × {} dims × 2 (f16)", meta.dim),
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
    .collect()
}

/// Stage 2: every data file opened and mapped, its size checked against the
/// metadata's entry and [`expected_sizes`], its CRC-32 verified (if asked).
fn map_files(
    dir: &Path,
    meta: &Metadata,
    options: &OpenOptions,
) -> Result<BTreeMap<&'static str, Bytes>> {
    let meta_path = dir.join(METADATA);
    let expected = expected_sizes(meta);
    let mut maps: BTreeMap<&'static str, Bytes> = BTreeMap::new();
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
            Bytes::Mapped(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?)
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
    Ok(maps)
}

/// The arrays of an index, decoded (large ones still mapped).
struct Parts {
    codec: ResidualCodec,
    codes: Indices,
    residuals: Array<u32>,
    doclens: Vec<u32>,
    ivf: Indices,
    ivf_offsets: Array<u64>,
    doc_ids: Vec<String>,
}

/// Stage 3: the arrays decoded: f16 centroids widened, u16 indices widened,
/// the codec built, the ids parsed.
fn decode(dir: &Path, meta: &Metadata, mut maps: BTreeMap<&'static str, Bytes>) -> Result<Parts> {
    let codes_name = codes_file(meta.num_centroids);
    let ivf_name = ivf_file(meta.num_docs);
    let mut take = |name: &str| maps.remove(name).unwrap_or(Bytes::Owned(Vec::new(), 0));
    let f32s = |b: &Bytes| -> Vec<f32> {
        bytemuck::try_cast_slice::<u8, f32>(b.as_bytes())
            .map(|s| s.to_vec())
            .unwrap_or_default()
    };
    // f16 on disk, widened once (the build rounded them to f16 before
    // compressing, so this is exactly what the residuals were taken against).
    let centroids: Vec<f32> = bytemuck::try_cast_slice::<u8, half::f16>(take(CENTROIDS).as_bytes())
        .map(|s| s.iter().map(|h| h.to_f32()).collect())
        .unwrap_or_default();
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

    Ok(Parts {
        codec,
        codes,
        residuals,
        doclens,
        ivf,
        ivf_offsets,
        doc_ids,
    })
}

/// Stage 4: the invariants search relies on (ids per document, lengths summing
/// to the vector count, codes below the centroid count, inverted lists
/// ascending and in range). Returns the documents' vector offsets.
fn check_invariants(dir: &Path, meta: &Metadata, parts: &Parts) -> Result<Vec<u64>> {
    let (k, n) = (meta.num_centroids as u64, meta.num_vectors as u64);
    let codes_name = codes_file(meta.num_centroids);
    let ivf_name = ivf_file(meta.num_docs);
    let ivf_path = dir.join(ivf_name);
    let ids_path = dir.join(DOC_IDS);
    let Parts {
        codes,
        doclens,
        ivf,
        ivf_offsets,
        doc_ids,
        ..
    } = parts;
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
    for &l in doclens {
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
    Ok(doc_offsets)
}
