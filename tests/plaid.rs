//! Tier 3: PLAID search against exhaustive MaxSim, the GPU search path against
//! the CPU one, retrieval metrics against hand-computed values, and a real
//! end-to-end run (encode → index → search → eval) on SciFact documents.

mod common;

use std::collections::HashMap;

use colwgpu::backend::Compute;
use colwgpu::eval::{evaluate, mrr_at, ndcg_at, read_qrels, recall_at};
use colwgpu::index::{build_index_with, InMemorySource, Index, IndexOptions, ModelInfo};
use colwgpu::search::{PlaidParams, SearchOptions, Searcher};
use common::{gpu, Rng};

const DIM: usize = 32;

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// Clustered unit vectors: `docs` documents of 1..=40 vectors around 24 topics,
/// and `nq` queries of `qlen` vectors near some topics.
fn synthetic(seed: u64, docs: usize, nq: usize, qlen: usize) -> (Vec<Vec<f32>>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let topics: Vec<Vec<f32>> = (0..24)
        .map(|_| {
            let mut t = rng.vec(DIM, 1.0);
            normalise(&mut t);
            t
        })
        .collect();
    let vector_near = |rng: &mut Rng, t: usize, spread: f32| {
        let mut v: Vec<f32> = topics[t]
            .iter()
            .map(|x| x + rng.uniform() * spread)
            .collect();
        normalise(&mut v);
        v
    };
    let corpus = (0..docs)
        .map(|_| {
            let len = 1 + rng.below(40) as usize;
            let main = rng.below(24) as usize;
            (0..len)
                .flat_map(|_| {
                    let t = if rng.below(3) == 0 {
                        rng.below(24) as usize
                    } else {
                        main
                    };
                    vector_near(&mut rng, t, 0.4)
                })
                .collect()
        })
        .collect();
    let queries = (0..nq * qlen)
        .flat_map(|i| {
            let t = (i / qlen * 7 + i % 3) % 24;
            vector_near(&mut rng, t, 0.5)
        })
        .collect();
    (corpus, queries)
}

fn model() -> ModelInfo {
    ModelInfo {
        name: "synthetic".into(),
        fingerprint: "crc32:00000000".into(),
        dim: DIM,
    }
}

fn build(dir: &std::path::Path, corpus: &[Vec<f32>], compute: Compute) -> Index {
    let ids: Vec<String> = (0..corpus.len()).map(|i| format!("doc{i}")).collect();
    let mut src = InMemorySource {
        dim: DIM,
        docs: corpus,
    };
    let opts = IndexOptions {
        nbits: 2,
        num_centroids: Some(64),
        compute,
        ..Default::default()
    };
    build_index_with(&mut src, &ids, &model(), dir, &opts, &mut |_| {}).unwrap();
    Index::open(dir).unwrap()
}

#[test]
fn plaid_probing_every_cell_equals_exhaustive_maxsim() {
    let (corpus, queries) = synthetic(11, 300, 6, 8);
    let tmp = tempfile::tempdir().unwrap();
    let index = build(&tmp.path().join("idx"), &corpus, Compute::Cpu);
    for compute in [Compute::Cpu, Compute::Gpu(gpu())] {
        let s = Searcher::new(&index, compute.clone()).unwrap();
        let k = 20;
        let exhaustive = s
            .search(
                &queries,
                8,
                &SearchOptions {
                    k,
                    plaid: None,
                    exhaustive: true,
                },
            )
            .unwrap();
        let all = PlaidParams::exhaustive(index.num_centroids(), index.num_docs());
        let plaid = s
            .search(
                &queries,
                8,
                &SearchOptions {
                    k,
                    plaid: Some(all),
                    exhaustive: false,
                },
            )
            .unwrap();
        for (e, p) in exhaustive.iter().zip(&plaid) {
            let ed: Vec<u32> = e.iter().map(|h| h.doc).collect();
            let pd: Vec<u32> = p.iter().map(|h| h.doc).collect();
            assert_eq!(
                ed,
                pd,
                "{}: PLAID with every cell probed differs from exhaustive MaxSim",
                compute.describe()
            );
            assert_eq!(e.len(), k);
        }
    }
}

