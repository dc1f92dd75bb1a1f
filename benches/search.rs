//! Search benchmarks on a synthetic clustered corpus (no model needed), ids
//! `group/case/backend`:
//!
//! * `maxsim/q32_d180_n<N>/<backend>`: one 32 × 128 query against N documents
//!   of 180 vectors, raw f32 vectors (documents per second: criterion's
//!   elem/s). CPU: the host API on host data. GPU: the resident kernel on
//!   buffers uploaded once, record + submit + wait per iteration (what a
//!   chained search pays). `q32x8_...` scores a batch of 8 queries (elem/s =
//!   documents × queries).
//! * `topk/r<R>_n<N>_k<K>/<backend>`: top-k of R rows of N scores (rows per
//!   second); GPU resident, reading back only the results.
//! * `exhaustive/q32_d180_n<N>_k10/<backend>`: MaxSim + top-k of raw vectors
//!   through the host API (GPU: corpus upload included).
//! * `search/...` through an index built from the same corpus (compressed
//!   residuals): `exhaustive_q32_n<N>_k10` decompresses and scores every
//!   document (documents per second); `plaid_k10_b<B>_n<N>` runs PLAID with the
//!   k = 10 defaults on batches of B queries (queries per second). The GPU
//!   waits for the queue inside the timed region.
//!
//! Sizes: `COLWGPU_BENCH_DOCS` (default 10,000) for the CPU, and
//! `COLWGPU_BENCH_GPU_DOCS` (default 1,000) for the GPU, since a software
//! adapter (lavapipe) is ~10× slower; the size is in the benchmark name.

use std::sync::Arc;

use colwgpu::backend::Compute;
use colwgpu::gpu::{GpuContext, GpuOptions};
use colwgpu::index::{build_index_with, InMemorySource, Index, IndexOptions, ModelInfo};
use colwgpu::kernels;
use colwgpu::search::{exhaustive_search, maxsim_matrix, topk, SearchOptions, Searcher};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const DIM: usize = 128;
const QLEN: usize = 32;
const DOCLEN: usize = 180;
/// Topics the clustered vectors are drawn around.
const TOPICS: usize = 256;

