//! The front door: open a model once, encode, build or open an index, search,
//! rerank. Everything else in the crate (the CLI, the examples, later the
//! server and the Python package) goes through these types.
//!
//! - [`Model`]: a ColBERT checkpoint on one device (`auto`, `cpu` or `gpu`);
//!   encodes queries and documents, builds indexes, reranks texts.
//! - [`Index`]: a compressed ColBERTv2 index on disk, opened (memory-mapped)
//!   or built from texts ([`Model::index`]) or from precomputed token vectors
//!   ([`Index::build_from_vectors`]); PLAID search with texts or vectors;
//!   exact reranking of candidate ids.
//!
//! Both are `Send + Sync`: a model serialises its forward passes internally,
//! an index can be searched from many threads at once.

use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::backend::Compute;
use crate::error::{Error, Result};
use crate::index as store;
use crate::model::{Encoder, PageEncoder};
use crate::search::{maxsim_scores, ScoreRequest, Searcher};

pub use crate::gpu::GpuOptions;
pub use crate::index::live::{AddSummary, NewDoc};
pub use crate::index::metadb::Filter;
pub use crate::index::{
    BuildSummary, FileEntry, Metadata, ModelInfo, Progress, Settings, Stage, Stats,
};
pub use crate::io::{Record as Document, VectorSet};
pub use crate::model::{DeviceChoice as Device, Precision, TokenVectors};
pub use crate::pages::{list_pages, PageInput, PageRecord, PageSource};
pub use crate::search::sharded::{kept_by_shard, merge_ranked, search_shards, FilteredCandidates};
pub use crate::search::{Hit, PlaidParams, SearchOptions};

/// Fingerprint recorded for indexes built from vectors of an unknown model.
pub const UNKNOWN_MODEL: &str = "unknown";

/// How to open a [`Model`].
#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub device: Device,
    /// wgpu backends / adapter name (used when `device` resolves to a GPU).
    pub gpu: GpuOptions,
    /// Texts (or page images) per forward pass (≥ 1).
    pub batch_size: usize,
    /// The base model of a LoRA adapter directory (page-image models); by
    /// default found from `adapter_config.json`.
    pub base: Option<std::path::PathBuf>,
    /// Arithmetic of the linear layers: f32 (default); bf16 on the cpu
    /// backend (AMX-BF16 / AVX512-BF16 CPUs only); f16 weight storage on the
    /// gpu backend (adapters with SHADER_F16 only). A mode on the other
    /// backend is refused with an error naming the one to use.
    pub precision: Precision,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            device: Device::Auto,
            gpu: GpuOptions::default(),
            batch_size: 32,
            base: None,
            precision: Precision::F32,
        }
    }
}

/// What runs a model: a text ColBERT, or a page-image ColQwen2 / ColPali.
enum Inner {
    Text(Box<Encoder>),
    Pages(Box<PageEncoder>),
}

/// A late-interaction model loaded on one device: a text ColBERT (documents
/// are texts) or a ColQwen2 / ColPali page-image model (documents are page images;
/// queries are texts either way).
pub struct Model {
    encoder: Mutex<Inner>,
    info: ModelInfo,
    compute: Compute,
    dim: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("info", &self.info)
            .field("compute", &self.compute.describe())
            .finish()
    }
}

pub use crate::text::TokenCounts;

/// Refuses a batch with an empty or whitespace-only query, naming it.
fn check_queries(texts: &[&str]) -> Result<()> {
    for (i, t) in texts.iter().enumerate() {
        crate::io::check_query_text(t, &format!("query {i} of the batch"))?;
    }
    Ok(())
}

impl Model {
    /// Loads the checkpoint in `dir` (PyLate, stanford ColBERT or plain BERT
    /// layout) on `device`.
    pub fn open(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        Self::open_with(
            dir,
            &ModelOptions {
                device,
                ..ModelOptions::default()
            },
        )
    }

    pub fn open_with(dir: impl AsRef<Path>, options: &ModelOptions) -> Result<Self> {
        let dir = dir.as_ref();
        if options.batch_size == 0 {
            return Err(Error::Input("batch size must be at least 1".into()));
        }
        let (encoder, dim, compute) = if crate::model::is_page_model(dir) {
            let mut e = PageEncoder::open(
                dir,
                options.base.as_deref(),
                options.device,
                &options.gpu,
                options.precision,
            )?;
            e.set_batch_size(options.batch_size);
            let (dim, compute) = (e.dim(), e.compute());
            (Inner::Pages(Box::new(e)), dim, compute)
        } else {
            let mut e =
                Encoder::open_with_precision(dir, options.device, &options.gpu, options.precision)?;
            e.set_batch_size(options.batch_size)?;
            let (dim, compute) = (e.dim(), e.compute());
            (Inner::Text(Box::new(e)), dim, compute)
        };
        let info = ModelInfo::from_dir(dir, dim)?;
        Ok(Self {
            encoder: Mutex::new(encoder),
            info,
            compute,
            dim,
        })
    }

