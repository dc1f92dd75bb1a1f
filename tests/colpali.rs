//! ColPali (PaliGemma = SigLIP + Gemma) against colpali-engine 0.3.18 /
//! transformers 5.24: the new ops (tanh GELU, GeGLU, 256-wide attention heads)
//! against f64 on both backends, then the tiny seeded ColPali of
//! `tests/fixtures/colpali` (made by `scripts/reference/make_colpali_fixtures.py`):
//! pixel values, token ids and vectors on the CPU backend and on lavapipe, the
//! three checkpoint layouts and a PEFT adapter, and the end-to-end ranking.

mod common;

use std::path::{Path, PathBuf};

use colwgpu::backend::cpu::CpuBackend;
use colwgpu::backend::gpu::GpuBackend;
use colwgpu::backend::{Backend, HostMatrix, Unary};
use colwgpu::model::colpali::{pixel_values, ColPaliCheckpoint, ColPaliEncoder, SiglipImageConfig};
use colwgpu::model::paligemma::{text_spans, TextMask};
use colwgpu::vision::load_rgb;
use common::fixture::{bf16_tensors, copy_files, maxsim, write_f32_safetensors, Fixture};
use common::{assert_close, gpu, max_abs_diff, root, Rng};

fn mat(rng: &mut Rng, rows: usize, cols: usize, scale: f32) -> HostMatrix {
    HostMatrix::new(rows, cols, rng.vec(rows * cols, scale)).unwrap()
}

fn gelu_tanh_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

#[test]
fn gelu_tanh_and_geglu_cpu_and_gpu_match_f64() {
    let mut rng = Rng::new(1001);
    let mut cpu = CpuBackend::new();
    let mut g = GpuBackend::new(gpu());
    for (rows, cols) in [(1, 1), (3, 31), (33, 129), (7, 1000)] {
        let what = format!("{rows}×{cols}");
        // Wide range: tanh saturates on both sides (±1, never NaN).
        let x = mat(&mut rng, rows, cols, 12.0);
        let gate = mat(&mut rng, rows, cols, 12.0);
        let up = mat(&mut rng, rows, cols, 12.0);
        let want: Vec<f32> = x
            .data
            .iter()
            .map(|&v| gelu_tanh_f64(v as f64) as f32)
            .collect();
        let want_geglu: Vec<f32> = gate
            .data
            .iter()
            .zip(&up.data)
            .map(|(&g, &u)| (gelu_tanh_f64(g as f64) * u as f64) as f32)
            .collect();
        let c = cpu.unary(&x, Unary::GeluTanh).unwrap();
        let cg = cpu.geglu(&gate, &up).unwrap();
        assert_eq!((cg.rows, cg.cols), (rows, cols));
        assert_close(&format!("cpu gelu_tanh {what}"), &c.data, &want, 1e-6, 1e-5);
        assert_close(
            &format!("cpu geglu {what}"),
            &cg.data,
            &want_geglu,
            1e-5,
            1e-5,
        );
        let (gx, gg, gu) = (
            g.upload(&x).unwrap(),
            g.upload(&gate).unwrap(),
            g.upload(&up).unwrap(),
        );
        let a = g.unary(&gx, Unary::GeluTanh).unwrap();
        let b = g.geglu(&gg, &gu).unwrap();
        assert_close(
            &format!("gpu gelu_tanh {what}"),
            &g.read(&a).unwrap().data,
            &want,
            1e-5,
            1e-5,
        );
        assert_close(
            &format!("gpu geglu {what}"),
            &g.read(&b).unwrap().data,
            &want_geglu,
            1e-4,
            1e-5,
        );
    }
    let (a, b) = (mat(&mut rng, 2, 5, 1.0), mat(&mut rng, 2, 4, 1.0));
    assert!(
        cpu.geglu(&a, &b).is_err(),
        "gate and up of different shapes"
    );
}

