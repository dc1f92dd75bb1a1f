//! Tier 1: every encoder kernel on the `gpu` backend (lavapipe in CI) against its
//! CPU twin, and every CPU twin against a plain f64 reference, at awkward sizes.

mod common;

use colwgpu::backend::cpu::CpuBackend;
use colwgpu::backend::gpu::GpuBackend;
use colwgpu::backend::{Activation, Backend, EmbeddingTables, HostMatrix, TokenBatch};
use common::{assert_close, gpu, Rng};

fn mat(rng: &mut Rng, rows: usize, cols: usize, scale: f32) -> HostMatrix {
    HostMatrix::new(rows, cols, rng.vec(rows * cols, scale)).unwrap()
}

fn gelu_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + common::erf_f64(x / std::f64::consts::SQRT_2))
}

/// The f64 reference itself, against erf's tabulated values.
#[test]
fn erf_reference_matches_tables() {
    for (x, erf) in [
        (0.0, 0.0),
        (0.5, 0.5204998778130465),
        (1.0, 0.8427007929497149),
        (-1.5, -0.9661051464753108),
        (3.0, 0.9999779095030014),
    ] {
        let got = common::erf_f64(x);
        assert!((got - erf).abs() < 1.2e-7, "erf({x}) = {got}, tables {erf}");
    }
}

fn linear_f64(x: &HostMatrix, w: &HostMatrix, b: Option<&HostMatrix>, act: Activation) -> Vec<f32> {
    let mut y = vec![0.0f32; x.rows * w.rows];
    for i in 0..x.rows {
        for j in 0..w.rows {
            let mut s = 0.0f64;
            for k in 0..x.cols {
                s += x.data[i * x.cols + k] as f64 * w.data[j * w.cols + k] as f64;
            }
            if let Some(b) = b {
                s += b.data[j] as f64;
            }
            if act == Activation::Gelu {
                s = gelu_f64(s);
            }
            y[i * w.rows + j] = s as f32;
        }
    }
    y
}

const LINEAR_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 33, 31),
    (31, 33, 17),
    (33, 31, 129),
    (64, 384, 384),
    (7, 1536, 384),
    // Past `sgemm::IN_PLACE_ROWS`, up to `sgemm::PACKED_MAX_ROWS`: the
    // packed kernel.
    (90, 47, 65),
    // Past `sgemm::PACKED_MAX_ROWS`: the CPU backend's gemm-crate path.
    (129, 127, 31),
    (520, 65, 33),
];

/// `colwgpu info` names the kernel the CPU backend's f32 linears run on, so a
/// speed figure can be tied to it.
#[test]
fn device_report_names_the_cpu_f32_kernel() {
    let lines =
        colwgpu::api::describe_devices(colwgpu::Device::Cpu, &colwgpu::gpu::GpuOptions::default())
            .unwrap();
    let selected = lines
        .iter()
        .find(|l| l.starts_with("selected: cpu"))
        .unwrap_or_else(|| panic!("no selected line in {lines:?}"));
    let kernel = CpuBackend::new().f32_linear_kernel();
    assert!(
        selected.contains(&format!("f32 linears on {kernel}")),
        "{selected}"
    );
}

#[test]
fn linear_cpu_matches_f64_reference() {
    let mut rng = Rng::new(1);
    let mut cpu = CpuBackend::new();
    for &(m, n, k) in LINEAR_SHAPES {
        let x = mat(&mut rng, m, k, 1.0);
        let w = mat(&mut rng, n, k, 0.5);
        let b = HostMatrix::vector(rng.vec(n, 0.5));
        for (bias, act) in [
            (None, Activation::Identity),
            (Some(&b), Activation::Identity),
            (None, Activation::Gelu),
            (Some(&b), Activation::Gelu),
        ] {
            let y = cpu.linear(&x, &w, bias, act).unwrap();
            let want = linear_f64(&x, &w, bias, act);
            assert_close(
                &format!("cpu linear {m}x{n}x{k} {act:?} bias={}", bias.is_some()),
                &y.data,
                &want,
                1e-5,
                1e-4,
            );
        }
    }
}