    fn encoder(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic inside a forward pass leaves no state that later calls rely on.
        self.encoder.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model's identity: directory, fingerprint, output dimension.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Dimension of the token vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// One line naming the backend and device that run the model.
    pub fn describe(&self) -> String {
        match &*self.encoder() {
            Inner::Text(e) => e.describe_backend(),
            Inner::Pages(e) => e.describe_backend(),
        }
    }

    /// Bytes of the model's weights resident on the GPU, `(all, linear-layer
    /// weights)` (the latter halved by `--precision f16`); `None` on the cpu.
    pub fn gpu_weight_bytes(&self) -> Option<(u64, u64)> {
        match &*self.encoder() {
            Inner::Text(e) => e.gpu_weight_bytes(),
            Inner::Pages(e) => e.gpu_weight_bytes(),
        }
    }

    /// Whether documents are page images (ColQwen2, ColPali) rather than texts.
    pub fn takes_images(&self) -> bool {
        matches!(&*self.encoder(), Inner::Pages(_))
    }

    fn text_encoder<'a>(
        guard: &'a mut std::sync::MutexGuard<'_, Inner>,
        what: &str,
    ) -> Result<&'a mut Encoder> {
        match &mut **guard {
            Inner::Text(e) => Ok(e),
            Inner::Pages(p) => Err(Error::Input(format!(
                "{what}: this is a page-image model ({}): its documents are images",
                p.family().name()
            ))),
        }
    }

    /// One vector per query position (`[MASK]`-expanded to the query length).
    /// An empty or whitespace-only query is an error: it would rank documents
    /// arbitrarily.
    pub fn encode_queries(&self, texts: &[&str]) -> Result<Vec<TokenVectors>> {
        check_queries(texts)?;
        match &mut *self.encoder() {
            Inner::Text(e) => e.encode_queries(texts),
            Inner::Pages(e) => e.encode_queries(texts),
        }
    }

    /// One vector per kept document token (punctuation skiplist applied).
    pub fn encode_documents(&self, texts: &[&str]) -> Result<Vec<TokenVectors>> {
        let mut g = self.encoder();
        Self::text_encoder(&mut g, "encoding documents as text")?.encode_documents(texts)
    }

    /// One vector per image token of each page image (ColQwen2, ColPali; PNG or
    /// JPEG files). Errors name the file that cannot be read.
    pub fn encode_images(&self, paths: &[&Path]) -> Result<Vec<TokenVectors>> {
        let mut g = self.encoder();
        let Inner::Pages(e) = &mut *g else {
            return Err(Error::Input(
                "this is a text model (ColBERT): it does not encode images".into(),
            ));
        };
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(8) {
            let images = chunk
                .iter()
                .map(|p| crate::vision::load_rgb(p))
                .collect::<Result<Vec<_>>>()?;
            out.extend(e.encode_images(&images)?);
        }
        Ok(out)
    }

    /// [`Model::encode_images`] for encoded images (PNG or JPEG bytes) held in
    /// memory; errors name an image by its position.
    pub fn encode_image_bytes(&self, images: &[&[u8]]) -> Result<Vec<TokenVectors>> {
        let mut g = self.encoder();
        let Inner::Pages(e) = &mut *g else {
            return Err(Error::Input(
                "this is a text model (ColBERT): it does not encode images".into(),
            ));
        };
        let mut out = Vec::with_capacity(images.len());
        for (c, chunk) in images.chunks(8).enumerate() {
            let decoded = chunk
                .iter()
                .enumerate()
                .map(|(i, b)| crate::vision::decode_rgb(b, &format!("{}", c * 8 + i)))
                .collect::<Result<Vec<_>>>()?;
            out.extend(e.encode_images(&decoded)?);
        }
        Ok(out)
    }

    /// Encodes the page images `paths` (ids = `ids`) and builds their index at
    /// `path`, as [`Index::build_from_vectors`] does with this model recorded.
    pub fn index_images(
        &self,
        paths: &[&Path],
        ids: Vec<String>,
        path: impl AsRef<Path>,
        options: &IndexOptions,
    ) -> Result<Index> {
        if ids.len() != paths.len() {
            return Err(Error::Input(format!(
                "{} ids for {} images",
                ids.len(),
                paths.len()
            )));
        }
        let blocks: Vec<Vec<f32>> = self
            .encode_images(paths)?
            .into_iter()
            .map(|t| t.vectors)
            .collect();
        let set = VectorSet::from_blocks(Some(ids), self.dim, &blocks)?;
        Index::build_from_vectors(path, &set, Some(self), options, Device::Cpu)
    }

    /// Encodes page documents (image files and PDF pages, from
    /// [`crate::pages::list_pages`]): PDF pages are rendered on another thread
    /// while earlier pages are encoded, at most a few pages in memory.
    /// `progress(done, total)` after every batch. A page that fails to load or
    /// render is an error naming its file and page, or with
    /// `options.skip_bad_pages` a warning in [`EncodedPages::warnings`].
    pub fn encode_pages(
        &self,
        pages: &[PageInput],
        options: &PageOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<EncodedPages> {
        let target_pixels = match &*self.encoder() {
            Inner::Pages(e) => e.target_pixels(),
            Inner::Text(_) => {
                return Err(Error::Input(
                    "this is a text model (ColBERT): it does not encode pages".into(),
                ))
            }
        };
        if let Some(dpi) = options.dpi {
            if !(dpi.is_finite() && dpi > 0.0 && dpi <= 1200.0) {
                return Err(Error::Input(format!(
                    "resolution {dpi} DPI is out of range (0 to 1200)"
                )));
            }
        }
        let batch = options.batch_size.max(1);
        let render = crate::pages::RenderOptions {
            dpi: options.dpi,
            target_pixels,
            queue: batch,
        };
        let mut out = EncodedPages::default();
        let mut pending: Vec<crate::pages::RenderedPage> = Vec::with_capacity(batch);
        let total = pages.len();
        let mut done = 0;
        let flush =
            |pending: &mut Vec<crate::pages::RenderedPage>, out: &mut EncodedPages| -> Result<()> {
                if pending.is_empty() {
                    return Ok(());
                }
                let mut g = self.encoder();
                let Inner::Pages(e) = &mut *g else {
                    return Err(Error::Input("not a page model".into()));
                };
                let images: Vec<crate::vision::RgbImage> =
                    pending.iter().map(|p| p.image.clone()).collect();
                let encoded = e.encode_images(&images)?;
                for (p, tv) in pending.drain(..).zip(encoded) {
                    let (first, rows, cols) = e.patch_grid(&tv, p.image.width, p.image.height)?;
                    let input = &pages[p.index];
                    out.ids.push(input.id.clone());
                    out.records.push(crate::pages::PageRecord {
                        source: input.source.clone(),
                        dpi: p.dpi,
                        width: p.image.width as u32,
                        height: p.image.height as u32,
                        first,
                        rows,
                        cols,
                    });
                    out.vectors.push(tv);
                }
                Ok(())
            };
        crate::pages::stream_pages(pages, &render, &mut |i, item| {
            match item {
                Ok(page) => {
                    pending.push(page);
                    if pending.len() >= batch {
                        flush(&mut pending, &mut out)?;
                    }
                }
                Err(e) if options.skip_bad_pages => {
                    out.warnings.push(format!("skipped {}: {e}", pages[i].id));
                }
                Err(e) => return Err(e),
            }
            done += 1;
            if pending.is_empty() || done == total {
                progress(done, total);
            }
            Ok(())
        })?;
        flush(&mut pending, &mut out)?;
        progress(total, total);
        if out.ids.is_empty() {
            return Err(Error::Input(
                "no page could be encoded (every page failed)".into(),
            ));
        }
        Ok(out)
    }

    /// Encodes `pages` as [`Model::encode_pages`] does and builds their index at
    /// `path`, recording each page's source and patch grid (for explanations).
    /// Returns the index and the warnings of skipped pages.
    pub fn index_pages(
        &self,
        pages: &[PageInput],
        path: impl AsRef<Path>,
        options: &IndexOptions,
        page_options: &PageOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(Index, Vec<String>)> {
        let encoded = self.encode_pages(pages, page_options, progress)?;
        let blocks: Vec<Vec<f32>> = encoded.vectors.into_iter().map(|t| t.vectors).collect();
        let set = VectorSet::from_blocks(Some(encoded.ids), self.dim, &blocks)?;
        drop(blocks);
        let index = Index::build_with_pages(
            path.as_ref(),
            &set,
            Some(self),
            options,
            Device::Cpu,
            Some(encoded.records),
        )?;
        Ok((index, encoded.warnings))
    }

    /// Tokens the texts become and how many are truncated (no forward pass).
    pub fn count_tokens(&self, texts: &[&str], queries: bool) -> Result<TokenCounts> {
        let mut g = self.encoder();
        if let (Inner::Pages(e), true) = (&*g, queries) {
            return Ok(TokenCounts {
                tokens: e.query_tokens(texts)?,
                truncated: 0,
            });
        }
        let t = Self::text_encoder(&mut g, "counting document tokens")?.tokenizer();
        Ok(if queries {
            TokenCounts::of_queries(&t.queries(texts)?)
        } else {
            TokenCounts::of_documents(&t.documents(texts)?)
        })
    }

    /// [`Model::encode_queries`] (`queries`) or [`Model::encode_documents`],
    /// with the [`Model::count_tokens`] of the same texts from the same
    /// tokenization (a text model tokenizes them once).
    pub fn encode_counted(
        &self,
        texts: &[&str],
        queries: bool,
    ) -> Result<(Vec<TokenVectors>, TokenCounts)> {
        if queries {
            check_queries(texts)?;
        }
        let mut g = self.encoder();
        if let (Inner::Pages(e), true) = (&mut *g, queries) {
            let counts = TokenCounts {
                tokens: e.query_tokens(texts)?,
                truncated: 0,
            };
            return Ok((e.encode_queries(texts)?, counts));
        }
        Self::text_encoder(&mut g, "encoding documents as text")?.encode_counted(texts, queries)
    }

    /// For each vector a document text becomes (text models), its span in the
    /// text in characters, `start..end`; `None` for the `[CLS]`, marker and
    /// `[SEP]` vectors. With an explanation's `doc_token`, what to highlight.
    pub fn document_token_spans(&self, text: &str) -> Result<Vec<Option<(usize, usize)>>> {
        let mut g = self.encoder();
        Self::text_encoder(&mut g, "document token spans")?
            .tokenizer()
            .document_spans(text)
    }

    /// Runs one tiny batch so shaders are compiled before anything is timed.
    pub fn warm_up(&self) -> Result<()> {
        match &mut *self.encoder() {
            Inner::Text(e) => e.warm_up(),
            Inner::Pages(e) => e.encode_queries(&["warm up"]).map(|_| ()),
        }
    }

    /// Times every op separately from now on (GPU: each op in its own submit;
    /// text models only).
    pub fn enable_profiling(&self) {
        if let Inner::Text(e) = &mut *self.encoder() {
            e.enable_profiling();
        }
    }

    /// Per op: (name, calls, seconds), when profiling is on.
    pub fn profile(&self) -> Vec<(&'static str, usize, f64)> {
        match &*self.encoder() {
            Inner::Text(e) => e.profile(),
            Inner::Pages(_) => Vec::new(),
        }
    }

    /// Encodes `docs` and builds their index at `path` (an index already there is
    /// replaced only once the new one is complete).
    pub fn index(
        &self,
        docs: &[Document],
        path: impl AsRef<Path>,
        options: &IndexOptions,
    ) -> Result<Index> {
        self.index_with_progress(docs, path, options, &mut |_| {})
            .map(|(index, _)| index)
    }

    /// [`Model::index`] reporting progress, and returning the build summary.
    pub fn index_with_progress(
        &self,
        docs: &[Document],
        path: impl AsRef<Path>,
        options: &IndexOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Index, BuildSummary)> {
        let path = path.as_ref();
        let build = options.to_build(self.compute.clone())?;
        let summary = {
            let mut g = self.encoder();
            let enc = Self::text_encoder(&mut g, "indexing texts")?;
            store::build_index(enc, &self.info, docs, path, &build, progress)?
        };
        let index = Index::open_with_compute(path, Some(self.compute.clone()))?;
        Ok((index, summary))
    }

    /// Opens the index at `path` for search with this model on its device;
    /// refuses an index built with another model.
    pub fn open_index(&self, path: impl AsRef<Path>) -> Result<Index> {
        let index = Index::open_with_compute(path.as_ref(), Some(self.compute.clone()))?;
        index.check_model(self)?;
        Ok(index)
    }

    /// Exact MaxSim of `query` against each of `documents` (encoded now), best
    /// first: `(position in documents, score)`. For reranking a candidate list
    /// from any first stage (BM25, a vector database, …).
    pub fn rerank(&self, query: &str, documents: &[&str]) -> Result<Vec<(usize, f32)>> {
        if documents.is_empty() {
            return Ok(Vec::new());
        }
        let q = self.encode_queries(&[query])?;
        let d = self.encode_documents(documents)?;
        let blocks: Vec<&[f32]> = d.iter().map(|t| t.vectors.as_slice()).collect();
        let scores = score_blocks(&self.compute, &q[0].vectors, self.dim, &blocks)?;
        let mut ranked: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
        sort_ranked(&mut ranked);
        Ok(ranked)
    }

    /// Where the model's index and search kernels run.
    pub(crate) fn compute(&self) -> &Compute {
        &self.compute
    }
}

/// MaxSim of one query (`qlen × dim`) against each document block.
fn score_blocks(compute: &Compute, query: &[f32], dim: usize, docs: &[&[f32]]) -> Result<Vec<f32>> {
    let mut offsets = Vec::with_capacity(docs.len() + 1);
    offsets.push(0usize);
    let mut flat = Vec::with_capacity(docs.iter().map(|d| d.len()).sum());
    for d in docs {
        flat.extend_from_slice(d);
        offsets.push(flat.len() / dim);
    }
    let owner = vec![0u32; docs.len()];
    maxsim_scores(
        compute,
        &ScoreRequest {
            queries: query,
            qlen: query.len() / dim,
            dim,
            docs: &flat,
            offsets: &offsets,
            owner: &owner,
        },
    )
}

/// Score descending, ties to the earlier position.
fn sort_ranked(r: &mut [(usize, f32)]) {
    r.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// How pages are rendered and encoded ([`Model::encode_pages`]).
#[derive(Debug, Clone)]
pub struct PageOptions {
    /// PDF resolution; `None` (default): per page, the smallest whole DPI at
    /// which the page has at least as many pixels as the model's
    /// pre-processing keeps (it resizes down from there).
    pub dpi: Option<f32>,
    /// Page failures become warnings instead of errors.
    pub skip_bad_pages: bool,
    /// Pages per forward pass (also the rendering queue's length).
    pub batch_size: usize,
}

impl Default for PageOptions {
    fn default() -> Self {
        Self {
            dpi: None,
            skip_bad_pages: false,
            batch_size: 4,
        }
    }
}

/// Encoded pages: ids, vectors, what the index records of each page, and the
/// warnings of pages skipped.
#[derive(Debug, Clone, Default)]
pub struct EncodedPages {
    pub ids: Vec<String>,
    pub vectors: Vec<TokenVectors>,
    pub records: Vec<PageRecord>,
    pub warnings: Vec<String>,
}

/// How to build an index.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Residual bits per dimension: 1, 2 or 4.
    pub nbits: usize,
    /// Centroid count; `None` = ColBERTv2's `2^floor(log2(16·√vectors))`.
    pub num_centroids: Option<usize>,
    /// k-means iterations (ColBERTv2 uses 4).
    pub kmeans_iters: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// When another process is writing the same index path: wait for it
    /// (`true`) or fail at once with [`crate::Error::Locked`] (`false`).
    pub wait_for_lock: bool,
    /// Token pooling (Ward clustering of each document's vectors, PyLate's
    /// `hierarchical_pooling`): about `pool_factor` vectors become one
    /// (1 = none).
    pub pool_factor: usize,
    /// Leading vectors of each document kept out of pooling (PyLate's default 1).
    pub protected_tokens: usize,
    /// Train nothing: compress with the centroids and codec of the index at
    /// this path (built, say, on a sample of the whole corpus), so that the
    /// shards of one corpus, built apart, score on one scale and their top-k
    /// lists merge into the corpus's top-k. Its `nbits` and dimension must match.
    pub codec_from: Option<PathBuf>,
}

impl Default for IndexOptions {
    fn default() -> Self {
        let d = store::IndexOptions::default();
        Self {
            nbits: d.nbits,
            num_centroids: d.num_centroids,
            kmeans_iters: d.kmeans_iters,
            seed: d.seed,
            wait_for_lock: d.wait_for_lock,
            pool_factor: d.pooling.factor,
            protected_tokens: d.pooling.protected,
            codec_from: None,
        }
    }
}

impl IndexOptions {
    fn to_build(&self, compute: Compute) -> Result<store::IndexOptions> {
        let shared_codec = match &self.codec_from {
            Some(dir) => Some(Arc::new(store::Index::open(dir)?.codec().clone())),
            None => None,
        };
        Ok(store::IndexOptions {
            nbits: self.nbits,
            num_centroids: self.num_centroids,
            kmeans_iters: self.kmeans_iters,
            seed: self.seed,
            wait_for_lock: self.wait_for_lock,
            pooling: store::pool::Pooling {
                factor: self.pool_factor,
                protected: self.protected_tokens,
            },
            compute,
            shared_codec,
            ..store::IndexOptions::default()
        })
    }
}

/// A compressed index on disk, opened for search.
pub struct Index {
    inner: Arc<store::Index>,
    /// Where search runs: fixed at open, or taken from the first model that
    /// searches the index (so text search runs on the model's device).
    compute: Mutex<Option<Compute>>,
    searcher: Mutex<Option<Arc<Searcher>>>,
    by_id: OnceLock<HashMap<String, u32>>,
    by_global: OnceLock<HashMap<u32, u32>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("inner", &self.inner).finish()
    }
}