#[test]
fn bidirectional_and_causal_text_spans() {
    // Two sequences of 4, the second left-padded by 1.
    let b = text_spans(4, &[0, 1], TextMask::Bidirectional);
    assert_eq!(
        b.spans,
        vec![
            [0, 4],
            [0, 4],
            [0, 4],
            [0, 4],
            [4, 4],
            [5, 8],
            [5, 8],
            [5, 8]
        ]
    );
    let c = text_spans(4, &[0, 1], TextMask::Causal);
    assert_eq!(
        c.spans,
        vec![
            [0, 1],
            [0, 2],
            [0, 3],
            [0, 4],
            [4, 4],
            [5, 6],
            [5, 7],
            [5, 8]
        ]
    );
}

// ---------------------------------------------------------------- fixtures

fn fixture_dir() -> PathBuf {
    root().join("tests/fixtures/colpali")
}

/// The reference tensors of `colpali_fixtures.safetensors`.
fn fixture() -> Fixture {
    Fixture::load(&fixture_dir().join("colpali_fixtures.safetensors"))
}

/// The committed page images (shared with the ColQwen2 fixtures).
fn image_dir() -> PathBuf {
    root().join("tests/fixtures/colqwen2/images")
}

fn image(i: usize) -> colwgpu::vision::RgbImage {
    load_rgb(&image_dir().join(format!("{i}.png"))).unwrap()
}

fn fixture_queries() -> Vec<String> {
    let text = std::fs::read_to_string(fixture_dir().join("colpali_fixtures.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_str().unwrap().to_string())
        .collect()
}

fn checkpoint() -> ColPaliCheckpoint {
    ColPaliCheckpoint::load(&fixture_dir().join("model")).unwrap()
}

#[test]
fn pixel_values_match_the_reference_processor() {
    let fx = fixture();
    let ckpt = checkpoint();
    // The tiny model's 112 × 112 input.
    let (shape, want) = fx.f32("doc_pixel_values");
    assert_eq!(shape, vec![1, 3, 112, 112]);
    let got = pixel_values(&image(0), &ckpt.image).unwrap();
    let d = max_abs_diff(&got, &want);
    println!("112×112 pixel values: max |Δ| = {d:e}");
    // Measured 0 (the resize is bit-exact on uint8, the normalisation the same f32 ops).
    assert!(d <= 1e-6, "max |Δ| {d:e}");
    // The real model's 448 × 448 input (SigLIP mean = std = 0.5, 1/255): the
    // reference's resized uint8 image is committed losslessly as page448.png.
    let cfg = SiglipImageConfig::default();
    let got = pixel_values(&image(0), &cfg).unwrap();
    let page = load_rgb(&fixture_dir().join("page448.png")).unwrap();
    assert_eq!((page.width, page.height), (448, 448));
    let plane = 448 * 448;
    let mut want = vec![0.0f32; 3 * plane];
    for (i, px) in page.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            want[c * plane + i] = (px[c] as f32 / 255.0 - 0.5) / 0.5;
        }
    }
    let d = max_abs_diff(&got, &want);
    println!("448×448 pixel values: max |Δ| = {d:e}");
    // Measured 5.9e-8: the uint8 → f32 round trip of page448.png (the script checks it).
    assert!(d <= 1e-6, "max |Δ| {d:e}");
}

#[test]
fn token_ids_match_the_reference_processor() {
    let fx = fixture();
    let enc = ColPaliEncoder::new(checkpoint(), CpuBackend::new()).unwrap();
    // Pages: <image> × 64, <bos>, <bos>, "Describe the image.", "\n".
    let docs = fx.unpadded_ids("doc_input_ids", "doc_attention_mask");
    for d in &docs {
        assert_eq!(&enc.document_ids().unwrap(), d);
    }
    let (_, tt) = fx.i64("doc_token_type_ids");
    assert!(
        tt.iter().all(|&t| t == 0),
        "the whole page prompt is prefix"
    );
    let queries = fixture_queries();
    for (i, q) in queries.iter().enumerate() {
        assert_eq!(
            enc.query_ids(q).unwrap(),
            fx.ids(&format!("query_input_ids_{i}"))
        );
    }
    let batch = fx.unpadded_ids("query_input_ids", "query_attention_mask");
    for (q, w) in queries.iter().zip(&batch) {
        assert_eq!(&enc.query_ids(q).unwrap(), w);
    }
}

