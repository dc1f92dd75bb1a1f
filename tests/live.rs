//! The live index: add / update / delete / compact, snapshots, the writer
//! lock, outlier centroids, metadata filters (exactness and injection).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use colwgpu::api::{NewDoc, PlaidParams};
use colwgpu::backend::Compute;
use colwgpu::{Device, Filter, Index, IndexOptions, IndexWriter, SearchOptions, VectorSet};
use common::Rng;
use serde_json::json;

const DIM: usize = 32;

/// Unit vector near one of `topics` directions.
fn token(rng: &mut Rng, topic: &[f32]) -> Vec<f32> {
    let mut v: Vec<f32> = topic.iter().map(|&t| t + 0.35 * rng.uniform()).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn topics(seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    (0..24).map(|_| rng.vec(DIM, 1.0)).collect()
}

/// `n` documents `prefix0…`, 4–15 tokens each, near two of the topics.
fn make_docs(seed: u64, prefix: &str, n: usize) -> Vec<(String, Vec<f32>)> {
    let t = topics(7);
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let len = 4 + rng.below(12) as usize;
            let (a, b) = (rng.below(24) as usize, rng.below(24) as usize);
            let v: Vec<f32> = (0..len)
                .flat_map(|j| token(&mut rng, if j % 2 == 0 { &t[a] } else { &t[b] }))
                .collect();
            (format!("{prefix}{i}"), v)
        })
        .collect()
}

fn query(seed: u64) -> Vec<f32> {
    make_docs(seed, "q", 1).remove(0).1
}

fn build(dir: &Path, docs: &[(String, Vec<f32>)]) -> Index {
    let mut vectors = Vec::new();
    let mut offsets = vec![0usize];
    for (_, v) in docs {
        vectors.extend_from_slice(v);
        offsets.push(offsets.last().unwrap() + v.len() / DIM);
    }
    let set = VectorSet {
        ids: docs.iter().map(|d| d.0.clone()).collect(),
        dim: DIM,
        vectors,
        offsets,
        kind: None,
        model_path: None,
        model_fingerprint: None,
    };
    let opts = IndexOptions {
        num_centroids: Some(32),
        ..Default::default()
    };
    Index::build_from_vectors(dir, &set, None, &opts, Device::Cpu).unwrap()
}

fn new_docs(docs: &[(String, Vec<f32>)]) -> Vec<NewDoc> {
    docs.iter()
        .map(|(id, v)| NewDoc {
            id: id.clone(),
            vectors: v.clone(),
            metadata: None,
        })
        .collect()
}

fn open(dir: &Path) -> Index {
    Index::open_on(dir, Device::Cpu, &Default::default()).unwrap()
}

fn writer(dir: &Path) -> IndexWriter {
    IndexWriter::open(dir, Duration::ZERO).unwrap()
}

