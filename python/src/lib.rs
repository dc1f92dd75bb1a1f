//! The Python extension module `colwgpu._colwgpu`: a thin layer over the
//! crate's front door (`colwgpu::api`). The friendly Python API (`colwgpu.ColBERT`,
//! `colwgpu.Index`, flexible inputs, single-vs-batch results) lives in
//! `python/colwgpu/__init__.py`; this layer takes strict inputs — lists of
//! `str`, or lists of C-contiguous 2-D `float32` arrays — and returns numpy
//! arrays and plain tuples.
//!
//! Every call that encodes, builds or searches releases the GIL, so Python
//! threads run searches on one index at once. Input arrays are read in place
//! (no copy) while the GIL is released: callers must not write to an array
//! while a call that received it is running.

use std::path::PathBuf;
use std::sync::Arc;

use colwgpu::api::{NewDoc, PlaidParams, VectorSet};
use colwgpu::{
    Device, Document, Error, Filter, Hit, Index, IndexOptions, IndexWriter, Model, ModelOptions,
};
use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _colwgpu,
    ColwgpuError,
    PyException,
    "An error from colwgpu; the message is the one the command-line tool prints."
);
create_exception!(
    _colwgpu,
    IndexLockedError,
    ColwgpuError,
    "Another process is writing the index."
);

fn to_py(e: Error) -> PyErr {
    match e {
        Error::Locked { .. } => IndexLockedError::new_err(e.to_string()),
        other => ColwgpuError::new_err(other.to_string()),
    }
}

fn parse_device(device: &str) -> PyResult<Device> {
    device.parse::<Device>().map_err(to_py)
}

/// Token vectors as a `(tokens, dim)` float32 array, moving the buffer (no copy).
fn array<'py>(
    py: Python<'py>,
    vectors: Vec<f32>,
    dim: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let rows = vectors.len().checked_div(dim).unwrap_or(0);
    let a = Array2::from_shape_vec((rows, dim), vectors)
        .map_err(|e| ColwgpuError::new_err(format!("internal shape error: {e}")))?;
    Ok(a.into_pyarray(py))
}

/// Borrowed views of the arrays (C-contiguous float32, checked by the caller's
/// Python layer; checked again here).
fn slices<'a>(arrays: &'a [PyReadonlyArray2<'_, f32>], what: &str) -> PyResult<Vec<&'a [f32]>> {
    arrays
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.as_slice().map_err(|_| {
                ColwgpuError::new_err(format!(
                    "invalid input: {what} {i} is not a C-contiguous float32 array"
                ))
            })
        })
        .collect()
}

/// `ids` and documents come in equal numbers.
fn check_count(ids: usize, docs: usize) -> PyResult<()> {
    if ids != docs {
        return Err(to_py(Error::Input(format!(
            "{ids} ids for {docs} documents"
        ))));
    }
    Ok(())
}

