//! Tier 2: the encoder on the real model against golden fixtures written by the
//! PyTorch + transformers reference (scripts/reference/make_parity_fixtures.py):
//! 30 SciFact documents and 30 SciFact test queries (from tests/data/scifact-1k),
//! same checkpoint: the fixture records the model's fingerprint and every test first
//! checks that `models/colbert-minilm` is that model.
//! Tolerances, measured + margin: same token ids exactly; per token vector max |Δ|
//! ≤ 1e-5 on the CPU backend and ≤ 1e-4 on the GPU backend (measured on lavapipe:
//! 6–8e-7 on both), cosine ≥ 0.99999; hidden states ≤ 2e-5 (measured ≤ 4.1e-6).

mod common;

use colwgpu::gpu::GpuOptions;
use colwgpu::index::ModelInfo;
use colwgpu::model::{DeviceChoice, Encoder};
use common::{model_dir, root};
use safetensors::SafeTensors;

/// Max |Δ| of token vectors against the reference, per backend.
const CPU_TOLERANCE: f32 = 1e-5;
const GPU_TOLERANCE: f32 = 1e-4;
/// Min cosine of every token vector with the reference's.
const MIN_COSINE: f32 = 0.99999;
/// Max |Δ| of the hidden states (not normalised: values up to ~10), CPU backend.
const HIDDEN_TOLERANCE: f32 = 2e-5;

struct Fixture {
    meta: serde_json::Value,
    queries: Vec<String>,
    docs: Vec<String>,
    bytes: Vec<u8>,
}