#[test]
fn exhaustive_search_equals_brute_force_on_decompressed_vectors() {
    let (corpus, queries) = synthetic(12, 120, 3, 8);
    let tmp = tempfile::tempdir().unwrap();
    let index = build(&tmp.path().join("idx"), &corpus, Compute::Cpu);
    let all: Vec<u32> = (0..index.num_docs() as u32).collect();
    let (vecs, offs) = index.decompress_docs(&Compute::Cpu, &all).unwrap();
    let s = Searcher::new(&index, Compute::Cpu).unwrap();
    let hits = s
        .search(
            &queries,
            8,
            &SearchOptions {
                k: 5,
                plaid: None,
                exhaustive: true,
            },
        )
        .unwrap();
    for (qi, h) in hits.iter().enumerate() {
        let q = &queries[qi * 8 * DIM..(qi + 1) * 8 * DIM];
        let mut brute: Vec<(f64, u32)> = (0..index.num_docs())
            .map(|d| {
                let score: f64 = q
                    .chunks(DIM)
                    .map(|qi| {
                        (offs[d]..offs[d + 1])
                            .map(|j| {
                                qi.iter()
                                    .zip(&vecs[j * DIM..(j + 1) * DIM])
                                    .map(|(a, b)| *a as f64 * *b as f64)
                                    .sum::<f64>()
                            })
                            .fold(f64::NEG_INFINITY, f64::max)
                    })
                    .sum();
                (score, d as u32)
            })
            .collect();
        brute.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let want: Vec<u32> = brute.iter().take(5).map(|x| x.1).collect();
        let got: Vec<u32> = h.iter().map(|x| x.doc).collect();
        assert_eq!(got, want);
        for (x, b) in h.iter().zip(&brute) {
            assert!(
                (x.score as f64 - b.0).abs() < 1e-3,
                "score {} vs {}",
                x.score,
                b.0
            );
        }
    }
}

#[test]
fn gpu_search_equals_cpu_search_with_default_knobs() {
    let (corpus, queries) = synthetic(13, 400, 8, 8);
    let tmp = tempfile::tempdir().unwrap();
    let index = build(&tmp.path().join("idx"), &corpus, Compute::Cpu);
    for k in [1, 10, 100] {
        let opts = SearchOptions::new(k);
        let cpu = Searcher::new(&index, Compute::Cpu)
            .unwrap()
            .search(&queries, 8, &opts)
            .unwrap();
        let gpu = Searcher::new(&index, Compute::Gpu(gpu()))
            .unwrap()
            .search(&queries, 8, &opts)
            .unwrap();
        for (c, g) in cpu.iter().zip(&gpu) {
            let cd: Vec<&str> = c.iter().map(|h| h.id.as_str()).collect();
            let gd: Vec<&str> = g.iter().map(|h| h.id.as_str()).collect();
            assert_eq!(cd, gd, "k={k}");
            for (a, b) in c.iter().zip(g) {
                assert!((a.score - b.score).abs() < 1e-4);
            }
        }
    }
}

