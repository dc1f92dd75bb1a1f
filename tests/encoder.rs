//! The ColBERT encoder on the real model (all-MiniLM-L6-v2 + seeded 128-d head,
//! built by models/fetch-model.sh): ColBERT token semantics, both backends
//! agreeing, both checkpoint layouts, f16/bf16 weights, and bad input.

mod common;

use std::collections::HashMap;
use std::path::Path;

use colwgpu::gpu::GpuOptions;
use colwgpu::model::{Checkpoint, DeviceChoice, Encoder, HeadLayout};
use common::{max_abs_diff, model_dir};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const DOCS: &[&str] = &[
    "Microstructural development of human newborn cerebral white matter assessed in vivo by diffusion tensor magnetic resonance imaging.",
    "Hello, world!",
    "",
    "A short one.",
];
const QUERIES: &[&str] = &[
    "0-dimensional biomaterials show inductive properties.",
    "What?",
    "",
];

fn encoder(dir: &Path, device: DeviceChoice) -> Encoder {
    Encoder::open(dir, device, &GpuOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

#[test]
fn query_and_document_token_semantics() {
    let ckpt = Checkpoint::load(&model_dir()).unwrap();
    assert_eq!(ckpt.head, HeadLayout::PyLate);
    let tok = &ckpt.tokenizer;
    assert_eq!(
        tok.word_pieces(&["Hello, world!"]).unwrap()[0],
        vec![7592, 1010, 2088, 999]
    );
    let q = &tok.queries(&["Hello, world!"]).unwrap()[0];
    let mut want = vec![101, 1, 7592, 1010, 2088, 999, 102];
    assert_eq!(q.attended, want.len());
    want.resize(32, 103);
    assert_eq!(q.ids, want);
    let d = &tok.documents(&["Hello, world!"]).unwrap()[0];
    assert_eq!(d.ids, vec![101, 2, 7592, 1010, 2088, 999, 102]);
    // ',' and '!' are on the skiplist; [CLS], [D], [SEP] are kept.
    let kept: Vec<u32> = d.ids.iter().copied().filter(|&i| tok.keeps(i)).collect();
    assert_eq!(kept, vec![101, 2, 7592, 2088, 102]);
    // Over-long texts are cut to the limits, never an error.
    let long = "word ".repeat(5000);
    let lq = &tok.queries(&[long.as_str()]).unwrap()[0];
    assert!(lq.truncated && lq.ids.len() == 32 && lq.ids[31] == 102 && lq.attended == 32);
    let ld = &tok.documents(&[long.as_str()]).unwrap()[0];
    assert!(ld.truncated && ld.ids.len() == 180 && ld.ids[179] == 102);
}

#[test]
fn encoded_shapes_follow_colbert_rules() {
    let mut enc = encoder(&model_dir(), DeviceChoice::Cpu);
    let long = "protein ".repeat(1000);
    let docs = enc
        .encode_documents(&["Hello, world!", long.as_str(), ""])
        .unwrap();
    assert_eq!(docs[0].ids, vec![101, 2, 7592, 2088, 102]);
    assert_eq!(docs[0].vectors.len(), 5 * 128);
    assert_eq!(docs[1].len(), 180);
    assert_eq!(docs[2].ids, vec![101, 2, 102]);
    let qs = enc
        .encode_queries(&["Hello, world!", long.as_str()])
        .unwrap();
    assert!(qs
        .iter()
        .all(|q| q.len() == 32 && q.vectors.len() == 32 * 128));
    for v in docs.iter().chain(&qs).flat_map(|t| t.vectors.chunks(128)) {
        let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4, "token vector norm {n}");
    }
}

#[test]
fn batching_does_not_change_vectors() {
    // Padding to the batch's length (and the length buckets) must not leak into
    // results: one text alone equals the same text in a mixed batch.
    let mut enc = encoder(&model_dir(), DeviceChoice::Cpu);
    let together = enc.encode_documents(DOCS).unwrap();
    let alone = enc.encode_documents(&DOCS[..1]).unwrap();
    assert_eq!(together[0].ids, alone[0].ids);
    assert!(max_abs_diff(&together[0].vectors, &alone[0].vectors) < 1e-5);
}

#[test]
fn gpu_backend_matches_cpu_backend_on_real_model() {
    let mut cpu = encoder(&model_dir(), DeviceChoice::Cpu);
    let mut gpu = encoder(&model_dir(), DeviceChoice::Gpu);
    assert!(matches!(gpu, Encoder::Gpu(_)));
    for (a, b) in cpu
        .encode_documents(DOCS)
        .unwrap()
        .iter()
        .zip(gpu.encode_documents(DOCS).unwrap().iter())
    {
        assert_eq!(a.ids, b.ids);
        let d = max_abs_diff(&a.vectors, &b.vectors);
        assert!(d < 2e-4, "documents: cpu vs gpu max |Δ| = {d}");
    }
    for (a, b) in cpu
        .encode_queries(QUERIES)
        .unwrap()
        .iter()
        .zip(gpu.encode_queries(QUERIES).unwrap().iter())
    {
        assert_eq!(a.ids, b.ids);
        let d = max_abs_diff(&a.vectors, &b.vectors);
        assert!(d < 2e-4, "queries: cpu vs gpu max |Δ| = {d}");
    }
}

/// Copies the checkpoint's small files into `dst`.
fn copy_small_files(src: &Path, dst: &Path) {
    for f in [
        "config.json",
        "tokenizer.json",
        "config_sentence_transformers.json",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
}

/// Rewrites every tensor of `src` into `dst`, renaming with `rename` and storing
/// floats as `dtype` (F32, F16 or BF16); `extra` tensors are appended.
fn rewrite(
    src: &Path,
    dst: &Path,
    rename: impl Fn(&str) -> String,
    dtype: Dtype,
    extra: Vec<(String, Vec<usize>, Vec<f32>)>,
) {
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let convert = |vals: &[f32]| -> Vec<u8> {
        match dtype {
            Dtype::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => vals
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            Dtype::BF16 => vals
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            _ => unreachable!(),
        }
    };
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            owned.push((
                rename(&name),
                view.dtype(),
                view.shape().to_vec(),
                view.data().to_vec(),
            ));
            continue;
        }
        let vals: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        owned.push((rename(&name), dtype, view.shape().to_vec(), convert(&vals)));
    }
    for (name, shape, vals) in extra {
        owned.push((name, dtype, shape, convert(&vals)));
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, dst).unwrap();
}