/// Every array holds `dim`-d vectors (the index's dimension).
fn check_dims(arrays: &[PyReadonlyArray2<'_, f32>], dim: usize, what: &str) -> PyResult<()> {
    for (i, a) in arrays.iter().enumerate() {
        if a.shape()[1] != dim {
            return Err(to_py(Error::Input(format!(
                "{what} {i} has {}-d vectors but the index holds {dim}-d vectors",
                a.shape()[1]
            ))));
        }
    }
    Ok(())
}

/// A late-interaction model (ColBERT text model or a page-image model),
/// loaded once on one device.
#[pyclass(name = "_Model", module = "colwgpu._colwgpu", frozen)]
struct PyModel {
    inner: Arc<Model>,
    path: PathBuf,
}

#[pymethods]
impl PyModel {
    #[new]
    #[pyo3(signature = (path, device = "auto", batch_size = 32, base = None, precision = "f32"))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        device: &str,
        batch_size: usize,
        base: Option<PathBuf>,
        precision: &str,
    ) -> PyResult<Self> {
        let options = ModelOptions {
            device: parse_device(device)?,
            batch_size,
            base,
            precision: precision.parse().map_err(to_py)?,
            ..ModelOptions::default()
        };
        let p = path.clone();
        let model = py
            .detach(|| Model::open_with(&p, &options))
            .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(model),
            path,
        })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    #[getter]
    fn takes_images(&self) -> bool {
        self.inner.takes_images()
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// One `(tokens, dim)` array per text.
    fn encode_texts<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        is_query: bool,
    ) -> PyResult<Vec<Bound<'py, PyArray2<f32>>>> {
        let model = self.inner.clone();
        let encoded = py
            .detach(|| {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                if is_query {
                    model.encode_queries(&refs)
                } else {
                    model.encode_documents(&refs)
                }
            })
            .map_err(to_py)?;
        let dim = self.inner.dim();
        encoded
            .into_iter()
            .map(|t| array(py, t.vectors, dim))
            .collect()
    }

    /// One `(patches, dim)` array per page image file.
    fn encode_images<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<PathBuf>,
    ) -> PyResult<Vec<Bound<'py, PyArray2<f32>>>> {
        let model = self.inner.clone();
        let encoded = py
            .detach(|| {
                let refs: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
                model.encode_images(&refs)
            })
            .map_err(to_py)?;
        let dim = self.inner.dim();
        encoded
            .into_iter()
            .map(|t| array(py, t.vectors, dim))
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "colwgpu.Model('{}': {})",
            self.path.display(),
            self.inner.describe()
        )
    }
}

fn index_options(
    nbits: usize,
    num_centroids: Option<usize>,
    seed: u64,
    wait: bool,
    codec_from: Option<PathBuf>,
) -> IndexOptions {
    IndexOptions {
        nbits,
        num_centroids,
        seed,
        wait_for_lock: wait,
        codec_from,
        ..IndexOptions::default()
    }
}

fn hits_to_py(hits: Vec<Vec<Hit>>) -> Vec<Vec<(String, f32)>> {
    hits.into_iter()
        .map(|h| h.into_iter().map(|h| (h.id, h.score)).collect())
        .collect()
}

/// A compressed index on disk, opened for search.
#[pyclass(name = "_Index", module = "colwgpu._colwgpu", frozen)]
struct PyIndex {
    inner: Arc<Index>,
}