/// Exact MaxSim (f64) of `q` against every document of the index at `dir`,
/// from the index's own decompressed vectors: `(id, score)` best first.
fn brute_force(dir: &Path, q: &[f32]) -> Vec<(String, f64)> {
    let idx = colwgpu::index::Index::open(dir).unwrap();
    let all: Vec<u32> = (0..idx.num_docs() as u32).collect();
    let (v, offs) = idx.decompress_docs(&Compute::Cpu, &all).unwrap();
    let mut out: Vec<(String, f64)> = (0..idx.num_docs())
        .map(|d| {
            let s: f64 = q
                .chunks(DIM)
                .map(|qi| {
                    (offs[d]..offs[d + 1])
                        .map(|r| {
                            qi.iter()
                                .zip(&v[r * DIM..(r + 1) * DIM])
                                .map(|(a, b)| *a as f64 * *b as f64)
                                .sum::<f64>()
                        })
                        .fold(f64::NEG_INFINITY, f64::max)
                })
                .sum();
            (idx.doc_ids()[d].clone(), s)
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

fn exhaustive(k: usize) -> SearchOptions {
    SearchOptions {
        k,
        plaid: None,
        exhaustive: true,
    }
}

fn ids_of(index: &Index) -> HashSet<String> {
    index.doc_ids().iter().cloned().collect()
}

#[test]
fn add_compresses_with_the_base_codec_and_search_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let base = make_docs(1, "b", 120);
    build(&path, &base);
    let extra = make_docs(2, "n", 30);
    let mut w = writer(&path);
    let s = w.add_vectors(&new_docs(&extra), false).unwrap();
    assert_eq!((s.docs, s.generation), (30, 1));
    drop(w);

    let idx = colwgpu::index::Index::open(&path).unwrap();
    assert_eq!(idx.num_docs(), 150);
    assert!(path.join("live.json").is_file());
    // Each added document holds exactly what the base codec makes of it.
    for (i, (id, v)) in extra.iter().enumerate() {
        let d = 120 + i;
        assert_eq!(&idx.doc_ids()[d], id);
        let c = idx.codec().compress_cpu(v);
        assert_eq!(idx.doc_codes(d), &c.codes[..], "{id}");
        assert_eq!(idx.doc_residuals(d), &c.packed[..], "{id}");
    }
    // Exhaustive search over base + added equals brute-force MaxSim.
    let index = open(&path);
    for seed in [11, 12, 13] {
        let q = query(seed);
        let hits = index.search_vectors(&[&q], &exhaustive(10)).unwrap();
        let want = brute_force(&path, &q);
        for (h, (id, s)) in hits[0].iter().zip(&want) {
            assert_eq!(&h.id, id);
            assert!((h.score as f64 - s).abs() < 1e-4, "{} vs {s}", h.score);
        }
        // PLAID finds an added document queried with its own vectors.
        let (id, v) = &extra[seed as usize % 30];
        let hits = index.search_vectors(&[v], &SearchOptions::new(5)).unwrap();
        assert_eq!(&hits[0][0].id, id);
    }
}

#[test]
fn delete_update_and_id_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let base = make_docs(3, "b", 80);
    build(&path, &base);
    let mut w = writer(&path);
    // Existing id without update; unknown id with update; duplicate in a batch.
    let e = w.add_vectors(&new_docs(&base[..1]), false).unwrap_err();
    assert!(e.to_string().contains("already in the index"), "{e}");
    let fresh = make_docs(4, "x", 2);
    let e = w.add_vectors(&new_docs(&fresh[..1]), true).unwrap_err();
    assert!(e.to_string().contains("nothing to update"), "{e}");
    let dup = vec![fresh[0].clone(), fresh[0].clone()];
    assert!(w.add_vectors(&new_docs(&dup), false).is_err());
    let bad = vec![("z".to_string(), vec![0.5; DIM + 1])];
    assert!(w.add_vectors(&new_docs(&bad), false).is_err());
    // Unknown id: nothing deleted at all.
    let e = w.delete(&["b1", "nope"]).unwrap_err();
    assert!(e.to_string().contains("'nope'"), "{e}");
    assert_eq!(w.generation(), 0);
    assert!(!path.join("live.json").exists());

    let reader = open(&path);
    w.delete(&["b1", "b2"]).unwrap();
    // Hidden from a new snapshot at once (exhaustively: from every result).
    let after = open(&path);
    assert_eq!(after.num_docs(), 78);
    let all = after
        .search_vectors(&[&base[1].1], &exhaustive(100))
        .unwrap();
    assert!(all[0].iter().all(|h| h.id != "b1" && h.id != "b2"));
    // The old snapshot is unchanged.
    assert_eq!(reader.num_docs(), 80);
    let old = reader
        .search_vectors(&[&base[1].1], &exhaustive(1))
        .unwrap();
    assert_eq!(old[0][0].id, "b1");
    // A deleted id can be added again; update replaces under the same id.
    w.add_vectors(
        &new_docs(&[(String::from("b1"), fresh[0].1.clone())]),
        false,
    )
    .unwrap();
    let s = w
        .add_vectors(&new_docs(&[(String::from("b3"), fresh[1].1.clone())]), true)
        .unwrap();
    assert_eq!(s.replaced, 1);
    drop(w);
    let idx = open(&path);
    assert_eq!(idx.num_docs(), 79);
    assert_eq!(idx.doc_ids().iter().filter(|d| *d == "b3").count(), 1);
    let hit = idx.search_vectors(&[&fresh[1].1], &exhaustive(1)).unwrap();
    assert_eq!(hit[0][0].id, "b3");
    let want = brute_force(&path, &fresh[1].1);
    assert_eq!(want[0].0, "b3");
    assert!((hit[0][0].score as f64 - want[0].1).abs() < 1e-4);
}

#[test]
fn one_writer_many_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    build(&path, &make_docs(5, "b", 40));
    let w = writer(&path);
    let e = IndexWriter::open(&path, Duration::ZERO).unwrap_err();
    assert!(matches!(e, colwgpu::Error::Locked { .. }), "{e}");
    let t = std::time::Instant::now();
    let e = IndexWriter::open(&path, Duration::from_millis(300)).unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(e.to_string().contains("waited"), "{e}");
    // A waiting writer gets the lock once the first is dropped.
    let p2 = path.clone();
    let h = std::thread::spawn(move || IndexWriter::open(&p2, Duration::from_secs(20)).is_ok());
    std::thread::sleep(Duration::from_millis(100));
    drop(w);
    assert!(h.join().unwrap());
    // Readers never need the lock.
    let _w = writer(&path);
    assert_eq!(open(&path).num_docs(), 40);
}

