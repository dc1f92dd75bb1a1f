//! Issue 12's quality check of the live index: index a seeded half of a
//! corpus (precomputed vectors), add the other half in ten batches, and
//! compare nDCG@10 with a full rebuild; time per added document against the
//! rebuild; the outlier distance measured on the half (the 99th percentile of
//! each token vector's distance to its nearest centroid); filtered search
//! QPS and recall@10 (against the exhaustive filtered top-10) with filters
//! keeping 50%, 5% and 0.1% of the corpus.
//!
//! `scripts/live_quality.sh` encodes SciFact and runs this:
//! `cargo run --release --example live_quality -- DOCS.safetensors QUERIES.safetensors QRELS.tsv OUTDIR`

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use colwgpu::api::NewDoc;
use colwgpu::{Device, Filter, Index, IndexOptions, IndexWriter, SearchOptions, VectorSet};

fn subset(set: &VectorSet, picks: &[usize]) -> VectorSet {
    let mut vectors = Vec::new();
    let mut offsets = vec![0usize];
    for &i in picks {
        vectors.extend_from_slice(set.get(i));
        offsets.push(offsets.last().unwrap() + set.get(i).len() / set.dim);
    }
    VectorSet {
        ids: picks.iter().map(|&i| set.ids[i].clone()).collect(),
        dim: set.dim,
        vectors,
        offsets,
        kind: set.kind.clone(),
        model_path: set.model_path.clone(),
        model_fingerprint: set.model_fingerprint.clone(),
    }
}

fn exhaustive(k: usize) -> SearchOptions {
    SearchOptions {
        k,
        plaid: None,
        exhaustive: true,
    }
}

/// Mean nDCG@10 over the judged queries, PLAID (default knobs) or exhaustive.
fn ndcg(
    index: &Index,
    queries: &[(&str, &[f32])],
    qrels: &colwgpu::eval::Qrels,
    exact: bool,
) -> anyhow::Result<f64> {
    let blocks: Vec<&[f32]> = queries.iter().map(|q| q.1).collect();
    let opts = if exact {
        exhaustive(10)
    } else {
        SearchOptions::new(10)
    };
    let hits = index.search_vectors(&blocks, &opts)?;
    let total: f64 = queries
        .iter()
        .zip(&hits)
        .map(|((id, _), h)| {
            let ranking: Vec<&str> = h.iter().map(|x| x.id.as_str()).collect();
            colwgpu::eval::ndcg_at(&ranking, &qrels[*id], 10)
        })
        .sum();
    Ok(total / queries.len() as f64)
}

/// Percentiles of each vector's cosine similarity to its nearest centroid.
fn nearest_similarity(vectors: &[f32], dim: usize, centroids: &[f32]) -> serde_json::Value {
    let (_, best) = colwgpu::index::kmeans::assign_cpu(vectors, dim, centroids);
    let mut sims = best;
    sims.sort_by(f32::total_cmp);
    let pct = |p: f64| sims[((sims.len() - 1) as f64 * p).round() as usize];
    let mut out = serde_json::Map::new();
    for p in [0.0001, 0.001, 0.01, 0.05, 0.5, 0.95] {
        out.insert(format!("p{}", p * 100.0), serde_json::json!(pct(p)));
    }
    out.insert("min".into(), serde_json::json!(sims[0]));
    out.insert("vectors".into(), serde_json::json!(sims.len()));
    // Fractions below the cosines that some distance thresholds stand for.
    for d in [0.5f32, 0.6, 0.66, 0.7, 0.8] {
        let cos = 1.0 - d * d / 2.0;
        let below = sims.partition_point(|&s| s < cos);
        out.insert(
            format!("fraction_farther_than_distance_{d}"),
            serde_json::json!(below as f64 / sims.len() as f64),
        );
    }
    serde_json::Value::Object(out)
}

/// Each document id's position in `idx`.
fn positions(idx: &colwgpu::index::Index) -> std::collections::HashMap<&str, u32> {
    idx.doc_ids()
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i as u32))
        .collect()
}

