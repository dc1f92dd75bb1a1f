//! Building an index: count → sample → k-means → codec → compress everything →
//! inverted lists → write atomically.
//!
//! 1. **Count.** The planned vector count of every document (for the encoder:
//!    its tokens after ColBERT's truncation and punctuation skiplist, from the
//!    tokenizer alone) gives `N` and the centroid count
//!    `k0 = 2^floor(log2(16·√N))` (or [`IndexOptions::num_centroids`]).
//! 2. **Sample.** Documents in a seeded random order are taken until their
//!    vectors reach `S = min(N, max(k0, min(ceil(sample_fraction·N),
//!    max_points_per_centroid·k0)))` (faiss caps k-means at 256 points per
//!    centroid; ColBERTv2 samples documents, not vectors). Only these are
//!    encoded at first; `k = min(k0, vectors actually sampled)`.
//! 3. **k-means** (spherical, [`super::kmeans`]) on the sample, then the
//!    **codec** (cutoffs, weights) from the residuals of up to 65,536 sample
//!    vectors picked with the same seed.
//! 4. **Compress** every document in order, in chunks of
//!    [`IndexOptions::chunk_docs`] (sampled documents reuse their vectors, the
//!    rest are encoded now), streaming packed residuals to disk: memory holds
//!    the sample's vectors plus 4 bytes (the code) per vector.
//! 5. **Inverted lists**: for each centroid, the ascending indices of the
//!    documents with at least one vector assigned to it.
//! 6. **Write** into `<out>.tmp-<pid>`, fsync, rename into place ([`super::store`]).
//!
//! An empty document text is allowed: the encoder still emits its `[CLS]`,
//! `[D]` and `[SEP]` vectors. An empty corpus, duplicate ids, a corpus with no
//! vectors at all, or non-finite vectors are errors.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::codec::{Compressed, ResidualCodec};
use super::kmeans;
use super::rng::SplitMix;
use super::store::{self, Metadata, ModelInfo, Settings, Stats, TempIndexDir, FORMAT_VERSION};
use crate::backend::Compute;
use crate::error::{Error, Result};
use crate::io::Record;
use crate::model::Encoder;

/// Most residual vectors the bucket cutoffs and weights are learnt from.
pub const CODEC_SAMPLE: usize = 1 << 16;
/// Sample vectors the build's reported codec quality is measured on.
const QUALITY_SAMPLE: usize = 4096;

/// How to build an index.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Bits per dimension of the residuals: 1, 2 or 4.
    pub nbits: usize,
    /// Centroid count; `None` = ColBERTv2's `2^floor(log2(16·√N))`. Either way
    /// capped to the number of sample vectors.
    pub num_centroids: Option<usize>,
    /// k-means iterations (fixed; no early stop).
    pub kmeans_iters: usize,
    /// Fraction of the token vectors to sample for k-means (0, 1], within
    /// `[k, max_points_per_centroid·k]` vectors.
    pub sample_fraction: f64,
    /// Upper bound on sample vectors per centroid (faiss's default is 256).
    pub max_points_per_centroid: usize,
    /// Seed of every random choice (sample, k-means initialisation).
    pub seed: u64,
    /// Documents encoded and compressed per step.
    pub chunk_docs: usize,
    /// Where the index kernels (k-means assignment, compression) run.
    pub compute: Compute,
    /// When another process is writing the same index path: wait for it
    /// (`true`) or fail at once with [`Error::Locked`] (`false`, the default).
    pub wait_for_lock: bool,
    /// Page documents: where each came from and its patch grid, recorded in
    /// the metadata for explanations (one per document, in order).
    pub pages: Option<Vec<crate::pages::PageRecord>>,
    /// Token pooling of each document's vectors before indexing (factor 1: none).
    pub pooling: super::pool::Pooling,
    /// The pooling to record in the metadata (set by the build that pools).
    pub recorded_pooling: Option<super::pool::Pooling>,
    /// Train nothing: compress with these centroids and this codec (those of
    /// another index, e.g. one built on a sample of the whole corpus), so that
    /// the shards of one corpus score on one scale. `nbits` and the dimension
    /// must match; the sampling and k-means options are then unused.
    pub shared_codec: Option<Arc<ResidualCodec>>,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            nbits: 2,
            num_centroids: None,
            kmeans_iters: 4,
            sample_fraction: 1.0,
            max_points_per_centroid: 256,
            seed: 12345,
            chunk_docs: 1024,
            compute: Compute::Cpu,
            wait_for_lock: false,
            pages: None,
            pooling: super::pool::Pooling::default(),
            recorded_pooling: None,
            shared_codec: None,
        }
    }
}

