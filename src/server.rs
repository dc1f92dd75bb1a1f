//! `colwgpu serve`: a JSON HTTP API over the front door ([`crate::api`]),
//! with axum on tokio. The description is `docs/openapi.yaml` (served at
//! `/openapi.yaml`).
//!
//! * The model is loaded once and shared. Text queries from concurrent
//!   requests go through one bounded queue to a batching thread: it takes
//!   what arrives within `batch_wait` (default 2 ms, at most `max_batch`
//!   queries), encodes them in one forward batch, and searches them per
//!   index and options in one batch each. A full queue answers 503.
//! * Writes (add / update / delete / compact) go through the index's one
//!   [`crate::IndexWriter`], are answered only after their commit is durable,
//!   and then swap in a new snapshot for searches; searches in flight keep
//!   theirs. The writer (and with it the index's lock) is opened at the first
//!   write and kept while writes keep coming, then released after
//!   `writer_idle` without one, so another process (`colwgpu add`,
//!   `compact`) can write the index while the server only reads. Reopening
//!   the writer costs one read of the index (measured in the README), which
//!   is why it is not opened and closed around every write. The snapshot is
//!   refreshed after the server's own writes, and, while the server holds no
//!   writer, within `refresh` (default 1 s) of another process's commit: a
//!   housekeeping thread compares the index directory's and its manifest's
//!   identity on disk (a commit replaces one of them by rename) with the
//!   snapshot's, and reopens on a change. A reopen that fails keeps the old
//!   snapshot and is retried.
//! * Errors are `{"error": "..."}` with 400 (bad input), 404 (no such index
//!   or document), 409 (index locked by another writer), 413 (body too
//!   large), 503 (queue full), 500 (anything else).
//! * SIGTERM / Ctrl-C stop accepting connections and drain in-flight requests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use base64::Engine as _;

use crate::api::{
    Explanation, Filter, Index, IndexWriter, Model, NewDoc, PlaidParams, SearchOptions,
};
use crate::error::Error;

/// The OpenAPI description, as committed.
pub const OPENAPI: &str = include_str!("../docs/openapi.yaml");

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `(name, directory)` of each index.
    pub indexes: Vec<(String, PathBuf)>,
    pub addr: SocketAddr,
    /// Longest wait for more queries before a batch is encoded.
    pub batch_wait: Duration,
    /// Most queries encoded in one batch.
    pub max_batch: usize,
    /// Text queries waiting (beyond it: 503).
    pub queue: usize,
    /// Largest request body, bytes (beyond it: 413).
    pub body_limit: usize,
    /// How long an index's writer (and its lock) is kept after a write.
    pub writer_idle: Duration,
    /// How often an index is checked for another process's commits (while
    /// the server holds no writer for it).
    pub refresh: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            indexes: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            batch_wait: Duration::from_millis(2),
            max_batch: 32,
            queue: 1024,
            body_limit: 16 << 20,
            writer_idle: Duration::from_secs(2),
            refresh: Duration::from_secs(1),
        }
    }
}

/// An HTTP error: status and message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Input(m) if m.contains("is not in") => StatusCode::NOT_FOUND,
            Error::Input(_) | Error::Shape { .. } => StatusCode::BAD_REQUEST,
            Error::Locked { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, m.into())
}

type ApiResult<T> = std::result::Result<T, ApiError>;

/// `Json<T>` whose rejections (malformed JSON, wrong fields, body too large,
/// wrong content type) are JSON errors like every other.
struct J<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for J<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> ApiResult<Self> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(J(v)),
            Err(r) => Err(ApiError(r.status(), r.body_text())),
        }
    }
}

/// An index's writer and the time of its last write.
struct Held {
    writer: IndexWriter,
    last: Instant,
}

/// One served index: the snapshot searches use, what its files on disk
/// looked like when it was opened, and its writer while held.
struct Slot {
    path: PathBuf,
    current: RwLock<Arc<Index>>,
    stamp: Mutex<Option<DiskStamp>>,
    writer: Mutex<Option<Held>>,
}