/// Mean cosine between each original token vector of documents `picks` and
/// its decompressed copy in the index at `dir` (found by id).
fn fidelity(dir: &std::path::Path, docs: &VectorSet, picks: &[usize]) -> anyhow::Result<f64> {
    let idx = colwgpu::index::Index::open(dir)?;
    let pos = positions(&idx);
    let local: Vec<u32> = picks
        .iter()
        .map(|&i| pos.get(docs.ids[i].as_str()).copied())
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow::anyhow!("a document is missing from {}", dir.display()))?;
    let (v, offs) = idx.decompress_docs(&colwgpu::backend::Compute::Cpu, &local)?;
    let dim = docs.dim;
    let (mut sum, mut count) = (0f64, 0usize);
    for (j, &i) in picks.iter().enumerate() {
        let orig = docs.get(i);
        let got = &v[offs[j] * dim..offs[j + 1] * dim];
        anyhow::ensure!(orig.len() == got.len(), "document lengths differ");
        for (a, b) in orig.chunks(dim).zip(got.chunks(dim)) {
            sum += a.iter().zip(b).map(|(x, y)| (*x * *y) as f64).sum::<f64>();
            count += 1;
        }
    }
    Ok(sum / count as f64)
}

/// MaxSim of a query against a document's vectors, in f64.
fn maxsim64(q: &[f32], d: &[f32], dim: usize) -> f64 {
    q.chunks(dim)
        .map(|qv| {
            d.chunks(dim)
                .map(|dv| {
                    qv.iter()
                        .zip(dv)
                        .map(|(a, b)| (*a as f64) * (*b as f64))
                        .sum::<f64>()
                })
                .fold(f64::MIN, f64::max)
        })
        .sum()
}