#[test]
fn outliers_become_new_centroids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    build(&path, &make_docs(6, "b", 60));
    let before = colwgpu::index::Index::open(&path).unwrap().num_centroids();
    let mut w = writer(&path);
    // Vectors unlike any base topic (a fresh set of directions).
    let t = {
        let mut rng = Rng::new(99);
        (0..4).map(|_| rng.vec(DIM, 1.0)).collect::<Vec<_>>()
    };
    let mut rng = Rng::new(100);
    let far: Vec<(String, Vec<f32>)> = (0..20)
        .map(|i| {
            let v: Vec<f32> = (0..8).flat_map(|_| token(&mut rng, &t[i % 4])).collect();
            (format!("far{i}"), v)
        })
        .collect();
    w.set_outlier_policy(0.3, 64).unwrap();
    let s1 = w.add_vectors(&new_docs(&far[..5]), false).unwrap();
    assert!(s1.outliers > 0 && s1.new_centroids == 0, "{s1:?}");
    assert_eq!(w.pending_outliers(), s1.outliers);
    let s2 = w.add_vectors(&new_docs(&far[5..]), false).unwrap();
    assert!(s2.new_centroids >= 1, "{s2:?}");
    assert_eq!(w.pending_outliers(), 0);
    drop(w);
    let idx = colwgpu::index::Index::open(&path).unwrap();
    assert_eq!(idx.num_centroids(), before + s2.new_centroids);
    // The second batch was compressed against the grown codebook.
    let d = idx.doc_ids().iter().position(|x| x == "far10").unwrap();
    let c = idx.codec().compress_cpu(&far[10].1);
    assert_eq!(idx.doc_codes(d), &c.codes[..]);
    assert!(idx.doc_codes(d).iter().any(|&c| c as usize >= before));
    // Only files the manifest names are left.
    let names: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("outliers-") || n.starts_with("centroids-"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let index = open(&path);
    let hits = index
        .search_vectors(&[&far[12].1], &SearchOptions::new(3))
        .unwrap();
    assert_eq!(hits[0][0].id, "far12");
}

/// Which corpus positions a filter must keep.
type Keep = Box<dyn Fn(usize) -> bool>;

fn meta_of(i: usize) -> serde_json::Value {
    let topic = ["bio", "chem", "phys"][i % 3];
    json!({"year": 2000 + (i % 10) as i64, "topic": topic, "n": i, "tags": ["t", i % 7]})
}