/// Max |Δ| of the document batch (images 0, 1) and of the query batch against
/// each query encoded alone by the reference.
fn parity<B: Backend>(backend: B) -> (f32, f32, f32) {
    let fx = fixture();
    let mut enc = ColPaliEncoder::new(checkpoint(), backend).unwrap();
    let docs = enc.encode_images(&[image(0), image(1)]).unwrap();
    let want = fx.unpadded_vectors("doc_vectors", "doc_attention_mask");
    let mut doc_delta = 0.0f32;
    for (d, w) in docs.iter().zip(&want) {
        assert_eq!(d.vectors.len(), w.len());
        doc_delta = doc_delta.max(max_abs_diff(&d.vectors, w));
    }
    let queries = fixture_queries();
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    // One left-padded batch of both queries; bidirectional over the real tokens
    // gives each query what the reference gives it alone.
    let qs = enc.encode_queries(&refs).unwrap();
    let mut q_delta = 0.0f32;
    for (i, q) in qs.iter().enumerate() {
        let (_, w) = fx.f32(&format!("query_vectors_{i}"));
        assert_eq!(q.vectors.len(), w.len());
        q_delta = q_delta.max(max_abs_diff(&q.vectors, &w));
    }
    // transformers 5.24 makes a padded query batch causal: reproduced on request.
    enc.set_query_mask(TextMask::Causal);
    let qs = enc.encode_queries(&refs).unwrap();
    let want = fx.unpadded_vectors("query_vectors_batch", "query_attention_mask");
    let mut causal_delta = 0.0f32;
    for (q, w) in qs.iter().zip(&want) {
        assert_eq!(q.vectors.len(), w.len());
        causal_delta = causal_delta.max(max_abs_diff(&q.vectors, w));
    }
    (doc_delta, q_delta, causal_delta)
}

#[test]
fn colpali_cpu_matches_colpali_engine() {
    let (d, q, c) = parity(CpuBackend::new());
    println!("cpu: documents max |Δ| = {d:e}, queries {q:e}, causal query batch {c:e}");
    // Issue 10 asks for ≤ 1e-4; measured 3.4e-7 / 8.9e-8 / 1.2e-7 (Xeon, gemm AVX-512).
    assert!(d <= 2e-6 && q <= 2e-6 && c <= 2e-6, "{d:e} {q:e} {c:e}");
}

#[test]
fn colpali_gpu_matches_colpali_engine() {
    let (d, q, c) = parity(GpuBackend::new(gpu()));
    println!("gpu: documents max |Δ| = {d:e}, queries {q:e}, causal query batch {c:e}");
    // Issue 10 asks for ≤ 1e-3 on lavapipe; measured 3.1e-7 / 1.5e-7 / 1.5e-7.
    assert!(d <= 2e-6 && q <= 2e-6 && c <= 2e-6, "{d:e} {q:e} {c:e}");
}

