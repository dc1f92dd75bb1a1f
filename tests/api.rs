//! The front door (`colwgpu::{Model, Index}`) and the CLI over it, on the real
//! model and the bundled SciFact sample: vectors in and out, an index that
//! knows its model, search with texts or vectors, reranking.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use colwgpu::api::{PlaidParams, UNKNOWN_MODEL};
use colwgpu::{Device, Document, Index, IndexOptions, Model, SearchOptions, VectorSet};

fn sample_docs(n: usize) -> Vec<Document> {
    let path = common::root().join("examples/scifact-mini/corpus.jsonl");
    let mut docs = colwgpu::io::read_records(&path).unwrap();
    docs.truncate(n);
    docs
}

fn sample_queries() -> Vec<String> {
    let path = common::root().join("examples/scifact-mini/queries.jsonl");
    colwgpu::io::read_records(&path)
        .unwrap()
        .into_iter()
        .take(8)
        .map(|r| r.text)
        .collect()
}

fn ids(hits: &[colwgpu::Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

/// A `.npy` file (format 1.0, little-endian, C order) written by hand.
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    let shape_s = match shape {
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap();
}

#[test]
fn index_from_vectors_equals_index_from_texts() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::open(common::model_dir(), Device::Cpu).unwrap();
    let docs = sample_docs(40);
    let from_text = model
        .index(&docs, dir.path().join("text"), &IndexOptions::default())
        .unwrap();

    // Vectors out through the safetensors file `colwgpu encode` writes, back in.
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let encoded = model.encode_documents(&texts).unwrap();
    let doc_ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
    let file = dir.path().join("docs.safetensors");
    colwgpu::io::write_vectors(
        &file,
        &doc_ids,
        &encoded,
        model.dim(),
        &colwgpu::api::vector_metadata(&model, "documents"),
        &[],
    )
    .unwrap();
    let set = colwgpu::io::read_vectors(&file, None).unwrap();
    assert_eq!(set.ids, doc_ids);
    assert_eq!(
        set.model_fingerprint.as_deref(),
        Some(model.info().fingerprint.as_str())
    );
    let from_vectors = Index::build_from_vectors(
        dir.path().join("vectors"),
        &set,
        None,
        &IndexOptions::default(),
        Device::Cpu,
    )
    .unwrap();
    // The model came along with the vectors.
    assert_eq!(from_vectors.metadata().model, from_text.metadata().model);
    assert_eq!(from_vectors.num_docs(), docs.len());

    let queries = sample_queries();
    let q: Vec<&str> = queries.iter().map(String::as_str).collect();
    let opts = SearchOptions::new(10);
    let a = from_text.search_batch(&model, &q, &opts).unwrap();
    let b = from_vectors.search_batch(&model, &q, &opts).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(ids(x), ids(y));
        for (h, g) in x.iter().zip(y) {
            assert!(
                (h.score - g.score).abs() < 1e-4,
                "{} vs {}",
                h.score,
                g.score
            );
        }
    }

    // Precomputed query vectors give the same hits as the texts.
    let qv = model.encode_queries(&q).unwrap();
    let blocks: Vec<&[f32]> = qv.iter().map(|t| t.vectors.as_slice()).collect();
    let c = from_vectors.search_vectors(&blocks, &opts).unwrap();
    assert_eq!(b, c);
}