/// An index of 200 base documents plus 100 added, every one with metadata.
fn filtered_corpus(path: &Path) -> Vec<(String, Vec<f32>)> {
    let base = make_docs(21, "b", 200);
    build(path, &base);
    let extra = make_docs(22, "n", 100);
    let mut w = writer(path);
    let items: Vec<(&str, serde_json::Value)> = base
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.as_str(), meta_of(i)))
        .collect();
    w.set_metadata(&items).unwrap();
    let docs: Vec<NewDoc> = extra
        .iter()
        .enumerate()
        .map(|(i, (id, v))| NewDoc {
            id: id.clone(),
            vectors: v.clone(),
            metadata: Some(meta_of(200 + i)),
        })
        .collect();
    w.add_vectors(&docs, false).unwrap();
    let mut all = base;
    all.extend(extra);
    all
}

#[test]
fn filtered_search_is_the_exhaustive_filtered_top_k() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    let all = filtered_corpus(&path);
    let pos: BTreeMap<&str, usize> = all
        .iter()
        .enumerate()
        .map(|(i, d)| (d.0.as_str(), i))
        .collect();
    let index = open(&path);
    let cases: Vec<(Filter, Keep)> = vec![
        (
            Filter::new("topic = ?", vec![json!("bio")]),
            Box::new(|i| i % 3 == 0),
        ),
        (
            Filter::new("year >= ? AND topic != ?", vec![json!(2005), json!("chem")]),
            Box::new(|i| i % 10 >= 5 && i % 3 != 1),
        ),
        (Filter::new("n < ?", vec![json!(15)]), Box::new(|i| i < 15)),
        (
            Filter::new("n = ?", vec![json!(250)]),
            Box::new(|i| i == 250),
        ),
        (
            Filter::new("json_extract(tags, '$[1]') = ?", vec![json!(3)]),
            Box::new(|i| i % 7 == 3),
        ),
    ];
    for (f, keep) in &cases {
        let ids = index.filter_ids(f).unwrap();
        let want: Vec<&str> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, d)| d.0.as_str())
            .collect();
        let mut got: Vec<&str> = ids.iter().map(String::as_str).collect();
        got.sort_by_key(|id| pos[id]);
        assert_eq!(got, want, "{f:?}");
        for seed in [31, 32, 33, 34] {
            let q = query(seed);
            let truth: Vec<(String, f64)> = brute_force(&path, &q)
                .into_iter()
                .filter(|(id, _)| keep(pos[id.as_str()]))
                .take(10)
                .collect();
            let ex = index
                .search_vectors_filtered(&[&q], &exhaustive(10), f)
                .unwrap();
            let plaid = index
                .search_vectors_filtered(&[&q], &SearchOptions::new(10), f)
                .unwrap();
            for hits in [&ex[0], &plaid[0]] {
                assert_eq!(hits.len(), truth.len().min(10), "{f:?}");
            }
            for (h, (id, s)) in ex[0].iter().zip(&truth) {
                assert_eq!(&h.id, id, "{f:?}");
                assert!((h.score as f64 - s).abs() < 1e-4);
            }
            // With at most ndocs/4 documents passing, PLAID reranks all of
            // them: exactly the filtered top-k.
            if want.len() <= PlaidParams::for_k(10).ndocs / 4 {
                let a: Vec<&str> = plaid[0].iter().map(|h| h.id.as_str()).collect();
                let b: Vec<&str> = truth.iter().map(|t| t.0.as_str()).collect();
                assert_eq!(a, b, "{f:?}");
            }
            assert!(plaid[0].iter().all(|h| keep(pos[h.id.as_str()])));
        }
    }
    // Metadata round trip; deleted documents never pass a filter.
    let md = index.document_metadata(&["n5", "b7"]).unwrap();
    assert_eq!(md[0].as_ref(), Some(&meta_of(205)));
    assert_eq!(md[1].as_ref(), Some(&meta_of(7)));
    drop(index);
    let mut w = writer(&path);
    w.delete(&["n50"]).unwrap();
    drop(w);
    let index = open(&path);
    let f = Filter::new("n = ?", vec![json!(250)]);
    assert!(index.filter_ids(&f).unwrap().is_empty());
    let hits = index
        .search_vectors_filtered(&[&all[250].1], &SearchOptions::new(5), &f)
        .unwrap();
    assert!(hits[0].is_empty());
}