/// `--precision f16`: the same linear op with f16 weights (f32 activations
/// and sums); skipped, saying why, without SHADER_F16. The fixture's weights
/// are bf16, which f16 holds exactly at magnitudes 6.1e-5 … 65,504 (as for
/// the published checkpoints, also bf16), so the vectors stay within the f32
/// path's tolerance of the reference while the linear weights take half the
/// bytes.
#[test]
fn colpali_gpu_f16_weights_stay_close_to_colpali_engine() {
    let Some(ctx) = common::gpu_with_f16() else {
        return;
    };
    common::assert_f16_halves_linear_weights(|p| {
        let b = GpuBackend::with_precision(ctx.clone(), p).unwrap();
        ColPaliEncoder::new(checkpoint(), b)
            .unwrap()
            .backend()
            .weight_bytes()
    });
    let b = GpuBackend::with_precision(ctx, colwgpu::backend::Precision::F16).unwrap();
    let (d, q, c) = parity(b);
    println!("gpu f16: documents max |Δ| = {d:e}, queries {q:e}, causal query batch {c:e}");
    // Measured 2.8e-7 / 1.3e-7 / 1.5e-7 (lavapipe), as f32.
    assert!(d <= 2e-6 && q <= 2e-6 && c <= 2e-6, "{d:e} {q:e} {c:e}");
}

// ---------------------------------------------------------------- layouts and adapters

/// The fixture model's tensors as f32, by name.
fn fixture_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    bf16_tensors(&fixture_dir().join("model/model.safetensors"))
}

fn copy_side_files(dir: &Path) {
    copy_files(
        &fixture_dir().join("model"),
        dir,
        &[
            "config.json",
            "tokenizer.json",
            "processor_config.json",
            "tokenizer_config.json",
        ],
    );
}

/// Page 0 (with the reference's document ids) and query 0 (with the
/// reference's ids) through `ckpt`: (page vectors, query vectors).
fn encode_fixed(ckpt: ColPaliCheckpoint) -> (Vec<f32>, Vec<f32>) {
    let fx = fixture();
    let mut enc = ColPaliEncoder::new(ckpt, CpuBackend::new()).unwrap();
    let doc_ids = fx
        .unpadded_ids("doc_input_ids", "doc_attention_mask")
        .remove(0);
    let px = enc.pixel_values(&image(0)).unwrap();
    let d = enc
        .forward(&[doc_ids], &[px], TextMask::Bidirectional)
        .unwrap()
        .remove(0);
    let q = enc
        .forward(&[fx.ids("query_input_ids_0")], &[], TextMask::Bidirectional)
        .unwrap()
        .remove(0);
    (d.vectors, q.vectors)
}

#[test]
fn hub_and_transformers_layouts_give_the_same_vectors() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let ours = encode_fixed(checkpoint());
    // The Hub's (transformers 4.x) colpali-engine layout: SigLIP under
    // `model.vision_tower.vision_model.`.
    let hub = tmp.path().join("hub");
    copy_side_files(&hub);
    let renamed: Vec<_> = fixture_tensors()
        .into_iter()
        .map(|(n, s, d)| {
            let n = n.replacen("model.vision_tower.", "model.vision_tower.vision_model.", 1);
            (n, s, d)
        })
        .collect();
    assert!(renamed
        .iter()
        .any(|t| t.0.contains("vision_tower.vision_model.encoder")));
    write_f32_safetensors(&hub.join("model.safetensors"), &renamed);
    let got = encode_fixed(ColPaliCheckpoint::load(&hub).unwrap());
    assert_eq!(got, ours, "Hub layout");
    // transformers' ColPaliForRetrieval: `vlm.*`, `embedding_proj_layer.*`, its
    // config (with `vlm_config`) as transformers 5.24 writes it.
    let hf = tmp.path().join("hf");
    copy_side_files(&hf);
    std::fs::copy(fixture_dir().join("hf_config.json"), hf.join("config.json")).unwrap();
    let renamed: Vec<_> = fixture_tensors()
        .into_iter()
        .map(|(n, s, d)| {
            let n = match n.strip_prefix("custom_text_proj") {
                Some(rest) => format!("embedding_proj_layer{rest}"),
                None => format!("vlm.{}", n.strip_prefix("model.").unwrap()),
            };
            (n, s, d)
        })
        .collect();
    write_f32_safetensors(&hf.join("model.safetensors"), &renamed);
    let ckpt = ColPaliCheckpoint::load(&hf).unwrap();
    assert!(ckpt.transformers_layout);
    let enc =
        ColPaliEncoder::new(ColPaliCheckpoint::load(&hf).unwrap(), CpuBackend::new()).unwrap();
    // Its processor's prompts: one <bos> before the page prompt; "Question: " and "\n".
    assert_eq!(enc.document_ids().unwrap(), fx.ids("hf_processor_doc_ids"));
    let q = &fixture_queries()[0];
    assert_eq!(enc.query_ids(q).unwrap(), fx.ids("hf_processor_query_ids"));
    let got = encode_fixed(ckpt);
    assert_eq!(got, ours, "transformers layout");
    let (_, want) = fx.f32("hf_doc_vectors");
    let d = max_abs_diff(&got.0, &want);
    assert!(
        d <= 1e-4,
        "ColPaliForRetrieval's own vectors: max |Δ| {d:e}"
    );
}