/// On a CPU with AMX, f32 linear layers run as exact three-part bf16
/// splits on the tiles (the default there; `amx_split_f32`): their error against f64 must be an
/// f32 product's. Asserted
/// against the FMA gemm's own error on the same inputs (max |Δ| no more than
/// 2× the gemm's, plus 2.5e-7, a few f32 ulps at these sizes),
/// and that the split path really differs from the gemm bit for bit on the
/// BERT shapes (so it ran). Inputs span 2⁻²⁰..1 in magnitude so the lower
/// parts matter.
#[test]
fn linear_cpu_split_is_as_accurate_as_fma_gemm() {
    let mut split = CpuBackend::new().amx_split_f32();
    let mut fma = CpuBackend::new().fma_f32();
    if split.f32_linear_kernel() == fma.f32_linear_kernel() {
        eprintln!("skipped: this CPU runs f32 linears on the FMA gemm only (no AMX-BF16)");
        return;
    }
    let mut rng = Rng::new(11);
    let mut wide = |rows: usize, cols: usize| {
        let data = rng
            .vec(rows * cols, 1.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| v * 2f32.powi(-(((i * 7919) % 21) as i32)))
            .collect();
        HostMatrix::new(rows, cols, data).unwrap()
    };
    let mut shapes = LINEAR_SHAPES.to_vec();
    shapes.extend([(200, 1152, 384), (96, 384, 1536)]);
    for (m, n, k) in shapes {
        let x = wide(m, k);
        let w = wide(n, k);
        let b = HostMatrix::vector((0..n).map(|j| j as f32 * 1e-3).collect());
        for (bias, act) in [(None, Activation::Identity), (Some(&b), Activation::Gelu)] {
            let want = linear_f64(&x, &w, bias, act);
            let err = |y: &[f32]| {
                y.iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max)
            };
            let ys = split.linear(&x, &w, bias, act).unwrap();
            let yf = fma.linear(&x, &w, bias, act).unwrap();
            let (es, ef) = (err(&ys.data), err(&yf.data));
            eprintln!("{m}x{n}x{k} {act:?}: max |Δ| vs f64: split {es:.2e}, fma gemm {ef:.2e}");
            assert!(
                es <= 2.0 * ef + 2.5e-7,
                "{m}x{n}x{k} {act:?}: split max |Δ| {es:e} vs fma gemm {ef:e}"
            );
            if k >= 384 {
                assert_ne!(ys.data, yf.data, "{m}x{n}x{k}: the split path did not run");
            }
        }
    }
}

#[test]
fn linear_gpu_matches_cpu() {
    let mut rng = Rng::new(2);
    let mut cpu = CpuBackend::new();
    let mut gpu = GpuBackend::new(gpu());
    for &(m, n, k) in LINEAR_SHAPES {
        let x = mat(&mut rng, m, k, 1.0);
        let w = mat(&mut rng, n, k, 0.5);
        let b = HostMatrix::vector(rng.vec(n, 0.5));
        for (bias, act) in [(None, Activation::Identity), (Some(&b), Activation::Gelu)] {
            let want = cpu.linear(&x, &w, bias, act).unwrap();
            let gx = gpu.upload(&x).unwrap();
            let gw = gpu.weight("w", &w).unwrap();
            let gb = bias.map(|b| gpu.weight("b", b).unwrap());
            let y = gpu.linear(&gx, &gw, gb.as_ref(), act).unwrap();
            let got = gpu.read(&y).unwrap();
            assert_eq!((got.rows, got.cols), (m, n));
            assert_close(
                &format!("gpu linear {m}x{n}x{k} {act:?}"),
                &got.data,
                &want.data,
                1e-5,
                1e-4,
            );
        }
    }
}

/// `w` with every value rounded to the nearest f16 (what f16 storage holds).
fn round_f16(w: &HostMatrix) -> HostMatrix {
    let data = w
        .data
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    HostMatrix::new(w.rows, w.cols, data).unwrap()
}

