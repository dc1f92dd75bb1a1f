//! `colwgpu serve` through a real HTTP client (ureq) on an ephemeral
//! loopback port: every endpoint, batching of concurrent queries, errors as
//! JSON with fitting statuses, the queue bound (503), the body limit (413),
//! and draining in-flight requests at shutdown.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colwgpu::server::{serve, ServeOptions};
use colwgpu::{Device, Document, Index, IndexOptions, Model, SearchOptions};
use serde_json::{json, Value};

const DOCS: &[(&str, &str)] = &[
    (
        "colbert",
        "ColBERT scores documents by late interaction: MaxSim over token vectors.",
    ),
    ("paris", "Paris is the capital and largest city of France."),
    (
        "rust",
        "Rust is a systems programming language focused on safety and speed.",
    ),
    (
        "wgsl",
        "WGSL is the shading language of WebGPU, compiled for compute shaders.",
    ),
    (
        "fever",
        "Fever is a temporary rise in body temperature, often caused by infection.",
    ),
    (
        "coffee",
        "Coffee is brewed from roasted beans of the Coffea plant.",
    ),
    (
        "tides",
        "Tides are caused by the gravitational pull of the Moon and the Sun.",
    ),
    (
        "plaid",
        "PLAID prunes candidates with centroid interaction before exact scoring.",
    ),
];

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<colwgpu::Result<()>>>,
}

impl Server {
    fn start(model: Option<Model>, index: &Path, mut opts: ServeOptions) -> Self {
        opts.indexes = vec![("docs".into(), index.to_path_buf())];
        opts.addr = "127.0.0.1:0".parse().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(
                model,
                opts,
                async {
                    let _ = stopped.await;
                },
                Some(tx),
            ))
        });
        let addr = rx.blocking_recv().expect("server did not start");
        Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let mut r = agent().post(url).send_json(body).unwrap();
    let status = r.status().as_u16();
    let v: Value = r.body_mut().read_json().unwrap();
    (status, v)
}