/// Build stages, in order, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Encoding the documents sampled for k-means (`done`/`total` documents).
    EncodeSample,
    /// k-means iterations (`done`/`total` iterations).
    Kmeans,
    /// Encoding (the rest) and compressing all documents (`done`/`total` documents).
    Compress,
    /// Writing the inverted lists and files (`done`/`total` = 0/1, 1/1).
    Write,
}

/// A progress report: `done` of `total` units of `stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub stage: Stage,
    pub done: usize,
    pub total: usize,
}

/// What a build produced (also in the index's `metadata.json`).
#[derive(Debug, Clone)]
pub struct BuildSummary {
    pub metadata: Metadata,
    /// Total bytes of the index directory's files.
    pub index_bytes: u64,
    pub seconds: f64,
}

/// Where the token vectors of the documents come from.
pub trait VectorSource {
    /// Dimension of every vector.
    fn dim(&self) -> usize;
    /// Number of documents.
    fn num_docs(&self) -> usize;
    /// Vectors per document as planned: sizes the centroid count and the sample
    /// only (the index records what [`VectorSource::vectors`] returns).
    fn planned_lengths(&mut self) -> Result<Vec<usize>>;
    /// The vectors of documents `docs` (ascending indices), each a row-major
    /// `len × dim` block.
    fn vectors(&mut self, docs: &[usize]) -> Result<Vec<Vec<f32>>>;
}

/// Documents encoded by an [`Encoder`].
pub struct EncoderSource<'a> {
    pub encoder: &'a mut Encoder,
    pub texts: Vec<&'a str>,
}

impl VectorSource for EncoderSource<'_> {
    fn dim(&self) -> usize {
        self.encoder.dim()
    }
    fn num_docs(&self) -> usize {
        self.texts.len()
    }
    fn planned_lengths(&mut self) -> Result<Vec<usize>> {
        let tok = self.encoder.tokenizer();
        let mut out = Vec::with_capacity(self.texts.len());
        for chunk in self.texts.chunks(4096) {
            for d in tok.documents(chunk)? {
                out.push(d.ids.iter().filter(|&&id| tok.keeps(id)).count());
            }
        }
        Ok(out)
    }
    fn vectors(&mut self, docs: &[usize]) -> Result<Vec<Vec<f32>>> {
        let texts: Vec<&str> = docs.iter().map(|&d| self.texts[d]).collect();
        Ok(self
            .encoder
            .encode_documents(&texts)?
            .into_iter()
            .map(|t| t.vectors)
            .collect())
    }
}

/// Documents whose vectors are already in memory (one `len × dim` block each).
pub struct InMemorySource<'a> {
    pub dim: usize,
    pub docs: &'a [Vec<f32>],
}

impl VectorSource for InMemorySource<'_> {
    fn dim(&self) -> usize {
        self.dim
    }
    fn num_docs(&self) -> usize {
        self.docs.len()
    }
    fn planned_lengths(&mut self) -> Result<Vec<usize>> {
        Ok(self
            .docs
            .iter()
            .map(|d| d.len() / self.dim.max(1))
            .collect())
    }
    fn vectors(&mut self, docs: &[usize]) -> Result<Vec<Vec<f32>>> {
        Ok(docs.iter().map(|&d| self.docs[d].clone()).collect())
    }
}