/// `--precision f16` on the gpu backend: a linear weight stored as f16 and
/// read by `matmul.wgsl#f16` gives the f64 product of the f16-rounded weights
/// to within f32 accumulation error (the f32 kernel's own tolerance), not f16
/// error; and it does differ from the unrounded weights' product, so the f16
/// path really ran. Skipped, saying why, on an adapter without SHADER_F16.
#[test]
fn linear_gpu_f16_weights_match_f64_of_rounded_weights() {
    use colwgpu::backend::Precision;
    use colwgpu::kernels::matmul::WeightStorage;
    let Some(ctx) = common::gpu_with_f16() else {
        return;
    };
    let mut rng = Rng::new(7);
    let mut g = GpuBackend::with_precision(ctx, Precision::F16).unwrap();
    let (mut worst_rounded, mut worst_unrounded) = (0.0f32, 0.0f32);
    for &(m, n, k) in LINEAR_SHAPES {
        let x = mat(&mut rng, m, k, 1.0);
        let w = mat(&mut rng, n, k, 0.5);
        let b = HostMatrix::vector(rng.vec(n, 0.5));
        let w16 = round_f16(&w);
        for (bias, act) in [(None, Activation::Identity), (Some(&b), Activation::Gelu)] {
            let gx = g.upload(&x).unwrap();
            let gw = g.linear_weight("w", &w).unwrap();
            assert_eq!(gw.storage(), WeightStorage::F16);
            let gb = bias.map(|b| g.weight("b", b).unwrap());
            let y = g.linear(&gx, &gw, gb.as_ref(), act).unwrap();
            let got = g.read(&y).unwrap();
            assert_eq!((got.rows, got.cols), (m, n));
            let want = linear_f64(&x, &w16, bias, act);
            assert_close(
                &format!("gpu f16-weight linear {m}x{n}x{k} {act:?}"),
                &got.data,
                &want,
                1e-5,
                1e-4,
            );
            let unrounded = linear_f64(&x, &w, bias, act);
            for ((a, r), u) in got.data.iter().zip(&want).zip(&unrounded) {
                worst_rounded = worst_rounded.max((a - r).abs());
                worst_unrounded = worst_unrounded.max((a - u).abs());
            }
        }
    }
    eprintln!(
        "f16 weights: max |Δ| vs f64 of the rounded weights {worst_rounded:e}, \
         vs f64 of the f32 weights {worst_unrounded:e}"
    );
    assert!(
        worst_unrounded > 10.0 * worst_rounded.max(1e-7),
        "the f16 kernel matched the unrounded weights as well ({worst_unrounded:e}): \
         were the weights stored as f16?"
    );
    // f32 parameters stay f32 in f16 mode; an f16 weight where f32 parameters
    // are read is refused, and a weight beyond f16's range is refused by name.
    let x = g.upload(&mat(&mut rng, 2, 3, 1.0)).unwrap();
    let w = g.linear_weight("w", &mat(&mut rng, 4, 3, 1.0)).unwrap();
    assert_eq!(
        g.weight("b", &HostMatrix::vector(vec![0.0; 4]))
            .unwrap()
            .storage(),
        WeightStorage::F32
    );
    let e = g
        .linear(&x, &w, Some(&w), Activation::Identity)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("bias"), "{e}");
    let big = HostMatrix::new(1, 2, vec![1.0, 7.0e4]).unwrap();
    let e = g.linear_weight("big one", &big).err().unwrap().to_string();
    assert!(
        e.contains("'big one'") && e.contains("65504") && e.contains("70000"),
        "{e}"
    );
}

/// Without SHADER_F16 the f16 mode is refused naming the adapter and the
/// feature (the feature check itself, with an adapter's feature set).
#[test]
fn f16_needs_shader_f16_and_says_so() {
    use colwgpu::gpu::{adapter_features, require_f16};
    use wgpu::Features;
    let refused = require_f16("Some Old GPU", Features::empty(), "--precision f16");
    let e = refused.unwrap_err().to_string();
    for want in ["'Some Old GPU'", "SHADER_F16", "--precision f32"] {
        assert!(e.contains(want), "{want} missing from: {e}");
    }
    require_f16("x", Features::SHADER_F16, "--precision f16").unwrap();
    // The device asks for SHADER_F16 exactly when its adapter offers it.
    let ctx = gpu();
    let adapters = adapter_features(&Default::default()).unwrap();
    let offers =
        |(name, f): &(String, Features)| *name == ctx.info.name && f.contains(Features::SHADER_F16);
    assert_eq!(ctx.supports_f16(), adapters.iter().any(offers));
}

#[test]
fn linear_rejects_mismatched_shapes() {
    let mut cpu = CpuBackend::new();
    let x = HostMatrix::new(2, 3, vec![0.0; 6]).unwrap();
    let w = HostMatrix::new(4, 5, vec![0.0; 20]).unwrap();
    let err = cpu
        .linear(&x, &w, None, Activation::Identity)
        .unwrap_err()
        .to_string();
    assert!(err.contains("linear") && err.contains("2×3"), "{err}");
    let mut g = GpuBackend::new(gpu());
    let gx = g.upload(&x).unwrap();
    let gw = g.weight("w", &w).unwrap();
    assert!(g.linear(&gx, &gw, None, Activation::Identity).is_err());
}