#[test]
fn npy_vectors_in_two_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 4;
    let blocks: Vec<Vec<f32>> = vec![
        vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        vec![0.0, 0.0, 1.0, 0.0],
        vec![0.6, 0.8, 0.0, 0.0, 0.0, 0.0, 0.6, 0.8, 0.0, 0.0, 0.0, 1.0],
    ];
    let flat: Vec<u8> = blocks
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let vpath = dir.path().join("v.npy");
    let opath = dir.path().join("o.npy");
    write_npy(&vpath, "<f4", &[6, dim], &flat);
    let offs: Vec<u8> = [0i64, 2, 3, 6]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    write_npy(&opath, "<i8", &[4], &offs);
    let set = colwgpu::io::read_vectors(&vpath, Some(&opath)).unwrap();
    assert_eq!(set, VectorSet::from_blocks(None, dim, &blocks).unwrap());

    // 3-D [texts, len, dim] in f64.
    let f64s: Vec<u8> = (0..12).flat_map(|i| (i as f64).to_le_bytes()).collect();
    let p3 = dir.path().join("q.npy");
    write_npy(&p3, "<f8", &[3, 1, dim], &f64s);
    let set = colwgpu::io::read_vectors(&p3, None).unwrap();
    assert_eq!(set.offsets, vec![0, 1, 2, 3]);
    assert_eq!(set.get(2), &[8.0, 9.0, 10.0, 11.0]);

    // Wrong shapes and offsets are named, not panics.
    let e = colwgpu::io::read_vectors(&vpath, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs its offsets"), "{e}");
    let bad: Vec<u8> = [0i64, 4, 3, 6]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    write_npy(&opath, "<i8", &[4], &bad);
    let e = colwgpu::io::read_vectors(&vpath, Some(&opath))
        .unwrap_err()
        .to_string();
    assert!(e.contains("never decrease"), "{e}");
    let nan: Vec<u8> = [f32::NAN, 0.0, 0.0, 0.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    write_npy(&p3, "<f4", &[1, 1, dim], &nan);
    let e = colwgpu::io::read_vectors(&p3, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("non-finite"), "{e}");
}

#[test]
fn index_knows_its_model_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::open(common::model_dir(), Device::Cpu).unwrap();
    let docs = sample_docs(12);
    let path = dir.path().join("idx");
    model.index(&docs, &path, &IndexOptions::default()).unwrap();
    let index = Index::open(&path).unwrap();
    assert_eq!(
        index.model_dir().unwrap(),
        common::model_dir().canonicalize().unwrap()
    );
    let reopened = index.open_model(Device::Cpu).unwrap();
    assert_eq!(reopened.info(), model.info());
    let hits = index.search(&reopened, &docs[3].text, 3).unwrap();
    assert_eq!(hits[0].id, docs[3].id);

    // A copy of the model with one changed setting has another fingerprint.
    let other = dir.path().join("other-model");
    copy_dir(&common::model_dir(), &other);
    let cfg = other.join("config_sentence_transformers.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replacen('{', "{\"comment\": \"changed\", ", 1)).unwrap();
    let other_model = Model::open(&other, Device::Cpu).unwrap();
    let e = index.search(&other_model, "x", 1).unwrap_err().to_string();
    assert!(e.contains("was built with model"), "{e}");
    assert!(other_model.open_index(&path).is_err());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn rerank_equals_exhaustive_maxsim_order() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::open(common::model_dir(), Device::Cpu).unwrap();
    let docs = sample_docs(30);
    let index = model
        .index(&docs, dir.path().join("idx"), &IndexOptions::default())
        .unwrap();
    let query = sample_queries()[0].clone();
    let exhaustive = index
        .search_batch(
            &model,
            &[&query],
            &SearchOptions {
                exhaustive: true,
                ..SearchOptions::new(docs.len())
            },
        )
        .unwrap()
        .remove(0);
    // Rerank every document, given in reverse id order: same order and scores.
    let mut candidates: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    candidates.reverse();
    let reranked = index.rerank(&model, &query, &candidates).unwrap();
    assert_eq!(ids(&reranked), ids(&exhaustive));
    for (a, b) in reranked.iter().zip(&exhaustive) {
        assert!((a.score - b.score).abs() < 1e-4);
    }
    let e = index.rerank(&model, &query, &["no-such-id"]).unwrap_err();
    assert!(e.to_string().contains("no-such-id"), "{e}");

    // Reranking raw texts (uncompressed vectors) puts the duplicated document first.
    let texts: Vec<&str> = vec![&docs[5].text, &docs[1].text, &query];
    let ranked = model.rerank(&docs[1].text, &texts).unwrap();
    assert_eq!(ranked[0].0, 1);
    assert_eq!(ranked.len(), 3);
}