impl Index {
    /// Opens (memory-maps and verifies) the index at `path`. Search runs on
    /// the device of the first model that searches it, or on `auto` for
    /// [`Index::search_vectors`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_compute(path.as_ref(), None)
    }

    /// Opens the index with its search kernels on `device`.
    pub fn open_on(path: impl AsRef<Path>, device: Device, gpu: &GpuOptions) -> Result<Self> {
        Self::open_with_compute(path.as_ref(), Some(Compute::new(device, gpu)?))
    }

    fn open_with_compute(path: &Path, compute: Option<Compute>) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(store::Index::open(path)?),
            compute: Mutex::new(compute),
            searcher: Mutex::new(None),
            by_id: OnceLock::new(),
            by_global: OnceLock::new(),
        })
    }

    /// Builds an index at `path` from precomputed token vectors (from
    /// `colwgpu encode`, PyLate, numpy, …); k-means and compression run on
    /// `device`. The model recorded with the vectors (if any) becomes the
    /// index's model; `model` overrides it (its dimension must match).
    pub fn build_from_vectors(
        path: impl AsRef<Path>,
        vectors: &VectorSet,
        model: Option<&Model>,
        options: &IndexOptions,
        device: Device,
    ) -> Result<Index> {
        Self::build_with_pages(path.as_ref(), vectors, model, options, device, None)
    }

    fn build_with_pages(
        path: &Path,
        vectors: &VectorSet,
        model: Option<&Model>,
        options: &IndexOptions,
        device: Device,
        pages: Option<Vec<PageRecord>>,
    ) -> Result<Index> {
        let info = vectors_model(vectors, model)?;
        let compute = match model {
            Some(m) => m.compute.clone(),
            None => Compute::new(device, &GpuOptions::default())?,
        };
        let blocks = vectors.blocks();
        let mut source = store::InMemorySource {
            dim: vectors.dim,
            docs: &blocks,
        };
        store::build_index_with(
            &mut source,
            &vectors.ids,
            &info,
            path,
            &store::IndexOptions {
                pages,
                ..options.to_build(compute.clone())?
            },
            &mut |_| {},
        )?;
        Self::open_with_compute(path, Some(compute))
    }

    /// The index's files, settings and statistics.
    pub fn metadata(&self) -> &store::Metadata {
        self.inner.metadata()
    }

    pub fn path(&self) -> &Path {
        self.inner.dir()
    }

    pub fn num_docs(&self) -> usize {
        self.inner.num_docs()
    }

    pub fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Document ids, in index order.
    pub fn doc_ids(&self) -> &[String] {
        self.inner.doc_ids()
    }

    /// The directory of the model the index was built with, if recorded.
    pub fn model_dir(&self) -> Option<&Path> {
        self.inner.metadata().model.path.as_deref()
    }

    /// Opens the model the index was built with, on `device`.
    pub fn open_model(&self, device: Device) -> Result<Model> {
        let dir = self.model_dir().ok_or_else(|| {
            Error::Input(format!(
                "index {} does not record its model (it was built from vectors of an unknown \
                 model): name the model explicitly",
                self.path().display()
            ))
        })?;
        if !dir.is_dir() {
            return Err(Error::Input(format!(
                "index {} was built with the model at {}, which no longer exists: name the \
                 model explicitly",
                self.path().display(),
                dir.display()
            )));
        }
        Model::open(dir, device)
    }

    /// Refuses a model other than the one the index was built with.
    pub fn check_model(&self, model: &Model) -> Result<()> {
        if self.inner.metadata().model.fingerprint == UNKNOWN_MODEL {
            if model.dim != self.dim() {
                return Err(Error::Input(format!(
                    "index {} holds {}-d vectors but model {} makes {}-d vectors",
                    self.path().display(),
                    self.dim(),
                    model.info.name,
                    model.dim
                )));
            }
            log::warn!(
                "index {} was built from vectors of an unrecorded model; searching it with {} \
                 assumes they came from this model",
                self.path().display(),
                model.info.name
            );
            return Ok(());
        }
        self.inner.check_model(&model.info)
    }

    fn searcher(&self, hint: Option<&Compute>) -> Result<Arc<Searcher>> {
        let mut slot = self.searcher.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let compute = {
            let mut c = self.compute.lock().unwrap_or_else(|p| p.into_inner());
            if c.is_none() {
                *c = Some(match hint {
                    Some(h) => h.clone(),
                    None => Compute::new(Device::Auto, &GpuOptions::default())?,
                });
            }
            c.clone().unwrap_or(Compute::Cpu)
        };
        let s = Arc::new(Searcher::new(self.inner.clone(), compute)?);
        *slot = Some(s.clone());
        Ok(s)
    }

    /// Where this index's search kernels run (once decided).
    pub fn describe_device(&self) -> String {
        match &*self.compute.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(c) => c.describe(),
            None => "not chosen yet".into(),
        }
    }

    /// The best `k` documents for one query text.
    pub fn search(&self, model: &Model, query: &str, k: usize) -> Result<Vec<Hit>> {
        let mut hits = self.search_batch(model, &[query], &SearchOptions::new(k))?;
        Ok(hits.pop().unwrap_or_default())
    }

    /// Searches many query texts (encoded and searched in batches).
    pub fn search_batch(
        &self,
        model: &Model,
        queries: &[&str],
        options: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>> {
        self.check_model(model)?;
        let searcher = self.searcher(Some(model.compute()))?;
        let mut out = Vec::with_capacity(queries.len());
        for chunk in queries.chunks(32) {
            let encoded = model.encode_queries(chunk)?;
            let blocks: Vec<&[f32]> = encoded.iter().map(|e| e.vectors.as_slice()).collect();
            out.extend(self.search_blocks(&searcher, &blocks, options)?);
        }
        Ok(out)
    }

    /// Searches with precomputed query vectors: one `len × dim` block per query.
    pub fn search_vectors(
        &self,
        queries: &[&[f32]],
        options: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>> {
        let searcher = self.searcher(None)?;
        self.search_blocks(&searcher, queries, options)
    }

    /// Searches already-encoded queries with `model`'s device (for callers that
    /// time encoding and search apart).
    pub fn search_encoded(
        &self,
        model: &Model,
        queries: &[TokenVectors],
        options: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>> {
        self.check_model(model)?;
        let searcher = self.searcher(Some(model.compute()))?;
        let blocks: Vec<&[f32]> = queries.iter().map(|e| e.vectors.as_slice()).collect();
        self.search_blocks(&searcher, &blocks, options)
    }

    /// Runs runs of equal-length queries through the searcher as one batch each.
    fn search_blocks(
        &self,
        searcher: &Searcher,
        queries: &[&[f32]],
        options: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>> {
        self.search_blocks_in(searcher, queries, options, None)
    }

    fn search_blocks_in(
        &self,
        searcher: &Searcher,
        queries: &[&[f32]],
        options: &SearchOptions,
        allowed: Option<&[bool]>,
    ) -> Result<Vec<Vec<Hit>>> {
        let dim = self.dim();
        self.query_lens(queries)?;
        let mut out = Vec::with_capacity(queries.len());
        let mut start = 0;
        while start < queries.len() {
            let len = queries[start].len();
            let mut end = start + 1;
            while end < queries.len() && queries[end].len() == len && end - start < 64 {
                end += 1;
            }
            let flat: Vec<f32> = queries[start..end].concat();
            out.extend(match allowed {
                Some(a) => searcher.search_filtered(&flat, len / dim, options, a)?,
                None => searcher.search(&flat, len / dim, options)?,
            });
            start = end;
        }
        Ok(out)
    }

    /// The generation of the live snapshot this handle shows (0 for an index
    /// never mutated). Reopen to see later mutations.
    pub fn generation(&self) -> u64 {
        self.inner.generation()
    }

    /// One flag per document: whether its metadata satisfies `filter`.
    fn allowed(&self, filter: &Filter) -> Result<Vec<bool>> {
        let globals = crate::index::metadb::filter(self.path(), filter)?;
        let mut allowed = vec![false; self.num_docs()];
        let local = self.by_global();
        for g in globals {
            if let Some(&d) = local.get(&g) {
                allowed[d as usize] = true;
            }
        }
        Ok(allowed)
    }

    fn by_global(&self) -> &HashMap<u32, u32> {
        self.by_global.get_or_init(|| {
            (0..self.num_docs())
                .map(|d| (self.inner.global_doc(d), d as u32))
                .collect()
        })
    }

    /// Ids of the documents (in this snapshot) whose metadata satisfies
    /// `filter`, in index order.
    pub fn filter_ids(&self, filter: &Filter) -> Result<Vec<String>> {
        let allowed = self.allowed(filter)?;
        Ok(allowed
            .iter()
            .enumerate()
            .filter(|(_, &a)| a)
            .map(|(d, _)| self.doc_ids()[d].clone())
            .collect())
    }

    /// The metadata objects of documents `ids` (`None` where one has none).
    pub fn document_metadata(&self, ids: &[&str]) -> Result<Vec<Option<serde_json::Value>>> {
        let globals = ids
            .iter()
            .map(|id| Ok(self.inner.global_doc(self.doc_index(id)? as usize)))
            .collect::<Result<Vec<u32>>>()?;
        crate::index::metadb::get(self.path(), &globals)
    }

    /// [`Index::search_batch`] over only the documents whose metadata
    /// satisfies `filter` (applied to PLAID's candidates before scoring; the
    /// search runs on the CPU).
    pub fn search_filtered(
        &self,
        model: &Model,
        queries: &[&str],
        options: &SearchOptions,
        filter: &Filter,
    ) -> Result<Vec<Vec<Hit>>> {
        self.check_model(model)?;
        let allowed = self.allowed(filter)?;
        let searcher = self.searcher(Some(model.compute()))?;
        let mut out = Vec::with_capacity(queries.len());
        for chunk in queries.chunks(32) {
            let encoded = model.encode_queries(chunk)?;
            let blocks: Vec<&[f32]> = encoded.iter().map(|e| e.vectors.as_slice()).collect();
            out.extend(self.search_blocks_in(&searcher, &blocks, options, Some(&allowed))?);
        }
        Ok(out)
    }

    /// [`Index::search_encoded`] with a metadata filter.
    pub fn search_filtered_encoded(
        &self,
        model: &Model,
        queries: &[TokenVectors],
        options: &SearchOptions,
        filter: &Filter,
    ) -> Result<Vec<Vec<Hit>>> {
        self.check_model(model)?;
        let allowed = self.allowed(filter)?;
        let searcher = self.searcher(Some(model.compute()))?;
        let blocks: Vec<&[f32]> = queries.iter().map(|e| e.vectors.as_slice()).collect();
        self.search_blocks_in(&searcher, &blocks, options, Some(&allowed))
    }

    /// [`Index::search_vectors`] with a metadata filter.
    pub fn search_vectors_filtered(
        &self,
        queries: &[&[f32]],
        options: &SearchOptions,
        filter: &Filter,
    ) -> Result<Vec<Vec<Hit>>> {
        let allowed = self.allowed(filter)?;
        let searcher = self.searcher(None)?;
        self.search_blocks_in(&searcher, queries, options, Some(&allowed))
    }

    /// Round 1 of PLAID over shards that share this index's codec
    /// (`search::sharded`): for each query (`len × dim`), this
    /// index's best `params.ndocs` documents after PLAID's pruned centroid
    /// interaction, best first, with those scores.
    pub fn shard_candidates(
        &self,
        queries: &[&[f32]],
        params: &PlaidParams,
    ) -> Result<Vec<(Vec<u32>, Vec<f32>)>> {
        params.validate()?;
        let lens = self.query_lens(queries)?;
        let searcher = self.searcher(None)?;
        Ok(queries
            .par_iter()
            .zip(lens)
            .map(|(q, qlen)| searcher.shard_candidates(q, qlen, params))
            .collect())
    }

    /// Round 1 under a metadata filter: for each query, this index's best
    /// `params.ndocs` allowed documents after the pruned interaction, and its
    /// number of allowed candidates. The pool is the allowed candidates, or
    /// every allowed document when `all_allowed` (the coordinator's choice
    /// once the shards' candidate counts sum to fewer than `ndocs`, as one
    /// index's filtered search chooses).
    pub fn shard_candidates_filtered(
        &self,
        queries: &[&[f32]],
        params: &PlaidParams,
        filter: &Filter,
        all_allowed: bool,
    ) -> Result<Vec<FilteredCandidates>> {
        params.validate()?;
        let lens = self.query_lens(queries)?;
        let allowed = self.allowed(filter)?;
        let searcher = self.searcher(None)?;
        Ok(queries
            .par_iter()
            .zip(lens)
            .map(|(q, qlen)| {
                searcher.shard_candidates_filtered(q, qlen, params, &allowed, all_allowed)
            })
            .collect())
    }

    /// Round 2 of PLAID over shards: for each query, the full centroid
    /// interaction with the documents `docs[q]` (indices in this index).
    pub fn shard_full_scores(
        &self,
        queries: &[&[f32]],
        docs: &[Vec<u32>],
    ) -> Result<Vec<Vec<f32>>> {
        self.per_query_docs(queries, docs, |s, q, qlen, d| {
            Ok(s.shard_full_scores(q, qlen, d))
        })
    }

    /// Round 3 of PLAID over shards: for each query, exact MaxSim with the
    /// documents `docs[q]`, in that order (scored as search scores them).
    pub fn shard_exact_scores(
        &self,
        queries: &[&[f32]],
        docs: &[Vec<u32>],
    ) -> Result<Vec<Vec<Hit>>> {
        self.per_query_docs(queries, docs, |s, q, qlen, d| {
            let scores = s.shard_exact_scores(q, qlen, d)?;
            Ok(d.iter()
                .zip(scores)
                .map(|(&doc, score)| Hit {
                    doc,
                    id: self.doc_ids()[doc as usize].clone(),
                    score,
                })
                .collect())
        })
    }

    /// `f(searcher, query, qlen, docs[q])` for each query, in parallel, once
    /// the queries' shapes and the document lists are checked.
    fn per_query_docs<T: Send>(
        &self,
        queries: &[&[f32]],
        docs: &[Vec<u32>],
        f: impl Fn(&Searcher, &[f32], usize, &[u32]) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        let lens = self.query_lens(queries)?;
        self.check_doc_lists(queries.len(), docs)?;
        let searcher = self.searcher(None)?;
        queries
            .par_iter()
            .zip(lens)
            .zip(docs)
            .map(|((q, qlen), d)| f(&searcher, q, qlen, d))
            .collect()
    }

    /// Each query's number of vectors, or an error naming a query that is not
    /// a non-empty whole number of `dim`-d vectors.
    fn query_lens(&self, queries: &[&[f32]]) -> Result<Vec<usize>> {
        let dim = self.dim();
        queries
            .iter()
            .enumerate()
            .map(|(i, q)| {
                if q.is_empty() || !q.len().is_multiple_of(dim) {
                    Err(Error::Input(format!(
                        "query {i}: {} values is not a non-empty whole number of {dim}-d vectors",
                        q.len()
                    )))
                } else {
                    Ok(q.len() / dim)
                }
            })
            .collect()
    }

    /// Errors unless there is one document list per query and every document
    /// index is in this index.
    fn check_doc_lists(&self, num_queries: usize, docs: &[Vec<u32>]) -> Result<()> {
        if docs.len() != num_queries {
            return Err(Error::Input(format!(
                "{} document lists for {num_queries} queries",
                docs.len()
            )));
        }
        let n = self.num_docs();
        if let Some(&bad) = docs.iter().flatten().find(|&&d| d as usize >= n) {
            return Err(Error::Input(format!(
                "document index {bad} is out of range: index {} holds {n} documents",
                self.path().display()
            )));
        }
        Ok(())
    }

    fn doc_index(&self, id: &str) -> Result<u32> {
        let map = self.by_id.get_or_init(|| {
            self.doc_ids()
                .iter()
                .enumerate()
                .map(|(i, d)| (d.clone(), i as u32))
                .collect()
        });
        map.get(id).copied().ok_or_else(|| {
            Error::Input(format!(
                "document id '{id}' is not in index {}",
                self.path().display()
            ))
        })
    }

    /// Exact MaxSim (decompressed vectors) of `query` against the documents
    /// `candidates` (ids in this index), best first.
    pub fn rerank(&self, model: &Model, query: &str, candidates: &[&str]) -> Result<Vec<Hit>> {
        self.check_model(model)?;
        let q = model.encode_queries(&[query])?;
        self.rerank_vectors(&q[0].vectors, candidates, Some(model.compute()))
    }

    /// [`Index::rerank`] with a precomputed query (`len × dim`).
    pub fn rerank_vectors(
        &self,
        query: &[f32],
        candidates: &[&str],
        compute: Option<&Compute>,
    ) -> Result<Vec<Hit>> {
        let dim = self.dim();
        if query.is_empty() || !query.len().is_multiple_of(dim) {
            return Err(Error::Input(format!(
                "the query's {} values are not a non-empty whole number of {dim}-d vectors",
                query.len()
            )));
        }
        let docs = candidates
            .iter()
            .map(|id| self.doc_index(id))
            .collect::<Result<Vec<u32>>>()?;
        let compute = match compute {
            Some(c) => c.clone(),
            None => self.searcher(None)?.compute().clone(),
        };
        let (vectors, offsets) = self.inner.decompress_docs(&compute, &docs)?;
        let blocks: Vec<&[f32]> = offsets
            .windows(2)
            .map(|w| &vectors[w[0] * dim..w[1] * dim])
            .collect();
        let scores = score_blocks(&compute, query, dim, &blocks)?;
        let mut ranked: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
        sort_ranked(&mut ranked);
        Ok(ranked
            .into_iter()
            .map(|(i, score)| Hit {
                doc: docs[i],
                id: self.doc_ids()[docs[i] as usize].clone(),
                score,
            })
            .collect())
    }
}

/// One query token's best match in a document.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenMatch {
    /// Position among the query's vectors.
    pub query_token: usize,
    /// Position among the document's (stored, decompressed) vectors.
    pub doc_token: usize,
    /// The similarity: this query token's contribution to the score.
    pub score: f32,
    /// For a page: the matched patch's `(row, col)` in the patch grid, when the
    /// matched vector is an image patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<(usize, usize)>,
}

/// Why a document matched a query: per query token, the document vector that
/// gave its maximum and the score it contributed (they sum to `score`, the
/// exact MaxSim of the decompressed vectors).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    pub id: String,
    pub score: f32,
    pub matches: Vec<TokenMatch>,
    /// Vectors of the document.
    pub doc_len: usize,
    /// For a page document: its source and patch grid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<PageRecord>,
    /// Every query-token × document-token similarity, `matches.len() × doc_len`.
    #[serde(skip)]
    pub similarity: Vec<f32>,
}

impl Explanation {
    /// The similarity of query token `q` (or, with `None`, the sum over the
    /// query's tokens) to each patch of the page, `rows × cols` row-major;
    /// `None` for a document that is not a page.
    pub fn patch_map(&self, q: Option<usize>) -> Option<Vec<f32>> {
        let p = self.page.as_ref()?;
        let n = p.rows * p.cols;
        if p.first + n > self.doc_len {
            return None;
        }
        let qs: Vec<usize> = match q {
            Some(q) if q < self.matches.len() => vec![q],
            Some(_) => return None,
            None => (0..self.matches.len()).collect(),
        };
        let mut map = vec![0f32; n];
        for q in qs {
            let row = &self.similarity[q * self.doc_len + p.first..][..n];
            for (m, v) in map.iter_mut().zip(row) {
                *m += v;
            }
        }
        Some(map)
    }

    /// Writes the page's heat maps into `dir` as PNGs of the page's size: one
    /// per query token (`{prefix}-q{i}.png`) and one summed over the query
    /// (`{prefix}-sum.png`). Returns the files written; nothing for a document
    /// that is not a page.
    pub fn write_heat_maps(&self, dir: &Path, prefix: &str) -> Result<Vec<std::path::PathBuf>> {
        let Some(p) = &self.page else {
            return Ok(Vec::new());
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let page = crate::pages::load_record_image(p)?;
        let mut written = Vec::new();
        let mut one = |map: Vec<f32>, name: String| -> Result<()> {
            let img = crate::pages::heat_map(&page, &map, p.rows, p.cols)?;
            let path = dir.join(name);
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .map_err(|e| Error::Input(format!("encoding {}: {e}", path.display())))?;
            crate::io::output::write_file(&path, &[], &png)?;
            written.push(path);
            Ok(())
        };
        if let Some(map) = self.patch_map(None) {
            one(map, format!("{prefix}-sum.png"))?;
        }
        for q in 0..self.matches.len() {
            if let Some(map) = self.patch_map(Some(q)) {
                one(map, format!("{prefix}-q{q}.png"))?;
            }
        }
        Ok(written)
    }
}

impl Index {
    /// Explains `hits` (from a search of this index) for the query text:
    /// see [`Index::explain_vectors`]. Runs on the model's device.
    pub fn explain(&self, model: &Model, query: &str, hits: &[Hit]) -> Result<Vec<Explanation>> {
        self.check_model(model)?;
        let q = model.encode_queries(&[query])?;
        self.explain_vectors(&q[0].vectors, hits, Some(model.compute()))
    }

    /// For each of `hits`, from the exact (decompressed) vectors of that
    /// document only: every query-token × document-token similarity (on
    /// `compute`, else the device the index searches on), each query token's
    /// best document vector and its contribution.
    pub fn explain_vectors(
        &self,
        query: &[f32],
        hits: &[Hit],
        compute: Option<&Compute>,
    ) -> Result<Vec<Explanation>> {
        let dim = self.dim();
        if query.is_empty() || !query.len().is_multiple_of(dim) {
            return Err(Error::Input(format!(
                "the query's {} values are not a non-empty whole number of {dim}-d vectors",
                query.len()
            )));
        }
        let docs = hits
            .iter()
            .map(|h| self.doc_index(&h.id))
            .collect::<Result<Vec<u32>>>()?;
        let compute = match compute {
            Some(c) => c.clone(),
            None => self.searcher(None)?.compute().clone(),
        };
        let (vectors, offsets) = self.inner.decompress_docs(&compute, &docs)?;
        let qlen = query.len() / dim;
        // Pooled vectors no longer map to patches: no patch grid then.
        let pages = self
            .metadata()
            .pages
            .as_ref()
            .filter(|_| self.metadata().pooling.is_none_or(|p| p.factor <= 1));
        let mut out = Vec::with_capacity(docs.len());
        for (i, &doc) in docs.iter().enumerate() {
            let d = &vectors[offsets[i] * dim..offsets[i + 1] * dim];
            let n = d.len() / dim;
            let sim = crate::backend::ops::similarity(&compute, query, d, dim)?;
            let page = pages.and_then(|p| p.get(doc as usize)).cloned();
            let mut matches = Vec::with_capacity(qlen);
            let mut score = 0f32;
            for q in 0..qlen {
                let row = &sim[q * n..(q + 1) * n];
                // MaxSim's rule: the maximum over the document's vectors,
                // non-finite maxima skipped; ties to the earlier vector.
                let mut best: Option<(usize, f32)> = None;
                for (j, &v) in row.iter().enumerate() {
                    if best.is_none_or(|(_, b)| v > b) {
                        best = Some((j, v));
                    }
                }
                if let Some((j, v)) = best {
                    if v.is_finite() {
                        score += v;
                    }
                    let patch = page.as_ref().and_then(|p| {
                        (p.first..p.first + p.rows * p.cols)
                            .contains(&j)
                            .then(|| ((j - p.first) / p.cols, (j - p.first) % p.cols))
                    });
                    matches.push(TokenMatch {
                        query_token: q,
                        doc_token: j,
                        score: v,
                        patch,
                    });
                }
            }
            out.push(Explanation {
                id: self.doc_ids()[doc as usize].clone(),
                score,
                matches,
                doc_len: n,
                page,
                similarity: sim,
            });
        }
        Ok(out)
    }
}

/// The one writer of an index: adds, updates and deletes documents (each an
/// atomic commit: killed at any instant, the index reopens as before or after
/// it), sets metadata, compacts. Holds the index's lock until dropped; readers
/// ([`Index::open`]) keep the snapshot they opened.
pub struct IndexWriter {
    inner: store::live::Writer,
    model: ModelInfo,
}

impl std::fmt::Debug for IndexWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl IndexWriter {
    /// Opens the index at `path` for writing, waiting up to `wait` for
    /// another writer to finish (zero: fail at once with [`Error::Locked`]).
    pub fn open(path: impl AsRef<Path>, wait: std::time::Duration) -> Result<Self> {
        let path = path.as_ref();
        let inner = store::live::Writer::open(path, wait, Compute::Cpu)?;
        let model = store::read_metadata(path)?.model;
        Ok(Self { inner, model })
    }

    pub fn generation(&self) -> u64 {
        self.inner.generation()
    }
    /// Live documents.
    pub fn num_docs(&self) -> usize {
        self.inner.num_docs()
    }
    pub fn contains(&self, id: &str) -> bool {
        self.inner.contains(id)
    }
    pub fn path(&self) -> &Path {
        self.inner.dir()
    }
    /// Outlier vectors buffered, not yet clustered into new centroids.
    pub fn pending_outliers(&self) -> usize {
        self.inner.manifest().num_outliers
    }

    fn check_model(&self, model: &Model) -> Result<()> {
        if self.model.fingerprint == UNKNOWN_MODEL {
            if model.dim != self.inner.dim() {
                return Err(Error::Input(format!(
                    "index {} holds {}-d vectors but model {} makes {}-d vectors",
                    self.path().display(),
                    self.inner.dim(),
                    model.info.name,
                    model.dim
                )));
            }
            return Ok(());
        }
        if self.model.fingerprint != model.info.fingerprint {
            return Err(Error::Input(format!(
                "index {} was built with model '{}' ({}), not with '{}' ({}): add with the \
                 indexing model",
                self.path().display(),
                self.model.name,
                self.model.fingerprint,
                model.info.name,
                model.info.fingerprint
            )));
        }
        Ok(())
    }

    /// Encodes `docs` with `model` (the index's model) and adds them, with
    /// `metadata[i]` (if given, one per document) as document `i`'s metadata.
    /// `update`: replace existing documents with these ids instead.
    pub fn add_texts(
        &mut self,
        model: &Model,
        docs: &[Document],
        metadata: Option<&[Option<serde_json::Value>]>,
        update: bool,
    ) -> Result<AddSummary> {
        self.check_model(model)?;
        if let Some(m) = metadata {
            if m.len() != docs.len() {
                return Err(Error::Input(format!(
                    "{} metadata entries for {} documents",
                    m.len(),
                    docs.len()
                )));
            }
        }
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        let encoded = model.encode_documents(&texts)?;
        let new: Vec<NewDoc> = docs
            .iter()
            .zip(encoded)
            .enumerate()
            .map(|(i, (d, e))| NewDoc {
                id: d.id.clone(),
                vectors: e.vectors,
                metadata: metadata.and_then(|m| m[i].clone()),
            })
            .collect();
        self.inner.add(&new, update)
    }

    /// Adds documents given as token vectors (unit rows, the index's dimension).
    pub fn add_vectors(&mut self, docs: &[NewDoc], update: bool) -> Result<AddSummary> {
        self.inner.add(docs, update)
    }

    /// Deletes documents by id (all must exist); returns the new generation.
    pub fn delete(&mut self, ids: &[&str]) -> Result<u64> {
        self.inner.delete(ids)
    }

    /// Sets (replaces) the metadata of existing documents.
    pub fn set_metadata(&mut self, items: &[(&str, serde_json::Value)]) -> Result<()> {
        self.inner.set_metadata(items)
    }

    /// The outlier distance and the buffer size that triggers clustering.
    pub fn set_outlier_policy(&mut self, distance: f32, cluster_at: usize) -> Result<()> {
        self.inner.set_outlier_policy(distance, cluster_at)
    }

    /// Rewrites the index without deleted documents (atomic swap, like a
    /// build); returns the documents kept. Consumes the writer (and its lock).
    pub fn compact(self) -> Result<usize> {
        self.inner.compact()
    }
}

/// The model identity to record for an index built from `vectors`.
fn vectors_model(vectors: &VectorSet, model: Option<&Model>) -> Result<ModelInfo> {
    if let Some(m) = model {
        if m.dim != vectors.dim {
            return Err(Error::Input(format!(
                "the vectors are {}-d but model {} makes {}-d vectors",
                vectors.dim, m.info.name, m.dim
            )));
        }
        if let Some(fp) = &vectors.model_fingerprint {
            if *fp != m.info.fingerprint {
                return Err(Error::Input(format!(
                    "the vectors were encoded with model {} ({fp}), not with {} ({})",
                    vectors
                        .model_path
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "?".into()),
                    m.info.name,
                    m.info.fingerprint
                )));
            }
        }
        return Ok(m.info.clone());
    }
    Ok(match (&vectors.model_fingerprint, &vectors.model_path) {
        (Some(fp), path) => ModelInfo {
            name: path
                .as_deref()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "unnamed".into()),
            fingerprint: fp.clone(),
            dim: vectors.dim,
            path: path.clone(),
        },
        (None, _) => ModelInfo {
            name: UNKNOWN_MODEL.into(),
            fingerprint: UNKNOWN_MODEL.into(),
            dim: vectors.dim,
            path: None,
        },
    })
}