fn attention_f64(qkv: &HostMatrix, batch: &TokenBatch, heads: usize) -> Vec<f32> {
    let hidden = qkv.cols / 3;
    let d = hidden / heads;
    let seq = batch.seq_len;
    let mut out = vec![0.0f32; batch.batch * seq * hidden];
    for b in 0..batch.batch {
        for i in 0..seq {
            let row = b * seq + i;
            for h in 0..heads {
                // Masked keys get a large negative score, as in the PyTorch reference.
                let scores: Vec<f64> = (0..seq)
                    .map(|j| {
                        let mut s = 0.0f64;
                        for c in 0..d {
                            s += qkv.data[row * 3 * hidden + h * d + c] as f64
                                * qkv.data[(b * seq + j) * 3 * hidden + hidden + h * d + c] as f64;
                        }
                        s / (d as f64).sqrt()
                            + if (j as u32) < batch.key_lens[b] {
                                0.0
                            } else {
                                -1e30
                            }
                    })
                    .collect();
                if batch.key_lens[b] == 0 {
                    continue; // fully masked: the kernels define the output as zeros
                }
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..d {
                    let mut acc = 0.0;
                    for (j, ej) in e.iter().enumerate() {
                        acc += ej / z
                            * qkv.data[(b * seq + j) * 3 * hidden + 2 * hidden + h * d + c] as f64;
                    }
                    out[row * hidden + h * d + c] = acc as f32;
                }
            }
        }
    }
    out
}

fn attention_cases(rng: &mut Rng) -> Vec<(HostMatrix, TokenBatch, usize)> {
    let mut cases = Vec::new();
    for &(batch, seq, heads, d, ref lens) in &[
        (1usize, 1usize, 1usize, 1usize, vec![1u32]),
        (2, 7, 2, 5, vec![7, 3]),
        (3, 33, 3, 31, vec![33, 1, 0]),
        (2, 40, 12, 32, vec![40, 17]),
        (1, 9, 1, 128, vec![9]),
    ] {
        let qkv = mat(rng, batch * seq, 3 * heads * d, 1.5);
        let tb = TokenBatch {
            ids: vec![0; batch * seq],
            type_ids: vec![0; batch * seq],
            batch,
            seq_len: seq,
            key_lens: lens.clone(),
        };
        cases.push((qkv, tb, heads));
    }
    cases
}

#[test]
fn attention_cpu_matches_f64_reference() {
    let mut rng = Rng::new(3);
    let mut cpu = CpuBackend::new();
    for (qkv, tb, heads) in attention_cases(&mut rng) {
        let got = cpu.attention(&qkv, &tb, heads).unwrap();
        let want = attention_f64(&qkv, &tb, heads);
        assert!(got.data.iter().all(|v| v.is_finite()));
        assert_close(
            &format!("cpu attention {tb:?}"),
            &got.data,
            &want,
            1e-5,
            1e-4,
        );
    }
}

#[test]
fn attention_gpu_matches_cpu() {
    let mut rng = Rng::new(4);
    let mut cpu = CpuBackend::new();
    let mut g = GpuBackend::new(gpu());
    for (qkv, tb, heads) in attention_cases(&mut rng) {
        let want = cpu.attention(&qkv, &tb, heads).unwrap();
        let gq = g.upload(&qkv).unwrap();
        let out = g.attention(&gq, &tb, heads).unwrap();
        let got = g.read(&out).unwrap();
        assert_close(
            &format!("gpu attention b{} l{} h{heads}", tb.batch, tb.seq_len),
            &got.data,
            &want.data,
            1e-5,
            1e-4,
        );
    }
}