impl Slot {
    /// Opens the index at `path` as a slot.
    fn open(path: &std::path::Path) -> crate::Result<Self> {
        let stamp = DiskStamp::of(path);
        Ok(Self {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(Index::open(path)?)),
            stamp: Mutex::new(stamp),
            writer: Mutex::new(None),
        })
    }

    fn snapshot(&self) -> Arc<Index> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Opens the index afresh and makes it the snapshot. The stamp is taken
    /// before the open, so a commit landing in between only causes one more
    /// reopen later, never a missed one.
    fn reopen(&self) -> crate::Result<Arc<Index>> {
        let stamp = DiskStamp::of(&self.path);
        let fresh = Arc::new(Index::open(&self.path)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
        Ok(fresh)
    }

    /// True when the files on disk are no longer those of the snapshot.
    fn changed_on_disk(&self) -> bool {
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) != DiskStamp::of(&self.path)
    }
}

/// The identity of an index's directory and of its live manifest
/// (`live.json`, absent before the first change): a commit renames a new
/// manifest into place, a compaction a new directory, so either changes
/// this. `None` when the directory cannot be read (then a change to it is
/// seen as one once it can).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DiskStamp {
    dir: FileStamp,
    manifest: Option<FileStamp>,
}

/// A file's inode (on Unix), modification time and length.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    modified: Option<std::time::SystemTime>,
    len: u64,
}

impl FileStamp {
    fn of(path: &std::path::Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self {
            inode,
            modified: m.modified().ok(),
            len: m.len(),
        })
    }
}

impl DiskStamp {
    fn of(index: &std::path::Path) -> Option<Self> {
        Some(Self {
            dir: FileStamp::of(index)?,
            manifest: FileStamp::of(&index.join("live.json")),
        })
    }
}

/// A text search waiting for the batching thread.
struct Job {
    slot: Arc<Slot>,
    texts: Vec<String>,
    options: SearchOptions,
    filter: Option<Filter>,
    reply: oneshot::Sender<crate::Result<Searched>>,
}

/// Hits of a search, and the snapshot they came from (explanations must read
/// the same documents).
type Searched = (Arc<Index>, Vec<Vec<crate::Hit>>);

struct AppState {
    model: Option<Arc<Model>>,
    slots: BTreeMap<String, Arc<Slot>>,
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    /// Batches run and queries in them (for `/health`).
    batches: Arc<Mutex<(u64, u64)>>,
}

type Shared = Arc<AppState>;

/// The batching thread: waits for a job, gathers more for up to `wait`
/// (at most `max` queries), encodes all their texts in one call, then
/// searches each group of jobs with the same index, options and no filter
/// in one batch.
fn batcher(
    model: Arc<Model>,
    rx: std::sync::mpsc::Receiver<Job>,
    wait: Duration,
    max: usize,
    stats: Arc<Mutex<(u64, u64)>>,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut n = jobs[0].texts.len();
        let deadline = Instant::now() + wait;
        while n < max {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(j) => {
                    n += j.texts.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        if let Ok(mut s) = stats.lock() {
            s.0 += 1;
            s.1 += n as u64;
        }
        let texts: Vec<&str> = jobs
            .iter()
            .flat_map(|j| j.texts.iter().map(String::as_str))
            .collect();
        let encoded = match model.encode_queries(&texts) {
            Ok(e) => e,
            Err(e) => {
                let msg = e.to_string();
                for j in jobs {
                    let _ = j.reply.send(Err(Error::Input(msg.clone())));
                }
                continue;
            }
        };
        let mut at = 0;
        let mut pieces = Vec::with_capacity(jobs.len());
        for j in &jobs {
            pieces.push(at..at + j.texts.len());
            at += j.texts.len();
        }
        // Group unfiltered jobs by index and options.
        let mut done = vec![false; jobs.len()];
        for i in 0..jobs.len() {
            if done[i] {
                continue;
            }
            let index = jobs[i].slot.snapshot();
            if let Some(f) = &jobs[i].filter {
                let r = index.search_filtered_encoded(
                    &model,
                    &encoded[pieces[i].clone()],
                    &jobs[i].options,
                    f,
                );
                done[i] = true;
                let _ = jobs_reply(&mut jobs, i, r.map(|h| (index.clone(), h)));
                continue;
            }
            let group: Vec<usize> = (i..jobs.len())
                .filter(|&k| {
                    !done[k]
                        && jobs[k].filter.is_none()
                        && Arc::ptr_eq(&jobs[k].slot, &jobs[i].slot)
                        && jobs[k].options == jobs[i].options
                })
                .collect();
            let queries: Vec<crate::TokenVectors> = group
                .iter()
                .flat_map(|&k| encoded[pieces[k].clone()].iter().cloned())
                .collect();
            let r = index.search_encoded(&model, &queries, &jobs[i].options);
            let mut at = 0;
            for &k in &group {
                done[k] = true;
                let len = pieces[k].len();
                let part = match &r {
                    Ok(h) => Ok((index.clone(), h[at..at + len].to_vec())),
                    Err(e) => Err(Error::Input(e.to_string())),
                };
                at += len;
                let _ = jobs_reply(&mut jobs, k, part);
            }
        }
    }
}

fn jobs_reply(jobs: &mut [Job], i: usize, r: crate::Result<Searched>) -> Option<()> {
    let (tx, _) = oneshot::channel();
    let reply = std::mem::replace(&mut jobs[i].reply, tx);
    reply.send(r).ok()
}

/// Runs the server until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    model: Option<Model>,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    bound: Option<oneshot::Sender<SocketAddr>>,
) -> crate::Result<()> {
    let mut slots = BTreeMap::new();
    for (name, path) in &options.indexes {
        slots.insert(name.clone(), Arc::new(Slot::open(path)?));
    }
    let model = model.map(Arc::new);
    let batches = Arc::new(Mutex::new((0u64, 0u64)));
    let jobs = model.as_ref().map(|m| {
        let (tx, rx) = std::sync::mpsc::sync_channel(options.queue.max(1));
        let (m, wait, max, stats) = (
            m.clone(),
            options.batch_wait,
            options.max_batch.max(1),
            batches.clone(),
        );
        std::thread::spawn(move || batcher(m, rx, wait, max, stats));
        tx
    });
    let state = Arc::new(AppState {
        model,
        slots,
        jobs,
        batches,
    });
    let weak = Arc::downgrade(&state);
    let (idle, refresh) = (options.writer_idle, options.refresh);
    std::thread::spawn(move || housekeeping(weak, idle, refresh));
    let app = router(state, options.body_limit);
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|e| Error::io(format!("{}", options.addr), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(format!("{}", options.addr), e))?;
    if let Some(b) = bound {
        let _ = b.send(addr);
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::io(format!("{addr}"), e))
}