fn projection(dir: &Path) -> Vec<f32> {
    let ckpt = Checkpoint::load(dir).unwrap();
    ckpt.projection.unwrap().data
}

#[test]
fn stanford_layout_gives_the_same_vectors_as_pylate_layout() {
    let src = model_dir();
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path();
    copy_small_files(&src, dst);
    std::fs::remove_file(dst.join("config_sentence_transformers.json")).unwrap();
    let meta = r#"{"query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_maxlen": 32, "doc_maxlen": 180, "dim": 128, "attend_to_mask_tokens": false, "mask_punctuation": true}"#;
    std::fs::write(dst.join("artifact.metadata"), meta).unwrap();
    rewrite(
        &src.join("model.safetensors"),
        &dst.join("model.safetensors"),
        |n| format!("bert.{n}"),
        Dtype::F32,
        vec![("linear.weight".into(), vec![128, 384], projection(&src))],
    );
    let stanford = Checkpoint::load(dst).unwrap();
    assert_eq!(stanford.head, HeadLayout::Stanford);
    let mut a = encoder(&src, DeviceChoice::Cpu);
    let mut b = encoder(dst, DeviceChoice::Cpu);
    let (da, db) = (
        a.encode_documents(DOCS).unwrap(),
        b.encode_documents(DOCS).unwrap(),
    );
    assert_eq!(da, db);
    assert_eq!(
        a.encode_queries(QUERIES).unwrap(),
        b.encode_queries(QUERIES).unwrap()
    );
}

#[test]
fn half_precision_checkpoints_load_and_stay_close() {
    let src = model_dir();
    let mut reference = encoder(&src, DeviceChoice::Cpu);
    let want = reference.encode_documents(DOCS).unwrap();
    for dtype in [Dtype::F16, Dtype::BF16] {
        let tmp = tempfile::tempdir().unwrap();
        let dst = tmp.path();
        copy_small_files(&src, dst);
        std::fs::create_dir(dst.join("1_Dense")).unwrap();
        rewrite(
            &src.join("model.safetensors"),
            &dst.join("model.safetensors"),
            |n| n.to_string(),
            dtype,
            vec![],
        );
        rewrite(
            &src.join("1_Dense/model.safetensors"),
            &dst.join("1_Dense/model.safetensors"),
            |n| n.to_string(),
            dtype,
            vec![],
        );
        let got = encoder(dst, DeviceChoice::Cpu)
            .encode_documents(DOCS)
            .unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.ids, w.ids);
            let min_cos = g
                .vectors
                .chunks(128)
                .zip(w.vectors.chunks(128))
                .map(|(x, y)| x.iter().zip(y).map(|(a, b)| a * b).sum::<f32>())
                .fold(1.0f32, f32::min);
            // bf16 keeps 8 bits of mantissa: looser than f16.
            let bound = if dtype == Dtype::F16 { 0.999 } else { 0.98 };
            assert!(
                min_cos > bound,
                "{dtype:?}: min cosine to f32 vectors {min_cos}"
            );
        }
    }
}