/// The head-dimension limit is the WGSL kernel's, so only the gpu backend has
/// it: the cpu backend runs a 160-wide head exactly, the gpu backend refuses it
/// up front (`check_head_dim`, called when an encoder is built) and in the op.
#[test]
fn head_dim_limit_is_gpu_only() {
    let mut rng = Rng::new(5);
    let (batch, seq, heads, d) = (2usize, 6usize, 2usize, 160usize);
    let qkv = mat(&mut rng, batch * seq, 3 * heads * d, 1.0);
    let tb = TokenBatch {
        ids: vec![0; batch * seq],
        type_ids: vec![0; batch * seq],
        batch,
        seq_len: seq,
        key_lens: vec![6, 4],
    };
    let mut cpu = CpuBackend::new();
    cpu.check_head_dim(d).unwrap();
    let got = cpu.attention(&qkv, &tb, heads).unwrap();
    assert_close(
        "cpu attention d160",
        &got.data,
        &attention_f64(&qkv, &tb, heads),
        1e-5,
        1e-4,
    );

    let mut g = GpuBackend::new(gpu());
    g.check_head_dim(128).unwrap();
    let err = g.check_head_dim(d).unwrap_err().to_string();
    assert!(
        err.contains("head dimension 160") && err.contains("cpu"),
        "{err}"
    );
    let gq = g.upload(&qkv).unwrap();
    let err = g
        .attention(&gq, &tb, heads)
        .err()
        .expect("gpu attention must refuse d=160");
    assert!(err.to_string().contains("head_dim 160"), "{err}");
}

fn layernorm_f64(x: &[f32], r: &[f32], g: &[f32], b: &[f32], hidden: usize, eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for (xr, rr) in x.chunks(hidden).zip(r.chunks(hidden)) {
        let v: Vec<f64> = xr
            .iter()
            .zip(rr)
            .map(|(a, b)| *a as f64 + *b as f64)
            .collect();
        let mean = v.iter().sum::<f64>() / hidden as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / hidden as f64;
        for c in 0..hidden {
            out.push(
                ((v[c] - mean) / (var + eps as f64).sqrt() * g[c] as f64 + b[c] as f64) as f32,
            );
        }
    }
    out
}

#[test]
fn add_layernorm_gpu_and_cpu_match_f64_reference() {
    let mut rng = Rng::new(5);
    let mut cpu = CpuBackend::new();
    let mut g = GpuBackend::new(gpu());
    for &(rows, hidden) in &[(1usize, 1usize), (1, 31), (33, 129), (129, 384), (5, 1000)] {
        let x = mat(&mut rng, rows, hidden, 2.0);
        let r = mat(&mut rng, rows, hidden, 1.0);
        let gamma = HostMatrix::vector(rng.vec(hidden, 1.0));
        let beta = HostMatrix::vector(rng.vec(hidden, 1.0));
        let want = layernorm_f64(&x.data, &r.data, &gamma.data, &beta.data, hidden, 1e-12);
        let c = cpu.add_layernorm(&x, &r, &gamma, &beta, 1e-12).unwrap();
        assert_close(
            &format!("cpu layernorm {rows}x{hidden}"),
            &c.data,
            &want,
            1e-5,
            1e-4,
        );
        let (gx, gr) = (g.upload(&x).unwrap(), g.upload(&r).unwrap());
        let (gg, gb) = (
            g.weight("g", &gamma).unwrap(),
            g.weight("b", &beta).unwrap(),
        );
        let out = g.add_layernorm(&gx, &gr, &gg, &gb, 1e-12).unwrap();
        let got = g.read(&out).unwrap();
        assert_close(
            &format!("gpu layernorm {rows}x{hidden}"),
            &got.data,
            &c.data,
            1e-4,
            1e-4,
        );
    }
}

