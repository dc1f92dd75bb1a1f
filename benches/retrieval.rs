//! Retrieval benchmarks on a synthetic clustered corpus (no model needed):
//! `maxsim/<backend>/q32_d180_n<N>` (documents scored per second: criterion's
//! "elem/s"), `search/<backend>/k10_b<B>` (queries per second, PLAID with the
//! k = 10 defaults). The GPU side waits for the queue inside the timed region.
//! `COLWGPU_BENCH_DOCS` sets the corpus size (default 10,000; lavapipe runs use
//! fewer through `COLWGPU_BENCH_GPU_DOCS`, default 1,000).

use colwgpu::backend::Compute;
use colwgpu::gpu::{GpuContext, GpuOptions};
use colwgpu::index::{build_index_with, InMemorySource, Index, IndexOptions, ModelInfo};
use colwgpu::search::{SearchOptions, Searcher};
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
    fn unit_near(&mut self, center: &[f32], spread: f32) -> Vec<f32> {
        let mut v: Vec<f32> = center.iter().map(|c| c + self.next() * spread).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

fn corpus(n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<f32>) {
    let mut g = Gen(seed);
    let topics: Vec<Vec<f32>> = (0..256).map(|_| g.unit_near(&[0.0; DIM], 1.0)).collect();
    let docs = (0..n)
        .map(|i| {
            (0..DOCLEN)
                .flat_map(|j| g.unit_near(&topics[(i * 7 + j % 5) % 256], 0.6))
                .collect()
        })
        .collect();
    let queries = (0..64 * QLEN)
        .flat_map(|i| g.unit_near(&topics[(i / QLEN * 13 + i % 4) % 256], 0.6))
        .collect();
    (docs, queries)
}

fn build(docs: &[Vec<f32>]) -> (tempfile::TempDir, Index) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bench.index");
    let ids: Vec<String> = (0..docs.len()).map(|i| i.to_string()).collect();
    let model = ModelInfo {
        name: "bench".into(),
        fingerprint: "crc32:0".into(),
        dim: DIM,
    };
    let mut src = InMemorySource { dim: DIM, docs };
    build_index_with(
        &mut src,
        &ids,
        &model,
        &dir,
        &IndexOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let index = Index::open(&dir).unwrap();
    (tmp, index)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn bench(c: &mut Criterion) {
    let gpu = GpuContext::new(&GpuOptions::default())
        .ok()
        .map(std::sync::Arc::new);
    for (backend, n) in [
        ("cpu", env("COLWGPU_BENCH_DOCS", 10_000)),
        ("gpu", env("COLWGPU_BENCH_GPU_DOCS", 1_000)),
    ] {
        let compute = match backend {
            "cpu" => Compute::Cpu,
            _ => match &gpu {
                Some(ctx) => Compute::Gpu(ctx.clone()),
                None => {
                    eprintln!("no GPU adapter: GPU benches skipped");
                    continue;
                }
            },
        };
        let (docs, queries) = corpus(n, 7);
        let (_tmp, index) = build(&docs);
        drop(docs);
        let searcher = Searcher::new(&index, compute.clone()).unwrap();
        let one = &queries[..QLEN * DIM];

        // Exhaustive MaxSim: decompress every document and score it.
        let mut g = c.benchmark_group("maxsim");
        g.sample_size(10);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new(backend, format!("q32_d180_n{n}")), |b| {
            b.iter(|| {
                searcher
                    .search(
                        one,
                        QLEN,
                        &SearchOptions {
                            k: 10,
                            plaid: None,
                            exhaustive: true,
                        },
                    )
                    .unwrap()
            })
        });
        g.finish();

        let mut g = c.benchmark_group("search");
        g.sample_size(10);
        for batch in [1usize, 32] {
            let q = &queries[..batch * QLEN * DIM];
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_function(
                BenchmarkId::new(backend, format!("k10_b{batch}_n{n}")),
                |b| b.iter(|| searcher.search(q, QLEN, &SearchOptions::new(10)).unwrap()),
            );
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