fn get(url: &str) -> (u16, String) {
    let mut r = agent().get(url).call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn model() -> Model {
    Model::open(common::model_dir(), Device::Cpu).unwrap()
}

fn build(dir: &Path, model: &Model) -> PathBuf {
    let path = dir.join("docs.index");
    let docs: Vec<Document> = DOCS.iter().map(|(i, t)| Document::new(*i, *t)).collect();
    let opts = IndexOptions {
        num_centroids: Some(8),
        ..Default::default()
    };
    model.index(&docs, &path, &opts).unwrap();
    path
}

/// POSTs a body of `len` bytes over a raw connection and returns the reply.
/// The body is written from another thread while this one reads: a server
/// that refuses an oversized body answers before reading it all and closes
/// the connection, so the writer may meet a broken pipe (ignored), and the
/// reply must be read as it comes rather than after the write.
fn oversized_post(addr: SocketAddr, path: &str, len: usize) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'a'; 1 << 16];
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            if w.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n;
        }
    });
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let _ = writer.join();
    String::from_utf8_lossy(&reply).into_owned()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn endpoints_through_http() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let path = build(dir.path(), &m);
    let direct = Index::open_on(&path, Device::Cpu, &Default::default()).unwrap();
    let mut server = Server::start(
        Some(model()),
        &path,
        ServeOptions {
            batch_wait: Duration::from_millis(30),
            ..Default::default()
        },
    );

    let (s, body) = get(&server.url("/health"));
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "ok"
    );
    let (s, body) = get(&server.url("/openapi.yaml"));
    assert_eq!(s, 200);
    assert_eq!(body, colwgpu::server::OPENAPI);
    let (s, body) = get(&server.url("/indexes"));
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["indexes"][0]["name"], "docs");
    assert_eq!(v["indexes"][0]["documents"], 8);
    let (s, _) = get(&server.url("/indexes/nope"));
    assert_eq!(s, 404);

    // One query and a batch: the same hits as the library gives.
    let queries = [
        "what causes a fever",
        "capital of france",
        "gpu shading language",
    ];
    let want = direct
        .search_batch(&m, &queries, &SearchOptions::new(3))
        .unwrap();
    let (s, v) = post(
        &server.url("/indexes/docs/search"),
        &json!({"query": queries[0], "k": 3}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        ids(&v["results"][0]),
        want[0].iter().map(|h| h.id.clone()).collect::<Vec<_>>()
    );
    let (s, v) = post(
        &server.url("/indexes/docs/search"),
        &json!({"queries": queries, "k": 3}),
    );
    assert_eq!(s, 200);
    for (got, w) in v["results"].as_array().unwrap().iter().zip(&want) {
        assert_eq!(ids(got), w.iter().map(|h| h.id.clone()).collect::<Vec<_>>());
        for (g, h) in got.as_array().unwrap().iter().zip(w) {
            assert!((g["score"].as_f64().unwrap() - h.score as f64).abs() < 1e-5);
        }
    }
    // Concurrent single queries are batched (fewer batches than queries) and
    // each gets its own answer.
    let url = server.url("/indexes/docs/search");
    let threads: Vec<_> = (0..12)
        .map(|i| {
            let url = url.clone();
            let q = queries[i % 3].to_string();
            std::thread::spawn(move || post(&url, &json!({"query": q, "k": 3})))
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let (s, v) = t.join().unwrap();
        assert_eq!(s, 200);
        assert_eq!(
            ids(&v["results"][0]),
            want[i % 3].iter().map(|h| h.id.clone()).collect::<Vec<_>>()
        );
    }
    let (_, body) = get(&server.url("/health"));
    let h: Value = serde_json::from_str(&body).unwrap();
    assert!(
        h["batches"].as_u64().unwrap() < h["batched_queries"].as_u64().unwrap(),
        "{h}"
    );

    // Encode, then search with the vectors: the same hits.
    let (s, enc) = post(&server.url("/encode"), &json!({"texts": [queries[1]]}));
    assert_eq!(s, 200);
    let (s, v) = post(
        &server.url("/indexes/docs/search_vectors"),
        &json!({"query": enc["vectors"][0], "k": 3}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        ids(&v["results"][0]),
        want[1].iter().map(|h| h.id.clone()).collect::<Vec<_>>()
    );

    // Add with metadata (text and vectors), update, delete.
    let (s, denc) = post(
        &server.url("/encode"),
        &json!({"texts": ["The Eiffel tower stands in Paris."], "kind": "documents"}),
    );
    assert_eq!(s, 200);
    let (s, v) = post(
        &server.url("/indexes/docs/documents"),
        &json!({"documents": [
            {"id": "volcano", "text": "Volcanoes erupt molten rock from the mantle.", "metadata": {"topic": "geo", "year": 2020}},
            {"id": "paris2", "vectors": denc["vectors"][0], "metadata": {"topic": "city", "year": 2010}}
        ]}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["generation"], 1);
    let (s, v) = post(
        &server.url("/indexes/docs/search"),
        &json!({"query": "lava eruption", "k": 1}),
    );
    assert_eq!(s, 200);
    assert_eq!(ids(&v["results"][0]), ["volcano"]);
    let (s, v) = post(
        &server.url("/indexes/docs/metadata"),
        &json!({"ids": ["volcano", "paris"]}),
    );
    assert_eq!(s, 200);
    assert_eq!(v["metadata"], json!([{"topic": "geo", "year": 2020}, null]));
    let (s, v) = post(
        &server.url("/indexes/docs/metadata/query"),
        &json!({"condition": "year < ?", "params": [2015]}),
    );
    assert_eq!(s, 200);
    assert_eq!(v["ids"], json!(["paris2"]));
    // A filtered text search returns only passing documents, k of them if they exist.
    let (s, v) = post(
        &server.url("/indexes/docs/search"),
        &json!({"query": "capital of france", "k": 5, "filter": {"condition": "topic = ?", "params": ["geo"]}}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(ids(&v["results"][0]), ["volcano"]);
    let (s, v) = post(
        &server.url("/indexes/docs/search"),
        &json!({"query": "x", "filter": {"condition": "1; DROP TABLE metadata", "params": []}}),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("refused"), "{v}");
    let (s, v) = post(
        &server.url("/indexes/docs/documents"),
        &json!({"documents": [{"id": "volcano", "text": "Volcanic ash clouds ground flights.", "metadata": {"topic": "air"}}], "update": true}),
    );
    assert_eq!((s, v["replaced"].clone()), (200, json!(1)), "{v}");
    let (s, v) = post(
        &server.url("/indexes/docs/documents"),
        &json!({"documents": [{"id": "paris", "text": "dup"}]}),
    );
    assert_eq!(s, 400, "{v}");
    let (s, v) = post(
        &server.url("/indexes/docs/documents/delete"),
        &json!({"ids": ["paris2", "coffee"]}),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = post(
        &server.url("/indexes/docs/documents/delete"),
        &json!({"ids": ["coffee"]}),
    );
    assert_eq!(s, 404, "{v}");
    let (_, body) = get(&server.url("/indexes/docs"));
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (info["documents"].clone(), info["generation"].clone()),
        (json!(8), json!(3))
    );
    // Acknowledged writes are on disk: a fresh reader sees them.
    let fresh = Index::open(&path).unwrap();
    assert_eq!(fresh.num_docs(), 8);
    assert!(fresh.doc_ids().iter().any(|d| d == "volcano"));
    assert!(!fresh.doc_ids().iter().any(|d| d == "coffee"));

    // Errors are JSON with fitting statuses.
    let mut r = agent()
        .post(&server.url("/indexes/docs/search"))
        .content_type("application/json")
        .send("{not json")
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.body_mut().read_to_string().unwrap().contains("\"error\""));
    let (s, _) = post(
        &server.url("/indexes/docs/search"),
        &json!({"query": "x", "k": 0}),
    );
    assert_eq!(s, 400);
    let reply = oversized_post(server.addr, "/indexes/docs/search", 17 << 20);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("\"error\""), "{reply}");

    // Shutdown drains a request in flight.
    let url = server.url("/indexes/docs/search");
    let many: Vec<String> = (0..64)
        .map(|i| format!("query number {i} about fevers"))
        .collect();
    let inflight = std::thread::spawn(move || post(&url, &json!({"queries": many, "k": 2})));
    std::thread::sleep(Duration::from_millis(40));
    server.shutdown();
    let (s, v) = inflight.join().unwrap();
    assert_eq!(s, 200);
    assert_eq!(v["results"].as_array().unwrap().len(), 64);
}

#[test]
fn full_queue_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let path = build(dir.path(), &m);
    let server = Arc::new(Server::start(
        Some(m),
        &path,
        ServeOptions {
            queue: 1,
            max_batch: 1,
            batch_wait: Duration::ZERO,
            ..Default::default()
        },
    ));
    let url = server.url("/indexes/docs/search");
    let threads: Vec<_> = (0..24)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let qs: Vec<String> = (0..8).map(|j| format!("query {i} {j} on tides")).collect();
                post(&url, &json!({"queries": qs, "k": 1})).0
            })
        })
        .collect();
    let codes: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(codes.iter().all(|&c| c == 200 || c == 503), "{codes:?}");
    assert!(codes.contains(&503), "{codes:?}");
    assert!(codes.contains(&200), "{codes:?}");
}