#[test]
fn embed_gpu_and_cpu_match_reference() {
    let mut rng = Rng::new(6);
    let (vocab, positions, types, hidden) = (50usize, 20usize, 2usize, 37usize);
    let tables = EmbeddingTables {
        word: mat(&mut rng, vocab, hidden, 1.0),
        position: mat(&mut rng, positions, hidden, 1.0),
        token_type: mat(&mut rng, types, hidden, 1.0),
        gamma: HostMatrix::vector(rng.vec(hidden, 1.0)),
        beta: HostMatrix::vector(rng.vec(hidden, 1.0)),
    };
    let (batch, seq) = (3usize, 7usize);
    let ids: Vec<u32> = (0..batch * seq)
        .map(|_| rng.below(vocab as u64) as u32)
        .collect();
    let type_ids: Vec<u32> = (0..batch * seq)
        .map(|_| rng.below(types as u64) as u32)
        .collect();
    let tb = TokenBatch {
        ids: ids.clone(),
        type_ids: type_ids.clone(),
        batch,
        seq_len: seq,
        key_lens: vec![7, 3, 1],
    };
    let mut summed = Vec::new();
    for r in 0..batch * seq {
        for c in 0..hidden {
            summed.push(
                tables.word.data[ids[r] as usize * hidden + c]
                    + tables.position.data[(r % seq) * hidden + c]
                    + tables.token_type.data[type_ids[r] as usize * hidden + c],
            );
        }
    }
    let zeros = vec![0.0; summed.len()];
    let want = layernorm_f64(
        &summed,
        &zeros,
        &tables.gamma.data,
        &tables.beta.data,
        hidden,
        1e-12,
    );
    let mut cpu = CpuBackend::new();
    let c = cpu.embed(&tb, &tables, 1e-12).unwrap();
    assert_close("cpu embed", &c.data, &want, 1e-5, 1e-4);

    let mut g = GpuBackend::new(gpu());
    let gt = EmbeddingTables {
        word: g.weight("w", &tables.word).unwrap(),
        position: g.weight("p", &tables.position).unwrap(),
        token_type: g.weight("t", &tables.token_type).unwrap(),
        gamma: g.weight("g", &tables.gamma).unwrap(),
        beta: g.weight("b", &tables.beta).unwrap(),
    };
    let out = g.embed(&tb, &gt, 1e-12).unwrap();
    let got = g.read(&out).unwrap();
    assert_close("gpu embed", &got.data, &c.data, 1e-4, 1e-4);

    // Out-of-range ids are an error on both backends, not a wild read.
    let bad = TokenBatch {
        ids: vec![vocab as u32; batch * seq],
        ..tb
    };
    assert!(cpu.embed(&bad, &tables, 1e-12).is_err());
    assert!(g.embed(&bad, &gt, 1e-12).is_err());
}

#[test]
fn l2_normalize_gpu_and_cpu_match_reference() {
    let mut rng = Rng::new(7);
    let mut cpu = CpuBackend::new();
    let mut g = GpuBackend::new(gpu());
    for &(rows, cols) in &[(1usize, 1usize), (65, 128), (129, 31)] {
        let mut x = mat(&mut rng, rows, cols, 3.0);
        x.data[..cols].fill(0.0); // a zero row stays zero (eps), not NaN
        let want: Vec<f32> = x
            .data
            .chunks(cols)
            .flat_map(|r| {
                let n = r
                    .iter()
                    .map(|v| (*v as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
                    .max(1e-12);
                r.iter()
                    .map(move |v| (*v as f64 / n) as f32)
                    .collect::<Vec<_>>()
            })
            .collect();
        let c = cpu.l2_normalize(&x).unwrap();
        assert_close(&format!("cpu l2 {rows}x{cols}"), &c.data, &want, 1e-6, 1e-5);
        let gx = g.upload(&x).unwrap();
        let out = g.l2_normalize(&gx).unwrap();
        let got = g.read(&out).unwrap();
        assert_close(
            &format!("gpu l2 {rows}x{cols}"),
            &got.data,
            &want,
            1e-6,
            1e-5,
        );
        assert!(got.data.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn a_forward_pass_is_one_submit_with_pooled_buffers() {
    // Two linears chained then one read: the intermediate never leaves the device
    // and the result equals the CPU chain.
    let mut rng = Rng::new(8);
    let x = mat(&mut rng, 9, 16, 1.0);
    let w1 = mat(&mut rng, 24, 16, 0.5);
    let w2 = mat(&mut rng, 8, 24, 0.5);
    let mut cpu = CpuBackend::new();
    let want = {
        let h = cpu.linear(&x, &w1, None, Activation::Gelu).unwrap();
        cpu.linear(&h, &w2, None, Activation::Identity).unwrap()
    };
    let mut g = GpuBackend::new(gpu());
    let (gx, g1, g2) = (
        g.upload(&x).unwrap(),
        g.weight("w1", &w1).unwrap(),
        g.weight("w2", &w2).unwrap(),
    );
    for _ in 0..2 {
        let h = g.linear(&gx, &g1, None, Activation::Gelu).unwrap();
        let y = g.linear(&h, &g2, None, Activation::Identity).unwrap();
        drop(h);
        let got = g.read(&y).unwrap();
        assert_close("chained linears", &got.data, &want.data, 1e-5, 1e-4);
    }
}