#[pymethods]
impl PyIndex {
    #[staticmethod]
    #[pyo3(signature = (path, device = "auto"))]
    fn open(py: Python<'_>, path: PathBuf, device: &str) -> PyResult<Self> {
        let device = parse_device(device)?;
        let index = py
            .detach(|| match device {
                Device::Auto => Index::open(&path),
                d => Index::open_on(&path, d, &Default::default()),
            })
            .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(index),
        })
    }

    /// Encodes `texts` with `model` and builds their index at `path`.
    #[staticmethod]
    #[pyo3(signature = (path, model, texts, ids, nbits = 2, num_centroids = None, seed = 12345, wait = false, codec_from = None))]
    #[allow(clippy::too_many_arguments)]
    fn build_texts(
        py: Python<'_>,
        path: PathBuf,
        model: &PyModel,
        texts: Vec<String>,
        ids: Vec<String>,
        nbits: usize,
        num_centroids: Option<usize>,
        seed: u64,
        wait: bool,
        codec_from: Option<PathBuf>,
    ) -> PyResult<Self> {
        check_count(ids.len(), texts.len())?;
        let docs: Vec<Document> = ids
            .into_iter()
            .zip(texts)
            .map(|(id, text)| Document::new(id, text))
            .collect();
        let options = index_options(nbits, num_centroids, seed, wait, codec_from);
        let m = model.inner.clone();
        let index = py
            .detach(|| m.index(&docs, &path, &options))
            .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(index),
        })
    }

    /// Encodes the page images `paths` with `model` and builds their index.
    #[staticmethod]
    #[pyo3(signature = (path, model, images, ids, nbits = 2, num_centroids = None, seed = 12345, wait = false, codec_from = None))]
    #[allow(clippy::too_many_arguments)]
    fn build_images(
        py: Python<'_>,
        path: PathBuf,
        model: &PyModel,
        images: Vec<PathBuf>,
        ids: Vec<String>,
        nbits: usize,
        num_centroids: Option<usize>,
        seed: u64,
        wait: bool,
        codec_from: Option<PathBuf>,
    ) -> PyResult<Self> {
        let options = index_options(nbits, num_centroids, seed, wait, codec_from);
        let m = model.inner.clone();
        let index = py
            .detach(|| {
                let refs: Vec<&std::path::Path> = images.iter().map(PathBuf::as_path).collect();
                m.index_images(&refs, ids, &path, &options)
            })
            .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(index),
        })
    }

    /// Builds an index from precomputed token vectors: one `(tokens, dim)`
    /// float32 array per document. `model` (optional) is recorded as the
    /// index's model.
    #[staticmethod]
    #[pyo3(signature = (path, vectors, ids, model = None, nbits = 2, num_centroids = None, seed = 12345, wait = false, device = "auto", codec_from = None))]
    #[allow(clippy::too_many_arguments)]
    fn build_vectors(
        py: Python<'_>,
        path: PathBuf,
        vectors: Vec<PyReadonlyArray2<'_, f32>>,
        ids: Vec<String>,
        model: Option<&PyModel>,
        nbits: usize,
        num_centroids: Option<usize>,
        seed: u64,
        wait: bool,
        device: &str,
        codec_from: Option<PathBuf>,
    ) -> PyResult<Self> {
        let device = parse_device(device)?;
        if vectors.is_empty() {
            return Err(to_py(Error::Input("no documents to index".into())));
        }
        check_count(ids.len(), vectors.len())?;
        let dim = vectors[0].shape()[1];
        for (i, v) in vectors.iter().enumerate() {
            if v.shape()[1] != dim {
                return Err(to_py(Error::Input(format!(
                    "document {i} has {}-d vectors, document 0 has {dim}-d",
                    v.shape()[1]
                ))));
            }
        }
        let views = slices(&vectors, "document")?;
        let options = index_options(nbits, num_centroids, seed, wait, codec_from);
        let m = model.map(|m| m.inner.clone());
        let index = py
            .detach(|| {
                let set = VectorSet::from_blocks(Some(ids), dim, &views)?;
                Index::build_from_vectors(&path, &set, m.as_deref(), &options, device)
            })
            .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(index),
        })
    }

    #[getter]
    fn num_docs(&self) -> usize {
        self.inner.num_docs()
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path().to_path_buf()
    }

    #[getter]
    fn ids(&self) -> Vec<String> {
        self.inner.doc_ids().to_vec()
    }

    #[getter]
    fn model_dir(&self) -> Option<PathBuf> {
        self.inner.model_dir().map(PathBuf::from)
    }

    /// Opens the model the index was built with.
    #[pyo3(signature = (device = "auto"))]
    fn open_model(&self, py: Python<'_>, device: &str) -> PyResult<PyModel> {
        let device = parse_device(device)?;
        let index = self.inner.clone();
        let model = py.detach(|| index.open_model(device)).map_err(to_py)?;
        let path = self
            .inner
            .model_dir()
            .map(PathBuf::from)
            .unwrap_or_default();
        Ok(PyModel {
            inner: Arc::new(model),
            path,
        })
    }

    /// Top-`k` `(id, score)` lists for each query text, encoded by `model`.
    #[pyo3(signature = (model, queries, k = 10, ncells = None, centroid_score_threshold = None, ndocs = None, exhaustive = false, filter_condition = None, filter_params = "[]"))]
    #[allow(clippy::too_many_arguments)]
    fn search_texts(
        &self,
        py: Python<'_>,
        model: &PyModel,
        queries: Vec<String>,
        k: usize,
        ncells: Option<usize>,
        centroid_score_threshold: Option<f32>,
        ndocs: Option<usize>,
        exhaustive: bool,
        filter_condition: Option<String>,
        filter_params: &str,
    ) -> PyResult<Vec<Vec<(String, f32)>>> {
        let options = search_options(k, ncells, centroid_score_threshold, ndocs, exhaustive);
        let filter = filter(filter_condition, filter_params)?;
        let index = self.inner.clone();
        let m = model.inner.clone();
        let hits = py
            .detach(|| {
                let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
                match &filter {
                    Some(f) => index.search_filtered(&m, &refs, &options, f),
                    None => index.search_batch(&m, &refs, &options),
                }
            })
            .map_err(to_py)?;
        Ok(hits_to_py(hits))
    }

    /// Top-`k` `(id, score)` lists for precomputed query vectors: one
    /// `(tokens, dim)` float32 array per query.
    #[pyo3(signature = (queries, k = 10, ncells = None, centroid_score_threshold = None, ndocs = None, exhaustive = false, filter_condition = None, filter_params = "[]"))]
    #[allow(clippy::too_many_arguments)]
    fn search_vectors(
        &self,
        py: Python<'_>,
        queries: Vec<PyReadonlyArray2<'_, f32>>,
        k: usize,
        ncells: Option<usize>,
        centroid_score_threshold: Option<f32>,
        ndocs: Option<usize>,
        exhaustive: bool,
        filter_condition: Option<String>,
        filter_params: &str,
    ) -> PyResult<Vec<Vec<(String, f32)>>> {
        let options = search_options(k, ncells, centroid_score_threshold, ndocs, exhaustive);
        let filter = filter(filter_condition, filter_params)?;
        let dim = self.inner.dim();
        check_dims(&queries, dim, "query")?;
        let views = slices(&queries, "query")?;
        let index = self.inner.clone();
        let hits = py
            .detach(|| match &filter {
                Some(f) => index.search_vectors_filtered(&views, &options, f),
                None => index.search_vectors(&views, &options),
            })
            .map_err(to_py)?;
        Ok(hits_to_py(hits))
    }

    /// PLAID over shards, round 1 (see `colwgpu::api::search_shards`): per
    /// query, this shard's best `ndocs` documents after the pruned centroid
    /// interaction, as `(document indices, scores)` arrays, best first.
    #[pyo3(signature = (queries, k = 10, ncells = None, centroid_score_threshold = None, ndocs = None))]
    #[allow(clippy::type_complexity)]
    fn shard_candidates<'py>(
        &self,
        py: Python<'py>,
        queries: Vec<PyReadonlyArray2<'_, f32>>,
        k: usize,
        ncells: Option<usize>,
        centroid_score_threshold: Option<f32>,
        ndocs: Option<usize>,
    ) -> PyResult<Vec<(Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<f32>>)>> {
        let params = search_options(k, ncells, centroid_score_threshold, ndocs, false).params();
        check_dims(&queries, self.inner.dim(), "query")?;
        let views = slices(&queries, "query")?;
        let index = self.inner.clone();
        let lists = py
            .detach(|| index.shard_candidates(&views, &params))
            .map_err(to_py)?;
        Ok(lists
            .into_iter()
            .map(|(d, x)| (d.into_pyarray(py), x.into_pyarray(py)))
            .collect())
    }

    /// PLAID over shards, round 1 under a metadata filter: per query, this
    /// shard's best `ndocs` allowed documents after the pruned interaction
    /// (arrays, best first) and its number of allowed candidates; the pool is
    /// every allowed document when `all_allowed`.
    #[pyo3(signature = (queries, k, ncells, centroid_score_threshold, ndocs, filter_condition, filter_params, all_allowed))]
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn shard_candidates_filtered<'py>(
        &self,
        py: Python<'py>,
        queries: Vec<PyReadonlyArray2<'_, f32>>,
        k: usize,
        ncells: Option<usize>,
        centroid_score_threshold: Option<f32>,
        ndocs: Option<usize>,
        filter_condition: String,
        filter_params: &str,
        all_allowed: bool,
    ) -> PyResult<Vec<(Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<f32>>, usize)>> {
        let params = search_options(k, ncells, centroid_score_threshold, ndocs, false).params();
        let filter = filter(Some(filter_condition), filter_params)?.ok_or_else(|| {
            ColwgpuError::new_err("invalid input: a filtered round needs a filter")
        })?;
        check_dims(&queries, self.inner.dim(), "query")?;
        let views = slices(&queries, "query")?;
        let index = self.inner.clone();
        let lists = py
            .detach(|| index.shard_candidates_filtered(&views, &params, &filter, all_allowed))
            .map_err(to_py)?;
        Ok(lists
            .into_iter()
            .map(|(d, x, n)| (d.into_pyarray(py), x.into_pyarray(py), n))
            .collect())
    }

    /// PLAID over shards, round 2: per query, the full centroid interaction
    /// with the documents `docs[q]` (a `uint32` array) of this shard.
    fn shard_full_scores<'py>(
        &self,
        py: Python<'py>,
        queries: Vec<PyReadonlyArray2<'_, f32>>,
        docs: Vec<PyReadonlyArray1<'_, u32>>,
    ) -> PyResult<Vec<Bound<'py, PyArray1<f32>>>> {
        check_dims(&queries, self.inner.dim(), "query")?;
        let views = slices(&queries, "query")?;
        let docs = doc_lists(&docs)?;
        let index = self.inner.clone();
        let scores = py
            .detach(|| index.shard_full_scores(&views, &docs))
            .map_err(to_py)?;
        Ok(scores.into_iter().map(|x| x.into_pyarray(py)).collect())
    }

    /// PLAID over shards, round 3: per query, exact MaxSim with the documents
    /// `docs[q]` of this shard, as `(document index, id, score)`.
    fn shard_exact_scores(
        &self,
        py: Python<'_>,
        queries: Vec<PyReadonlyArray2<'_, f32>>,
        docs: Vec<PyReadonlyArray1<'_, u32>>,
    ) -> PyResult<Vec<Vec<(u32, String, f32)>>> {
        check_dims(&queries, self.inner.dim(), "query")?;
        let views = slices(&queries, "query")?;
        let docs = doc_lists(&docs)?;
        let index = self.inner.clone();
        let hits = py
            .detach(|| index.shard_exact_scores(&views, &docs))
            .map_err(to_py)?;
        Ok(hits_with_docs(hits))
    }

    /// Exhaustive top-`k` of this shard per query (under a filter if one is
    /// given), as `(document index, id, score)` (the document index breaks ties when shards' lists merge).
    #[pyo3(signature = (queries, k, filter_condition = None, filter_params = "[]"))]
    fn shard_exhaustive(
        &self,
        py: Python<'_>,
        queries: Vec<PyReadonlyArray2<'_, f32>>,
        k: usize,
        filter_condition: Option<String>,
        filter_params: &str,
    ) -> PyResult<Vec<Vec<(u32, String, f32)>>> {
        let options = search_options(k, None, None, None, true);
        let filter = filter(filter_condition, filter_params)?;
        check_dims(&queries, self.inner.dim(), "query")?;
        let views = slices(&queries, "query")?;
        let index = self.inner.clone();
        let hits = py
            .detach(|| match &filter {
                Some(f) => index.search_vectors_filtered(&views, &options, f),
                None => index.search_vectors(&views, &options),
            })
            .map_err(to_py)?;
        Ok(hits_with_docs(hits))
    }

    /// Exact MaxSim of one query (a `(tokens, dim)` array) against the
    /// documents `ids` of this index, best first.
    fn rerank_vectors(
        &self,
        py: Python<'_>,
        query: PyReadonlyArray2<'_, f32>,
        ids: Vec<String>,
    ) -> PyResult<Vec<(String, f32)>> {
        if query.shape()[1] != self.inner.dim() {
            return Err(to_py(Error::Input(format!(
                "the query has {}-d vectors but the index holds {}-d vectors",
                query.shape()[1],
                self.inner.dim()
            ))));
        }
        let q = query.as_slice().map_err(|_| {
            ColwgpuError::new_err("invalid input: the query is not a C-contiguous float32 array")
        })?;
        let index = self.inner.clone();
        let hits = py
            .detach(|| {
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                index.rerank_vectors(q, &refs, None)
            })
            .map_err(to_py)?;
        Ok(hits.into_iter().map(|h| (h.id, h.score)).collect())
    }

    /// Adds (or, with `update`, replaces) documents given as texts, encoded by
    /// `model`, with optional metadata (one JSON text per document). One
    /// atomic commit; returns the new generation.
    #[pyo3(signature = (model, texts, ids, metadata = None, update = false, wait = false))]
    #[allow(clippy::too_many_arguments)]
    fn add_texts(
        &self,
        py: Python<'_>,
        model: &PyModel,
        texts: Vec<String>,
        ids: Vec<String>,
        metadata: Option<Vec<String>>,
        update: bool,
        wait: bool,
    ) -> PyResult<u64> {
        check_count(ids.len(), texts.len())?;
        let metadata = metadata_list(metadata, ids.len())?;
        let docs: Vec<Document> = ids
            .into_iter()
            .zip(texts)
            .map(|(id, text)| Document::new(id, text))
            .collect();
        let path = self.inner.path().to_path_buf();
        let m = model.inner.clone();
        py.detach(|| {
            let mut w = IndexWriter::open(&path, wait_for(wait))?;
            w.add_texts(&m, &docs, metadata.as_deref(), update)
                .map(|s| s.generation)
        })
        .map_err(to_py)
    }

    /// Adds (or updates) documents given as `(tokens, dim)` float32 arrays.
    #[pyo3(signature = (vectors, ids, metadata = None, update = false, wait = false))]
    fn add_vectors(
        &self,
        py: Python<'_>,
        vectors: Vec<PyReadonlyArray2<'_, f32>>,
        ids: Vec<String>,
        metadata: Option<Vec<String>>,
        update: bool,
        wait: bool,
    ) -> PyResult<u64> {
        check_count(ids.len(), vectors.len())?;
        let dim = self.inner.dim();
        check_dims(&vectors, dim, "document")?;
        let metadata = metadata_list(metadata, ids.len())?.unwrap_or_else(|| vec![None; ids.len()]);
        let views = slices(&vectors, "document")?;
        let docs: Vec<NewDoc> = ids
            .into_iter()
            .zip(views)
            .zip(metadata)
            .map(|((id, v), metadata)| NewDoc {
                id,
                vectors: v.to_vec(),
                metadata,
            })
            .collect();
        let path = self.inner.path().to_path_buf();
        py.detach(|| {
            let mut w = IndexWriter::open(&path, wait_for(wait))?;
            w.add_vectors(&docs, update).map(|s| s.generation)
        })
        .map_err(to_py)
    }

    /// Deletes documents by id (all must exist); returns the new generation.
    #[pyo3(signature = (ids, wait = false))]
    fn delete(&self, py: Python<'_>, ids: Vec<String>, wait: bool) -> PyResult<u64> {
        let path = self.inner.path().to_path_buf();
        py.detach(|| {
            let mut w = IndexWriter::open(&path, wait_for(wait))?;
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            w.delete(&refs)
        })
        .map_err(to_py)
    }

    /// Sets (replaces) the metadata of existing documents: one JSON object text per id.
    #[pyo3(signature = (ids, metadata, wait = false))]
    fn set_metadata(
        &self,
        py: Python<'_>,
        ids: Vec<String>,
        metadata: Vec<String>,
        wait: bool,
    ) -> PyResult<()> {
        if ids.len() != metadata.len() {
            return Err(to_py(Error::Input(format!(
                "{} metadata entries for {} documents",
                metadata.len(),
                ids.len()
            ))));
        }
        let values = metadata
            .iter()
            .enumerate()
            .map(|(i, t)| json(t, &format!("metadata {i}")))
            .collect::<PyResult<Vec<_>>>()?;
        let path = self.inner.path().to_path_buf();
        py.detach(|| {
            let mut w = IndexWriter::open(&path, wait_for(wait))?;
            let items: Vec<(&str, serde_json::Value)> =
                ids.iter().map(String::as_str).zip(values).collect();
            w.set_metadata(&items)
        })
        .map_err(to_py)
    }

    /// The metadata of documents `ids` as JSON texts (`None` where a document has none).
    fn metadata(&self, py: Python<'_>, ids: Vec<String>) -> PyResult<Vec<Option<String>>> {
        let index = self.inner.clone();
        let values = py
            .detach(|| {
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                index.document_metadata(&refs)
            })
            .map_err(to_py)?;
        Ok(values
            .into_iter()
            .map(|v| v.map(|v| v.to_string()))
            .collect())
    }

    fn __repr__(&self) -> String {
        format!(
            "colwgpu.Index('{}': {} documents, dim {})",
            self.inner.path().display(),
            self.inner.num_docs(),
            self.inner.dim()
        )
    }
}