#[test]
fn filters_can_only_filter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    filtered_corpus(&path);
    let index = open(&path);
    let attacks = [
        "1; DROP TABLE metadata",
        "1); DROP TABLE metadata; --",
        "n IN (SELECT name FROM sqlite_master)",
        "EXISTS (SELECT 1 FROM sqlite_schema)",
        "1) UNION SELECT rowid FROM sqlite_master --",
        "load_extension('x') IS NULL",
        "n = (SELECT count(*) FROM pragma_table_info('metadata'))",
        "1 = 1; ATTACH DATABASE '/tmp/evil.db' AS evil",
        "1 = 1; PRAGMA writable_schema = 1",
        "1 = 1; INSERT INTO metadata (_doc, _id, _json) VALUES (9999, 'x', '{}')",
        "1 = 1; UPDATE metadata SET n = 0",
        "n IN (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c)",
        "randomblob(10) IS NOT NULL",
        "",
        "year >",
    ];
    for a in attacks {
        let e = index
            .filter_ids(&Filter::new(a, vec![]))
            .expect_err(a)
            .to_string();
        assert!(!e.is_empty(), "{a}");
    }
    // Parameters are bound, never spliced: a hostile string is just a value.
    let f = Filter::new("topic = ?", vec![json!("bio'; DROP TABLE metadata; --")]);
    assert!(index.filter_ids(&f).unwrap().is_empty());
    // Wrong parameter count, non-scalar parameter.
    assert!(index.filter_ids(&Filter::new("n = ?", vec![])).is_err());
    assert!(index
        .filter_ids(&Filter::new("n = ?", vec![json!([1])]))
        .is_err());
    // The table and every row are intact.
    let f = Filter::new("n >= ?", vec![json!(0)]);
    assert_eq!(index.filter_ids(&f).unwrap().len(), 300);
}

#[test]
fn compact_drops_deleted_and_keeps_results() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    filtered_corpus(&path);
    let mut w = writer(&path);
    let dead: Vec<String> = (0..300)
        .step_by(4)
        .map(|i| {
            if i < 200 {
                format!("b{i}")
            } else {
                format!("n{}", i - 200)
            }
        })
        .collect();
    let refs: Vec<&str> = dead.iter().map(String::as_str).collect();
    w.delete(&refs).unwrap();
    drop(w);
    let before = open(&path);
    let qs: Vec<Vec<f32>> = (40..45).map(query).collect();
    let blocks: Vec<&[f32]> = qs.iter().map(Vec::as_slice).collect();
    let r1 = before
        .search_vectors(&blocks, &SearchOptions::new(10))
        .unwrap();
    let e1 = before.search_vectors(&blocks, &exhaustive(10)).unwrap();
    let f = Filter::new("topic = ?", vec![json!("phys")]);
    let f1 = before.filter_ids(&f).unwrap();
    let kept = writer(&path).compact().unwrap();
    assert_eq!(kept, 225);
    assert!(!path.join("live.json").exists());
    let after = open(&path);
    assert_eq!(after.num_docs(), 225);
    assert_eq!(after.generation(), 0);
    assert_eq!(ids_of(&after), ids_of(&before));
    let e2 = after.search_vectors(&blocks, &exhaustive(10)).unwrap();
    for (a, b) in e1.iter().zip(&e2) {
        for (x, y) in a.iter().zip(b) {
            assert_eq!((&x.id, x.score), (&y.id, y.score));
        }
    }
    let r2 = after
        .search_vectors(&blocks, &SearchOptions::new(10))
        .unwrap();
    for (a, b) in r1.iter().zip(&r2) {
        let a: Vec<&str> = a.iter().map(|h| h.id.as_str()).collect();
        let b: Vec<&str> = b.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(a, b);
    }
    assert_eq!(after.filter_ids(&f).unwrap(), f1);
    assert_eq!(
        after.document_metadata(&["n5"]).unwrap()[0].as_ref(),
        Some(&meta_of(205))
    );
    // The compacted index is a plain one: it takes new documents again.
    let mut w = writer(&path);
    w.add_vectors(&new_docs(&make_docs(50, "c", 3)), false)
        .unwrap();
    drop(w);
    assert_eq!(open(&path).num_docs(), 228);
}