impl Fixture {
    fn load() -> Self {
        let dir = root().join("tests/fixtures/parity");
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("scifact_parity.json")).unwrap(),
        )
        .unwrap();
        let strings = |k: &str| -> Vec<String> {
            meta[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        // The goldens hold for one model only: refuse any other with the way out.
        let want = meta["model_fingerprint"]
            .as_str()
            .expect("scifact_parity.json has no model_fingerprint");
        let got = ModelInfo::from_dir(&model_dir(), 0).unwrap().fingerprint;
        assert_eq!(
            got,
            want,
            "{} is not the model the parity fixtures were generated from \
             (fingerprint {got}, fixtures {want}): rebuild it with \
             `bash models/fetch-model.sh`, or regenerate the fixtures with \
             scripts/reference/make_parity_fixtures.py",
            model_dir().display()
        );
        Fixture {
            queries: strings("queries"),
            docs: strings("docs"),
            bytes: std::fs::read(dir.join("scifact_parity.safetensors")).unwrap(),
            meta,
        }
    }
    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
    fn f32s(&self, name: &str) -> Vec<f32> {
        let st = self.tensors();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
    fn i32s(&self, name: &str) -> Vec<i32> {
        let st = self.tensors();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::I32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

/// (max |Δ|, min cosine) over token vectors of `dim`.
fn compare(got: &[f32], want: &[f32], dim: usize) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let mut max_abs = 0.0f32;
    let mut min_cos = 1.0f32;
    for (g, w) in got.chunks(dim).zip(want.chunks(dim)) {
        let dot: f32 = g.iter().zip(w).map(|(a, b)| a * b).sum();
        let ng: f32 = g.iter().map(|a| a * a).sum::<f32>().sqrt();
        let nw: f32 = w.iter().map(|a| a * a).sum::<f32>().sqrt();
        min_cos = min_cos.min(dot / (ng * nw).max(1e-12));
        for (a, b) in g.iter().zip(w) {
            max_abs = max_abs.max((a - b).abs());
        }
    }
    (max_abs, min_cos)
}

fn check_backend(device: DeviceChoice, n_docs: usize, n_queries: usize) {
    let fx = Fixture::load();
    let tol = match device {
        DeviceChoice::Cpu => CPU_TOLERANCE,
        _ => GPU_TOLERANCE,
    };
    let mut enc = Encoder::open(&model_dir(), device, &GpuOptions::default()).unwrap();
    let dim = enc.dim();

    // Queries: token ids and all 32 vectors per query.
    let q_ids = fx.i32s("query_token_ids");
    let q_vecs = fx.f32s("query_vectors");
    let qlen = q_ids.len() / fx.queries.len();
    let texts: Vec<&str> = fx
        .queries
        .iter()
        .take(n_queries)
        .map(String::as_str)
        .collect();
    let got = enc.encode_queries(&texts).unwrap();
    let (mut worst_abs, mut worst_cos) = (0.0f32, 1.0f32);
    for (i, g) in got.iter().enumerate() {
        let want_ids: Vec<u32> = q_ids[i * qlen..(i + 1) * qlen]
            .iter()
            .map(|&x| x as u32)
            .collect();
        assert_eq!(g.ids, want_ids, "query {i} token ids");
        let (a, c) = compare(
            &g.vectors,
            &q_vecs[i * qlen * dim..(i + 1) * qlen * dim],
            dim,
        );
        worst_abs = worst_abs.max(a);
        worst_cos = worst_cos.min(c);
    }
    eprintln!("{device:?} queries: max |Δ| {worst_abs:.2e}, min cosine {worst_cos:.7}");
    assert!(
        worst_abs <= tol && worst_cos >= MIN_COSINE,
        "{device:?} queries: max |Δ| {worst_abs} (tolerance {tol}), min cos {worst_cos}"
    );

    // Documents: ids before the skiplist, vectors after it.
    let d_ids = fx.i32s("doc_token_ids");
    let d_id_off = fx.i32s("doc_token_offsets");
    let d_vecs = fx.f32s("doc_vectors");
    let d_vec_off = fx.i32s("doc_vector_offsets");
    let texts: Vec<&str> = fx.docs.iter().take(n_docs).map(String::as_str).collect();
    let tokenized = enc.tokenizer().documents(&texts).unwrap();
    let got = enc.encode_documents(&texts).unwrap();
    let (mut worst_abs, mut worst_cos) = (0.0f32, 1.0f32);
    for (i, g) in got.iter().enumerate() {
        let want_ids: Vec<u32> = d_ids[d_id_off[i] as usize..d_id_off[i + 1] as usize]
            .iter()
            .map(|&x| x as u32)
            .collect();
        assert_eq!(tokenized[i].ids, want_ids, "document {i} token ids");
        let (s, e) = (d_vec_off[i] as usize, d_vec_off[i + 1] as usize);
        assert_eq!(g.len(), e - s, "document {i}: kept token count");
        let (a, c) = compare(&g.vectors, &d_vecs[s * dim..e * dim], dim);
        worst_abs = worst_abs.max(a);
        worst_cos = worst_cos.min(c);
    }
    eprintln!("{device:?} documents: max |Δ| {worst_abs:.2e}, min cosine {worst_cos:.7}");
    assert!(
        worst_abs <= tol && worst_cos >= MIN_COSINE,
        "{device:?} documents: max |Δ| {worst_abs} (tolerance {tol}), min cos {worst_cos}"
    );
}

#[test]
fn cpu_backend_matches_pytorch_reference() {
    check_backend(DeviceChoice::Cpu, 30, 30);
}

#[test]
fn gpu_backend_matches_pytorch_reference() {
    // lavapipe is slow: the first 10 documents (the longest are cut at 180 tokens)
    // and all 30 queries keep this test to seconds.
    check_backend(DeviceChoice::Gpu, 10, 30);
}

#[test]
fn hidden_states_match_reference_layer_by_layer() {
    let fx = Fixture::load();
    let checkpoint = colwgpu::model::Checkpoint::load(&model_dir()).unwrap();
    let mut enc =
        colwgpu::model::ColbertEncoder::new(checkpoint, colwgpu::backend::cpu::CpuBackend::new())
            .unwrap();
    let q0 = fx.queries[0].as_str();
    for layer in 0..=6 {
        let name = if layer == 0 {
            "debug_q0_embeddings".to_string()
        } else {
            format!("debug_q0_layer{}", layer - 1)
        };
        let want = fx.f32s(&name);
        let got = enc.query_hidden_states(q0, layer).unwrap();
        let (a, _) = compare(&got.data, &want, got.cols);
        eprintln!("{name}: max |Δ| {a:.2e}");
        assert!(
            a <= HIDDEN_TOLERANCE,
            "{name}: max |Δ| {a} (tolerance {HIDDEN_TOLERANCE})"
        );
    }
}

#[test]
fn fixture_records_reference_and_pylate_cross_check() {
    let fx = Fixture::load(); // checks the model fingerprint
    let v = &fx.meta["reference_versions"];
    for pkg in ["torch", "transformers", "pylate"] {
        assert!(
            v[pkg].as_str().is_some_and(|s| !s.is_empty()),
            "fixture lacks the {pkg} version: {v}"
        );
    }
    // PyLate, from the same checkpoint, gave the reference's token ids and vectors.
    let x = &fx.meta["pylate_cross_check"];
    let (nq, nd) = (fx.queries.len(), fx.docs.len());
    assert_eq!(x["query_ids_equal"], format!("{nq}/{nq}"), "{x}");
    assert_eq!(x["doc_ids_equal"], format!("{nd}/{nd}"), "{x}");
    for k in ["query_max_abs_diff", "doc_max_abs_diff"] {
        let d = x[k].as_f64().unwrap_or(f64::NAN);
        assert!(d <= 1e-5, "PyLate vs reference {k} = {d}");
    }
    assert_eq!(x["passed"], true, "{x}");
}