/// Drops writers idle for `idle` (releasing their index locks), and every
/// `refresh` reopens the indexes another process has committed to while the
/// server held no writer for them; ends with the server.
fn housekeeping(state: std::sync::Weak<AppState>, idle: Duration, refresh: Duration) {
    let tick = (idle / 4)
        .min(refresh)
        .clamp(Duration::from_millis(5), Duration::from_millis(250));
    let mut checked = Instant::now();
    loop {
        std::thread::sleep(tick);
        let Some(s) = state.upgrade() else { return };
        let check = checked.elapsed() >= refresh;
        if check {
            checked = Instant::now();
        }
        for sl in s.slots.values() {
            // A writer busy with a write is not idle.
            let Ok(mut g) = sl.writer.try_lock() else {
                continue;
            };
            if g.as_ref().is_some_and(|h| h.last.elapsed() >= idle) {
                *g = None;
            }
            // With no writer held here, only another process can have
            // committed; holding the writer's mutex keeps the server's own
            // writes out while the index is reopened.
            if check && g.is_none() && sl.changed_on_disk() {
                if let Err(e) = sl.reopen() {
                    log::warn!(
                        "index {} changed on disk but could not be reopened (kept the \
                         old snapshot, will retry): {e}",
                        sl.path.display()
                    );
                }
            }
        }
    }
}

fn router(state: Shared, body_limit: usize) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/openapi.yaml", get(|| async { OPENAPI }))
        .route("/indexes", get(list))
        .route("/indexes/{name}", get(info))
        .route("/indexes/{name}/search", post(search))
        .route("/indexes/{name}/search_vectors", post(search_vectors))
        .route("/indexes/{name}/documents", post(add_documents))
        .route("/indexes/{name}/documents/delete", post(delete_documents))
        .route("/indexes/{name}/compact", post(compact))
        .route("/indexes/{name}/metadata", post(get_metadata))
        .route("/indexes/{name}/metadata/query", post(query_metadata))
        .route("/encode", post(encode))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

fn slot(state: &AppState, name: &str) -> ApiResult<Arc<Slot>> {
    state.slots.get(name).cloned().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no index named '{name}' is served"),
        )
    })
}

/// Runs blocking work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

async fn health(State(s): State<Shared>) -> Json<Value> {
    let (batches, queries) = s.batches.lock().map(|g| *g).unwrap_or((0, 0));
    Json(json!({
        "status": "ok",
        "model": s.model.as_ref().map(|m| m.info().name.clone()),
        "indexes": s.slots.len(),
        "writers_held": s.slots.values().filter(|sl| sl.writer.try_lock().map_or(true, |g| g.is_some())).count(),
        "batches": batches,
        "batched_queries": queries,
    }))
}