#[test]
fn damaged_live_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idx");
    build(&path, &make_docs(8, "b", 30));
    let mut w = writer(&path);
    w.add_vectors(&new_docs(&make_docs(9, "n", 5)), false)
        .unwrap();
    drop(w);
    let seg = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    let n = b.len();
    b[n - 3] ^= 1;
    std::fs::write(&seg, &b).unwrap();
    let e = Index::open(&path).unwrap_err().to_string();
    assert!(e.contains("seg-") && e.contains("checksum"), "{e}");
    let m = path.join("live.json");
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("\"generation\": 1", "\"generation\": 2");
    std::fs::write(&m, text).unwrap();
    let e = Index::open(&path).unwrap_err().to_string();
    assert!(e.contains("live.json") && e.contains("checksum"), "{e}");
}

/// `format_version` in the base's `metadata.json`.
fn format_version(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("metadata.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["format_version"].as_u64().unwrap()
}

#[test]
fn a_live_index_has_format_version_4_and_compact_writes_3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let docs = make_docs(1, "d", 40);
    drop(build(&dir, &docs));
    assert_eq!(format_version(&dir), 3);
    // Opening a writer changes nothing; the first commit marks the base.
    let mut w = writer(&dir);
    assert_eq!(format_version(&dir), 3);
    w.add_vectors(&new_docs(&make_docs(2, "a", 3)), false)
        .unwrap();
    assert_eq!(format_version(&dir), 4);
    w.delete(&["d0"]).unwrap();
    drop(w);
    assert_eq!(format_version(&dir), 4);
    let index = open(&dir);
    assert_eq!(index.num_docs(), 42);
    assert_eq!(index.metadata().format_version, 4);
    drop(index);
    // A format a binary does not know is refused, naming both it knows.
    let meta = std::fs::read_to_string(dir.join("metadata.json")).unwrap();
    let p = tmp.path().join("v5");
    std::fs::create_dir(&p).unwrap();
    std::fs::write(
        p.join("metadata.json"),
        meta.replace("\"format_version\": 4", "\"format_version\": 5"),
    )
    .unwrap();
    let e = Index::open(&p).unwrap_err().to_string();
    assert!(
        e.contains("format version 5") && e.contains("3 and 4"),
        "{e}"
    );
    // Compaction leaves a plain index: version 3 again.
    writer(&dir).compact().unwrap();
    assert_eq!(format_version(&dir), 3);
    assert_eq!(open(&dir).num_docs(), 42);
}

#[test]
fn killed_between_marking_the_base_and_the_first_manifest() {
    // The state that window leaves: metadata.json at version 4, no live.json.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    let docs = make_docs(3, "d", 30);
    drop(build(&dir, &docs));
    let before = brute_force(&dir, &query(9));
    let p = dir.join("metadata.json");
    let mut meta = colwgpu::index::read_metadata(&dir).unwrap();
    meta.format_version = colwgpu::index::LIVE_FORMAT_VERSION;
    std::fs::write(&p, colwgpu::index::store::metadata_json(&meta).unwrap()).unwrap();
    // It opens as the plain index it was, and a writer carries on from it.
    let index = open(&dir);
    assert_eq!(index.num_docs(), 30);
    let hits = index.search_vectors(&[&query(9)], &exhaustive(5)).unwrap();
    let ids: Vec<&str> = hits[0].iter().map(|h| h.id.as_str()).collect();
    let want: Vec<&str> = before[..5].iter().map(|h| h.0.as_str()).collect();
    assert_eq!(ids, want);
    drop(index);
    let mut w = writer(&dir);
    w.add_vectors(&new_docs(&make_docs(4, "a", 2)), false)
        .unwrap();
    drop(w);
    assert_eq!(format_version(&dir), 4);
    assert_eq!(open(&dir).num_docs(), 32);
}