#[test]
fn peft_adapter_gives_the_reference_vectors() {
    let fx = fixture();
    // adapter_config.json names its base "../model" (relative to the adapter).
    let adapter = fixture_dir().join("adapter");
    let ckpt = ColPaliCheckpoint::load(&adapter).unwrap();
    assert!(ckpt.adapter.is_some());
    let (d, q) = encode_fixed(ckpt);
    let (_, want_d) = fx.f32("adapter_doc_vectors");
    let (_, want_q) = fx.f32("adapter_query_vectors_0");
    let (dd, dq) = (max_abs_diff(&d, &want_d), max_abs_diff(&q, &want_q));
    println!("adapter: page max |Δ| = {dd:e}, query {dq:e}");
    // Merged W + (α/r)·B·A in f32 vs PEFT's unmerged x·W + (α/r)·(x·A)·B:
    // measured 8.4e-7 / 6.3e-6.
    assert!(dd <= 2e-5 && dq <= 2e-5, "{dd:e} {dq:e}");
    let plain = encode_fixed(checkpoint());
    assert!(
        max_abs_diff(&plain.0, &d) > 1e-2,
        "the adapter changed nothing"
    );
    // A copy elsewhere: the base must then be given, and is found with --base.
    let tmp = tempfile::tempdir().unwrap();
    let moved = tmp.path().join("adapter");
    std::fs::create_dir(&moved).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(adapter.join(f), moved.join(f)).unwrap();
    }
    let err = match ColPaliCheckpoint::load(&moved) {
        Ok(_) => panic!("an adapter without its base loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("--base"), "{err}");
    let ckpt =
        ColPaliCheckpoint::load_with_base(&moved, Some(&fixture_dir().join("model"))).unwrap();
    assert_eq!(encode_fixed(ckpt), (d, q));
}

#[test]
fn bad_checkpoints_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let load_err = |dir: &Path| match ColPaliCheckpoint::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    };
    // No SigLIP tower.
    let dir = tmp.path().join("no-vision");
    copy_side_files(&dir);
    let kept: Vec<_> = fixture_tensors()
        .into_iter()
        .filter(|t| !t.0.contains("vision_tower"))
        .collect();
    write_f32_safetensors(&dir.join("model.safetensors"), &kept);
    let err = load_err(&dir);
    assert!(err.contains("SigLIP vision tower"), "{err}");
    // A truncated layer (one Gemma weight missing).
    let dir = tmp.path().join("no-o-proj");
    copy_side_files(&dir);
    let kept: Vec<_> = fixture_tensors()
        .into_iter()
        .filter(|t| !t.0.ends_with("layers.1.self_attn.o_proj.weight"))
        .collect();
    write_f32_safetensors(&dir.join("model.safetensors"), &kept);
    let err = load_err(&dir);
    assert!(err.contains("o_proj") && err.contains("missing"), "{err}");
    // A weight of the wrong shape (config says head_dim 256).
    let dir = tmp.path().join("bad-config");
    copy_side_files(&dir);
    std::fs::copy(
        fixture_dir().join("model/model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("\"head_dim\": 256", "\"head_dim\": 128"),
    )
    .unwrap();
    let err = load_err(&dir);
    assert!(err.contains("q_proj") && err.contains("shape"), "{err}");
    // An unsupported activation.
    std::fs::write(
        dir.join("config.json"),
        cfg.replace(
            "\"hidden_act\": \"gelu_pytorch_tanh\"",
            "\"hidden_act\": \"relu\"",
        ),
    )
    .unwrap();
    let err = load_err(&dir);
    assert!(err.contains("relu") && err.contains("config.json"), "{err}");
    // A processor that disagrees with the vision tower.
    std::fs::write(dir.join("config.json"), &cfg).unwrap();
    let p = std::fs::read_to_string(dir.join("processor_config.json")).unwrap();
    std::fs::write(
        dir.join("processor_config.json"),
        p.replace("\"height\": 112", "\"height\": 224"),
    )
    .unwrap();
    let err = load_err(&dir);
    assert!(err.contains("224") && err.contains("112"), "{err}");
}