/// A JSON text from the Python layer (`json.dumps`), parsed.
fn json(text: &str, what: &str) -> PyResult<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|e| to_py(Error::Input(format!("{what} is not valid JSON: {e}"))))
}

/// Per-document metadata (`None`, or one JSON text per document, `"null"` for none).
fn metadata_list(
    metadata: Option<Vec<String>>,
    n: usize,
) -> PyResult<Option<Vec<Option<serde_json::Value>>>> {
    let Some(m) = metadata else {
        return Ok(None);
    };
    if m.len() != n {
        return Err(to_py(Error::Input(format!(
            "{} metadata entries for {n} documents",
            m.len()
        ))));
    }
    m.iter()
        .enumerate()
        .map(|(i, t)| {
            let v = json(t, &format!("metadata {i}"))?;
            Ok((!v.is_null()).then_some(v))
        })
        .collect::<PyResult<Vec<_>>>()
        .map(Some)
}

fn filter(condition: Option<String>, params: &str) -> PyResult<Option<Filter>> {
    let Some(condition) = condition else {
        return Ok(None);
    };
    let params = match json(params, "filter parameters")? {
        serde_json::Value::Array(v) => v,
        _ => {
            return Err(to_py(Error::Input(
                "filter parameters must be a list".into(),
            )))
        }
    };
    Ok(Some(Filter::new(condition, params)))
}

