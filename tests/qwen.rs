//! ColQwen2 (issue 9): the vision-language ops against f64 references (CPU twins)
//! and against their CPU twins (WGSL on the `gpu` backend, lavapipe in CI), image
//! pre-processing against the reference processor's `pixel_values`, and the tiny
//! seeded ColQwen2 of `tests/fixtures/colqwen2` against colpali-engine's outputs
//! (`scripts/reference/make_colqwen2_fixtures.py`).

mod common;

use std::path::PathBuf;

use colwgpu::backend::cpu::CpuBackend;
use colwgpu::backend::gpu::GpuBackend;
use colwgpu::backend::{Backend, HostMatrix, KeySpans, Unary};
use colwgpu::model::colqwen2::{ColQwen2Checkpoint, ColQwen2Encoder};
use colwgpu::vision::{load_rgb, pixel_patches, smart_resize, Patches};
use common::fixture::{bf16_tensors, copy_files, maxsim, write_f32_safetensors, Fixture};
use common::{assert_close, gpu, max_abs_diff, root, Rng};

fn mat(rng: &mut Rng, rows: usize, cols: usize, scale: f32) -> HostMatrix {
    HostMatrix::new(rows, cols, rng.vec(rows * cols, scale)).unwrap()
}

// ---------------------------------------------------------------- f64 references

fn norm_f64(x: &HostMatrix, g: &[f32], b: Option<&[f32]>, eps: f32) -> Vec<f32> {
    let n = x.cols;
    let mut out = Vec::with_capacity(x.data.len());
    for row in x.data.chunks(n) {
        let r: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        match b {
            Some(b) => {
                let mean = r.iter().sum::<f64>() / n as f64;
                let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
                let inv = 1.0 / (var + eps as f64).sqrt();
                for c in 0..n {
                    out.push(((r[c] - mean) * inv * g[c] as f64 + b[c] as f64) as f32);
                }
            }
            None => {
                let ms = r.iter().map(|v| v * v).sum::<f64>() / n as f64;
                let inv = 1.0 / (ms + eps as f64).sqrt();
                for c in 0..n {
                    out.push((r[c] * inv * g[c] as f64) as f32);
                }
            }
        }
    }
    out
}

fn sigmoid_f64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn rotary_f64(x: &HostMatrix, table: &HostMatrix, heads: usize, d: usize) -> Vec<f32> {
    let half = d / 2;
    let mut out = x.data.clone();
    for r in 0..x.rows {
        for h in 0..heads {
            for c in 0..half {
                let (cos, sin) = (
                    table.data[r * d + c] as f64,
                    table.data[r * d + half + c] as f64,
                );
                let i1 = r * x.cols + h * d + c;
                let i2 = i1 + half;
                let (x1, x2) = (x.data[i1] as f64, x.data[i2] as f64);
                out[i1] = (x1 * cos - x2 * sin) as f32;
                out[i2] = (x2 * cos + x1 * sin) as f32;
            }
        }
    }
    out
}