/// Mean of MaxSim(query, decompressed doc) − MaxSim(query, original doc)
/// over the judged relevant (query, document) pairs, separately for the
/// documents of `base` and the others: how much compression lowers (or
/// raises) the scores of each half.
fn score_shift(
    dir: &std::path::Path,
    docs: &VectorSet,
    queries: &[(&str, &[f32])],
    qrels: &colwgpu::eval::Qrels,
    base: &HashSet<&str>,
) -> anyhow::Result<serde_json::Value> {
    let idx = colwgpu::index::Index::open(dir)?;
    let pos = positions(&idx);
    let orig: std::collections::HashMap<&str, usize> = docs
        .ids
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    let dim = docs.dim;
    let (mut sb, mut nb, mut sa, mut na) = (0f64, 0usize, 0f64, 0usize);
    for (qid, q) in queries {
        for doc in qrels[*qid].keys() {
            let (Some(&p), Some(&o)) = (pos.get(doc.as_str()), orig.get(doc.as_str())) else {
                continue;
            };
            let (v, _) = idx.decompress_docs(&colwgpu::backend::Compute::Cpu, &[p])?;
            let shift = maxsim64(q, &v, dim) - maxsim64(q, docs.get(o), dim);
            if base.contains(doc.as_str()) {
                sb += shift;
                nb += 1;
            } else {
                sa += shift;
                na += 1;
            }
        }
    }
    Ok(serde_json::json!({
        "base_half_pairs": nb, "base_half_mean_shift": sb / nb.max(1) as f64,
        "added_half_pairs": na, "added_half_mean_shift": sa / na.max(1) as f64,
    }))
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        std::fs::copy(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // QUICK=1: reuse OUTDIR/full and OUTDIR/half-base from an earlier run
    // (no build timings then), skip the filter and compaction measurements.
    let quick = std::env::var("QUICK").is_ok_and(|v| v == "1");
    // NO_EXHAUSTIVE=1: PLAID only (exhaustive search of many queries is slow).
    let exhaustive_too = !std::env::var("NO_EXHAUSTIVE").is_ok_and(|v| v == "1");
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        anyhow::bail!("usage: live_quality DOCS.safetensors QUERIES.safetensors QRELS.tsv OUTDIR");
    }
    let docs = colwgpu::io::read_vectors(args[1].as_ref(), None)?;
    let qset = colwgpu::io::read_vectors(args[2].as_ref(), None)?;
    let qrels = colwgpu::eval::read_qrels(args[3].as_ref())?;
    let out = PathBuf::from(&args[4]);
    std::fs::create_dir_all(&out)?;
    let queries: Vec<(&str, &[f32])> = (0..qset.len())
        .filter(|&i| qrels.contains_key(&qset.ids[i]))
        .map(|i| (qset.ids[i].as_str(), qset.get(i)))
        .collect();
    let n = docs.len();
    // SEED: the k-means seed of both builds; SPLIT_SEED: which half is the base.
    let env_u64 = |k: &str, d: u64| -> anyhow::Result<u64> {
        Ok(match std::env::var(k) {
            Ok(v) => v.parse()?,
            Err(_) => d,
        })
    };
    let opts = IndexOptions {
        seed: env_u64("SEED", IndexOptions::default().seed)?,
        ..IndexOptions::default()
    };

    // Full rebuild.
    let t = Instant::now();
    let full = if quick && out.join("full").join("metadata.json").is_file() {
        Index::open_on(out.join("full"), Device::Cpu, &Default::default())?
    } else {
        Index::build_from_vectors(out.join("full"), &docs, None, &opts, Device::Cpu)?
    };
    let rebuild_s = t.elapsed().as_secs_f64();
    let ndcg_full = ndcg(&full, &queries, &qrels, false)?;
    let ndcg_full_exact = if exhaustive_too {
        ndcg(&full, &queries, &qrels, true)?
    } else {
        f64::NAN
    };
    drop(full);

    // A seeded half, then the rest in ten batches.
    let mut order: Vec<usize> = (0..n).collect();
    let mut s = env_u64("SPLIT_SEED", 0x5eed)?;
    for i in (1..n).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        order.swap(i, (s >> 33) as usize % (i + 1));
    }
    let (first, rest) = order.split_at(n / 2);
    let half_path = out.join("live");
    let t = Instant::now();
    let pristine = out.join("half-base");
    let half = if quick && pristine.join("metadata.json").is_file() {
        copy_dir(&pristine, &half_path)?;
        Index::open_on(&half_path, Device::Cpu, &Default::default())?
    } else {
        let h =
            Index::build_from_vectors(&half_path, &subset(&docs, first), None, &opts, Device::Cpu)?;
        copy_dir(&half_path, &pristine)?;
        h
    };
    let half_s = t.elapsed().as_secs_f64();
    let ndcg_half = ndcg(&half, &queries, &qrels, false)?;

    // Nearest-centroid similarity of the base half (the vectors the centroids
    // were trained on) and of the added half (unseen), against the base's
    // centroids: the data the outlier threshold is chosen from.
    let raw = colwgpu::index::Index::open(&half_path)?;
    let hv = subset(&docs, first);
    let rv = subset(&docs, rest);
    let (sim_base, sim_added) = if quick {
        (serde_json::Value::Null, serde_json::Value::Null)
    } else {
        (
            nearest_similarity(&hv.vectors, hv.dim, raw.centroids()),
            nearest_similarity(&rv.vectors, rv.dim, raw.centroids()),
        )
    };
    drop((raw, half, hv, rv));

    let mut w = IndexWriter::open(&half_path, Duration::ZERO)?;
    if let Ok(d) = std::env::var("OUTLIER_DISTANCE") {
        w.set_outlier_policy(d.parse()?, colwgpu::index::live::DEFAULT_CLUSTER_AT)?;
    }
    let mut batch_ms = Vec::new();
    let mut add_s = 0.0;
    let mut outliers = 0;
    let mut new_centroids = 0;
    for batch in rest.chunks(rest.len().div_ceil(10)) {
        let new: Vec<NewDoc> = batch
            .iter()
            .map(|&i| NewDoc {
                id: docs.ids[i].clone(),
                vectors: docs.get(i).to_vec(),
                metadata: Some(serde_json::json!({ "n": i })),
            })
            .collect();
        let t = Instant::now();
        let s = w.add_vectors(&new, false)?;
        let secs = t.elapsed().as_secs_f64();
        add_s += secs;
        batch_ms.push(serde_json::json!({
            "docs": batch.len(), "seconds": secs, "outliers": s.outliers,
            "new_centroids": s.new_centroids,
        }));
        outliers += s.outliers;
        new_centroids += s.new_centroids;
    }
    // Metadata for the base half too (for the filter measurements).
    let items: Vec<(&str, serde_json::Value)> = first
        .iter()
        .map(|&i| (docs.ids[i].as_str(), serde_json::json!({ "n": i })))
        .collect();
    w.set_metadata(&items)?;
    drop(w);
    // What a reader (and the server after each write) pays to open the live
    // index: the base plus ten segments merged in memory, against opening
    // the full rebuild (a plain index).
    let t = Instant::now();
    let live = Index::open_on(&half_path, Device::Cpu, &Default::default())?;
    let open_live_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    drop(Index::open_on(
        out.join("full"),
        Device::Cpu,
        &Default::default(),
    )?);
    let open_full_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(live.num_docs() == n, "the live index lost documents");
    let fid = serde_json::json!({
        "full_rebuild_base_half": fidelity(&out.join("full"), &docs, first)?,
        "full_rebuild_added_half": fidelity(&out.join("full"), &docs, rest)?,
        "live_base_half": fidelity(&half_path, &docs, first)?,
        "live_added_half": fidelity(&half_path, &docs, rest)?,
    });
    let base_ids: HashSet<&str> = first.iter().map(|&i| docs.ids[i].as_str()).collect();
    let shift = serde_json::json!({
        "full_rebuild": score_shift(&out.join("full"), &docs, &queries, &qrels, &base_ids)?,
        "live": score_shift(&half_path, &docs, &queries, &qrels, &base_ids)?,
    });
    let ndcg_live = ndcg(&live, &queries, &qrels, false)?;
    let ndcg_live_exact = if exhaustive_too {
        ndcg(&live, &queries, &qrels, true)?
    } else {
        f64::NAN
    };

    // Filters keeping 50%, 5%, 0.1% of the documents (by their position n).
    let blocks: Vec<&[f32]> = queries.iter().map(|q| q.1).collect();
    let mut filters = Vec::new();
    let cuts: &[(&str, f64)] = if quick {
        &[]
    } else {
        &[("50%", 0.5), ("5%", 0.05), ("0.1%", 0.001)]
    };
    for &(name, keep) in cuts {
        let f = Filter::new(
            "n < ?",
            vec![serde_json::json!(((n as f64) * keep).round() as i64)],
        );
        let passing = live.filter_ids(&f)?.len();
        let t = Instant::now();
        let got = live.search_vectors_filtered(&blocks, &SearchOptions::new(10), &f)?;
        let secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let exact = live.search_vectors_filtered(&blocks, &exhaustive(10), &f)?;
        let exact_secs = t.elapsed().as_secs_f64();
        let mut hit = 0usize;
        let mut total = 0usize;
        for (g, e) in got.iter().zip(&exact) {
            let e: HashSet<&str> = e.iter().map(|h| h.id.as_str()).collect();
            hit += g.iter().filter(|h| e.contains(h.id.as_str())).count();
            total += e.len();
        }
        filters.push(serde_json::json!({
            "keeps": name, "documents": passing, "plaid_qps": queries.len() as f64 / secs,
            "exhaustive_qps": queries.len() as f64 / exact_secs,
            "recall_at_10_vs_exhaustive_filtered": hit as f64 / total.max(1) as f64,
        }));
    }
    let t = Instant::now();
    let unf = live.search_vectors(&blocks, &SearchOptions::new(10))?;
    let unf_qps = queries.len() as f64 / t.elapsed().as_secs_f64();
    drop(unf);
    drop(live);

    let (mut kept, mut compact_s, mut ndcg_compacted) = (0, 0.0, 0.0);
    if !quick {
        let t = Instant::now();
        kept = IndexWriter::open(&half_path, Duration::ZERO)?.compact()?;
        compact_s = t.elapsed().as_secs_f64();
        let compacted = Index::open_on(&half_path, Device::Cpu, &Default::default())?;
        ndcg_compacted = ndcg(&compacted, &queries, &qrels, false)?;
    }

    let summary = serde_json::json!({
        "docs": n, "queries": queries.len(),
        "rebuild_seconds": rebuild_s, "rebuild_ms_per_doc": 1e3 * rebuild_s / n as f64,
        "half_build_seconds": half_s,
        "added_docs": rest.len(), "add_seconds": add_s,
        "add_ms_per_doc": 1e3 * add_s / rest.len() as f64,
        "outliers": outliers, "new_centroids": new_centroids,
        "add_batches": batch_ms,
        "mean_cosine_original_vs_decompressed": fid,
        "relevant_pairs_maxsim_shift_decompressed_minus_original": shift,
        "outlier_distance": std::env::var("OUTLIER_DISTANCE").ok(),
        "nearest_centroid_cosine_base_half": sim_base,
        "nearest_centroid_cosine_added_half": sim_added,
        "ndcg10_full_rebuild": ndcg_full, "ndcg10_full_rebuild_exhaustive": ndcg_full_exact,
        "ndcg10_half_only": ndcg_half,
        "ndcg10_half_plus_10_adds": ndcg_live, "ndcg10_half_plus_10_adds_exhaustive": ndcg_live_exact,
        "ndcg10_after_compact": ndcg_compacted,
        "ndcg10_delta": ndcg_live - ndcg_full,
        "open_live_seconds": open_live_s, "open_full_rebuild_seconds": open_full_s,
        "compact_seconds": compact_s, "compacted_docs": kept,
        "unfiltered_qps": unf_qps, "filters": filters,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