/// The metadata `colwgpu encode` records with vectors of `model`, so an index
/// built from them later knows its model.
pub fn vector_metadata(model: &Model, kind: &str) -> Vec<(&'static str, String)> {
    let mut m = vec![
        ("kind", kind.to_string()),
        ("model", model.info.name.clone()),
        ("model_fingerprint", model.info.fingerprint.clone()),
    ];
    if let Some(p) = &model.info.path {
        m.push(("model_path", p.display().to_string()));
    }
    m
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Model>();
    is::<Index>();
}

/// What `colwgpu info` reports about the machine: every adapter wgpu sees, the
/// backend `device` resolves to, and its limits.
pub fn describe_devices(device: Device, gpu: &GpuOptions) -> Result<Vec<String>> {
    let adapters = crate::gpu::list_adapters(gpu)?;
    let mut lines = Vec::new();
    if adapters.is_empty() {
        lines.push(
            "adapters: none (install a Vulkan driver, e.g. `apt-get install mesa-vulkan-drivers`)"
                .to_string(),
        );
    }
    for a in &adapters {
        lines.push(format!(
            "adapter: {} ({:?}, {:?}, driver {} {})",
            a.name, a.backend, a.device_type, a.driver, a.driver_info
        ));
    }
    match Compute::new(device, gpu) {
        Ok(Compute::Gpu(ctx)) => {
            let l = &ctx.limits;
            lines.push(format!("selected: gpu on {}", ctx.describe()));
            lines.push(format!(
                "limits: max_storage_buffer_binding_size {} MiB, max_buffer_size {} MiB, \
                 max_compute_workgroups_per_dimension {}, max_compute_workgroup_storage_size {} KiB, \
                 max_compute_invocations_per_workgroup {}",
                l.max_storage_buffer_binding_size >> 20,
                l.max_buffer_size >> 20,
                l.max_compute_workgroups_per_dimension,
                l.max_compute_workgroup_storage_size >> 10,
                l.max_compute_invocations_per_workgroup
            ));
            lines.push(format!(
                "shader-f16: {}",
                if ctx.supports_f16() {
                    "yes (--precision f16 available)"
                } else {
                    "no (--precision f16 refused on this adapter)"
                }
            ));
        }
        Ok(Compute::Cpu) => lines.push(format!(
            "selected: cpu (native; {} threads; f32 linears on {}; --precision bf16 {}){}",
            rayon::current_num_threads(),
            crate::backend::cpu::CpuBackend::new().f32_linear_kernel(),
            match crate::backend::bf16::kernel_name() {
                "none" => "refused (no AVX512-BF16 or AMX-BF16)".to_string(),
                kernel => format!("on {kernel}"),
            },
            if adapters.iter().any(|a| !crate::gpu::is_software(a)) {
                ""
            } else {
                " — no hardware GPU adapter, so `auto` uses the native CPU backend"
            }
        )),
        Err(e) => lines.push(format!("selected: none: {e}")),
    }
    Ok(lines)
}