#[test]
fn vectors_of_an_unknown_model_need_a_model_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = common::Rng::new(7);
    let dim = 16;
    let blocks: Vec<Vec<f32>> = (0..50).map(|i| rng.vec((1 + i % 7) * dim, 1.0)).collect();
    let set = VectorSet::from_blocks(None, dim, &blocks).unwrap();
    let index = Index::build_from_vectors(
        dir.path().join("idx"),
        &set,
        None,
        &IndexOptions::default(),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(index.metadata().model.fingerprint, UNKNOWN_MODEL);
    let e = index.open_model(Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("name the model explicitly"), "{e}");
    // Each document's own vectors find it first.
    let q: Vec<&[f32]> = (0..5).map(|i| set.get(i * 9)).collect();
    let hits = index.search_vectors(&q, &SearchOptions::new(1)).unwrap();
    for (i, h) in hits.iter().enumerate() {
        assert_eq!(h[0].id, (i * 9).to_string());
    }
    // A model of another dimension is refused.
    let model = Model::open(common::model_dir(), Device::Cpu).unwrap();
    let e = index.search(&model, "x", 1).unwrap_err().to_string();
    assert!(e.contains("16-d"), "{e}");
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_colwgpu"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cli_index_from_vectors_and_search_without_model() {
    let dir = tempfile::tempdir().unwrap();
    let corpus: PathBuf = dir.path().join("corpus.jsonl");
    let lines: Vec<String> = sample_docs(25)
        .iter()
        .map(|d| serde_json::json!({"_id": d.id, "text": d.text}).to_string())
        .collect();
    std::fs::write(&corpus, lines.join("\n")).unwrap();
    let model = common::model_dir();
    let p = |n: &str| dir.path().join(n);
    run_ok(
        cli()
            .args(["index", "--device", "cpu", "--model"])
            .arg(&model)
            .arg("--corpus")
            .arg(&corpus)
            .arg("--index")
            .arg(p("text.idx")),
    );
    run_ok(
        cli()
            .args(["encode", "--device", "cpu", "--model"])
            .arg(&model)
            .arg("--docs")
            .arg(&corpus)
            .arg("--out")
            .arg(p("docs.safetensors")),
    );
    run_ok(
        cli()
            .args(["index", "--device", "cpu", "--vectors"])
            .arg(p("docs.safetensors"))
            .arg("--index")
            .arg(p("vec.idx")),
    );
    let query = "cells and tissue";
    let search = |idx: &str| {
        run_ok(
            cli()
                .args([
                    "search", "--device", "cpu", "--json", "-k", "5", "--query", query, "--index",
                ])
                .arg(p(idx)),
        )
    };
    let a = search("text.idx");
    let b = search("vec.idx");
    assert!(a.contains("\"results\""), "{a}");
    assert_eq!(a, b);
}

#[test]
fn gpu_model_searches_on_its_own_device_like_cpu() {
    // The index is built once (CPU); a model on the GPU opens it and searches
    // with its own device: the same hits as the CPU model.
    let dir = tempfile::tempdir().unwrap();
    let docs = sample_docs(20);
    let queries = sample_queries();
    let q: Vec<&str> = queries.iter().take(3).map(String::as_str).collect();
    let path = dir.path().join("idx");
    let cpu_model = Model::open(common::model_dir(), Device::Cpu).unwrap();
    let cpu_index = cpu_model
        .index(&docs, &path, &IndexOptions::default())
        .unwrap();
    let cpu = cpu_index
        .search_batch(&cpu_model, &q, &SearchOptions::new(5))
        .unwrap();
    let gpu_model = Model::open(common::model_dir(), Device::Gpu).unwrap();
    let gpu_index = gpu_model.open_index(&path).unwrap();
    let gpu = gpu_index
        .search_batch(&gpu_model, &q, &SearchOptions::new(5))
        .unwrap();
    assert!(cpu_index.describe_device().starts_with("cpu"));
    assert!(
        gpu_model.describe().starts_with("gpu"),
        "{}",
        gpu_model.describe()
    );
    assert!(
        gpu_index.describe_device().starts_with("gpu"),
        "{}",
        gpu_index.describe_device()
    );
    for (a, b) in cpu.iter().zip(&gpu) {
        assert_eq!(ids(a), ids(b));
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x.score - y.score).abs() < 1e-4,
                "{} vs {}",
                x.score,
                y.score
            );
        }
    }
}