// ---------------------------------------------------------------- end to end

#[test]
fn front_door_detects_colpali_and_info_describes_it() {
    let model = colwgpu::Model::open(fixture_dir().join("model"), colwgpu::Device::Cpu).unwrap();
    assert!(model.takes_images());
    assert_eq!(model.dim(), 128);
    let lines = colwgpu::api::describe_model(&fixture_dir().join("model")).unwrap();
    let text = lines.join("\n");
    assert!(
        text.contains("ColPali") && text.contains("SigLIP") && text.contains("Gemma"),
        "{text}"
    );
    assert!(
        text.contains("64 image tokens") && text.contains("of 256"),
        "{text}"
    );
    let lines = colwgpu::api::describe_model(&fixture_dir().join("adapter")).unwrap();
    assert!(lines[0].contains("LoRA adapter on"), "{lines:?}");
    let err = model.encode_documents(&["a text"]).unwrap_err().to_string();
    assert!(err.contains("ColPali"), "{err}");
}

/// Reference MaxSim of query `qi` (encoded alone) against the 10 pages.
fn reference_scores(fx: &Fixture, qi: usize) -> Vec<f64> {
    let (_, all) = fx.f32("all_doc_vectors");
    let (_, offsets) = fx.i64("all_doc_offsets");
    let (_, q) = fx.f32(&format!("query_vectors_{qi}"));
    let dim = 128;
    (0..10)
        .map(|j| {
            let (a, b) = (offsets[j] as usize * dim, offsets[j + 1] as usize * dim);
            maxsim(&q, &all[a..b], dim)
        })
        .collect()
}

fn ranking(scores: &[f64]) -> Vec<usize> {
    let mut r: Vec<usize> = (0..scores.len()).collect();
    r.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    r
}

#[test]
fn front_door_vectors_rank_the_ten_pages_exactly_as_the_reference() {
    // Model::open (the family detected from the checkpoint), the 10 page files
    // and the 2 queries encoded through the front door; exhaustive MaxSim over
    // these uncompressed vectors ranks the pages exactly as exhaustive MaxSim
    // over colpali-engine's vectors, and every score agrees within 1e-3.
    let fx = fixture();
    let model = colwgpu::Model::open(fixture_dir().join("model"), colwgpu::Device::Cpu).unwrap();
    let paths: Vec<PathBuf> = (0..10)
        .map(|i| image_dir().join(format!("{i}.png")))
        .collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let pages = model.encode_images(&refs).unwrap();
    let queries = fixture_queries();
    let qrefs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let qs = model.encode_queries(&qrefs).unwrap();
    for (qi, q) in qs.iter().enumerate() {
        let want = reference_scores(&fx, qi);
        let got: Vec<f64> = pages
            .iter()
            .map(|p| maxsim(&q.vectors, &p.vectors, 128))
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-3, "query {qi}: score {g} vs {w}");
        }
        assert_eq!(ranking(&got), ranking(&want), "query {qi}");
    }
}

