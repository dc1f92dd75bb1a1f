//! Scoring benchmarks on synthetic unit vectors (no model, no index):
//!
//! * `maxsim/q32_d180_n<N>/<backend>`: one 32 × 128 query against N documents
//!   of 180 vectors (documents per second: criterion's elem/s). CPU: the host
//!   API on host data. GPU: the resident kernel on buffers uploaded once,
//!   record + submit + wait per iteration (what a chained search pays).
//!   `q32x8_...` scores a batch of 8 queries (elem/s = documents × queries).
//! * `topk/r<R>_n<N>_k<K>/<backend>`: top-k of R rows of N scores (rows per
//!   second); GPU resident, reading back only the results.
//! * `exhaustive/q32_d180_n<N>_k10/<backend>`: MaxSim + top-k through the host
//!   API (GPU: corpus upload included).
//!
//! Sizes: `COLWGPU_BENCH_DOCS` (default 10,000) for the CPU, and
//! `COLWGPU_BENCH_GPU_DOCS` (default 1,000) for the GPU, since a software
//! adapter (lavapipe) is ~10× slower; the size is in the benchmark name.

use std::sync::Arc;

use colwgpu::backend::Compute;
use colwgpu::gpu::{GpuContext, GpuOptions};
use colwgpu::kernels;
use colwgpu::search::{exhaustive_search, maxsim_matrix, topk};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const DIM: usize = 128;
const QLEN: usize = 32;
const DOCLEN: usize = 180;

struct Gen(u64);
impl Gen {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
    fn unit_rows(&mut self, rows: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..rows * DIM).map(|_| self.next()).collect();
        for r in v.chunks_mut(DIM) {
            let n = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            r.iter_mut().for_each(|x| *x /= n);
        }
        v
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn label(n: usize) -> String {
    if n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn corpus(n: usize, g: &mut Gen) -> (Vec<f32>, Vec<u32>) {
    let docs = g.unit_rows(n * DOCLEN);
    let offsets = (0..=n as u32).map(|d| d * DOCLEN as u32).collect();
    (docs, offsets)
}

fn bench_maxsim(c: &mut Criterion, gpu: Option<&Arc<GpuContext>>) {
    let mut g = Gen(42);
    let mut group = c.benchmark_group("maxsim");
    group.sample_size(10);

    let n = env("COLWGPU_BENCH_DOCS", 10_000);
    let (docs, offsets) = corpus(n, &mut g);
    let queries = g.unit_rows(8 * QLEN);
    for nq in [1usize, 8] {
        let q = &queries[..nq * QLEN * DIM];
        let name = if nq == 1 {
            format!("q32_d180_n{}", label(n))
        } else {
            format!("q32x{nq}_d180_n{}", label(n))
        };
        group.throughput(Throughput::Elements((n * nq) as u64));
        group.bench_function(BenchmarkId::new(name, "cpu"), |b| {
            b.iter(|| maxsim_matrix(&Compute::Cpu, q, QLEN, &docs, &offsets, DIM).unwrap())
        });
    }
    drop(docs);

    if let Some(ctx) = gpu {
        let n = env("COLWGPU_BENCH_GPU_DOCS", 1_000);
        let (docs, offsets) = corpus(n, &mut g);
        let q_buf = ctx.upload("queries", &queries[..QLEN * DIM]).unwrap();
        let d_buf = ctx.upload("docs", &docs).unwrap();
        let o_buf = ctx.upload("offsets", &offsets).unwrap();
        let scores = ctx.pool().get((n * 4) as u64);
        let shape = kernels::maxsim::AllPairs {
            num_queries: 1,
            qlen: QLEN,
            dim: DIM,
            num_docs: n,
            out_stride: n,
            out_offset: 0,
        };
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(
            BenchmarkId::new(format!("q32_d180_n{}", label(n)), "gpu"),
            |b| {
                b.iter(|| {
                    let mut enc = ctx.encoder("bench maxsim");
                    kernels::maxsim::record_all_pairs(
                        ctx,
                        &mut enc,
                        &q_buf,
                        &d_buf,
                        &o_buf,
                        scores.buffer(),
                        shape,
                    )
                    .unwrap();
                    ctx.submit_and_wait(enc).unwrap();
                })
            },
        );
    }
    group.finish();
}

fn bench_topk(c: &mut Criterion, gpu: Option<&Arc<GpuContext>>) {
    let mut g = Gen(7);
    let mut group = c.benchmark_group("topk");
    group.sample_size(10);
    for (rows, n, k) in [
        (1usize, 10_000usize, 10usize),
        (32, 10_000, 10),
        (1, 100_000, 100),
        (1, 100_000, 1000),
    ] {
        let scores: Vec<f32> = (0..rows * n).map(|_| g.next()).collect();
        let name = format!("r{rows}_n{}_k{k}", label(n));
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_function(BenchmarkId::new(&name, "cpu"), |b| {
            b.iter(|| topk(&Compute::Cpu, &scores, n, k).unwrap())
        });
        if let Some(ctx) = gpu {
            let input = ctx.upload("scores", &scores).unwrap();
            let idx = ctx.pool().get((rows * k * 4) as u64);
            let best = ctx.pool().get((rows * k * 4) as u64);
            let shape = kernels::topk::Shape {
                rows,
                n,
                k,
                in_stride: n,
            };
            group.bench_function(BenchmarkId::new(&name, "gpu"), |b| {
                b.iter(|| {
                    let mut enc = ctx.encoder("bench topk");
                    kernels::topk::record(
                        ctx,
                        &mut enc,
                        &input,
                        idx.buffer(),
                        best.buffer(),
                        shape,
                    )
                    .unwrap();
                    ctx.submit_and_read::<u32>(enc, &[(idx.buffer(), rows * k)])
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

fn bench_exhaustive(c: &mut Criterion, gpu: Option<&Arc<GpuContext>>) {
    let mut g = Gen(3);
    let mut group = c.benchmark_group("exhaustive");
    group.sample_size(10);
    let queries = g.unit_rows(QLEN);
    let mut backends = vec![("cpu", Compute::Cpu, env("COLWGPU_BENCH_DOCS", 10_000))];
    if let Some(ctx) = gpu {
        backends.push((
            "gpu",
            Compute::Gpu(ctx.clone()),
            env("COLWGPU_BENCH_GPU_DOCS", 1_000),
        ));
    }
    for (name, compute, n) in backends {
        let (docs, offsets) = corpus(n, &mut g);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(
            BenchmarkId::new(format!("q32_d180_n{}_k10", label(n)), name),
            |b| {
                b.iter(|| {
                    exhaustive_search(&compute, &queries, QLEN, &docs, &offsets, DIM, 10).unwrap()
                })
            },
        );
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let gpu = match GpuContext::new(&GpuOptions::default()) {
        Ok(ctx) => {
            eprintln!("GPU benches on {}", ctx.describe());
            Some(Arc::new(ctx))
        }
        Err(e) => {
            eprintln!("no GPU adapter ({e}): GPU benches skipped");
            None
        }
    };
    bench_maxsim(c, gpu.as_ref());
    bench_topk(c, gpu.as_ref());
    bench_exhaustive(c, gpu.as_ref());
}

criterion_group!(search, benches);
criterion_main!(search);