#[test]
fn plain_bert_directory_gives_hidden_state_vectors() {
    let dir = model_dir().parent().unwrap().join("all-MiniLM-L6-v2");
    let ckpt = Checkpoint::load(&dir).unwrap();
    assert_eq!(ckpt.head, HeadLayout::None);
    assert_eq!(ckpt.dim(), 384);
    let mut enc = encoder(&dir, DeviceChoice::Cpu);
    let out = enc.encode_documents(&["Hello, world!"]).unwrap();
    assert_eq!(out[0].vectors.len(), 5 * 384);
}

fn load_err(dir: &Path) -> String {
    match Checkpoint::load(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_checkpoints_give_clear_errors() {
    let src = model_dir();
    // Missing directory and missing files name the path.
    let e = load_err(Path::new("/nonexistent/model"));
    assert!(
        e.contains("/nonexistent/model") && e.contains("not found"),
        "{e}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let e = load_err(dir);
    assert!(e.contains("config.json"), "{e}");

    // Unknown model type.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["model_type"] = "gpt2".into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let e = load_err(dir);
    assert!(e.contains("unknown model type 'gpt2'"), "{e}");

    // Good config, no weights.
    copy_small_files(&src, dir);
    let e = load_err(dir);
    assert!(e.contains("model.safetensors"), "{e}");

    // Not a safetensors file.
    std::fs::write(dir.join("model.safetensors"), b"this is not a tensor file").unwrap();
    let e = load_err(dir);
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );

    // A weight with the wrong dtype (I32) and one with the wrong shape.
    let word = "embeddings.word_embeddings.weight";
    rewrite(
        &src.join("model.safetensors"),
        &dir.join("model.safetensors"),
        |n| {
            if n == "embeddings.LayerNorm.weight" {
                "embeddings.LayerNorm.weight.orig".into()
            } else {
                n.to_string()
            }
        },
        Dtype::F32,
        vec![],
    );
    {
        // append an I32 LayerNorm weight in place of the renamed one
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut t: Vec<(String, TensorView)> = st.tensors();
        let ints = vec![0u8; 384 * 4];
        t.push((
            "embeddings.LayerNorm.weight".into(),
            TensorView::new(Dtype::I32, vec![384], &ints).unwrap(),
        ));
        safetensors::serialize_to_file(t, None, &dir.join("model2.safetensors")).unwrap();
        std::fs::rename(
            dir.join("model2.safetensors"),
            dir.join("model.safetensors"),
        )
        .unwrap();
    }
    let e = load_err(dir);
    assert!(
        e.contains("embeddings.LayerNorm.weight") && e.contains("dtype"),
        "{e}"
    );

    let mut bad_cfg = cfg.clone();
    bad_cfg["model_type"] = "bert".into();
    bad_cfg["hidden_size"] = 768.into();
    std::fs::write(dir.join("config.json"), bad_cfg.to_string()).unwrap();
    let e = load_err(dir);
    assert!(e.contains(word) && e.contains("shape"), "{e}");

    // A projection of the wrong width.
    std::fs::write(
        dir.join("config.json"),
        std::fs::read(src.join("config.json")).unwrap(),
    )
    .unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    std::fs::create_dir_all(dir.join("1_Dense")).unwrap();
    let w = vec![0u8; 128 * 100 * 4];
    let views = vec![(
        "linear.weight".to_string(),
        TensorView::new(Dtype::F32, vec![128, 100], &w).unwrap(),
    )];
    safetensors::serialize_to_file(views, None, &dir.join("1_Dense/model.safetensors")).unwrap();
    let e = load_err(dir);
    assert!(
        e.contains("linear.weight") && e.contains("[128, 100]"),
        "{e}"
    );

    // A marker that is not in the vocabulary.
    std::fs::remove_dir_all(dir.join("1_Dense")).unwrap();
    std::fs::create_dir_all(dir.join("1_Dense")).unwrap();
    std::fs::copy(
        src.join("1_Dense/model.safetensors"),
        dir.join("1_Dense/model.safetensors"),
    )
    .unwrap();
    let mut st: HashMap<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(src.join("config_sentence_transformers.json")).unwrap(),
    )
    .unwrap();
    st.insert("query_prefix".into(), "[NOT A TOKEN]".into());
    std::fs::write(
        dir.join("config_sentence_transformers.json"),
        serde_json::to_string(&st).unwrap(),
    )
    .unwrap();
    let e = load_err(dir);
    assert!(e.contains("[NOT A TOKEN]"), "{e}");
}

#[test]
fn bad_input_files_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let e = colwgpu::io::read_records(&empty).unwrap_err().to_string();
    assert!(e.contains("no texts"), "{e}");
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"_id\": \"a\", \"text\": \"fine\"}\n{\"_id\": \"b\", \"text\": \n",
    )
    .unwrap();
    let e = colwgpu::io::read_records(&bad).unwrap_err().to_string();
    assert!(e.contains("line 2"), "{e}");
    let e = colwgpu::io::read_records(&tmp.path().join("missing.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.jsonl"), "{e}");
    let titled = tmp.path().join("t.jsonl");
    std::fs::write(
        &titled,
        "{\"_id\": 7, \"title\": \"T\", \"text\": \"body\"}\n",
    )
    .unwrap();
    let r = colwgpu::io::read_records(&titled).unwrap();
    assert_eq!((r[0].id.as_str(), r[0].text.as_str()), ("7", "T body"));
}