/// Sum of an explanation's per-token contributions.
fn explained_sum(e: &Value) -> f64 {
    e["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["score"].as_f64().unwrap())
        .sum()
}

#[test]
fn explain_compact_and_the_writer_lock() {
    let dir = tempfile::tempdir().unwrap();
    let m = model();
    let path = build(dir.path(), &m);
    let direct = Index::open_on(&path, Device::Cpu, &Default::default()).unwrap();
    let server = Server::start(
        Some(model()),
        &path,
        ServeOptions {
            writer_idle: Duration::from_millis(50),
            refresh: Duration::from_millis(100),
            ..Default::default()
        },
    );

    // explain: per hit, each query token's best document token; the
    // contributions sum to the exact score, as the library explains it.
    let q = "what causes a fever";
    let (s, v) = post(
        &server.url("/indexes/docs/search"),
        &json!({"query": q, "k": 2, "explain": true, "exhaustive": true}),
    );
    assert_eq!(s, 200, "{v}");
    let hits = direct.search(&m, q, 2).unwrap();
    let want = direct.explain(&m, q, &hits).unwrap();
    for (got, w) in v["results"][0].as_array().unwrap().iter().zip(&want) {
        assert_eq!(got["id"], w.id.as_str());
        let e = &got["explain"];
        assert_eq!(e["matches"].as_array().unwrap().len(), w.matches.len());
        assert_eq!(e["doc_len"], w.doc_len);
        for (a, b) in e["matches"].as_array().unwrap().iter().zip(&w.matches) {
            assert_eq!(a["doc_token"], b.doc_token);
            assert!((a["score"].as_f64().unwrap() - b.score as f64).abs() < 1e-5);
        }
        let sum = explained_sum(e);
        assert!(
            (sum - e["exact_score"].as_f64().unwrap()).abs() < 1e-4,
            "{e}"
        );
        // Exhaustive search scores the same decompressed vectors.
        assert!((sum - got["score"].as_f64().unwrap()).abs() < 1e-4, "{got}");
    }
    let (_, enc) = post(&server.url("/encode"), &json!({"texts": [q]}));
    let (s, v) = post(
        &server.url("/indexes/docs/search_vectors"),
        &json!({"query": enc["vectors"][0], "k": 1, "explain": true, "exhaustive": true}),
    );
    assert_eq!(s, 200, "{v}");
    let hit = &v["results"][0][0];
    assert_eq!(hit["id"], want[0].id.as_str());
    assert!((explained_sum(&hit["explain"]) - hit["score"].as_f64().unwrap()).abs() < 1e-4);
    // Without explain, no explanation.
    let (_, v) = post(
        &server.url("/indexes/docs/search"),
        &json!({"query": q, "k": 1}),
    );
    assert!(v["results"][0][0].get("explain").is_none(), "{v}");

    // Image adds to a text model's index: a clear 400, nothing written.
    let png = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        std::fs::read(common::root().join("tests/fixtures/colqwen2/images/0.png")).unwrap(),
    );
    let (s, v) = post(
        &server.url("/indexes/docs/documents"),
        &json!({"documents": [{"id": "page", "image": png}]}),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not page images"),
        "{v}"
    );
    let (s, v) = post(
        &server.url("/indexes/docs/documents"),
        &json!({"documents": [{"id": "page", "image": "not base64!"}]}),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("base64"), "{v}");
    let (s, v) = post(
        &server.url("/indexes/docs/documents"),
        &json!({"documents": [{"id": "page", "text": "t", "image": png}]}),
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(Index::open(&path).unwrap().generation(), 0);

    // The writer is released after writer_idle: another process can write.
    let (s, v) = post(
        &server.url("/indexes/docs/documents"),
        &json!({"documents": [{"id": "lava", "text": "Lava flows from volcanoes."}]}),
    );
    assert_eq!(s, 200, "{v}");
    let mut other = None;
    for _ in 0..100 {
        match colwgpu::IndexWriter::open(&path, Duration::ZERO) {
            Ok(w) => {
                other = Some(w);
                break;
            }
            Err(colwgpu::Error::Locked { .. }) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("{e}"),
        }
    }
    let mut other = other.expect("the server kept its writer (and the lock)");
    let (_, body) = get(&server.url("/health"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["writers_held"],
        0
    );
    let glacier = || {
        post(
            &server.url("/indexes/docs/search"),
            &json!({"query": "glacier valleys", "k": 1}),
        )
    };
    let (s, v) = glacier();
    assert_eq!(s, 200, "{v}");
    assert_ne!(ids(&v["results"][0]), vec!["ext".to_string()]);
    other
        .add_texts(
            &m,
            &[Document::new("ext", "Glaciers carve valleys.")],
            None,
            false,
        )
        .unwrap();
    // The other process's commit reaches the server's searches within its
    // refresh interval, without a write of the server's own.
    let committed = Instant::now();
    let seen = loop {
        let (s, v) = glacier();
        assert_eq!(s, 200, "{v}");
        if ids(&v["results"][0]) == ["ext"] {
            break true;
        }
        if committed.elapsed() > Duration::from_secs(10) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(seen, "the server never saw another process's commit");
    // While another process holds it, a server write waits, then answers 409.
    let (s, v) = post(
        &server.url("/indexes/docs/documents/delete"),
        &json!({"ids": ["lava"]}),
    );
    assert_eq!(s, 409, "{v}");
    drop(other);
    // Released: the server's next write sees the other process's document.
    let (s, v) = post(
        &server.url("/indexes/docs/documents/delete"),
        &json!({"ids": ["lava", "coffee"]}),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = post(
        &server.url("/indexes/docs/search"),
        &json!({"query": "glacier valleys", "k": 1}),
    );
    assert_eq!((s, ids(&v["results"][0])), (200, vec!["ext".to_string()]));

    // Compaction: the deleted documents are gone from disk, a plain
    // (format 3) index, searches unchanged.
    let before = post(
        &server.url("/indexes/docs/search"),
        &json!({"queries": ["capital of france", "glacier"], "k": 3, "exhaustive": true}),
    )
    .1;
    let (s, v) = post(&server.url("/indexes/docs/compact"), &json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["documents"].clone(), v["generation"].clone()),
        (json!(8), json!(0))
    );
    let reopened = Index::open(&path).unwrap();
    assert_eq!(reopened.num_docs(), 8);
    assert_eq!(reopened.metadata().format_version, 3);
    assert!(!path.join("live.json").exists());
    let after = post(
        &server.url("/indexes/docs/search"),
        &json!({"queries": ["capital of france", "glacier"], "k": 3, "exhaustive": true}),
    )
    .1;
    assert_eq!(before, after);
    let (s, _) = post(&server.url("/indexes/nope/compact"), &json!({}));
    assert_eq!(s, 404);
}

#[test]
fn image_documents_for_a_page_model() {
    let fixtures = common::root().join("tests/fixtures/colqwen2");
    let m = Model::open(fixtures.join("model"), Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pages.index");
    let files: Vec<PathBuf> = (0..4)
        .map(|i| fixtures.join(format!("images/{i}.png")))
        .collect();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let opts = IndexOptions {
        num_centroids: Some(8),
        ..Default::default()
    };
    m.index_images(
        &refs,
        (0..4).map(|i| format!("p{i}")).collect(),
        &path,
        &opts,
    )
    .unwrap();
    let page5 = fixtures.join("images/5.png");
    let want = m.encode_images(&[page5.as_path()]).unwrap().remove(0);
    let dim = m.dim();
    let server = Server::start(Some(m), &path, ServeOptions::default());
    let png = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        std::fs::read(&page5).unwrap(),
    );
    let (s, v) = post(
        &server.url("/indexes/docs/documents"),
        &json!({"documents": [{"id": "p5", "image": png, "metadata": {"kind": "page"}}]}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["vectors"], want.vectors.len() / dim);
    // The added page is found by its own vectors (encoded apart, here).
    let rows: Vec<&[f32]> = want.vectors.chunks(dim).collect();
    let (s, v) = post(
        &server.url("/indexes/docs/search_vectors"),
        &json!({"query": rows, "k": 1, "exhaustive": true}),
    );
    assert_eq!((s, ids(&v["results"][0])), (200, vec!["p5".to_string()]));
    // Text to a page model's index, and an image that is not one: 400.
    let (s, v) = post(
        &server.url("/indexes/docs/documents"),
        &json!({"documents": [{"id": "t", "text": "a page?"}]}),
    );
    assert_eq!(s, 400, "{v}");
    let junk = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"not an image");
    let (s, v) = post(
        &server.url("/indexes/docs/documents"),
        &json!({"documents": [{"id": "j", "image": junk}]}),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("image"), "{v}");
}
