//! End-to-end encoder benchmarks on the real model and real SciFact text:
//! `encode/<backend>/docs_b32` and `encode/<backend>/queries_b32`, throughput in
//! tokens (criterion's "elem/s" reads as tokens/s). Needs `models/fetch-model.sh`;
//! texts from the committed slice `tests/data/scifact-1k`.

use std::path::PathBuf;

use colwgpu::gpu::GpuOptions;
use colwgpu::model::{DeviceChoice, Encoder};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn texts(file: &str, n: usize) -> Vec<String> {
    let path = root().join("tests/data/scifact-1k").join(file);
    match colwgpu::io::read_records(&path) {
        Ok(r) => r.into_iter().take(n).map(|r| r.text).collect(),
        Err(e) => panic!("{e}"),
    }
}

fn bench_encode(c: &mut Criterion) {
    let model = root().join("models/colbert-minilm");
    let docs = texts("corpus.jsonl", 64);
    let queries = texts("queries.jsonl", 256);
    let mut group = c.benchmark_group("encode");
    group.sample_size(10);
    for (device, n_docs) in [(DeviceChoice::Cpu, 64usize), (DeviceChoice::Gpu, 32)] {
        let mut enc = match Encoder::open(&model, device, &GpuOptions::default()) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("encode/{device:?} skipped: {e}");
                continue;
            }
        };
        enc.set_batch_size(32).expect("batch size");
        enc.warm_up().unwrap();
        let name = if device == DeviceChoice::Cpu {
            "cpu"
        } else {
            "gpu"
        };
        let d: Vec<&str> = docs.iter().take(n_docs).map(String::as_str).collect();
        let tokens: usize = enc
            .tokenizer()
            .documents(&d)
            .unwrap()
            .iter()
            .map(|t| t.ids.len())
            .sum();
        group.throughput(Throughput::Elements(tokens as u64));
        group.bench_function(BenchmarkId::new(name, format!("docs_b32_n{n_docs}")), |b| {
            b.iter(|| enc.encode_documents(&d).unwrap())
        });
        let nq = if device == DeviceChoice::Cpu { 256 } else { 64 };
        let q: Vec<&str> = queries.iter().take(nq).map(String::as_str).collect();
        group.throughput(Throughput::Elements((q.len() * 32) as u64));
        group.bench_function(BenchmarkId::new(name, format!("queries_b32_n{nq}")), |b| {
            b.iter(|| enc.encode_queries(&q).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