/// `--precision bf16`: every token vector stays within cosine 0.999 of the f32
/// one (measured on these texts: see the README's bf16 section), the token ids
/// are the same, and a GPU refuses the mode clearly. On a CPU without
/// AVX512-BF16/AMX the mode must be refused instead.
#[test]
fn bf16_precision_stays_close_to_f32() {
    use colwgpu::model::Precision;
    let dir = model_dir();
    let open = |p| Encoder::open_with_precision(&dir, DeviceChoice::Cpu, &GpuOptions::default(), p);
    let mut f32_enc = open(Precision::F32).unwrap();
    let mut bf16_enc = match open(Precision::Bf16) {
        Ok(e) => e,
        Err(e) => {
            assert!(!colwgpu::backend::bf16::available(), "{e}");
            assert!(e.to_string().contains("bf16"), "{e}");
            return;
        }
    };
    assert!(bf16_enc.describe_backend().contains("bf16"));
    let mut worst = 1.0f64;
    for (a, b) in [
        (
            f32_enc.encode_documents(DOCS).unwrap(),
            bf16_enc.encode_documents(DOCS).unwrap(),
        ),
        (
            f32_enc.encode_queries(QUERIES).unwrap(),
            bf16_enc.encode_queries(QUERIES).unwrap(),
        ),
    ] {
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.ids, y.ids);
            for (u, v) in x.vectors.chunks(128).zip(y.vectors.chunks(128)) {
                let dot: f64 = u.iter().zip(v).map(|(p, q)| *p as f64 * *q as f64).sum();
                worst = worst.min(dot); // both unit vectors
            }
        }
    }
    eprintln!("bf16 vs f32: lowest token cosine {worst:.6}");
    assert!(worst >= 0.999, "lowest token cosine {worst}");
    assert!(
        worst < 1.0 - 1e-7,
        "bf16 gave f32-identical vectors ({worst})"
    );
    let gpu = Encoder::open_with_precision(
        &dir,
        DeviceChoice::Gpu,
        &GpuOptions::default(),
        Precision::Bf16,
    );
    match gpu {
        Err(e) => assert!(
            e.to_string().contains("cpu backend's mode")
                && e.to_string().contains("--precision f16"),
            "{e}"
        ),
        Ok(_) => panic!("bf16 on a GPU must be refused"),
    }
}

/// Smallest cosine between corresponding token vectors (same ids required).
fn min_token_cosine(a: &[colwgpu::model::TokenVectors], b: &[colwgpu::model::TokenVectors]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst = 1.0f64;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.ids, y.ids);
        assert_eq!(x.vectors.len(), y.vectors.len());
        for (u, v) in x.vectors.chunks(128).zip(y.vectors.chunks(128)) {
            let dot: f64 = u.iter().zip(v).map(|(p, q)| *p as f64 * *q as f64).sum();
            let nu: f64 = u.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            let nv: f64 = v.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            worst = worst.min(dot / (nu * nv).max(1e-30));
        }
    }
    worst
}