/// Shards built apart with one shared codec (`IndexOptions::codec_from`) merge
/// into the corpus's top-k: exactly for exhaustive search, and for PLAID on
/// this corpus. A shard's codec files are byte-identical to the sample index's.
#[test]
fn shards_with_a_shared_codec_merge_into_the_single_index_top_k() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::open(common::model_dir(), Device::Cpu).unwrap();
    let docs = sample_docs(120);
    // The codec: trained once on a sample (every third document).
    let sample: Vec<Document> = docs.iter().step_by(3).cloned().collect();
    let codec_dir = dir.path().join("codec");
    model
        .index(&sample, &codec_dir, &IndexOptions::default())
        .unwrap();
    let shared = IndexOptions {
        codec_from: Some(codec_dir.clone()),
        ..IndexOptions::default()
    };
    let whole = model
        .index(&docs, dir.path().join("whole"), &shared)
        .unwrap();
    let shards: Vec<Index> = (0..4)
        .map(|s| {
            let part: Vec<Document> = docs.iter().skip(s).step_by(4).cloned().collect();
            model
                .index(&part, dir.path().join(format!("shard{s}")), &shared)
                .unwrap()
        })
        .collect();
    let crc = |i: &Index, f: &str| i.metadata().files[f].crc32;
    let codec_index = Index::open(&codec_dir).unwrap();
    for f in ["centroids.f16", "bucket_cutoffs.f32", "bucket_weights.f32"] {
        for s in shards.iter().chain([&whole]) {
            assert_eq!(crc(s, f), crc(&codec_index, f), "{f}");
        }
    }
    for exhaustive in [true, false] {
        let options = SearchOptions {
            exhaustive,
            ..SearchOptions::new(10)
        };
        let queries = sample_queries();
        let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
        let want = whole.search_batch(&model, &refs, &options).unwrap();
        let per_shard: Vec<Vec<Vec<colwgpu::Hit>>> = shards
            .iter()
            .map(|s| s.search_batch(&model, &refs, &options).unwrap())
            .collect();
        for (q, want) in want.iter().enumerate() {
            let mut merged: Vec<(String, f32)> = per_shard
                .iter()
                .flat_map(|s| s[q].iter().map(|h| (h.id.clone(), h.score)))
                .collect();
            merged.sort_by(|a, b| b.1.total_cmp(&a.1));
            merged.truncate(10);
            let want: Vec<(String, f32)> = want.iter().map(|h| (h.id.clone(), h.score)).collect();
            assert_eq!(merged, want, "query {q}, exhaustive {exhaustive}");
        }
    }
    // PLAID with cuts that bite (ndocs 12 of 120 documents): each shard
    // keeping its own 12 would rerank up to 4× more documents than the whole
    // index; the three-round protocol takes each cut over all shards and
    // returns the whole index's top-k exactly (ids and scores).
    let queries = sample_queries();
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let encoded = model.encode_queries(&refs).unwrap();
    let blocks: Vec<&[f32]> = encoded.iter().map(|e| e.vectors.as_slice()).collect();
    let tight = SearchOptions {
        plaid: Some(PlaidParams {
            ncells: 2,
            centroid_score_threshold: 0.4,
            ndocs: 12,
        }),
        ..SearchOptions::new(3)
    };
    let want = whole.search_vectors(&blocks, &tight).unwrap();
    let shard_refs: Vec<&Index> = shards.iter().collect();
    let got = colwgpu::api::search_shards(&shard_refs, &blocks, &tight, None).unwrap();
    let mut naive_differs = 0;
    for (q, (want, got)) in want.iter().zip(&got).enumerate() {
        let want: Vec<(String, f32)> = want.iter().map(|h| (h.id.clone(), h.score)).collect();
        let got: Vec<(String, f32)> = got.iter().map(|(_, h)| (h.id.clone(), h.score)).collect();
        assert_eq!(got, want, "query {q}, sharded PLAID");
        let mut naive: Vec<(String, f32)> = shards
            .iter()
            .flat_map(|s| s.search_vectors(&[blocks[q]], &tight).unwrap().remove(0))
            .map(|h| (h.id, h.score))
            .collect();
        naive.sort_by(|a, b| b.1.total_cmp(&a.1));
        naive.truncate(3);
        naive_differs += usize::from(naive != want);
    }
    assert!(
        naive_differs > 0,
        "the knobs must make per-shard cuts differ from the global ones for this test to mean anything"
    );
    // The same under metadata filters: each shard filters its own metadata,
    // and the pool rule (every allowed document once the shards hold fewer
    // than ndocs allowed candidates) is taken over all shards. Filters keep a
    // third of the corpus, 10 documents (fewer candidates than ndocs) and 2
    // (fewer than k).
    let meta = |paths: Vec<(PathBuf, Vec<usize>)>| {
        for (path, members) in paths {
            let mut w = colwgpu::IndexWriter::open(&path, std::time::Duration::ZERO).unwrap();
            let items: Vec<(&str, serde_json::Value)> = members
                .iter()
                .map(|&i| (docs[i].id.as_str(), serde_json::json!({ "n": i })))
                .collect();
            w.set_metadata(&items).unwrap();
        }
    };
    meta(
        (0..4)
            .map(|s| {
                (
                    dir.path().join(format!("shard{s}")),
                    (s..120).step_by(4).collect(),
                )
            })
            .chain([(dir.path().join("whole"), (0..120).collect())])
            .collect(),
    );
    let whole = Index::open(dir.path().join("whole")).unwrap();
    let shards: Vec<Index> = (0..4)
        .map(|s| Index::open(dir.path().join(format!("shard{s}"))).unwrap())
        .collect();
    let shard_refs: Vec<&Index> = shards.iter().collect();
    for (condition, param) in [("n % 3 = ?", 0), ("n < ?", 10), ("n < ?", 2)] {
        let filter = colwgpu::Filter::new(condition, vec![serde_json::json!(param)]);
        let want = whole
            .search_vectors_filtered(&blocks, &tight, &filter)
            .unwrap();
        let got = colwgpu::api::search_shards(&shard_refs, &blocks, &tight, Some(&filter)).unwrap();
        for (q, (want, got)) in want.iter().zip(&got).enumerate() {
            let want: Vec<(String, f32)> = want.iter().map(|h| (h.id.clone(), h.score)).collect();
            let got: Vec<(String, f32)> =
                got.iter().map(|(_, h)| (h.id.clone(), h.score)).collect();
            assert_eq!(got, want, "query {q}, filter {condition} {param}");
            assert_eq!(got.len(), if param == 2 { 2 } else { 3 });
        }
    }
    // Shard rounds refuse document indices outside the shard.
    let err = shards[0]
        .shard_full_scores(&blocks[..1], &[vec![10_000]])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("10000") && err.contains("out of range"),
        "{err}"
    );

    // A codec of another width is refused, naming both.
    let err = model
        .index(
            &docs[..10],
            dir.path().join("bad"),
            &IndexOptions {
                nbits: 4,
                ..shared.clone()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 bits") && err.contains("4 bits"), "{err}");
}

#[test]
fn encode_counted_counts_what_count_tokens_counts() {
    let model = Model::open(common::model_dir(), Device::Cpu).unwrap();
    let docs = sample_docs(12);
    let long = "cerebral ".repeat(400);
    let mut texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    texts.push(&long);
    for queries in [false, true] {
        let (vectors, counts) = model.encode_counted(&texts, queries).unwrap();
        assert_eq!(counts, model.count_tokens(&texts, queries).unwrap());
        let alone = if queries {
            model.encode_queries(&texts).unwrap()
        } else {
            model.encode_documents(&texts).unwrap()
        };
        assert_eq!(vectors, alone);
        // The long text is cut (180 document tokens, 32 query tokens).
        assert!(counts.truncated >= 1, "{counts:?}");
        if queries {
            assert_eq!(counts.tokens, 32 * texts.len());
        } else {
            let ids: usize = vectors.iter().map(|v| v.len()).sum();
            assert!(counts.tokens > ids, "skiplisted tokens are counted too");
        }
    }
    let e = model.encode_counted(&["  "], true).unwrap_err();
    assert!(e.to_string().contains("query 0"), "{e}");
}
