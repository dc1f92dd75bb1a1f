//! Builds indexes of a BEIR corpus through the library's front door and reports
//! stage times, size and the codec's round-trip quality at 1, 2 and 4 bits (the
//! corpus is encoded once; the three indexes are built from those vectors).
//!
//! ```text
//! cargo run --release --example index_corpus -- MODEL_DIR CORPUS.jsonl OUT_DIR \
//!     [--docs N] [--iters 4] [--device auto|cpu|gpu]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use colwgpu::api::Stage;
use colwgpu::{Device, Index, IndexOptions, Model, VectorSet};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let [model_dir, corpus, out] = [0, 1, 2].map(|i| args.get(i).map(PathBuf::from));
    let (Some(model_dir), Some(corpus), Some(out)) = (model_dir, corpus, out) else {
        anyhow::bail!("usage: index_corpus MODEL_DIR CORPUS.jsonl OUT_DIR [--docs N] [--iters 4] [--device auto|cpu|gpu]");
    };
    let mut docs = colwgpu::io::read_records(&corpus)?;
    if let Some(n) = flag("--docs") {
        docs.truncate(n.parse().context("--docs")?);
    }
    let device: Device = flag("--device").unwrap_or_else(|| "auto".into()).parse()?;
    let options = IndexOptions {
        kmeans_iters: match flag("--iters") {
            Some(s) => s.parse().context("--iters")?,
            None => IndexOptions::default().kmeans_iters,
        },
        ..IndexOptions::default()
    };
    let model = Model::open(&model_dir, device)?;
    println!("{} docs on {}", docs.len(), model.describe());

    // One build from the texts, timing each stage.
    let t0 = Instant::now();
    let mut last: Option<(Stage, Instant)> = None;
    let (index, summary) =
        model.index_with_progress(&docs, out.join("nbits-2"), &options, &mut |p| {
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
    let m = index.metadata();
    println!(
        "built in {:.1} s: {} docs, {} vectors, {} centroids (sample {} vectors), {:.1} MiB; \
         k-means mean cosine to centroid {:.4}",
        t0.elapsed().as_secs_f64(),
        m.num_docs,
        m.num_vectors,
        m.num_centroids,
        m.settings.num_sample_vectors,
        summary.index_bytes as f64 / (1 << 20) as f64,
        m.stats.kmeans_mean_cosine
    );

    // The same vectors at 1, 2 and 4 bits.
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let blocks: Vec<Vec<f32>> = model
        .encode_documents(&texts)?
        .into_iter()
        .map(|t| t.vectors)
        .collect();
    let ids = docs.iter().map(|d| d.id.clone()).collect();
    let vectors = VectorSet::from_blocks(Some(ids), model.dim(), &blocks)?;
    for nbits in [1, 2, 4] {
        let t = Instant::now();
        let idx = Index::build_from_vectors(
            out.join(format!("nbits-{nbits}")),
            &vectors,
            Some(&model),
            &IndexOptions {
                nbits,
                ..options.clone()
            },
            device,
        )?;
        let m = idx.metadata();
        println!(
            "nbits {nbits}: {} bytes/vector, codec mean cosine {:.4}, built from vectors in {:.1} s",
            m.bytes_per_vector,
            m.stats.codec_mean_cosine,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
