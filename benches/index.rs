//! Index kernels on both backends: residual decompression and compression
//! (vectors per second) and the k-means assignment step.
//!
//! `*_gpu` runs the WGSL kernels on the adapter wgpu picks (lavapipe here) and
//! includes uploading inputs and reading results back; `decompress/gpu_resident`
//! decompresses buffers already on the device (submit + wait, no transfers).
//! Every timed GPU iteration waits for the queue.

use std::hint::black_box;
use std::sync::Arc;

use colwgpu::backend::Compute;
use colwgpu::gpu::{GpuContext, GpuOptions};
use colwgpu::index::{kmeans, ResidualCodec};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const DIM: usize = 128;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn unit_vectors(&mut self, n: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n * DIM).map(|_| self.next()).collect();
        for row in v.chunks_mut(DIM) {
            let s = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= s);
        }
        v
    }
}

fn codec(rng: &mut Rng, k: usize, nbits: usize) -> ResidualCodec {
    let centroids = rng.unit_vectors(k);
    let sample = rng.unit_vectors(4096);
    ResidualCodec::train(&Compute::Cpu, centroids, DIM, nbits, &sample).unwrap()
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

fn decompress(c: &mut Criterion) {
    let mut rng = Rng(1);
    let ctx = gpu();
    if let Some(ctx) = &ctx {
        eprintln!("adapter: {}", ctx.describe());
    }
    let n = 100_000;
    let x = rng.unit_vectors(n);
    let mut g = c.benchmark_group("decompress");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    for nbits in [1, 2, 4] {
        let codec = codec(&mut rng, 4096, nbits);
        let comp = codec.compress(&Compute::Cpu, &x).unwrap();
        g.bench_function(format!("cpu_n100k_d128_b{nbits}"), |b| {
            b.iter(|| black_box(codec.decompress_cpu(&comp.codes, &comp.packed)))
        });
        if let Some(ctx) = &ctx {
            let gc = codec.upload(ctx).unwrap();
            g.bench_function(format!("gpu_n100k_d128_b{nbits}"), |b| {
                b.iter(|| black_box(gc.decompress(&comp.codes, &comp.packed).unwrap()))
            });
            let codes = ctx.upload("codes", &comp.codes).unwrap();
            let packed = ctx.upload("packed", &comp.packed).unwrap();
            let out = ctx.pool().get((n * DIM * 4) as u64);
            g.bench_function(format!("gpu_resident_n100k_d128_b{nbits}"), |b| {
                b.iter(|| {
                    let mut enc = ctx.encoder("bench decompress");
                    gc.record_decompress(&mut enc, &codes, &packed, out.buffer(), n)
                        .unwrap();
                    ctx.submit_and_wait(enc).unwrap();
                })
            });
        }
    }
    g.finish();
}

fn compress(c: &mut Criterion) {
    let mut rng = Rng(2);
    let ctx = gpu();
    let k = 4096;
    let codec = codec(&mut rng, k, 2);
    let mut g = c.benchmark_group("compress");
    g.sample_size(10);
    let n = 65_536;
    let x = rng.unit_vectors(n);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("cpu_n64k_k4096_d128_b2", |b| {
        b.iter(|| black_box(codec.compress_cpu(&x)))
    });
    if let Some(ctx) = &ctx {
        let gc = codec.upload(ctx).unwrap();
        let n = 8192;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("gpu_n8k_k4096_d128_b2", |b| {
            b.iter(|| black_box(gc.compress(&x[..n * DIM]).unwrap()))
        });
    }
    g.finish();
}

fn assign(c: &mut Criterion) {
    let mut rng = Rng(3);
    let ctx = gpu();
    let k = 4096;
    let cents = rng.unit_vectors(k);
    let mut g = c.benchmark_group("kmeans_assign");
    g.sample_size(10);
    let n = 65_536;
    let x = rng.unit_vectors(n);
    // FLOP of the scores: 2·n·k·dim.
    g.throughput(Throughput::Elements((2 * n * k * DIM) as u64));
    g.bench_function("cpu_n64k_k4096_d128 (FLOP)", |b| {
        b.iter(|| black_box(kmeans::assign_cpu(&x, DIM, &cents)))
    });
    if let Some(ctx) = &ctx {
        let n = 8192;
        let a = kmeans::GpuAssigner::new(ctx, &x[..n * DIM], DIM).unwrap();
        g.throughput(Throughput::Elements((2 * n * k * DIM) as u64));
        g.bench_function("gpu_n8k_k4096_d128 (FLOP)", |b| {
            b.iter(|| black_box(a.assign(&cents).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, decompress, compress, assign);
criterion_main!(benches);