#[test]
fn cli_indexes_page_images_and_searches_them_as_the_reference_ranks() {
    // `index --images` with the tiny ColPali (4-bit residuals), then `search`
    // with no --model on the two queries. PLAID's ranking equals `--exhaustive`
    // MaxSim over the same index exactly; against exhaustive MaxSim over
    // colpali-engine's uncompressed vectors it agrees on the top page and on
    // every pair of pages whose reference scores differ by more than the 4-bit
    // codec's score error (measured ≤ 0.02 on these pages; the tiny random model
    // scores the nine irrelevant pages within 0.25 of each other, some pairs
    // only 0.005 apart, which no 4-bit index resolves).
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("pages.index");
    let queries = tmp.path().join("queries.jsonl");
    let lines: Vec<String> = fixture_queries()
        .iter()
        .enumerate()
        .map(|(i, q)| serde_json::json!({"_id": format!("q_{i}"), "text": q}).to_string())
        .collect();
    std::fs::write(&queries, lines.join("\n")).unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_colwgpu"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let model = fixture_dir().join("model");
    let images = image_dir();
    let os = |s: &str| std::ffi::OsString::from(s);
    let info = run(&[&os("info"), &os("--model"), model.as_os_str()]);
    assert!(info.contains("ColPali"), "{info}");
    run(&[
        &os("index"),
        &os("--device"),
        &os("cpu"),
        &os("--nbits"),
        &os("4"),
        &os("--model"),
        model.as_os_str(),
        &os("--images"),
        images.as_os_str(),
        &os("--index"),
        index.as_os_str(),
    ]);
    let search = |extra: Option<&str>| {
        let mut args = vec![
            os("search"),
            os("--device"),
            os("cpu"),
            os("--json"),
            os("-k"),
            os("10"),
            os("--index"),
            index.clone().into_os_string(),
            os("--queries"),
            queries.clone().into_os_string(),
        ];
        args.extend(extra.map(os));
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let out = run(&refs);
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| {
                        (
                            h["doc_id"].as_str().unwrap().parse::<usize>().unwrap(),
                            h["score"].as_f64().unwrap(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let plaid = search(None);
    let exhaustive = search(Some("--exhaustive"));
    assert_eq!(plaid.len(), 2);
    let margin = 0.05;
    for (qi, hits) in plaid.iter().enumerate() {
        let ids: Vec<usize> = hits.iter().map(|h| h.0).collect();
        let ex: Vec<usize> = exhaustive[qi].iter().map(|h| h.0).collect();
        assert_eq!(ids, ex, "query {qi}: PLAID vs exhaustive over the index");
        let want = reference_scores(&fx, qi);
        assert_eq!(ids[0], ranking(&want)[0], "query {qi}: top page");
        assert_eq!(ids.len(), 10);
        for (i, &a) in ids.iter().enumerate() {
            for &b in &ids[i + 1..] {
                assert!(
                    want[a] + margin > want[b],
                    "query {qi}: page {a} ranked above {b}, reference scores {} < {}",
                    want[a],
                    want[b]
                );
            }
        }
    }
    let eval = run(&[
        &os("eval"),
        &os("--device"),
        &os("cpu"),
        &os("--json"),
        &os("--index"),
        index.as_os_str(),
        &os("--queries"),
        queries.as_os_str(),
        &os("--qrels"),
        root().join("tests/fixtures/colqwen2/qrels.tsv").as_os_str(),
    ]);
    let m: serde_json::Value = serde_json::from_str(eval.trim()).unwrap();
    assert_eq!(m["queries"], 2, "{eval}");
}