/// Another source's documents, token-pooled ([`super::pool`]) on `compute`.
pub struct PooledSource<'a> {
    pub inner: &'a mut dyn VectorSource,
    pub pooling: super::pool::Pooling,
    pub compute: crate::backend::Compute,
}

impl VectorSource for PooledSource<'_> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn num_docs(&self) -> usize {
        self.inner.num_docs()
    }
    fn planned_lengths(&mut self) -> Result<Vec<usize>> {
        Ok(self
            .inner
            .planned_lengths()?
            .into_iter()
            .map(|n| self.pooling.pooled_len(n))
            .collect())
    }
    fn vectors(&mut self, docs: &[usize]) -> Result<Vec<Vec<f32>>> {
        let dim = self.inner.dim();
        let raw = self.inner.vectors(docs)?;
        super::pool::pool_documents(&self.compute, &raw, dim, &self.pooling)
    }
}

/// Encodes `docs` with `encoder` and writes their index to `out_dir`
/// (replacing an index there only once the new one is complete).
pub fn build_index(
    encoder: &mut Encoder,
    model: &ModelInfo,
    docs: &[Record],
    out_dir: &Path,
    options: &IndexOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuildSummary> {
    let ids: Vec<String> = docs.iter().map(|r| r.id.clone()).collect();
    let mut source = EncoderSource {
        encoder,
        texts: docs.iter().map(|r| r.text.as_str()).collect(),
    };
    build_index_with(&mut source, &ids, model, out_dir, options, progress)
}

fn validate(
    source: &dyn VectorSource,
    doc_ids: &[String],
    model: &ModelInfo,
    options: &IndexOptions,
) -> Result<()> {
    if doc_ids.is_empty() {
        return Err(Error::Input("the corpus is empty: nothing to index".into()));
    }
    if source.num_docs() != doc_ids.len() {
        return Err(Error::shape(
            "build_index",
            format!(
                "{} document ids for {} documents",
                doc_ids.len(),
                source.num_docs()
            ),
        ));
    }
    if options.pooling.factor == 0 {
        return Err(Error::Input(
            "pool factor 0: it must be at least 1 (1 = no pooling)".into(),
        ));
    }
    if let Some(pages) = &options.pages {
        if pages.len() != doc_ids.len() {
            return Err(Error::Input(format!(
                "{} page records for {} documents",
                pages.len(),
                doc_ids.len()
            )));
        }
    }
    let mut seen = HashSet::with_capacity(doc_ids.len());
    for (i, id) in doc_ids.iter().enumerate() {
        if !seen.insert(id.as_str()) {
            let first = doc_ids.iter().position(|x| x == id).unwrap_or(0);
            return Err(Error::Input(format!(
                "duplicate document id '{id}' (documents {first} and {i})"
            )));
        }
    }
    if !matches!(options.nbits, 1 | 2 | 4) {
        return Err(Error::Input(format!(
            "nbits must be 1, 2 or 4, got {}",
            options.nbits
        )));
    }
    if !(options.sample_fraction > 0.0 && options.sample_fraction <= 1.0) {
        return Err(Error::Input(format!(
            "sample fraction must be in (0, 1], got {}",
            options.sample_fraction
        )));
    }
    if options.max_points_per_centroid == 0 || options.num_centroids == Some(0) {
        return Err(Error::Input(
            "max_points_per_centroid and num_centroids must be positive".into(),
        ));
    }
    let dim = source.dim();
    if let Some(codec) = &options.shared_codec {
        if codec.dim != dim || codec.nbits != options.nbits {
            return Err(Error::Input(format!(
                "the shared codec is for {}-d vectors at {} bits, but this build has {dim}-d \
                 vectors at {} bits",
                codec.dim, codec.nbits, options.nbits
            )));
        }
    }
    if dim == 0 || model.dim != dim {
        return Err(Error::Input(format!(
            "the vectors have dimension {dim} but the model info says {}",
            model.dim
        )));
    }
    Ok(())
}

/// Checks one document's vectors: whole rows, finite values.
fn check_doc(id: &str, v: &[f32], dim: usize) -> Result<()> {
    if !v.len().is_multiple_of(dim) {
        return Err(Error::shape(
            "build_index",
            format!(
                "document '{id}': {} values is not a whole number of {dim}-d vectors",
                v.len()
            ),
        ));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::Input(format!(
            "document '{id}': vector {} has a non-finite value ({}) at dimension {}",
            i / dim,
            v[i],
            i % dim
        )));
    }
    Ok(())
}