struct Gen(u64);
impl Gen {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
    fn unit_near(&mut self, center: &[f32], spread: f32) -> Vec<f32> {
        let mut v: Vec<f32> = center.iter().map(|c| c + self.next() * spread).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

/// `n` documents of `DOCLEN` unit vectors around a few topics each (so PLAID's
/// centroids mean something), and 64 queries of `QLEN` vectors.
struct Corpus {
    docs: Vec<Vec<f32>>,
    queries: Vec<f32>,
}

impl Corpus {
    fn new(n: usize, seed: u64) -> Self {
        let mut g = Gen(seed);
        let topics: Vec<Vec<f32>> = (0..TOPICS).map(|_| g.unit_near(&[0.0; DIM], 1.0)).collect();
        let docs = (0..n)
            .map(|i| {
                (0..DOCLEN)
                    .flat_map(|j| g.unit_near(&topics[(i * 7 + j % 5) % TOPICS], 0.6))
                    .collect()
            })
            .collect();
        let queries = (0..64 * QLEN)
            .flat_map(|i| g.unit_near(&topics[(i / QLEN * 13 + i % 4) % TOPICS], 0.6))
            .collect();
        Self { docs, queries }
    }

    /// The documents' vectors back to back and their offsets (raw-vector
    /// APIs), freeing each document as it is copied.
    fn into_flat(self) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
        let offsets = (0..=self.docs.len() as u32)
            .map(|d| d * DOCLEN as u32)
            .collect();
        let mut docs = Vec::with_capacity(self.docs.len() * DOCLEN * DIM);
        for d in self.docs {
            docs.extend_from_slice(&d);
        }
        (docs, offsets, self.queries)
    }

    fn index(&self) -> (tempfile::TempDir, Index) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bench.index");
        let ids: Vec<String> = (0..self.docs.len()).map(|i| i.to_string()).collect();
        let model = ModelInfo {
            name: "bench".into(),
            fingerprint: "crc32:0".into(),
            dim: DIM,
            path: None,
        };
        let mut src = InMemorySource {
            dim: DIM,
            docs: &self.docs,
        };
        let opts = IndexOptions::default();
        build_index_with(&mut src, &ids, &model, &dir, &opts, &mut |_| {}).unwrap();
        let index = Index::open(&dir).unwrap();
        (tmp, index)
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

/// (backend name, compute, corpus size) for each backend present.
fn backends(gpu: Option<&Arc<GpuContext>>) -> Vec<(&'static str, Compute, usize)> {
    let mut out = vec![("cpu", Compute::Cpu, env("COLWGPU_BENCH_DOCS", 10_000))];
    if let Some(ctx) = gpu {
        out.push((
            "gpu",
            Compute::Gpu(ctx.clone()),
            env("COLWGPU_BENCH_GPU_DOCS", 1_000),
        ));
    }
    out
}

fn bench_maxsim(c: &mut Criterion, gpu: Option<&Arc<GpuContext>>) {
    let mut group = c.benchmark_group("maxsim");
    group.sample_size(10);
    for (backend, _, n) in backends(gpu) {
        let (docs, offsets, queries) = Corpus::new(n, 42).into_flat();
        match gpu.filter(|_| backend == "gpu") {
            None => {
                for nq in [1usize, 8] {
                    let q = &queries[..nq * QLEN * DIM];
                    let name = if nq == 1 {
                        format!("q32_d180_n{}", label(n))
                    } else {
                        format!("q32x{nq}_d180_n{}", label(n))
                    };
                    group.throughput(Throughput::Elements((n * nq) as u64));
                    group.bench_function(BenchmarkId::new(name, backend), |b| {
                        b.iter(|| {
                            maxsim_matrix(&Compute::Cpu, q, QLEN, &docs, &offsets, DIM).unwrap()
                        })
                    });
                }
            }
            Some(ctx) => {
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
                let name = format!("q32_d180_n{}", label(n));
                group.bench_function(BenchmarkId::new(name, backend), |b| {
                    b.iter(|| {
                        let mut enc = ctx.encoder("bench maxsim");
                        kernels::maxsim::record_all_pairs(
                            ctx,
                            &mut enc,
                            &kernels::maxsim::Buffers {
                                queries: &q_buf,
                                docs: &d_buf,
                                doc_offsets: &o_buf,
                                owner: None,
                                scores: scores.buffer(),
                            },
                            shape,
                        )
                        .unwrap();
                        ctx.submit_and_wait(enc).unwrap();
                    })
                });
            }
        }
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
                        &kernels::topk::Buffers {
                            scores: &input,
                            out_idx: idx.buffer(),
                            out_scores: best.buffer(),
                        },
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

/// `search/` through an index and `exhaustive/` on the same raw vectors, per
/// backend.
fn bench_search_and_exhaustive(c: &mut Criterion, gpu: Option<&Arc<GpuContext>>) {
    for (backend, compute, n) in backends(gpu) {
        let corpus = Corpus::new(n, 3);
        let (_tmp, index) = corpus.index();
        let (docs, offsets, queries) = corpus.into_flat();
        let query = &queries[..QLEN * DIM];

        let searcher = Searcher::new(&index, compute.clone()).unwrap();
        let mut group = c.benchmark_group("search");
        group.sample_size(10);
        group.throughput(Throughput::Elements(n as u64));
        let exhaustive = SearchOptions {
            k: 10,
            plaid: None,
            exhaustive: true,
        };
        let name = format!("exhaustive_q32_n{}_k10", label(n));
        group.bench_function(BenchmarkId::new(name, backend), |b| {
            b.iter(|| searcher.search(query, QLEN, &exhaustive).unwrap())
        });
        for batch in [1usize, 32] {
            let q = &queries[..batch * QLEN * DIM];
            group.throughput(Throughput::Elements(batch as u64));
            let name = format!("plaid_k10_b{batch}_n{}", label(n));
            group.bench_function(BenchmarkId::new(name, backend), |b| {
                b.iter(|| searcher.search(q, QLEN, &SearchOptions::new(10)).unwrap())
            });
        }
        group.finish();

        let mut group = c.benchmark_group("exhaustive");
        group.sample_size(10);
        group.throughput(Throughput::Elements(n as u64));
        let name = format!("q32_d180_n{}_k10", label(n));
        group.bench_function(BenchmarkId::new(name, backend), |b| {
            b.iter(|| exhaustive_search(&compute, query, QLEN, &docs, &offsets, DIM, 10).unwrap())
        });
        group.finish();
    }
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
    bench_search_and_exhaustive(c, gpu.as_ref());
}

criterion_group!(search, benches);
criterion_main!(search);