fn describe(name: &str, slot: &Slot) -> Value {
    let index = slot.snapshot();
    let m = index.metadata();
    json!({
        "name": name,
        "path": slot.path,
        "documents": index.num_docs(),
        "generation": index.generation(),
        "dim": m.dim,
        "nbits": m.nbits,
        "centroids": m.num_centroids,
        "vectors": m.num_vectors,
        "model": m.model.name,
    })
}

async fn list(State(s): State<Shared>) -> Json<Value> {
    let v: Vec<Value> = s.slots.iter().map(|(n, sl)| describe(n, sl)).collect();
    Json(json!({ "indexes": v }))
}

async fn info(State(s): State<Shared>, UrlPath(name): UrlPath<String>) -> ApiResult<Json<Value>> {
    let sl = slot(&s, &name)?;
    Ok(Json(describe(&name, &sl)))
}

/// Search knobs shared by both search endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Knobs {
    #[serde(default = "ten")]
    k: usize,
    ncells: Option<usize>,
    centroid_score_threshold: Option<f32>,
    ndocs: Option<usize>,
    #[serde(default)]
    exhaustive: bool,
    filter: Option<Filter>,
    /// Per hit, each query token's best document token and its score.
    #[serde(default)]
    explain: bool,
}

fn ten() -> usize {
    10
}

impl Knobs {
    fn options(&self) -> SearchOptions {
        let mut p = PlaidParams::for_k(self.k);
        if let Some(n) = self.ncells {
            p.ncells = n;
        }
        if let Some(t) = self.centroid_score_threshold {
            p.centroid_score_threshold = t;
        }
        if let Some(n) = self.ndocs {
            p.ndocs = n;
        }
        SearchOptions {
            k: self.k,
            plaid: Some(p),
            exhaustive: self.exhaustive,
        }
    }
}

#[derive(Debug, Deserialize)]
struct SearchBody {
    query: Option<String>,
    queries: Option<Vec<String>>,
    #[serde(flatten)]
    knobs: Knobs,
}

fn hits_json(hits: &[Vec<crate::Hit>], explained: Option<Vec<Vec<Explanation>>>) -> Value {
    let r: Vec<Value> = hits
        .iter()
        .enumerate()
        .map(|(q, h)| {
            Value::Array(
                h.iter()
                    .enumerate()
                    .map(|(i, x)| {
                        let mut v = json!({ "id": x.id, "score": x.score });
                        if let Some(e) = explained.as_ref().and_then(|e| e.get(q)?.get(i)) {
                            v["explain"] = json!({
                                "exact_score": e.score,
                                "doc_len": e.doc_len,
                                "matches": e.matches,
                            });
                        }
                        v
                    })
                    .collect(),
            )
        })
        .collect();
    json!({ "results": r })
}