fn attention_f64(qkv: &HostMatrix, spans: &KeySpans, qh: usize, kvh: usize, d: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; qkv.rows * qh * d];
    let s = qkv.cols;
    let scale = 1.0 / (d as f64).sqrt();
    for r in 0..qkv.rows {
        let [a, b] = spans.spans[r];
        if b <= a {
            continue;
        }
        for h in 0..qh {
            let g = h / (qh / kvh);
            let scores: Vec<f64> = (a..b)
                .map(|j| {
                    (0..d)
                        .map(|c| {
                            qkv.data[r * s + h * d + c] as f64
                                * qkv.data[j as usize * s + (qh + g) * d + c] as f64
                        })
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|v| (v - max).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..d {
                let v: f64 = (a..b)
                    .zip(&e)
                    .map(|(j, w)| w * qkv.data[j as usize * s + (qh + kvh + g) * d + c] as f64)
                    .sum();
                out[r * qh * d + h * d + c] = (v / z) as f32;
            }
        }
    }
    out
}

fn random_table(rng: &mut Rng, rows: usize, d: usize) -> HostMatrix {
    let half = d / 2;
    let mut data = Vec::with_capacity(rows * d);
    for _ in 0..rows {
        let angles: Vec<f32> = (0..half).map(|_| rng.uniform() * 40.0).collect();
        data.extend(angles.iter().map(|a| a.cos()));
        data.extend(angles.iter().map(|a| a.sin()));
    }
    HostMatrix::new(rows, d, data).unwrap()
}

const ROWS: &[usize] = &[1, 31, 33, 70];
const COLS: &[usize] = &[1, 31, 64, 129];

// ---------------------------------------------------------------- op tests

#[test]
fn norms_cpu_and_gpu_match_f64() {
    let mut rng = Rng::new(91);
    let mut cpu = CpuBackend::new();
    let mut g = GpuBackend::new(gpu());
    for &rows in ROWS {
        for &cols in COLS {
            let x = mat(&mut rng, rows, cols, 2.0);
            let gamma = HostMatrix::vector(rng.vec(cols, 1.0));
            let beta = HostMatrix::vector(rng.vec(cols, 1.0));
            let want_ln = norm_f64(&x, &gamma.data, Some(&beta.data), 1e-6);
            let want_rms = norm_f64(&x, &gamma.data, None, 1e-6);
            let ln = cpu.layer_norm(&x, &gamma, &beta, 1e-6).unwrap();
            let rms = cpu.rms_norm(&x, &gamma, 1e-6).unwrap();
            let what = format!("{rows}×{cols}");
            assert_close(
                &format!("cpu layer_norm {what}"),
                &ln.data,
                &want_ln,
                2e-5,
                1e-4,
            );
            assert_close(
                &format!("cpu rms_norm {what}"),
                &rms.data,
                &want_rms,
                2e-5,
                1e-4,
            );
            let gx = g.upload(&x).unwrap();
            let gg = g.weight("g", &gamma).unwrap();
            let gb = g.weight("b", &beta).unwrap();
            let a = g.layer_norm(&gx, &gg, &gb, 1e-6).unwrap();
            let b = g.rms_norm(&gx, &gg, 1e-6).unwrap();
            assert_close(
                &format!("gpu layer_norm {what}"),
                &g.read(&a).unwrap().data,
                &ln.data,
                2e-5,
                1e-4,
            );
            assert_close(
                &format!("gpu rms_norm {what}"),
                &g.read(&b).unwrap().data,
                &rms.data,
                2e-5,
                1e-4,
            );
        }
    }
}

#[test]
fn elementwise_ops_cpu_and_gpu_match_f64() {
    let mut rng = Rng::new(92);
    let mut cpu = CpuBackend::new();
    let mut g = GpuBackend::new(gpu());
    for &rows in ROWS {
        for &cols in COLS {
            let what = format!("{rows}×{cols}");
            let x = mat(&mut rng, rows, cols, 6.0);
            let y = mat(&mut rng, rows, cols, 6.0);
            let gu = mat(&mut rng, rows, 2 * cols, 6.0);
            let add_ref: Vec<f32> = x.data.iter().zip(&y.data).map(|(a, b)| a + b).collect();
            let qg_ref: Vec<f32> = x
                .data
                .iter()
                .map(|&v| (v as f64 * sigmoid_f64(1.702 * v as f64)) as f32)
                .collect();
            let gelu_ref: Vec<f32> = x
                .data
                .iter()
                .map(|&v| (0.5 * v as f64 * (1.0 + common::erf_f64(v as f64 / 2f64.sqrt()))) as f32)
                .collect();
            let swiglu_ref: Vec<f32> = (0..rows)
                .flat_map(|r| {
                    let row = &gu.data[r * 2 * cols..(r + 1) * 2 * cols];
                    (0..cols)
                        .map(|c| {
                            let (a, b) = (row[c] as f64, row[cols + c] as f64);
                            (a * sigmoid_f64(a) * b) as f32
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            let c_add = cpu.add(&x, &y).unwrap();
            let c_qg = cpu.unary(&x, Unary::QuickGelu).unwrap();
            let c_gelu = cpu.unary(&x, Unary::Gelu).unwrap();
            let c_sw = cpu.swiglu(&gu).unwrap();
            assert_eq!((c_sw.rows, c_sw.cols), (rows, cols));
            assert_close(&format!("cpu add {what}"), &c_add.data, &add_ref, 0.0, 0.0);
            assert_close(
                &format!("cpu quick_gelu {what}"),
                &c_qg.data,
                &qg_ref,
                1e-6,
                1e-5,
            );
            assert_close(
                &format!("cpu gelu {what}"),
                &c_gelu.data,
                &gelu_ref,
                1e-6,
                1e-5,
            );
            assert_close(
                &format!("cpu swiglu {what}"),
                &c_sw.data,
                &swiglu_ref,
                1e-5,
                1e-5,
            );
            let (gx, gy, ggu) = (
                g.upload(&x).unwrap(),
                g.upload(&y).unwrap(),
                g.upload(&gu).unwrap(),
            );
            let a = g.add(&gx, &gy).unwrap();
            let q = g.unary(&gx, Unary::QuickGelu).unwrap();
            let e = g.unary(&gx, Unary::Gelu).unwrap();
            let s = g.swiglu(&ggu).unwrap();
            assert_close(
                &format!("gpu add {what}"),
                &g.read(&a).unwrap().data,
                &c_add.data,
                0.0,
                0.0,
            );
            assert_close(
                &format!("gpu quick_gelu {what}"),
                &g.read(&q).unwrap().data,
                &c_qg.data,
                1e-6,
                1e-5,
            );
            assert_close(
                &format!("gpu gelu {what}"),
                &g.read(&e).unwrap().data,
                &c_gelu.data,
                1e-6,
                1e-5,
            );
            assert_close(
                &format!("gpu swiglu {what}"),
                &g.read(&s).unwrap().data,
                &c_sw.data,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn rotary_cpu_and_gpu_match_f64() {
    let mut rng = Rng::new(93);
    let mut cpu = CpuBackend::new();
    let mut g = GpuBackend::new(gpu());
    // (rows, heads rotated, extra heads passed through, head_dim)
    for &(rows, heads, extra, d) in &[
        (1, 1, 0, 2),
        (33, 3, 2, 16),
        (70, 6, 2, 128),
        (31, 4, 4, 80),
    ] {
        let x = mat(&mut rng, rows, (heads + extra) * d, 2.0);
        let table = random_table(&mut rng, rows, d);
        let want = rotary_f64(&x, &table, heads, d);
        let c = cpu.rotary(&x, &table, heads, d).unwrap();
        let what = format!("rows {rows} heads {heads}+{extra} d {d}");
        assert_close(&format!("cpu rotary {what}"), &c.data, &want, 1e-6, 1e-5);
        let gx = g.upload(&x).unwrap();
        let gt = g.upload(&table).unwrap();
        let out = g.rotary(&gx, &gt, heads, d).unwrap();
        assert_close(
            &format!("gpu rotary {what}"),
            &g.read(&out).unwrap().data,
            &c.data,
            1e-6,
            1e-5,
        );
    }
    let x = mat(&mut rng, 4, 10, 1.0);
    let t = random_table(&mut rng, 4, 4);
    assert!(
        cpu.rotary(&x, &t, 3, 4).is_err(),
        "12 rotated columns do not fit in 10"
    );
}

#[test]
fn attention_gqa_cpu_and_gpu_match_f64() {
    let mut rng = Rng::new(94);
    let mut cpu = CpuBackend::new();
    let mut g = GpuBackend::new(gpu());
    let mut cases: Vec<(KeySpans, usize, usize, usize)> = vec![
        (KeySpans::blocks(&[1]), 1, 1, 1),
        (KeySpans::blocks(&[16, 33, 4]), 4, 4, 16),
        (KeySpans::causal_left_padded(35, &[0, 7, 35]), 12, 2, 128),
        (KeySpans::causal_left_padded(9, &[2, 0]), 3, 1, 5),
        (KeySpans::blocks(&[70]), 2, 1, 80),
        // Gemma's head_dim 256 (two value tiles) with multi-query attention,
        // and 200 (a partial second tile).
        (KeySpans::causal_left_padded(19, &[0, 5]), 8, 1, 256),
        (KeySpans::blocks(&[13, 6]), 2, 2, 200),
    ];
    // Arbitrary spans, some empty.
    let rows = 41;
    let spans = (0..rows)
        .map(|_| {
            let a = rng.below(rows as u64) as u32;
            let b = a + rng.below((rows as u32 - a) as u64 + 1) as u32;
            [a, b]
        })
        .collect();
    cases.push((KeySpans { spans }, 4, 2, 31));
    for (spans, qh, kvh, d) in cases {
        let rows = spans.spans.len();
        let qkv = mat(&mut rng, rows, (qh + 2 * kvh) * d, 1.5);
        let want = attention_f64(&qkv, &spans, qh, kvh, d);
        let what = format!("rows {rows} heads {qh}/{kvh} d {d}");
        let c = cpu.attention_gqa(&qkv, &spans, qh, kvh, d).unwrap();
        assert_close(
            &format!("cpu attention_gqa {what}"),
            &c.data,
            &want,
            2e-6,
            1e-4,
        );
        let gq = g.upload(&qkv).unwrap();
        let out = g.attention_gqa(&gq, &spans, qh, kvh, d).unwrap();
        assert_close(
            &format!("gpu attention_gqa {what}"),
            &g.read(&out).unwrap().data,
            &c.data,
            2e-6,
            1e-4,
        );
    }
    let qkv = mat(&mut rng, 3, 24, 1.0);
    let bad = KeySpans {
        spans: vec![[0, 4]; 3],
    };
    assert!(
        cpu.attention_gqa(&qkv, &bad, 2, 1, 6).is_err(),
        "span past the rows"
    );
    let ok = KeySpans::blocks(&[3]);
    assert!(
        cpu.attention_gqa(&qkv, &ok, 3, 2, 6).is_err(),
        "3 query heads over 2 kv heads"
    );
}

#[test]
fn reshape_keeps_data_and_checks_size() {
    let mut cpu = CpuBackend::new();
    let x = HostMatrix::new(8, 3, (0..24).map(|v| v as f32).collect()).unwrap();
    let y = cpu.reshape(x.clone(), 2, 12).unwrap();
    assert_eq!((y.rows, y.cols, &y.data), (2, 12, &x.data));
    assert!(cpu.reshape(x, 5, 5).is_err());
}

// ---------------------------------------------------------------- fixtures

fn fixture_dir() -> PathBuf {
    root().join("tests/fixtures/colqwen2")
}

/// The reference tensors of `colqwen2_fixtures.safetensors`.
fn fixture() -> Fixture {
    Fixture::load(&fixture_dir().join("colqwen2_fixtures.safetensors"))
}

fn image(i: usize) -> colwgpu::vision::RgbImage {
    load_rgb(&fixture_dir().join(format!("images/{i}.png"))).unwrap()
}

fn checkpoint() -> ColQwen2Checkpoint {
    ColQwen2Checkpoint::load(&fixture_dir().join("model")).unwrap()
}

#[test]
fn smart_resize_matches_transformers() {
    // Values from transformers' smart_resize (factor 28).
    assert_eq!(smart_resize(329, 448, 28, 3136, 12544).unwrap(), (84, 112));
    assert_eq!(
        smart_resize(1000, 1000, 28, 3136, 1003520).unwrap(),
        (980, 980)
    );
    assert_eq!(
        smart_resize(2016, 1415, 28, 3136, 1003520).unwrap(),
        (1176, 812)
    );
    assert_eq!(
        smart_resize(20000, 20000, 28, 3136, 1003520).unwrap(),
        (980, 980)
    );
    assert_eq!(smart_resize(10, 10, 28, 3136, 12544).unwrap(), (56, 56));
    assert!(
        smart_resize(1, 300, 28, 3136, 12544).is_err(),
        "aspect ratio above 200"
    );
    assert!(smart_resize(0, 30, 28, 3136, 12544).is_err());
}

#[test]
fn pixel_values_match_the_reference_processor() {
    let fx = fixture();
    let ckpt = checkpoint();
    let (_, want) = fx.f32("doc_pixel_values");
    let (_, grids) = fx.i64("doc_image_grid_thw");
    let mut got = Vec::new();
    for i in 0..2 {
        let p = pixel_patches(&image(i), &ckpt.image).unwrap();
        assert_eq!(
            p.grid.map(|v| v as i64).to_vec(),
            grids[i * 3..i * 3 + 3].to_vec()
        );
        got.extend(p.pixels.data);
    }
    let d = max_abs_diff(&got, &want);
    println!("pixel_values max |Δ| = {d:e}");
    assert_close("pixel_values", &got, &want, 1e-5, 0.0);
    // Every image's grid (the resize sizes) matches too.
    let (_, all) = fx.i64("all_grid_thw");
    for i in 0..10 {
        let p = pixel_patches(&image(i), &ckpt.image).unwrap();
        assert_eq!(
            p.grid.map(|v| v as i64).to_vec(),
            all[i * 3..i * 3 + 3].to_vec(),
            "image {i}"
        );
    }
}

#[test]
fn token_ids_match_the_reference_processor() {
    let fx = fixture();
    let enc = ColQwen2Encoder::new(checkpoint(), CpuBackend::new()).unwrap();
    let queries: Vec<String> = fixture_queries();
    let want = fx.unpadded_ids("query_input_ids", "query_attention_mask");
    for (q, w) in queries.iter().zip(&want) {
        assert_eq!(&enc.query_ids(q).unwrap(), w, "query {q:?}");
    }
    let want = fx.unpadded_ids("doc_input_ids", "doc_attention_mask");
    for (i, w) in want.iter().enumerate() {
        let p = enc.patches(&image(i)).unwrap();
        assert_eq!(&enc.document_ids(p.tokens(2)).unwrap(), w, "image {i}");
    }
}

fn fixture_queries() -> Vec<String> {
    let text = std::fs::read_to_string(fixture_dir().join("colqwen2_fixtures.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_str().unwrap().to_string())
        .collect()
}

/// Encodes the fixture's document batch (images 0 and 1) and query batch and
/// returns the max |Δ| against the reference vectors.
fn parity<B: Backend>(backend: B) -> (f32, f32) {
    let fx = fixture();
    let mut enc = ColQwen2Encoder::new(checkpoint(), backend).unwrap();
    let images = [image(0), image(1)];
    let docs = enc.encode_images(&images).unwrap();
    let want = fx.unpadded_vectors("doc_vectors", "doc_attention_mask");
    let mut doc_delta = 0.0f32;
    for (d, w) in docs.iter().zip(&want) {
        assert_eq!(d.vectors.len(), w.len());
        doc_delta = doc_delta.max(max_abs_diff(&d.vectors, w));
    }
    let queries = fixture_queries();
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let qs = enc.encode_queries(&refs).unwrap();
    let want = fx.unpadded_vectors("query_vectors", "query_attention_mask");
    let mut q_delta = 0.0f32;
    for (q, w) in qs.iter().zip(&want) {
        assert_eq!(q.vectors.len(), w.len());
        q_delta = q_delta.max(max_abs_diff(&q.vectors, w));
    }
    (doc_delta, q_delta)
}

#[test]
fn colqwen2_cpu_matches_colpali_engine() {
    let (d, q) = parity(CpuBackend::new());
    println!("cpu: documents max |Δ| = {d:e}, queries max |Δ| = {q:e}");
    // Issue 9 asks for ≤ 1e-4; measured 3.9e-7 / 1.9e-7 (AMD EPYC, gemm AVX-512).
    assert!(d <= 2e-6 && q <= 2e-6, "documents {d:e}, queries {q:e}");
}

#[test]
fn colqwen2_gpu_matches_colpali_engine() {
    let (d, q) = parity(GpuBackend::new(gpu()));
    println!("gpu: documents max |Δ| = {d:e}, queries max |Δ| = {q:e}");
    // Issue 9 asks for ≤ 1e-3 on lavapipe; measured 3.4e-7 / 1.8e-7.
    assert!(d <= 2e-6 && q <= 2e-6, "documents {d:e}, queries {q:e}");
}

/// `--precision f16`: the same linear op with f16 weights (f32 activations
/// and sums); skipped, saying why, without SHADER_F16. The fixture's weights
/// are bf16, which f16 holds exactly at magnitudes 6.1e-5 … 65,504 (as for
/// the published checkpoints, also bf16), so the vectors stay within the f32
/// path's tolerance of the reference while the linear weights take half the
/// bytes.
#[test]
fn colqwen2_gpu_f16_weights_stay_close_to_colpali_engine() {
    let Some(ctx) = common::gpu_with_f16() else {
        return;
    };
    common::assert_f16_halves_linear_weights(|p| {
        let b = GpuBackend::with_precision(ctx.clone(), p).unwrap();
        ColQwen2Encoder::new(checkpoint(), b)
            .unwrap()
            .backend()
            .weight_bytes()
    });
    let b = GpuBackend::with_precision(ctx, colwgpu::backend::Precision::F16).unwrap();
    let (d, q) = parity(b);
    println!("gpu f16: documents max |Δ| = {d:e}, queries max |Δ| = {q:e}");
    // Measured 4.1e-7 / 1.8e-7 (lavapipe), as f32.
    assert!(d <= 2e-6 && q <= 2e-6, "documents {d:e}, queries {q:e}");
}

#[test]
fn ranking_of_the_ten_pages_equals_the_reference() {
    let fx = fixture();
    let mut enc = ColQwen2Encoder::new(checkpoint(), CpuBackend::new()).unwrap();
    enc.batch_size = 1; // each page alone, as the reference encoded them
    let images: Vec<_> = (0..10).map(image).collect();
    let docs = enc.encode_images(&images).unwrap();
    let queries = fixture_queries();
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let qs = enc.encode_queries(&refs).unwrap();
    let (_, all) = fx.f32("all_doc_vectors");
    let (_, offsets) = fx.i64("all_doc_offsets");
    let ref_q = fx.unpadded_vectors("query_vectors", "query_attention_mask");
    let dim = enc.dim();
    for (qi, q) in qs.iter().enumerate() {
        let ours: Vec<f64> = docs
            .iter()
            .map(|d| maxsim(&q.vectors, &d.vectors, dim))
            .collect();
        let theirs: Vec<f64> = (0..10)
            .map(|j| {
                let (a, b) = (offsets[j] as usize * dim, offsets[j + 1] as usize * dim);
                maxsim(&ref_q[qi], &all[a..b], dim)
            })
            .collect();
        let rank = |s: &[f64]| {
            let mut r: Vec<usize> = (0..s.len()).collect();
            r.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
            r
        };
        println!("query {qi}: ours {ours:.5?}\n         reference {theirs:.5?}");
        assert_eq!(rank(&ours), rank(&theirs), "query {qi}");
        for (j, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!((a - b).abs() < 1e-4, "query {qi} page {j}: {a} vs {b}");
        }
    }
}

#[test]
fn bad_images_and_checkpoints_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("t.png");
    let bytes = std::fs::read(fixture_dir().join("images/1.png")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let err = load_rgb(&truncated).unwrap_err().to_string();
    assert!(err.contains("t.png"), "{err}");
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not an image at all").unwrap();
    assert!(load_rgb(&junk).is_err());
    assert!(load_rgb(&dir.path().join("missing.png")).is_err());
    // A checkpoint without the vision tower.
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["config.json", "tokenizer.json", "processor_config.json"] {
        std::fs::copy(fixture_dir().join("model").join(f), model.join(f)).unwrap();
    }
    let src = std::fs::read(fixture_dir().join("model/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&src).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.starts_with("visual."))
        .collect();
    safetensors::serialize_to_file(kept, None, &model.join("model.safetensors")).unwrap();
    let err = match ColQwen2Checkpoint::load(&model) {
        Ok(_) => panic!("a checkpoint without a vision tower loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("vision tower"), "{err}");
}

#[test]
fn patches_of_a_large_image_follow_the_pixel_budget() {
    // A large page is resized to at most max_pixels: the patch count follows
    // the budget, not the input size (a white page built in memory).
    let ckpt = checkpoint();
    let img = colwgpu::vision::RgbImage {
        width: 4000,
        height: 3000,
        data: vec![255; 4000 * 3000 * 3],
    };
    let p: Patches = pixel_patches(&img, &ckpt.image).unwrap();
    assert!(
        p.pixels.rows * 14 * 14 <= ckpt.image.max_pixels,
        "{:?}",
        p.grid
    );
}

// ---------------------------------------------------------------- layouts and adapters

/// The fixture model's tensors as f32, by name.
fn fixture_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    bf16_tensors(&fixture_dir().join("model/model.safetensors"))
}

/// Copies the fixture model's side files (config, tokenizer, processor) into `dir`.
fn copy_side_files(dir: &std::path::Path) {
    copy_files(
        &fixture_dir().join("model"),
        dir,
        &["config.json", "tokenizer.json", "processor_config.json"],
    );
}

/// Encodes page 0 and the first query with the checkpoint in `dir`.
fn encode_one(ckpt: ColQwen2Checkpoint) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let mut enc = ColQwen2Encoder::new(ckpt, CpuBackend::new()).unwrap();
    let d = enc.encode_images(&[image(0)]).unwrap().remove(0);
    let q = enc
        .encode_queries(&[fixture_queries()[0].as_str()])
        .unwrap()
        .remove(0);
    (d.vectors, q.vectors, q.ids)
}

#[test]
fn lora_adapter_merges_as_w_plus_scaled_b_a() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(95);
    let (r, alpha) = (2usize, 6.0f32);
    // (adapter module name in colpali-engine's layout, fixture tensor name)
    let targets = [
        (
            "base_model.model.model.layers.0.self_attn.q_proj",
            "language_model.layers.0.self_attn.q_proj.weight",
        ),
        (
            "base_model.model.model.layers.1.mlp.down_proj",
            "language_model.layers.1.mlp.down_proj.weight",
        ),
        (
            "base_model.model.visual.blocks.1.mlp.fc1",
            "visual.blocks.1.mlp.fc1.weight",
        ),
        (
            "base_model.model.custom_text_proj",
            "custom_text_proj.weight",
        ),
    ];
    let mut tensors = fixture_tensors();
    let mut adapter = Vec::new();
    for (module, target) in targets {
        let t = tensors.iter_mut().find(|t| t.0 == target).unwrap();
        let (out, inp) = (t.1[0], t.1[1]);
        let a = rng.vec(r * inp, 0.3);
        let b = rng.vec(out * r, 0.3);
        for o in 0..out {
            for i in 0..inp {
                let ba: f64 = (0..r)
                    .map(|k| b[o * r + k] as f64 * a[k * inp + i] as f64)
                    .sum();
                t.2[o * inp + i] += (alpha as f64 / r as f64 * ba) as f32;
            }
        }
        adapter.push((format!("{module}.lora_A.weight"), vec![r, inp], a));
        adapter.push((format!("{module}.lora_B.weight"), vec![out, r], b));
    }
    // The merged checkpoint, written out in f32.
    let merged = tmp.path().join("merged");
    copy_side_files(&merged);
    write_f32_safetensors(&merged.join("model.safetensors"), &tensors);
    // The adapter, its base found beside it by the last component of its name.
    let base = tmp.path().join("tiny-colqwen2-base");
    copy_side_files(&base);
    std::fs::copy(
        fixture_dir().join("model/model.safetensors"),
        base.join("model.safetensors"),
    )
    .unwrap();
    let dir = tmp.path().join("adapter");
    std::fs::create_dir(&dir).unwrap();
    write_f32_safetensors(&dir.join("adapter_model.safetensors"), &adapter);
    let config = serde_json::json!({
        "base_model_name_or_path": "someone/tiny-colqwen2-base",
        "peft_type": "LORA", "r": r, "lora_alpha": alpha,
    });
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    let via_adapter = encode_one(ColQwen2Checkpoint::load(&dir).unwrap());
    let via_merged = encode_one(ColQwen2Checkpoint::load(&merged).unwrap());
    let base_only = encode_one(ColQwen2Checkpoint::load(&base).unwrap());
    assert_close(
        "adapter vs merged (page)",
        &via_adapter.0,
        &via_merged.0,
        2e-6,
        0.0,
    );
    assert_close(
        "adapter vs merged (query)",
        &via_adapter.1,
        &via_merged.1,
        2e-6,
        0.0,
    );
    assert!(
        max_abs_diff(&via_adapter.0, &base_only.0) > 1e-2,
        "the adapter changed nothing"
    );
    // The base given explicitly works too; a missing base is a clear error.
    let explicit = ColQwen2Checkpoint::load_with_base(&dir, Some(&base)).unwrap();
    assert_eq!(
        explicit.adapter.as_ref().map(|a| a.1.clone()),
        Some(base.clone())
    );
    std::fs::rename(&base, tmp.path().join("elsewhere")).unwrap();
    let err = match ColQwen2Checkpoint::load(&dir) {
        Ok(_) => panic!("an adapter without its base loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("--base") && err.contains("tiny-colqwen2-base"),
        "{err}"
    );
}

#[test]
fn transformers_colqwen2_layout_gives_the_same_vectors() {
    // transformers' ColQwen2ForRetrieval: `vlm.visual.*`, `vlm.language_model.*`,
    // `embedding_proj_layer.*`, the Qwen2-VL config under `vlm_config`; its
    // processor writes queries as "Query: " + text + <|endoftext|> × 10 + "\n".
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    copy_side_files(&dir);
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("model/config.json")).unwrap(),
    )
    .unwrap();
    let wrapped =
        serde_json::json!({"model_type": "colqwen2", "embedding_dim": 128, "vlm_config": cfg});
    std::fs::write(dir.join("config.json"), wrapped.to_string()).unwrap();
    let renamed: Vec<_> = fixture_tensors()
        .into_iter()
        .map(|(n, s, d)| {
            let n = if let Some(rest) = n.strip_prefix("custom_text_proj") {
                format!("embedding_proj_layer{rest}")
            } else {
                format!("vlm.{n}")
            };
            (n, s, d)
        })
        .collect();
    write_f32_safetensors(&dir.join("model.safetensors"), &renamed);
    let hf = encode_one(ColQwen2Checkpoint::load(&dir).unwrap());
    let ours = encode_one(checkpoint());
    assert_eq!(hf.0, ours.0, "page vectors");
    let enc = ColQwen2Encoder::new(checkpoint(), CpuBackend::new()).unwrap();
    let q = &fixture_queries()[0];
    // colpali-engine's ids of "Query: " + text, then the extra "\n" token.
    let want = enc.query_ids(&format!("Query: {q}")).unwrap();
    assert_eq!(
        &hf.2[..want.len()],
        &want[..],
        "queries start with 'Query: '"
    );
    assert_eq!(hf.2.len(), want.len() + 1, "and end with a newline token");
}

#[test]
fn an_index_of_the_ten_pages_ranks_as_exhaustive_maxsim_over_the_reference() {
    // The tiny ColQwen2 encodes the 10 pages (each alone) and the 2 queries; the
    // compressed index built from those vectors must rank the pages for each query
    // exactly as exhaustive MaxSim over colpali-engine's own vectors does.
    let fx = fixture();
    let mut enc = ColQwen2Encoder::new(checkpoint(), CpuBackend::new()).unwrap();
    enc.batch_size = 1;
    let images: Vec<_> = (0..10).map(image).collect();
    let pages = enc.encode_images(&images).unwrap();
    let queries = fixture_queries();
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let qs = enc.encode_queries(&refs).unwrap();
    let ids: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let blocks: Vec<Vec<f32>> = pages.iter().map(|p| p.vectors.clone()).collect();
    let set = colwgpu::VectorSet::from_blocks(Some(ids), enc.dim(), &blocks).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let options = colwgpu::IndexOptions {
        nbits: 4,
        ..Default::default()
    };
    let index = colwgpu::Index::build_from_vectors(
        tmp.path().join("pages.index"),
        &set,
        None,
        &options,
        colwgpu::Device::Cpu,
    )
    .unwrap();
    let q_blocks: Vec<&[f32]> = qs.iter().map(|q| q.vectors.as_slice()).collect();
    let hits = index
        .search_vectors(&q_blocks, &colwgpu::SearchOptions::new(10))
        .unwrap();
    let (_, all) = fx.f32("all_doc_vectors");
    let (_, offsets) = fx.i64("all_doc_offsets");
    let ref_q = fx.unpadded_vectors("query_vectors", "query_attention_mask");
    let dim = enc.dim();
    for (qi, h) in hits.iter().enumerate() {
        let scores: Vec<f64> = (0..10)
            .map(|j| {
                let (a, b) = (offsets[j] as usize * dim, offsets[j + 1] as usize * dim);
                maxsim(&ref_q[qi], &all[a..b], dim)
            })
            .collect();
        let mut want: Vec<usize> = (0..10).collect();
        want.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let got: Vec<usize> = h.iter().map(|x| x.id.parse().unwrap()).collect();
        assert_eq!(got, want, "query {qi}");
    }
}

#[test]
fn cli_indexes_page_images_and_searches_them_as_the_reference_ranks() {
    // End to end through the CLI (the front door underneath): `index --images`
    // with the tiny ColQwen2, then `search` with no --model (the index records
    // it) on the fixture's two queries. Each query's ranking of the 10 pages
    // must equal exhaustive MaxSim over colpali-engine's own vectors; `eval`
    // runs on the BEIR-style qrels, whose ids are the pages' file stems.
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
    let images = fixture_dir().join("images");
    let os = |s: &str| std::ffi::OsString::from(s);
    run(&[
        &os("index"),
        &os("--device"),
        &os("cpu"),
        &os("--batch-size"),
        &os("1"),
        &os("--nbits"),
        &os("4"),
        &os("--model"),
        model.as_os_str(),
        &os("--images"),
        images.as_os_str(),
        &os("--index"),
        index.as_os_str(),
    ]);
    let out = run(&[
        &os("search"),
        &os("--device"),
        &os("cpu"),
        &os("--json"),
        &os("-k"),
        &os("10"),
        &os("--index"),
        index.as_os_str(),
        &os("--queries"),
        queries.as_os_str(),
    ]);
    let (_, all) = fx.f32("all_doc_vectors");
    let (_, offsets) = fx.i64("all_doc_offsets");
    let ref_q = fx.unpadded_vectors("query_vectors", "query_attention_mask");
    let dim = 128;
    let results: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 2);
    for (qi, r) in results.iter().enumerate() {
        let scores: Vec<f64> = (0..10)
            .map(|j| {
                let (a, b) = (offsets[j] as usize * dim, offsets[j + 1] as usize * dim);
                maxsim(&ref_q[qi], &all[a..b], dim)
            })
            .collect();
        let mut want: Vec<String> = (0..10).map(|j| j.to_string()).collect();
        want.sort_by(|a, b| {
            scores[b.parse::<usize>().unwrap()].total_cmp(&scores[a.parse::<usize>().unwrap()])
        });
        let got: Vec<String> = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["doc_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want, "query {qi}");
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
        fixture_dir().join("qrels.tsv").as_os_str(),
    ]);
    let m: serde_json::Value = serde_json::from_str(eval.trim()).unwrap();
    assert_eq!(m["queries"], 2, "{eval}");
}

#[test]
fn images_with_a_text_model_or_no_images_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let run_err = |args: Vec<std::ffi::OsString>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_colwgpu"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let os = |s: &std::path::Path| s.as_os_str().to_os_string();
    let images = fixture_dir().join("images");
    let text_model = common::model_dir();
    let e = run_err(vec![
        "encode".into(),
        "--device".into(),
        "cpu".into(),
        "--model".into(),
        os(&text_model),
        "--images".into(),
        os(&images),
        "--out".into(),
        os(&tmp.path().join("x.safetensors")),
    ]);
    assert!(e.contains("page-image model"), "{e}");
    assert!(!tmp.path().join("x.safetensors").exists());
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = run_err(vec![
        "index".into(),
        "--device".into(),
        "cpu".into(),
        "--model".into(),
        os(&fixture_dir().join("model")),
        "--images".into(),
        os(&empty),
        "--index".into(),
        os(&tmp.path().join("idx")),
    ]);
    assert!(e.contains("no PNG or JPEG images"), "{e}");
    // A page model asked to encode texts as documents says what it takes.
    let e = run_err(vec![
        "encode".into(),
        "--device".into(),
        "cpu".into(),
        "--model".into(),
        os(&fixture_dir().join("model")),
        "--docs".into(),
        os(&fixture_dir().join("queries.jsonl")),
        "--out".into(),
        os(&tmp.path().join("y.safetensors")),
    ]);
    assert!(e.contains("page-image model"), "{e}");
}