/// `--precision f16` on the gpu backend: every token vector within cosine
/// 0.999 of the f32 cpu encoder's (measured on these texts: see the README's
/// precision section), the linear weights resident at half their f32 bytes
/// (so f16 storage really ran; the other parameters stay f32). The cpu
/// backend refuses f16 naming the gpu backend. Skipped, saying why, only on
/// an adapter without SHADER_F16 (where the refusal is checked instead).
#[test]
fn f16_precision_on_the_gpu_stays_close_to_f32() {
    use colwgpu::model::Precision;
    let dir = model_dir();
    let open = |d, p| Encoder::open_with_precision(&dir, d, &GpuOptions::default(), p);
    let e = open(DeviceChoice::Cpu, Precision::F16)
        .err()
        .expect("f16 on the cpu must be refused");
    assert!(e.to_string().contains("gpu backend"), "{e}");
    let mut f16 = match open(DeviceChoice::Gpu, Precision::F16) {
        Ok(e) => e,
        Err(e) => {
            let ctx = common::gpu();
            assert!(!ctx.supports_f16(), "{e}");
            assert!(
                e.to_string().contains("SHADER_F16") && e.to_string().contains(&ctx.info.name),
                "{e}"
            );
            eprintln!(
                "skipped: adapter '{}' does not offer SHADER_F16",
                ctx.info.name
            );
            return;
        }
    };
    assert!(
        f16.describe_backend().contains("f16"),
        "{}",
        f16.describe_backend()
    );
    let mut cpu = open(DeviceChoice::Cpu, Precision::F32).unwrap();
    let docs = min_token_cosine(
        &cpu.encode_documents(DOCS).unwrap(),
        &f16.encode_documents(DOCS).unwrap(),
    );
    let queries = min_token_cosine(
        &cpu.encode_queries(QUERIES).unwrap(),
        &f16.encode_queries(QUERIES).unwrap(),
    );
    eprintln!("f16 gpu vs f32 cpu: lowest token cosine documents {docs:.8}, queries {queries:.8}");
    // The issue asks for ≥ 0.999; measured 1 − 2.9e-7 (lavapipe): held to 1e-5.
    assert!(
        docs >= 0.99999 && queries >= 0.99999,
        "documents {docs}, queries {queries}"
    );
    // Weight memory: the f32 gpu encoder's linear weights are twice the f16 one's.
    let f32_gpu = open(DeviceChoice::Gpu, Precision::F32).unwrap();
    let (all32, lin32) = f32_gpu.gpu_weight_bytes().unwrap();
    let (all16, lin16) = f16.gpu_weight_bytes().unwrap();
    eprintln!(
        "gpu weights: f32 {all32} bytes ({lin32} linear), f16 {all16} bytes ({lin16} linear)"
    );
    assert!(
        lin32 > 0 && lin16 * 2 == lin32,
        "linear weight bytes f32 {lin32}, f16 {lin16}"
    );
    assert_eq!(
        all32 - lin32,
        all16 - lin16,
        "the other parameters stay f32"
    );
    assert_eq!(cpu.gpu_weight_bytes(), None);
}

#[test]
fn lanes_do_not_change_vectors() {
    // Side by side on two single-threaded lanes (a 2-thread pool) or one after
    // another with every op on one thread: the same batches, the same bits.
    let texts: Vec<String> = (0..26)
        .map(|i| {
            format!(
                "{} cerebral white matter {i}.",
                "diffusion tensor imaging ".repeat(i % 7)
            )
        })
        .collect();
    let docs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut enc = encoder(&model_dir(), DeviceChoice::Cpu);
            enc.set_batch_size(4).unwrap();
            let d = enc.encode_documents(&docs).unwrap();
            // 16 queries: four batches of 4 either way (for other counts the
            // lanes may cut near-equal batches instead, see plan_batches).
            let q = enc.encode_queries(&docs[..16]).unwrap();
            let forks = match &enc {
                Encoder::Cpu(e) => e.backend().lane_backends(),
                Encoder::Gpu(_) => unreachable!("a cpu encoder"),
            };
            (d, q, forks)
        })
    };
    let (serial_d, serial_q, no_forks) = run(1);
    let (lanes_d, lanes_q, forks) = run(2);
    assert_eq!(
        (no_forks, forks),
        (0, 2),
        "lanes ran only on the 2-thread pool"
    );
    assert_eq!(serial_d, lanes_d, "documents");
    assert_eq!(serial_q, lanes_q, "queries");
}

#[test]
fn warm_up_starts_every_lane() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        let mut enc = encoder(&model_dir(), DeviceChoice::Cpu);
        enc.warm_up().unwrap();
        match &enc {
            Encoder::Cpu(e) => assert_eq!(e.backend().lane_backends(), 2),
            Encoder::Gpu(_) => unreachable!("a cpu encoder"),
        }
    });
}
