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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::backend::Compute;
use crate::error::{Error, Result};
use crate::index as store;
use crate::model::{Encoder, PageEncoder};
use crate::search::{maxsim_scores, ScoreRequest, Searcher};

pub use crate::gpu::GpuOptions;
pub use crate::index::{
    BuildSummary, FileEntry, Metadata, ModelInfo, Progress, Settings, Stage, Stats,
};
pub use crate::io::{Record as Document, VectorSet};
pub use crate::model::{DeviceChoice as Device, TokenVectors};
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
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            device: Device::Auto,
            gpu: GpuOptions::default(),
            batch_size: 32,
            base: None,
        }
    }
}

/// What runs a model: a text ColBERT, or a page-image ColQwen2.
enum Inner {
    Text(Box<Encoder>),
    Pages(Box<PageEncoder>),
}

/// A late-interaction model loaded on one device: a text ColBERT (documents
/// are texts) or a ColQwen2 page-image model (documents are page images;
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

/// Token and truncation counts of texts, as the tokenizer sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub tokens: usize,
    /// Texts cut to the model's query or document length.
    pub truncated: usize,
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
            let mut e =
                PageEncoder::open(dir, options.base.as_deref(), options.device, &options.gpu)?;
            e.set_batch_size(options.batch_size);
            let (dim, compute) = (e.dim(), e.compute());
            (Inner::Pages(Box::new(e)), dim, compute)
        } else {
            let mut e = Encoder::open(dir, options.device, &options.gpu)?;
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

    /// Whether documents are page images (ColQwen2) rather than texts.
    pub fn takes_images(&self) -> bool {
        matches!(&*self.encoder(), Inner::Pages(_))
    }

    fn text_encoder<'a>(
        guard: &'a mut std::sync::MutexGuard<'_, Inner>,
        what: &str,
    ) -> Result<&'a mut Encoder> {
        match &mut **guard {
            Inner::Text(e) => Ok(e),
            Inner::Pages(_) => Err(Error::Input(format!(
                "{what}: this is a page-image model (ColQwen2): its documents are images"
            ))),
        }
    }

    /// One vector per query position (`[MASK]`-expanded to the query length).
    /// An empty or whitespace-only query is an error: it would rank documents
    /// arbitrarily.
    pub fn encode_queries(&self, texts: &[&str]) -> Result<Vec<TokenVectors>> {
        for (i, t) in texts.iter().enumerate() {
            crate::io::check_query_text(t, &format!("query {i} of the batch"))?;
        }
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

    /// One vector per image token of each page image (ColQwen2 models; PNG or
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
        let (tokens, truncated) = if queries {
            let q = t.queries(texts)?;
            (
                q.iter().map(|x| x.ids.len()).sum(),
                q.iter().filter(|x| x.truncated).count(),
            )
        } else {
            let d = t.documents(texts)?;
            (
                d.iter().map(|x| x.ids.len()).sum(),
                d.iter().filter(|x| x.truncated).count(),
            )
        };
        Ok(TokenCounts { tokens, truncated })
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
        let path = path.as_ref();
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
            &options.to_build(compute.clone())?,
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
        let dim = self.dim();
        for (i, q) in queries.iter().enumerate() {
            if q.is_empty() || !q.len().is_multiple_of(dim) {
                return Err(Error::Input(format!(
                    "query {i}: {} values is not a non-empty whole number of {dim}-d vectors",
                    q.len()
                )));
            }
        }
        let mut out = Vec::with_capacity(queries.len());
        let mut start = 0;
        while start < queries.len() {
            let len = queries[start].len();
            let mut end = start + 1;
            while end < queries.len() && queries[end].len() == len && end - start < 64 {
                end += 1;
            }
            let flat: Vec<f32> = queries[start..end].concat();
            out.extend(searcher.search(&flat, len / dim, options)?);
            start = end;
        }
        Ok(out)
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
        }
        Ok(Compute::Cpu) => lines.push(format!(
            "selected: cpu (native; {} threads){}",
            rayon::current_num_threads(),
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
        let config_dir = if dir.join("config.json").is_file() || !adapter {
            dir.to_path_buf()
        } else {
            crate::model::lora::LoraAdapter::load(dir)?.base_dir(None)?
        };
        let c = crate::model::qwen2_vl::Qwen2VlConfig::load(&config_dir.join("config.json"))?;
        return Ok(vec![
            format!(
                "model: {} — ColQwen2 (Qwen2-VL){}",
                dir.display(),
                if adapter {
                    format!(", LoRA adapter on {}", config_dir.display())
                } else {
                    String::new()
                }
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