fn wait_for(wait: bool) -> std::time::Duration {
    if wait {
        std::time::Duration::from_secs(600)
    } else {
        std::time::Duration::ZERO
    }
}

fn hits_with_docs(hits: Vec<Vec<Hit>>) -> Vec<Vec<(u32, String, f32)>> {
    hits.into_iter()
        .map(|q| q.into_iter().map(|h| (h.doc, h.id, h.score)).collect())
        .collect()
}

/// PLAID's knobs for `k` with any of them overridden:
/// `(ncells, centroid_score_threshold, ndocs)`.
#[pyfunction]
#[pyo3(signature = (k, ncells = None, centroid_score_threshold = None, ndocs = None))]
fn plaid_params(
    k: usize,
    ncells: Option<usize>,
    centroid_score_threshold: Option<f32>,
    ndocs: Option<usize>,
) -> PyResult<(usize, f32, usize)> {
    let p = search_options(k, ncells, centroid_score_threshold, ndocs, false).params();
    p.validate().map_err(to_py)?;
    Ok((p.ncells, p.centroid_score_threshold, p.ndocs))
}

/// Document index lists from `uint32` arrays.
fn doc_lists(docs: &[PyReadonlyArray1<'_, u32>]) -> PyResult<Vec<Vec<u32>>> {
    Ok(docs.iter().map(|d| d.as_array().to_vec()).collect())
}

/// Borrowed `(documents, scores)` views of each shard's arrays (equal lengths).
fn shard_lists<'a>(
    per_shard: &'a [(PyReadonlyArray1<'_, u32>, PyReadonlyArray1<'_, f32>)],
) -> PyResult<Vec<(&'a [u32], &'a [f32])>> {
    per_shard
        .iter()
        .enumerate()
        .map(|(s, (d, x))| {
            let (d, x) = (d.as_slice(), x.as_slice());
            match (d, x) {
                (Ok(d), Ok(x)) if d.len() == x.len() => Ok((d, x)),
                (Ok(d), Ok(x)) => Err(to_py(Error::Input(format!(
                    "shard {s}: {} documents but {} scores",
                    d.len(),
                    x.len()
                )))),
                _ => Err(to_py(Error::Input(format!(
                    "shard {s}: documents and scores must be contiguous uint32 and float32 arrays"
                )))),
            }
        })
        .collect()
}