/// What `colwgpu info --model DIR` reports about a checkpoint (no weights are
/// uploaded anywhere).
pub fn describe_model(dir: &Path) -> Result<Vec<String>> {
    use crate::model::{Checkpoint, HeadLayout};
    if crate::model::is_page_model(dir) {
        let adapter = crate::model::lora::LoraAdapter::is_adapter(dir);
        let config_dir = crate::model::page_config_dir(dir, None)?;
        let on_base = if adapter {
            format!(", LoRA adapter on {}", config_dir.display())
        } else {
            String::new()
        };
        if crate::model::colpali::is_colpali_dir(&config_dir) {
            let path = config_dir.join("config.json");
            let c = crate::model::paligemma::PaliGemmaConfig::load(&path)?;
            let layout = std::fs::read_to_string(&path)
                .map(|t| t.contains("\"vlm_config\""))
                .unwrap_or(false);
            let (v, t) = (&c.vision, &c.text);
            return Ok(vec![
                format!(
                    "model: {} — ColPali (PaliGemma: SigLIP + Gemma), {} layout{on_base}",
                    dir.display(),
                    if layout {
                        "transformers ColPaliForRetrieval"
                    } else {
                        "colpali-engine"
                    }
                ),
                format!(
                    "vision: SigLIP, {} layers, width {}, {} heads, mlp {}, {}×{} input in {}×{} patches → {} image tokens, projector → {}",
                    v.num_hidden_layers,
                    v.hidden_size,
                    v.num_attention_heads,
                    v.intermediate_size,
                    v.image_size,
                    v.image_size,
                    v.patch_size,
                    v.patch_size,
                    v.num_patches(),
                    c.projection_dim
                ),
                format!(
                    "language model: Gemma, {} layers, hidden {}, {} query / {} key-value heads of {}, ffn {} (GeGLU), vocab {}, RoPE θ {}",
                    t.num_hidden_layers,
                    t.hidden_size,
                    t.num_attention_heads,
                    t.num_key_value_heads,
                    t.head_dim,
                    t.intermediate_size,
                    t.vocab_size,
                    t.rope_theta
                ),
                "documents: page images (encode/index --images); queries: text".into(),
            ]);
        }
        let c = crate::model::qwen2_vl::Qwen2VlConfig::load(&config_dir.join("config.json"))?;
        return Ok(vec![
            format!(
                "model: {} — ColQwen2 (Qwen2-VL){on_base}",
                dir.display(),
            ),
            format!(
                "vision: {} blocks, width {}, {} heads, patch {}×{} (temporal {}), {}×{} merge → {}",
                c.vision.depth,
                c.vision.embed_dim,
                c.vision.num_heads,
                c.vision.patch_size,
                c.vision.patch_size,
                c.vision.temporal_patch_size,
                c.vision.spatial_merge_size,
                c.vision.spatial_merge_size,
                c.vision.out_hidden
            ),
            format!(
                "language model: {} layers, hidden {}, {} query / {} key-value heads, ffn {}, vocab {}, M-RoPE sections {:?}",
                c.text.num_hidden_layers,
                c.text.hidden_size,
                c.text.num_attention_heads,
                c.text.num_key_value_heads,
                c.text.intermediate_size,
                c.text.vocab_size,
                c.text.mrope_section
            ),
            "documents: page images (encode/index --images); queries: text".into(),
        ]);
    }
    let ckpt = Checkpoint::load(dir)?;
    let c = &ckpt.config;
    let t = &ckpt.tokenizer.tokens;
    let info = ModelInfo::from_dir(dir, ckpt.dim())?;
    Ok(vec![
        format!(
            "model: {} — BERT, {} layers, hidden {}, {} heads, ffn {}, vocab {}; fingerprint {}",
            dir.display(),
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.intermediate_size,
            c.vocab_size,
            info.fingerprint
        ),
        format!(
            "head: {}",
            match ckpt.head {
                HeadLayout::PyLate => format!(
                    "ColBERT projection {}→{} (PyLate layout, 1_Dense)",
                    c.hidden_size,
                    ckpt.dim()
                ),
                HeadLayout::Stanford => format!(
                    "ColBERT projection {}→{} (stanford layout, linear.weight)",
                    c.hidden_size,
                    ckpt.dim()
                ),
                HeadLayout::None => format!(
                    "none: plain BERT, token vectors are the L2-normalised hidden states (dim {})",
                    c.hidden_size
                ),
            }
        ),
        format!(
            "colbert: query length {} ([MASK] expansion {}, attended {}), document length {}, \
             markers {} / {}, skiplist {} ids",
            t.query_length,
            if t.query_expansion { "on" } else { "off" },
            if t.attend_to_expansion_tokens {
                "all"
            } else {
                "real tokens only"
            },
            t.document_length,
            t.query_marker,
            t.document_marker,
            t.skiplist.len()
        ),
    ])
}
