//! Builds an index of a BEIR corpus and reports stage times, size and the codec's
//! round-trip error at 1, 2 and 4 bits on real token vectors.
//!
//! ```text
//! cargo run --release --example index_corpus -- MODEL_DIR CORPUS.jsonl OUT_DIR \
//!     [--docs N] [--nbits 2] [--iters 10] [--index-device cpu|gpu] [--encode-device cpu|gpu]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use colwgpu::backend::Compute;
use colwgpu::index::{self, Index, IndexOptions, ModelInfo, ResidualCodec, Stage};
use colwgpu::model::{DeviceChoice, Encoder};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let model_dir = PathBuf::from(&args[0]);
    let corpus = PathBuf::from(&args[1]);
    let out = PathBuf::from(&args[2]);
    let mut docs = colwgpu::io::read_records(&corpus)?;
    if let Some(n) = flag("--docs") {
        docs.truncate(n.parse()?);
    }
    let nbits: usize = flag("--nbits").map(|s| s.parse()).transpose()?.unwrap_or(2);
    let iters: usize = flag("--iters")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(IndexOptions::default().kmeans_iters);
    let encode_device: DeviceChoice = flag("--encode-device")
        .unwrap_or_else(|| "cpu".into())
        .parse()?;
    let index_device: DeviceChoice = flag("--index-device")
        .unwrap_or_else(|| "cpu".into())
        .parse()?;
    let compute = Compute::new(index_device, &Default::default())?;
    let mut enc = Encoder::open(&model_dir, encode_device, &Default::default())?;
    let model = ModelInfo::from_dir(&model_dir, enc.dim())?;
    println!(
        "{} docs; encoder {}; index kernels {}",
        docs.len(),
        enc.describe_backend(),
        compute.describe()
    );
    let opts = IndexOptions {
        nbits,
        kmeans_iters: iters,
        compute: compute.clone(),
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut last: Option<(Stage, Instant)> = None;
    let summary = index::build_index(&mut enc, &model, &docs, &out, &opts, &mut |p| {
        if last.map(|(s, _)| s) != Some(p.stage) {
            if let Some((s, t)) = last {
                println!("  {s:?}: {:.1} s", t.elapsed().as_secs_f64());
            }
            last = Some((p.stage, Instant::now()));
        }
    })?;
    if let Some((s, t)) = last {
        println!("  {s:?}: {:.1} s", t.elapsed().as_secs_f64());
    }
    let m = &summary.metadata;
    println!(
        "built in {:.1} s: {} docs, {} vectors, {} centroids (sample {} vectors), {} bytes/vector, {:.1} MiB",
        t0.elapsed().as_secs_f64(),
        m.num_docs,
        m.num_vectors,
        m.num_centroids,
        m.settings.num_sample_vectors,
        m.bytes_per_vector,
        summary.index_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "k-means mean cosine to centroid {:.4}; codec mean cosine {:.4}",
        m.stats.kmeans_mean_cosine, m.stats.codec_mean_cosine
    );
    let t = Instant::now();
    let idx = Index::open(&out)?;
    println!("open (with checksums): {:.3} s", t.elapsed().as_secs_f64());

    // Codec error per nbits on the vectors of up to 300 documents spread over the corpus.
    let step = (docs.len() / 300).max(1);
    let texts: Vec<&str> = docs.iter().step_by(step).map(|d| d.text.as_str()).collect();
    let x: Vec<f32> = enc
        .encode_documents(&texts)?
        .into_iter()
        .flat_map(|t| t.vectors)
        .collect();
    let dim = idx.dim();
    let n = x.len() / dim;
    for nbits in [1, 2, 4] {
        let codec = ResidualCodec::train(&Compute::Cpu, idx.centroids().to_vec(), dim, nbits, &x)?;
        let c = codec.compress(&Compute::Cpu, &x)?;
        let y = codec.decompress(&Compute::Cpu, &c.codes, &c.packed)?;
        let cos: Vec<f64> = x
            .chunks(dim)
            .zip(y.chunks(dim))
            .map(|(a, b)| a.iter().zip(b).map(|(p, q)| *p as f64 * *q as f64).sum())
            .collect();
        let mean = cos.iter().sum::<f64>() / n as f64;
        let min = cos.iter().cloned().fold(f64::MAX, f64::min);
        println!(
            "nbits {nbits}: {} bytes/vector, mean cosine {mean:.4}, min {min:.4} over {n} vectors",
            codec.bytes_per_vector()
        );
    }
    Ok(())
}