#[test]
fn search_rejects_bad_requests_and_caps_k() {
    let (corpus, queries) = synthetic(14, 30, 1, 8);
    let tmp = tempfile::tempdir().unwrap();
    let index = build(&tmp.path().join("idx"), &corpus, Compute::Cpu);
    let s = Searcher::new(&index, Compute::Cpu).unwrap();
    // k larger than the corpus: every document, once.
    let all = s
        .search(
            &queries,
            8,
            &SearchOptions {
                k: 1000,
                plaid: None,
                exhaustive: true,
            },
        )
        .unwrap();
    assert_eq!(all[0].len(), 30);
    let e = s
        .search(&queries, 8, &SearchOptions::new(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("k must be"), "{e}");
    let e = s
        .search(&queries[..DIM * 3], 8, &SearchOptions::new(5))
        .unwrap_err()
        .to_string();
    assert!(e.contains("search"), "{e}");
    // An index built with another model is refused with both names.
    let other = ModelInfo {
        name: "other".into(),
        fingerprint: "crc32:ffffffff".into(),
        dim: DIM,
    };
    let e = index.check_model(&other).unwrap_err().to_string();
    assert!(e.contains("synthetic") && e.contains("other"), "{e}");
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn metrics_match_hand_computed_values() {
    let judged: HashMap<String, i32> = [("d2", 1), ("d4", 2), ("d9", 1), ("d5", 0)]
        .iter()
        .map(|(d, r)| (d.to_string(), *r))
        .collect();
    let ranking = strings(&["d1", "d2", "d3", "d4", "d5"]);
    // DCG@10 = 1/log2(3) + 2/log2(5) = 0.630930 + 0.861353 = 1.492283
    // IDCG@10 = 2/log2(2) + 1/log2(3) + 1/log2(4) = 2 + 0.630930 + 0.5 = 3.130930
    assert!((ndcg_at(&ranking, &judged, 10) - 1.492283 / 3.130930).abs() < 1e-6);
    // @2 only d2 counts: DCG 0.630930; IDCG@2 = 2 + 0.630930
    assert!((ndcg_at(&ranking, &judged, 2) - 0.630930 / 2.630930).abs() < 1e-6);
    assert!((recall_at(&ranking, &judged, 10) - 2.0 / 3.0).abs() < 1e-12);
    assert!((recall_at(&ranking, &judged, 2) - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(mrr_at(&ranking, &judged, 10), 0.5);
    assert_eq!(mrr_at(&ranking, &judged, 1), 0.0);
    // A perfect ranking scores 1; queries without relevant judgments are skipped.
    let mut runs = HashMap::new();
    runs.insert("q1".to_string(), strings(&["d4", "d2", "d9"]));
    runs.insert("q2".to_string(), strings(&["x"]));
    let mut qrels = HashMap::new();
    qrels.insert("q1".to_string(), judged.clone());
    qrels.insert(
        "q2".to_string(),
        [("x".to_string(), 0)].into_iter().collect(),
    );
    let (m, n) = evaluate(&runs, &qrels);
    assert_eq!(n, 1);
    assert!((m.ndcg_at_10 - 1.0).abs() < 1e-12 && m.recall_at_100 == 1.0 && m.mrr_at_10 == 1.0);
}

#[test]
fn qrels_parse_with_and_without_header_and_report_bad_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("q.tsv");
    std::fs::write(
        &p,
        "query-id\tcorpus-id\tscore\n1\tA\t1\n1\tB\t2\n2\tC\t0\n",
    )
    .unwrap();
    let q = read_qrels(&p).unwrap();
    assert_eq!(q["1"]["B"], 2);
    assert_eq!(q["2"]["C"], 0);
    std::fs::write(&p, "1\tA\t1\n").unwrap();
    assert_eq!(read_qrels(&p).unwrap()["1"]["A"], 1);
    std::fs::write(&p, "1\tA\t1\n2\tB\n").unwrap();
    let e = read_qrels(&p).unwrap_err().to_string();
    assert!(e.contains("line 2"), "{e}");
    std::fs::write(&p, "1\tA\t1\n2\tB\thigh\n").unwrap();
    let e = read_qrels(&p).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("integer"), "{e}");
}

#[test]
fn real_scifact_end_to_end_finds_the_cited_documents() {
    // The bundled sample: 20 SciFact test claims, the 22 abstracts they cite and
    // ~100 others. Encode → index (2 bits) → PLAID search → eval.
    use colwgpu::gpu::GpuOptions;
    use colwgpu::model::{DeviceChoice, Encoder};
    let ex = common::root().join("examples/scifact-mini");
    let docs = colwgpu::io::read_records(&ex.join("corpus.jsonl")).unwrap();
    let queries = colwgpu::io::read_records(&ex.join("queries.jsonl")).unwrap();
    let qrels = read_qrels(&ex.join("qrels/test.tsv")).unwrap();
    let mut enc = Encoder::open(
        &common::model_dir(),
        DeviceChoice::Cpu,
        &GpuOptions::default(),
    )
    .unwrap();
    let info = ModelInfo::from_dir(&common::model_dir(), enc.dim()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("scifact-mini.index");
    colwgpu::index::build_index(
        &mut enc,
        &info,
        &docs,
        &dir,
        &IndexOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let index = Index::open(&dir).unwrap();
    index.check_model(&info).unwrap();
    let texts: Vec<&str> = queries.iter().map(|r| r.text.as_str()).collect();
    let q = enc.encode_queries(&texts).unwrap();
    let flat: Vec<f32> = q.iter().flat_map(|t| t.vectors.iter().copied()).collect();
    let hits = Searcher::new(&index, Compute::Cpu)
        .unwrap()
        .search(&flat, 32, &SearchOptions::new(10))
        .unwrap();
    let runs: HashMap<String, Vec<String>> = queries
        .iter()
        .zip(&hits)
        .map(|(r, h)| (r.id.clone(), h.iter().map(|x| x.id.clone()).collect()))
        .collect();
    let (m, n) = evaluate(&runs, &qrels);
    eprintln!(
        "scifact-mini: {n} queries, nDCG@10 {:.4}, Recall@10 {:.4}",
        m.ndcg_at_10, m.recall_at_10
    );
    assert_eq!(n, 20);
    // Measured 0.968 / 1.000 with the seeded head; a broken encoder, codec or
    // search drops these far below.
    assert!(m.recall_at_10 >= 0.9 && m.ndcg_at_10 >= 0.85, "{m:?}");
}