async fn search(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    J(body): J<SearchBody>,
) -> ApiResult<Json<Value>> {
    let sl = slot(&s, &name)?;
    let texts = match (body.query, body.queries) {
        (Some(q), None) => vec![q],
        (None, Some(qs)) if !qs.is_empty() => qs,
        _ => {
            return Err(bad(
                "give \"query\" (a string) or \"queries\" (a non-empty list)",
            ))
        }
    };
    for (i, t) in texts.iter().enumerate() {
        crate::io::check_query_text(t, &format!("query {i}"))?;
    }
    let options = body.knobs.options();
    options.validate(sl.snapshot().num_docs())?;
    let tx = s.jobs.as_ref().ok_or_else(|| {
        bad("the server has no model: search with /search_vectors, or start it with --model")
    })?;
    let (reply, rx) = oneshot::channel();
    let explain = body.knobs.explain;
    let job = Job {
        slot: sl,
        texts: texts.clone(),
        options,
        filter: body.knobs.filter,
        reply,
    };
    tx.try_send(job).map_err(|e| match e {
        std::sync::mpsc::TrySendError::Full(_) => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the query queue is full; retry later".into(),
        ),
        std::sync::mpsc::TrySendError::Disconnected(_) => ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the batching thread stopped".into(),
        ),
    })?;
    let (index, hits) = rx
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "search dropped".into()))??;
    if !explain {
        return Ok(Json(hits_json(&hits, None)));
    }
    let model = s
        .model
        .clone()
        .ok_or_else(|| bad("the server has no model"))?;
    blocking(move || {
        let explained = texts
            .iter()
            .zip(&hits)
            .map(|(t, h)| index.explain(&model, t, h))
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(Json(hits_json(&hits, Some(explained))))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct VectorSearchBody {
    /// One query: a list of token vectors.
    query: Option<Vec<Vec<f32>>>,
    queries: Option<Vec<Vec<Vec<f32>>>>,
    #[serde(flatten)]
    knobs: Knobs,
}

async fn search_vectors(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    J(body): J<VectorSearchBody>,
) -> ApiResult<Json<Value>> {
    let sl = slot(&s, &name)?;
    let qs = match (body.query, body.queries) {
        (Some(q), None) => vec![q],
        (None, Some(qs)) if !qs.is_empty() => qs,
        _ => {
            return Err(bad(
                "give \"query\" (token vectors) or \"queries\" (a non-empty list)",
            ))
        }
    };
    let flat: Vec<Vec<f32>> = qs.into_iter().map(|q| q.concat()).collect();
    let options = body.knobs.options();
    let filter = body.knobs.filter;
    let explain = body.knobs.explain;
    let out = blocking(move || {
        let index = sl.snapshot();
        let blocks: Vec<&[f32]> = flat.iter().map(Vec::as_slice).collect();
        let hits = match &filter {
            Some(f) => index.search_vectors_filtered(&blocks, &options, f)?,
            None => index.search_vectors(&blocks, &options)?,
        };
        let explained = if explain {
            Some(
                blocks
                    .iter()
                    .zip(&hits)
                    .map(|(q, h)| index.explain_vectors(q, h, None))
                    .collect::<crate::Result<Vec<_>>>()?,
            )
        } else {
            None
        };
        Ok(hits_json(&hits, explained))
    })
    .await?;
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocBody {
    id: String,
    text: Option<String>,
    vectors: Option<Vec<Vec<f32>>>,
    /// A page image (PNG or JPEG), base64: for an index of a page model.
    image: Option<String>,
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    documents: Vec<DocBody>,
    #[serde(default)]
    update: bool,
}

/// How long a write waits for another process's writer to finish.
const WRITER_WAIT: Duration = Duration::from_secs(5);

/// Runs `f` with the index's writer (opened if the server holds none), then
/// swaps in a new snapshot. Returns once the commit is durable.
fn with_writer<T>(sl: &Slot, f: impl FnOnce(&mut IndexWriter) -> crate::Result<T>) -> ApiResult<T> {
    let mut guard = sl.writer.lock().unwrap_or_else(|p| p.into_inner());
    let held = match guard.take() {
        Some(h) => h,
        None => Held {
            writer: IndexWriter::open(&sl.path, WRITER_WAIT)?,
            last: Instant::now(),
        },
    };
    let held = guard.insert(held);
    let out = f(&mut held.writer);
    held.last = Instant::now();
    let out = out?;
    sl.reopen()?;
    Ok(out)
}

async fn add_documents(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    J(body): J<AddBody>,
) -> ApiResult<Json<Value>> {
    let sl = slot(&s, &name)?;
    if body.documents.is_empty() {
        return Err(bad("\"documents\" is empty"));
    }
    let model = s.model.clone();
    let summary = blocking(move || {
        let mut docs = Vec::with_capacity(body.documents.len());
        let mut texts = Vec::new();
        let mut images = Vec::new();
        for d in &body.documents {
            match (&d.text, &d.vectors, &d.image) {
                (Some(t), None, None) => texts.push(t.as_str()),
                (None, Some(_), None) => {}
                (None, None, Some(b64)) => images.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| {
                            bad(format!("document '{}': \"image\" is not base64: {e}", d.id))
                        })?,
                ),
                _ => {
                    return Err(bad(format!(
                        "document '{}': give exactly one of \"text\", \"vectors\" and \"image\"",
                        d.id
                    )))
                }
            }
        }
        let needs_model = !texts.is_empty() || !images.is_empty();
        let m = match &model {
            Some(m) if needs_model => {
                sl.snapshot().check_model(m)?;
                Some(m)
            }
            None if needs_model => {
                return Err(bad("the server has no model: send \"vectors\""));
            }
            _ => None,
        };
        let (encoded, pictures) = match m {
            Some(m) => {
                if !images.is_empty() && !m.takes_images() {
                    return Err(bad(format!(
                        "model {} reads text, not page images: send \"text\" or \"vectors\"",
                        m.info().name
                    )));
                }
                if !texts.is_empty() && m.takes_images() {
                    return Err(bad(format!(
                        "model {} encodes page images: send \"image\" (base64 PNG or JPEG) \
                         or \"vectors\"",
                        m.info().name
                    )));
                }
                let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
                let pictures = if refs.is_empty() {
                    Vec::new()
                } else {
                    m.encode_image_bytes(&refs)?
                };
                let encoded = if texts.is_empty() {
                    Vec::new()
                } else {
                    m.encode_documents(&texts)?
                };
                (encoded, pictures)
            }
            None => (Vec::new(), Vec::new()),
        };
        let mut enc = encoded.into_iter();
        let mut pic = pictures.into_iter();
        for d in body.documents {
            let vectors = match (d.vectors, d.image) {
                (Some(v), _) => v.concat(),
                (None, Some(_)) => pic.next().map(|e| e.vectors).unwrap_or_default(),
                (None, None) => enc.next().map(|e| e.vectors).unwrap_or_default(),
            };
            docs.push(NewDoc {
                id: d.id,
                vectors,
                metadata: d.metadata,
            });
        }
        with_writer(&sl, |w| w.add_vectors(&docs, body.update))
    })
    .await?;
    Ok(Json(json!({
        "generation": summary.generation,
        "documents": summary.docs,
        "vectors": summary.vectors,
        "replaced": summary.replaced,
        "outliers": summary.outliers,
        "new_centroids": summary.new_centroids,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdsBody {
    ids: Vec<String>,
}

async fn delete_documents(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    J(body): J<IdsBody>,
) -> ApiResult<Json<Value>> {
    let sl = slot(&s, &name)?;
    let n = body.ids.len();
    let generation = blocking(move || {
        let refs: Vec<&str> = body.ids.iter().map(String::as_str).collect();
        with_writer(&sl, |w| w.delete(&refs))
    })
    .await?;
    Ok(Json(json!({ "generation": generation, "deleted": n })))
}

async fn compact(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    let sl = slot(&s, &name)?;
    let (kept, generation) = blocking(move || {
        let mut guard = sl.writer.lock().unwrap_or_else(|p| p.into_inner());
        let writer = match guard.take() {
            Some(h) => h.writer,
            None => IndexWriter::open(&sl.path, WRITER_WAIT)?,
        };
        // Compaction consumes the writer: the lock is released when it ends.
        let kept = writer.compact()?;
        let generation = sl.reopen()?.generation();
        drop(guard);
        Ok((kept, generation))
    })
    .await?;
    Ok(Json(json!({ "documents": kept, "generation": generation })))
}

async fn get_metadata(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    J(body): J<IdsBody>,
) -> ApiResult<Json<Value>> {
    let sl = slot(&s, &name)?;
    let md = blocking(move || {
        let refs: Vec<&str> = body.ids.iter().map(String::as_str).collect();
        Ok(sl.snapshot().document_metadata(&refs)?)
    })
    .await?;
    Ok(Json(json!({ "metadata": md })))
}

async fn query_metadata(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    J(filter): J<Filter>,
) -> ApiResult<Json<Value>> {
    let sl = slot(&s, &name)?;
    let ids = blocking(move || Ok(sl.snapshot().filter_ids(&filter)?)).await?;
    Ok(Json(json!({ "ids": ids })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncodeBody {
    texts: Vec<String>,
    /// "queries" (default) or "documents".
    #[serde(default)]
    kind: Option<String>,
}

async fn encode(State(s): State<Shared>, J(body): J<EncodeBody>) -> ApiResult<Json<Value>> {
    let model = s
        .model
        .clone()
        .ok_or_else(|| bad("the server has no model (start it with --model)"))?;
    let docs = match body.kind.as_deref() {
        None | Some("queries") => false,
        Some("documents") => true,
        Some(k) => {
            return Err(bad(format!(
                "kind must be \"queries\" or \"documents\", not '{k}'"
            )))
        }
    };
    let out = blocking(move || {
        let texts: Vec<&str> = body.texts.iter().map(String::as_str).collect();
        Ok(if docs {
            model.encode_documents(&texts)?
        } else {
            model.encode_queries(&texts)?
        })
    })
    .await?;
    let dim = s.model.as_ref().map_or(0, |m| m.dim());
    let v: Vec<Value> = out
        .iter()
        .map(|e| Value::Array(e.vectors.chunks(dim.max(1)).map(|r| json!(r)).collect()))
        .collect();
    Ok(Json(json!({ "dim": dim, "vectors": v })))
}
