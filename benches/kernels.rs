//! Kernel benchmarks at BERT shapes, per backend (throughput in FLOP, i.e.
//! criterion's "elem/s" reads as FLOP/s):
//! `matmul/<backend>/m<rows>_<out>x<in>` (rows = 32 × 184 = 5888 tokens unless
//! `COLWGPU_BENCH_ROWS` says otherwise), `attention/<backend>/b<batch>_l<seq>_h<heads>x<head_dim>`,
//! `layernorm/<backend>/rows<rows>_h<hidden>`. The GPU side submits and waits
//! inside the timed region.

use std::sync::Arc;

use colwgpu::backend::cpu::CpuBackend;
use colwgpu::backend::gpu::GpuBackend;
use colwgpu::backend::{Activation, Backend, HostMatrix, TokenBatch};
use colwgpu::gpu::{GpuContext, GpuOptions};
use colwgpu::Precision;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn matrix(rows: usize, cols: usize, seed: u32) -> HostMatrix {
    let mut s = seed.wrapping_mul(2654435761).max(1);
    let data = (0..rows * cols)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect();
    HostMatrix::new(rows, cols, data).unwrap()
}

fn gpu() -> Option<Arc<GpuContext>> {
    match GpuContext::new(&GpuOptions::default()) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            eprintln!("no GPU adapter, GPU benches skipped: {e}");
            None
        }
    }
}

/// A batch of 32 sequences of 184 tokens (SciFact documents cut at 180, padded
/// to the length bucket). `COLWGPU_BENCH_ROWS` overrides rows for quick runs.
fn rows() -> usize {
    std::env::var("COLWGPU_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32 * 184)
}

fn bench_matmul(c: &mut Criterion) {
    let m = rows();
    let ctx = gpu();
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10);
    for &(n, k) in &[(1152usize, 384usize), (384, 384), (1536, 384), (384, 1536)] {
        let x = matrix(m, k, 1);
        let w = matrix(n, k, 2);
        let b = HostMatrix::vector(vec![0.1; n]);
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let name = format!("m{m}_{n}x{k}");
        let mut cpu = CpuBackend::new();
        group.bench_function(BenchmarkId::new("cpu", &name), |bench| {
            bench.iter(|| cpu.linear(&x, &w, Some(&b), Activation::Identity).unwrap())
        });
        // The same product on the `gemm` crate (what the backend runs on CPUs
        // without AVX-512F), bias pre-filled as the backend does it.
        group.bench_function(BenchmarkId::new("cpu-gemm-crate", &name), |bench| {
            let mut y = vec![0f32; m * n];
            bench.iter(|| {
                for row in y.chunks_exact_mut(n) {
                    row.copy_from_slice(&b.data);
                }
                colwgpu::backend::cpu::matmul_transposed(&x.data, &w.data, &mut y, m, n, k);
            })
        });
        // On AMX CPUs `cpu` runs the exact bf16 split; the FMA kernels then
        // get their own row.
        let mut fma = CpuBackend::new().fma_f32();
        if cpu.f32_linear_kernel() != fma.f32_linear_kernel() {
            group.bench_function(BenchmarkId::new("cpu-fma", &name), |bench| {
                bench.iter(|| fma.linear(&x, &w, Some(&b), Activation::Identity).unwrap())
            });
        }
        if let Ok(mut cpu) = CpuBackend::with_precision(Precision::Bf16) {
            group.bench_function(BenchmarkId::new("cpu-bf16", &name), |bench| {
                bench.iter(|| cpu.linear(&x, &w, Some(&b), Activation::Identity).unwrap())
            });
        }
        if let Some(ctx) = &ctx {
            let mut g = GpuBackend::new(ctx.clone());
            let (gx, gw, gb) = (
                g.upload(&x).unwrap(),
                g.weight("w", &w).unwrap(),
                g.weight("b", &b).unwrap(),
            );
            // First dispatch compiles the shader: keep it out of the measurement.
            let y = g.linear(&gx, &gw, Some(&gb), Activation::Identity).unwrap();
            g.read(&y).unwrap();
            group.bench_function(BenchmarkId::new("gpu", &name), |bench| {
                bench.iter(|| {
                    let y = g.linear(&gx, &gw, Some(&gb), Activation::Identity).unwrap();
                    g.flush().unwrap();
                    y
                })
            });
        }
    }
    group.finish();
}

fn bench_attention_layernorm(c: &mut Criterion) {
    let m = rows();
    let seq = 184;
    let batch = (m / seq).max(1);
    let (heads, hidden) = (12usize, 384usize);
    let qkv = matrix(batch * seq, 3 * hidden, 3);
    let tb = TokenBatch {
        ids: vec![0; batch * seq],
        type_ids: vec![0; batch * seq],
        batch,
        seq_len: seq,
        key_lens: vec![seq as u32; batch],
    };
    let ctx = gpu();
    let mut group = c.benchmark_group("attention");
    group.sample_size(10);
    group.throughput(Throughput::Elements(
        (4 * batch * seq * seq * hidden) as u64,
    ));
    let name = format!("b{batch}_l{seq}_h{heads}x{}", hidden / heads);
    let mut cpu = CpuBackend::new();
    group.bench_function(BenchmarkId::new("cpu", &name), |bench| {
        bench.iter(|| cpu.attention(&qkv, &tb, heads).unwrap())
    });
    if let Some(ctx) = &ctx {
        let mut g = GpuBackend::new(ctx.clone());
        let gq = g.upload(&qkv).unwrap();
        let o = g.attention(&gq, &tb, heads).unwrap();
        g.read(&o).unwrap();
        group.bench_function(BenchmarkId::new("gpu", &name), |bench| {
            bench.iter(|| {
                let o = g.attention(&gq, &tb, heads).unwrap();
                g.flush().unwrap();
                o
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("layernorm");
    group.sample_size(10);
    let x = matrix(batch * seq, hidden, 4);
    let r = matrix(batch * seq, hidden, 5);
    let gamma = HostMatrix::vector(vec![1.0; hidden]);
    let beta = HostMatrix::vector(vec![0.0; hidden]);
    group.throughput(Throughput::Bytes((3 * batch * seq * hidden * 4) as u64));
    let name = format!("rows{}_h{hidden}", batch * seq);
    group.bench_function(BenchmarkId::new("cpu", &name), |bench| {
        bench.iter(|| cpu.add_layernorm(&x, &r, &gamma, &beta, 1e-12).unwrap())
    });
    if let Some(ctx) = &ctx {
        let mut g = GpuBackend::new(ctx.clone());
        let (gx, gr) = (g.upload(&x).unwrap(), g.upload(&r).unwrap());
        let (gg, gb) = (
            g.weight("g", &gamma).unwrap(),
            g.weight("b", &beta).unwrap(),
        );
        group.bench_function(BenchmarkId::new("gpu", &name), |bench| {
            bench.iter(|| {
                let o = g.add_layernorm(&gx, &gr, &gg, &gb, 1e-12).unwrap();
                g.flush().unwrap();
                o
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_matmul, bench_attention_layernorm);
criterion_main!(benches);