/// The best `n` of several shards' `(document indices, scores)` arrays, as
/// `(shard, document index, score)`: score descending, ties to the lower
/// document index, then the lower shard (one index's order when documents
/// were dealt round-robin).
#[pyfunction]
fn merge_ranked(
    per_shard: Vec<(PyReadonlyArray1<'_, u32>, PyReadonlyArray1<'_, f32>)>,
    n: usize,
) -> PyResult<Vec<(usize, u32, f32)>> {
    Ok(colwgpu::api::merge_ranked(&shard_lists(&per_shard)?, n))
}

/// [`merge_ranked`]'s choice as one ascending `uint32` array of kept
/// documents per shard: what the next round asks each shard to score.
#[pyfunction]
fn merge_kept<'py>(
    py: Python<'py>,
    per_shard: Vec<(PyReadonlyArray1<'_, u32>, PyReadonlyArray1<'_, f32>)>,
    n: usize,
) -> PyResult<Vec<Bound<'py, PyArray1<u32>>>> {
    let ranked = colwgpu::api::merge_ranked(&shard_lists(&per_shard)?, n);
    Ok(colwgpu::api::kept_by_shard(&ranked, per_shard.len())
        .into_iter()
        .map(|d| d.into_pyarray(py))
        .collect())
}

fn search_options(
    k: usize,
    ncells: Option<usize>,
    threshold: Option<f32>,
    ndocs: Option<usize>,
    exhaustive: bool,
) -> colwgpu::SearchOptions {
    let mut options = colwgpu::SearchOptions::new(k);
    options.exhaustive = exhaustive;
    if ncells.is_some() || threshold.is_some() || ndocs.is_some() {
        let d = PlaidParams::for_k(k);
        options.plaid = Some(PlaidParams {
            ncells: ncells.unwrap_or(d.ncells),
            centroid_score_threshold: threshold.unwrap_or(d.centroid_score_threshold),
            ndocs: ndocs.unwrap_or(d.ndocs),
        });
    }
    options
}

#[pymodule]
fn _colwgpu(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyModel>()?;
    m.add_class::<PyIndex>()?;
    m.add_function(wrap_pyfunction!(plaid_params, m)?)?;
    m.add_function(wrap_pyfunction!(merge_ranked, m)?)?;
    m.add_function(wrap_pyfunction!(merge_kept, m)?)?;
    m.add("ColwgpuError", m.py().get_type::<ColwgpuError>())?;
    m.add("IndexLockedError", m.py().get_type::<IndexLockedError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