/// Builds the index of `source`'s documents (ids `doc_ids`) into `out_dir`:
/// the stages of the module documentation, one function each.
pub fn build_index_with(
    source: &mut dyn VectorSource,
    doc_ids: &[String],
    model: &ModelInfo,
    out_dir: &Path,
    options: &IndexOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuildSummary> {
    let start = Instant::now();
    validate(source, doc_ids, model, options)?;
    if options.pooling.factor > 1 {
        let mut pooled = PooledSource {
            inner: source,
            pooling: options.pooling,
            compute: options.compute.clone(),
        };
        let inner = IndexOptions {
            pooling: super::pool::Pooling::default(),
            recorded_pooling: Some(options.pooling),
            ..options.clone()
        };
        let mut summary = build_index_with(&mut pooled, doc_ids, model, out_dir, &inner, progress)?;
        // Recorded in metadata.json by the inner build (`recorded_pooling`).
        summary.metadata.pooling = Some(options.pooling);
        return Ok(summary);
    }
    // The target directory is checked, its writer lock taken and its leftovers
    // tidied before any work (counting tokenizes the whole corpus): a second
    // writer is refused at once.
    let tmp = TempIndexDir::create(out_dir, options.wait_for_lock)?;
    let counted = count(source, doc_ids.len(), options)?;
    let (sample, trained) = match &options.shared_codec {
        None => {
            let sample = sample(source, doc_ids, &counted, options, progress)?;
            let trained = train_codec(&sample, source.dim(), counted.k0, options, progress)?;
            (sample, trained)
        }
        Some(codec) => {
            // The first documents' vectors measure the codec's fit to this corpus
            // (and are reused by the compression stage).
            let mut docs = Vec::new();
            let mut acc = 0usize;
            for (d, &n) in counted.planned.iter().enumerate() {
                if acc >= QUALITY_SAMPLE {
                    break;
                }
                if n > 0 {
                    docs.push(d);
                    acc += n;
                }
            }
            let sample = fetch_sample(source, doc_ids, docs, options, progress)?;
            let num_sample = sample.train.len() / source.dim();
            let (codec_mean_cosine, kmeans_mean_cosine) =
                codec_quality(codec, &sample.train, options)?;
            let trained = Trained {
                codec: (**codec).clone(),
                iters: 0,
                num_sample_vectors: num_sample,
                num_sample_docs: sample.docs.len(),
                num_codec_sample_vectors: 0,
                codec_mean_cosine,
                kmeans_mean_cosine,
            };
            (sample, trained)
        }
    };
    let mut files = BTreeMap::new();
    let (codes, doclens) = compress_all(
        source,
        doc_ids,
        sample,
        &trained.codec,
        &counted,
        &tmp,
        &mut files,
        options,
        progress,
    )?;
    progress(Progress {
        stage: Stage::Write,
        done: 0,
        total: 1,
    });
    write_arrays(&tmp, &trained.codec, &codes, &doclens, doc_ids, &mut files)?;
    let seconds = start.elapsed().as_secs_f64();
    let metadata = metadata(model, options, &trained, &codes, &doclens, files, seconds);
    let index_bytes = metadata.files.values().map(|f| f.bytes).sum::<u64>();
    tmp.commit(&metadata)?;
    progress(Progress {
        stage: Stage::Write,
        done: 1,
        total: 1,
    });
    Ok(BuildSummary {
        metadata,
        index_bytes,
        seconds,
    })
}

/// Stage 1's result.
struct Counted {
    /// Planned vectors per document.
    planned: Vec<usize>,
    /// Their sum, `N`.
    total: usize,
    /// Centroids asked for: `2^floor(log2(16·√N))` or the option.
    k0: usize,
}

/// Stage 1: Count: every document's planned vector count, and the centroid count.
fn count(
    source: &mut dyn VectorSource,
    num_docs: usize,
    options: &IndexOptions,
) -> Result<Counted> {
    let planned = source.planned_lengths()?;
    if planned.len() != num_docs {
        return Err(Error::shape(
            "build_index",
            format!("{} planned lengths for {num_docs} documents", planned.len()),
        ));
    }
    let total: usize = planned.iter().sum();
    if total == 0 {
        return Err(Error::Input(
            "the corpus produces no token vectors: nothing to index".into(),
        ));
    }
    let k0 = options
        .num_centroids
        .unwrap_or_else(|| kmeans::num_centroids_for(total));
    Ok(Counted { planned, total, k0 })
}

/// Stage 2's result: the sampled documents' vectors.
struct Sample {
    /// Sampled documents, ascending.
    docs: Vec<usize>,
    /// Their vectors, back to back in document order.
    train: Vec<f32>,
    /// `at[d]` = (first row in `train`, rows) for a sampled document `d`.
    at: Vec<Option<(usize, usize)>>,
}

/// Stage 2: Sample documents in a seeded random order until their vectors reach the
/// target, and get (encode) their vectors.
fn sample(
    source: &mut dyn VectorSource,
    doc_ids: &[String],
    counted: &Counted,
    options: &IndexOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Sample> {
    let num_docs = doc_ids.len();
    let Counted {
        planned, total, k0, ..
    } = counted;
    let by_fraction = (options.sample_fraction * *total as f64).ceil() as usize;
    let target = by_fraction
        .min(options.max_points_per_centroid.saturating_mul(*k0))
        .max(*k0)
        .min(*total);
    let mut rng = SplitMix::new(options.seed);
    let mut docs = Vec::new();
    let mut acc = 0usize;
    for d in rng.permutation(num_docs) {
        if acc >= target {
            break;
        }
        if planned[d] > 0 {
            docs.push(d);
            acc += planned[d];
        }
    }
    docs.sort_unstable();
    fetch_sample(source, doc_ids, docs, options, progress)
}

/// Gets (encodes) the vectors of the sampled documents `docs` (ascending).
fn fetch_sample(
    source: &mut dyn VectorSource,
    doc_ids: &[String],
    docs: Vec<usize>,
    options: &IndexOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Sample> {
    let (dim, num_docs) = (source.dim(), doc_ids.len());
    let mut train: Vec<f32> = Vec::new();
    let mut at: Vec<Option<(usize, usize)>> = vec![None; num_docs];
    progress(Progress {
        stage: Stage::EncodeSample,
        done: 0,
        total: docs.len(),
    });
    let mut done = 0;
    for chunk in docs.chunks(options.chunk_docs.max(1)) {
        let vecs = source.vectors(chunk)?;
        if vecs.len() != chunk.len() {
            return Err(Error::shape(
                "build_index",
                format!("{} vector blocks for {} documents", vecs.len(), chunk.len()),
            ));
        }
        for (&d, v) in chunk.iter().zip(&vecs) {
            check_doc(&doc_ids[d], v, dim)?;
            at[d] = Some((train.len() / dim, v.len() / dim));
            train.extend_from_slice(v);
        }
        done += chunk.len();
        progress(Progress {
            stage: Stage::EncodeSample,
            done,
            total: docs.len(),
        });
    }
    if train.is_empty() {
        return Err(Error::Input(
            "the sampled documents produced no token vectors: nothing to train on".into(),
        ));
    }
    Ok(Sample { docs, train, at })
}

/// Stage 3's result.
struct Trained {
    codec: ResidualCodec,
    iters: usize,
    num_sample_vectors: usize,
    num_sample_docs: usize,
    num_codec_sample_vectors: usize,
    codec_mean_cosine: f64,
    kmeans_mean_cosine: f64,
}

/// Stage 3: k-means on the sample (`k = min(k0, sampled vectors)`), centroids
/// rounded to f16 (as stored), then the codec's cutoffs and weights, and the
/// codec's quality on part of its sample.
fn train_codec(
    sample: &Sample,
    dim: usize,
    k0: usize,
    options: &IndexOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Trained> {
    let train = &sample.train;
    let num_sample = train.len() / dim;
    let k = k0.min(num_sample);
    if k < k0 {
        log::warn!("{k0} centroids asked for but only {num_sample} sample vectors: using {k}");
    }
    let iters = options.kmeans_iters;
    progress(Progress {
        stage: Stage::Kmeans,
        done: 0,
        total: iters,
    });
    let km = kmeans::train(
        &options.compute,
        train,
        dim,
        k,
        iters,
        options.seed,
        &mut |i| {
            progress(Progress {
                stage: Stage::Kmeans,
                done: i,
                total: iters,
            })
        },
    )?;
    let codec_rows: Vec<usize> = {
        let mut r = SplitMix::new(options.seed ^ 0xC0DE_C0DE);
        let mut p = r.permutation(num_sample);
        p.truncate(CODEC_SAMPLE);
        p
    };
    let mut codec_sample = Vec::with_capacity(codec_rows.len() * dim);
    for &i in &codec_rows {
        codec_sample.extend_from_slice(&train[i * dim..(i + 1) * dim]);
    }
    // Centroids are stored in f16 (as colbert-ai does): round them now, so
    // codes, residuals and the bucket statistics are taken against exactly the
    // centroids a reader widens back from disk.
    let centroids: Vec<f32> = km
        .centroids
        .iter()
        .map(|&c| half::f16::from_f32(c).to_f32())
        .collect();
    let codec = ResidualCodec::train(
        &options.compute,
        centroids,
        dim,
        options.nbits,
        &codec_sample,
    )?;
    // Quality on (part of) the codec sample: cosine(x, decompress(compress(x))),
    // and the k-means fit cos(x, nearest centroid).
    let q = &codec_sample[..QUALITY_SAMPLE.min(codec_rows.len()) * dim];
    let (codec_mean_cosine, kmeans_mean_cosine) = codec_quality(&codec, q, options)?;
    Ok(Trained {
        codec,
        iters,
        num_sample_vectors: num_sample,
        num_sample_docs: sample.docs.len(),
        num_codec_sample_vectors: codec_rows.len(),
        codec_mean_cosine,
        kmeans_mean_cosine,
    })
}

/// The codec's quality on the vectors `q` (at most [`QUALITY_SAMPLE`] used):
/// mean cosine(x, decompress(compress(x))) and the k-means fit, mean
/// cosine(x, nearest centroid).
fn codec_quality(codec: &ResidualCodec, q: &[f32], options: &IndexOptions) -> Result<(f64, f64)> {
    let dim = codec.dim;
    let q = &q[..q.len().min(QUALITY_SAMPLE * dim)];
    let qc = codec.compress(&options.compute, q)?;
    let qd = codec.decompress(&options.compute, &qc.codes, &qc.packed)?;
    let cos = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| *x as f64 * *y as f64)
            .sum::<f64>()
    };
    let nq = q.len() / dim;
    let codec_mean_cosine = q
        .chunks(dim)
        .zip(qd.chunks(dim))
        .map(|(a, b)| cos(a, b))
        .sum::<f64>()
        / nq.max(1) as f64;
    let kmeans_mean_cosine = q
        .chunks(dim)
        .zip(&qc.codes)
        .map(|(a, &c)| {
            cos(
                a,
                &codec.centroids[c as usize * dim..(c as usize + 1) * dim],
            )
        })
        .sum::<f64>()
        / nq.max(1) as f64;
    Ok((codec_mean_cosine, kmeans_mean_cosine))
}

/// Stage 4: Compress every document in order, in chunks (sampled documents reuse
/// their vectors, the others are got now), streaming packed residuals to
/// `residuals.bin`. Returns every vector's code and every document's length.
#[allow(clippy::too_many_arguments)]
fn compress_all(
    source: &mut dyn VectorSource,
    doc_ids: &[String],
    sample: Sample,
    codec: &ResidualCodec,
    counted: &Counted,
    tmp: &TempIndexDir,
    files: &mut BTreeMap<String, store::FileEntry>,
    options: &IndexOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Vec<u32>, Vec<u32>)> {
    let (dim, num_docs) = (source.dim(), doc_ids.len());
    let chunk_docs = options.chunk_docs.max(1);
    let Sample { train, at, .. } = sample;
    let codec_ops = options.compute.codec(codec)?;
    let mut residuals = tmp.file(store::RESIDUALS)?;
    let mut codes: Vec<u32> = Vec::with_capacity(counted.total);
    let mut doclens: Vec<u32> = Vec::with_capacity(num_docs);
    progress(Progress {
        stage: Stage::Compress,
        done: 0,
        total: num_docs,
    });
    for start_doc in (0..num_docs).step_by(chunk_docs) {
        let end = (start_doc + chunk_docs).min(num_docs);
        let fresh: Vec<usize> = (start_doc..end).filter(|&d| at[d].is_none()).collect();
        let mut fresh_vecs = if fresh.is_empty() {
            Vec::new()
        } else {
            source.vectors(&fresh)?
        };
        if fresh_vecs.len() != fresh.len() {
            return Err(Error::shape(
                "build_index",
                format!(
                    "{} vector blocks for {} documents",
                    fresh_vecs.len(),
                    fresh.len()
                ),
            ));
        }
        let mut x: Vec<f32> = Vec::new();
        let mut fresh_iter = fresh_vecs.iter_mut();
        for d in start_doc..end {
            let rows = match at[d] {
                Some((row, rows)) => {
                    x.extend_from_slice(&train[row * dim..(row + rows) * dim]);
                    rows
                }
                None => {
                    let v = fresh_iter.next().map(std::mem::take).unwrap_or_default();
                    check_doc(&doc_ids[d], &v, dim)?;
                    x.extend_from_slice(&v);
                    v.len() / dim
                }
            };
            doclens.push(u32::try_from(rows).map_err(|_| {
                Error::Input(format!("document '{}' has too many vectors", doc_ids[d]))
            })?);
        }
        let Compressed {
            codes: c,
            packed: p,
        } = codec_ops.compress(&x)?;
        codes.extend_from_slice(&c);
        residuals.write_pod(&p)?;
        progress(Progress {
            stage: Stage::Compress,
            done: end,
            total: num_docs,
        });
    }
    drop(train);
    residuals.finish(files)?;
    if codes.is_empty() {
        return Err(Error::Input(
            "the corpus produced no token vectors: nothing to index".into(),
        ));
    }
    Ok((codes, doclens))
}

/// Stages 5 and 6: inverted lists, and every other data file written into `tmp`
/// (centroids as f16; codes and lists as u16 where they fit).
pub(crate) fn write_arrays(
    tmp: &TempIndexDir,
    codec: &ResidualCodec,
    codes: &[u32],
    doclens: &[u32],
    doc_ids: &[String],
    files: &mut BTreeMap<String, store::FileEntry>,
) -> Result<()> {
    let k = codec.num_centroids();
    let (ivf, ivf_offsets) = inverted_lists(codes, doclens, k);
    let centroids_f16: Vec<half::f16> = codec
        .centroids
        .iter()
        .map(|&c| half::f16::from_f32(c))
        .collect();
    tmp.write_file(store::CENTROIDS, &centroids_f16, files)?;
    tmp.write_file(store::BUCKET_CUTOFFS, &codec.bucket_cutoffs, files)?;
    tmp.write_file(store::BUCKET_WEIGHTS, &codec.bucket_weights, files)?;
    tmp.write_indices(store::codes_file(k), codes, files)?;
    tmp.write_file(store::DOCLENS, doclens, files)?;
    tmp.write_indices(store::ivf_file(doc_ids.len()), &ivf, files)?;
    tmp.write_file(store::IVF_OFFSETS, &ivf_offsets, files)?;
    let json = serde_json::to_vec(doc_ids).map_err(|e| Error::IndexFormat {
        path: tmp.path().join(store::DOC_IDS),
        message: e.to_string(),
    })?;
    let mut w = tmp.file(store::DOC_IDS)?;
    w.write(&json)?;
    w.finish(files)
}

/// `metadata.json` of the build.
fn metadata(
    model: &ModelInfo,
    options: &IndexOptions,
    trained: &Trained,
    codes: &[u32],
    doclens: &[u32],
    files: BTreeMap<String, store::FileEntry>,
    seconds: f64,
) -> Metadata {
    let codec = &trained.codec;
    let (num_docs, num_vectors) = (doclens.len(), codes.len());
    Metadata {
        format_version: FORMAT_VERSION,
        created_by: format!("colwgpu {}", env!("CARGO_PKG_VERSION")),
        model: model.clone(),
        dim: codec.dim,
        nbits: options.nbits,
        num_docs,
        num_vectors,
        num_centroids: codec.num_centroids(),
        packed_bytes_per_vector: codec.packed_bytes_per_vector(),
        bytes_per_vector: codec.bytes_per_vector(),
        settings: Settings {
            kmeans_iters: trained.iters,
            sample_fraction: options.sample_fraction,
            max_points_per_centroid: options.max_points_per_centroid,
            seed: options.seed,
            num_centroids_requested: options.num_centroids,
            num_sample_vectors: trained.num_sample_vectors,
            num_sample_docs: trained.num_sample_docs,
            num_codec_sample_vectors: trained.num_codec_sample_vectors,
            compute: options.compute.describe(),
        },
        stats: Stats {
            avg_doclen: num_vectors as f64 / num_docs as f64,
            max_doclen: doclens.iter().copied().max().unwrap_or(0) as usize,
            codec_mean_cosine: trained.codec_mean_cosine,
            kmeans_mean_cosine: trained.kmeans_mean_cosine,
            build_seconds: seconds,
        },
        pages: options.pages.clone(),
        pooling: options.recorded_pooling,
        files,
    }
}

/// For each of `k` centroids, the ascending, distinct indices of the documents
/// (lengths `doclens`, vectors back to back in `codes`) with a vector assigned
/// to it: `(lists back to back, k + 1 offsets)`.
pub fn inverted_lists(codes: &[u32], doclens: &[u32], k: usize) -> (Vec<u32>, Vec<u64>) {
    // Pass 1: how many documents each centroid lists; pass 2: fill. A document
    // is counted once per centroid through `last[c]`, the last document seen.
    let mut counts = vec![0u64; k];
    let mut last = vec![u32::MAX; k];
    let mut pos = 0usize;
    for (d, &len) in doclens.iter().enumerate() {
        for &c in &codes[pos..pos + len as usize] {
            if last[c as usize] != d as u32 {
                last[c as usize] = d as u32;
                counts[c as usize] += 1;
            }
        }
        pos += len as usize;
    }
    let mut offsets = Vec::with_capacity(k + 1);
    offsets.push(0u64);
    for &c in &counts {
        let next = offsets[offsets.len() - 1] + c;
        offsets.push(next);
    }
    let mut ivf = vec![0u32; offsets[k] as usize];
    let mut fill: Vec<u64> = offsets[..k].to_vec();
    last.iter_mut().for_each(|l| *l = u32::MAX);
    pos = 0;
    for (d, &len) in doclens.iter().enumerate() {
        for &c in &codes[pos..pos + len as usize] {
            let c = c as usize;
            if last[c] != d as u32 {
                last[c] = d as u32;
                ivf[fill[c] as usize] = d as u32;
                fill[c] += 1;
            }
        }
        pos += len as usize;
    }
    (ivf, offsets)
}
