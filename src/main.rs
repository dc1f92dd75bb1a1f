//! The `colwgpu` command line: the CLI only; everything it does is in the library.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use colwgpu::gpu::{self, GpuOptions};
use colwgpu::model::{DeviceChoice, Encoder, HeadLayout};

#[derive(Parser)]
#[command(
    name = "colwgpu",
    version,
    about = "ColBERT late-interaction retrieval on any GPU (wgpu + WGSL) or the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct DeviceArgs {
    /// auto (hardware GPU if present, else native CPU), cpu, or gpu (wgpu on any adapter, software included)
    #[arg(long, default_value = "auto")]
    device: String,
    /// Restrict wgpu to these backends: vulkan, metal, dx12, gl (comma separated; env WGPU_BACKEND)
    #[arg(long)]
    backend: Option<String>,
    /// Use the first adapter whose name contains this (env COLWGPU_ADAPTER)
    #[arg(long)]
    adapter: Option<String>,
}

impl DeviceArgs {
    fn choice(&self) -> Result<DeviceChoice> {
        Ok(self.device.parse()?)
    }
    fn options(&self) -> GpuOptions {
        GpuOptions {
            backends: self.backend.clone(),
            adapter_name: self.adapter.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Show the adapters wgpu sees, the one that would be used, its limits, and (with --model) the model
    Info {
        #[arg(long)]
        model: Option<PathBuf>,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Encode queries or documents into ColBERT token vectors (safetensors output)
    Encode {
        /// Model directory (Hugging Face BERT + ColBERT head, PyLate or stanford layout)
        #[arg(long)]
        model: PathBuf,
        /// Queries: BEIR queries.jsonl or one text per line
        #[arg(long, conflicts_with = "docs", required_unless_present = "docs")]
        queries: Option<PathBuf>,
        /// Documents: BEIR corpus.jsonl or one text per line
        #[arg(long)]
        docs: Option<PathBuf>,
        /// Output file (.safetensors): vectors, offsets, token_ids, ids in metadata
        #[arg(long)]
        out: PathBuf,
        /// Encode only the first N texts (at least 1)
        #[arg(long, value_parser = at_least_1)]
        limit: Option<usize>,
        /// Texts per forward pass (at least 1)
        #[arg(long, default_value_t = 32, value_parser = at_least_1)]
        batch_size: usize,
        /// Print the summary as one JSON line on stdout
        #[arg(long)]
        json: bool,
        /// Time each op family separately and print the split (GPU: each op in its own submit)
        #[arg(long)]
        profile: bool,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Encode a corpus and build a compressed ColBERTv2 / PLAID index
    Index(IndexArgs),
    /// Search an index with one query or a queries file
    Search(SearchArgs),
    /// Search every judged query of a BEIR qrels file and report nDCG@10, Recall@10/100, MRR@10
    Eval(EvalArgs),
}

/// A count that must be at least 1 (the message states the range).
fn at_least_1(s: &str) -> std::result::Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number (expected 1 or more)"))?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// Residual bits per dimension: 1, 2 or 4.
fn nbits(s: &str) -> std::result::Result<usize, String> {
    match s.trim() {
        "1" => Ok(1),
        "2" => Ok(2),
        "4" => Ok(4),
        _ => Err(format!(
            "'{s}' is not one of 1, 2, 4 (residual bits per dimension)"
        )),
    }
}

/// PLAID's centroid score threshold: a number from -inf to 1, not NaN.
fn threshold(s: &str) -> std::result::Result<f32, String> {
    let t: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number (expected -inf to 1)"))?;
    if t.is_nan() || t > 1.0 {
        return Err(format!(
            "{t} is out of range: expected a number from -inf to 1 (scores of unit vectors lie in [-1, 1])"
        ));
    }
    Ok(t)
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { model, device } => info(model, device),
        Command::Encode {
            model,
            queries,
            docs,
            out,
            limit,
            batch_size,
            json,
            profile,
            device,
        } => encode(
            model, queries, docs, out, limit, batch_size, json, profile, device,
        ),
        Command::Index(args) => build_index(args),
        Command::Search(args) => search(args),
        Command::Eval(args) => eval(args),
    };
    if let Err(e) = result {
        eprintln!("colwgpu: error: {e:#}");
        std::process::exit(1);
    }
}

fn info(model: Option<PathBuf>, device: DeviceArgs) -> Result<()> {
    let options = device.options();
    let adapters = gpu::list_adapters(&options)?;
    if adapters.is_empty() {
        println!(
            "adapters: none (install a Vulkan driver, e.g. `apt-get install mesa-vulkan-drivers`)"
        );
    }
    for a in &adapters {
        println!(
            "adapter: {} ({:?}, {:?}, driver {} {})",
            a.name, a.backend, a.device_type, a.driver, a.driver_info
        );
    }
    match colwgpu::model::resolve_device(device.choice()?, &options) {
        Ok(Some(ctx)) => {
            let l = &ctx.limits;
            println!("selected: gpu on {}", ctx.describe());
            println!(
                "limits: max_storage_buffer_binding_size {} MiB, max_buffer_size {} MiB, \
                 max_compute_workgroups_per_dimension {}, max_compute_workgroup_storage_size {} KiB, \
                 max_compute_invocations_per_workgroup {}",
                l.max_storage_buffer_binding_size >> 20,
                l.max_buffer_size >> 20,
                l.max_compute_workgroups_per_dimension,
                l.max_compute_workgroup_storage_size >> 10,
                l.max_compute_invocations_per_workgroup
            );
        }
        Ok(None) => println!(
            "selected: cpu (native; {} threads){}",
            rayon::current_num_threads(),
            if adapters.iter().any(|a| !gpu::is_software(a)) {
                ""
            } else {
                " — no hardware GPU adapter, so `auto` uses the native CPU backend"
            }
        ),
        Err(e) => println!("selected: none: {e}"),
    }
    if let Some(dir) = model {
        let ckpt = colwgpu::model::Checkpoint::load(&dir)
            .with_context(|| format!("loading model {}", dir.display()))?;
        let c = &ckpt.config;
        let t = &ckpt.tokenizer.tokens;
        println!(
            "model: {} — BERT, {} layers, hidden {}, {} heads, ffn {}, vocab {}",
            dir.display(),
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.intermediate_size,
            c.vocab_size
        );
        println!(
            "head: {}",
            match ckpt.head {
                HeadLayout::PyLate => format!(
                    "ColBERT projection {}→{} (PyLate layout, 1_Dense)",
                    c.hidden_size,
                    ckpt.dim()
                ),
                HeadLayout::Stanford => format!(
                    "ColBERT projection {}→{} (stanford layout, linear.weight)",
                    c.hidden_size,
                    ckpt.dim()
                ),
                HeadLayout::None => format!(
                    "none: plain BERT, token vectors are the L2-normalised hidden states (dim {})",
                    c.hidden_size
                ),
            }
        );
        println!(
            "colbert: query length {} ([MASK] expansion {}, attended {}), document length {}, markers {} / {}, skiplist {} ids",
            t.query_length,
            if t.query_expansion { "on" } else { "off" },
            if t.attend_to_expansion_tokens { "all" } else { "real tokens only" },
            t.document_length,
            t.query_marker,
            t.document_marker,
            t.skiplist.len()
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn encode(
    model: PathBuf,
    queries: Option<PathBuf>,
    docs: Option<PathBuf>,
    out: PathBuf,
    limit: Option<usize>,
    batch_size: usize,
    json: bool,
    profile: bool,
    device: DeviceArgs,
) -> Result<()> {
    let (input, is_query) = match (queries, docs) {
        (Some(q), None) => (q, true),
        (None, Some(d)) => (d, false),
        _ => bail!("give exactly one of --queries or --docs"),
    };
    // The output is checked before any work: a regular file or new path, not an input.
    colwgpu::io::output::check_file_target(&out, &[&input, &model])?;
    let mut records = if is_query {
        colwgpu::io::read_queries(&input)?
    } else {
        colwgpu::io::read_records(&input)?
    };
    if let Some(n) = limit {
        records.truncate(n);
    }
    if records.is_empty() {
        bail!("{}: nothing to encode", input.display());
    }
    let mut encoder = Encoder::open(&model, device.choice()?, &device.options())
        .with_context(|| format!("loading model {}", model.display()))?;
    encoder.set_batch_size(batch_size)?;
    encoder.warm_up().context("warming up the encoder")?;
    if profile && !encoder.enable_profiling() {
        bail!("--profile is not supported on this backend");
    }

    let progress = indicatif::ProgressBar::new(records.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} texts ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.set_message(if is_query { "queries" } else { "documents" });
    if json {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    // Big chunks keep length-sorting effective; the progress bar moves per chunk.
    let chunk = (batch_size * 8).max(1);
    let start = Instant::now();
    let mut encoded = Vec::with_capacity(records.len());
    let mut tokens = 0usize;
    let mut truncated = 0usize;
    for part in records.chunks(chunk) {
        let texts: Vec<&str> = part.iter().map(|r| r.text.as_str()).collect();
        if is_query {
            let toks = encoder.tokenizer().queries(&texts)?;
            tokens += toks.iter().map(|t| t.ids.len()).sum::<usize>();
            truncated += toks.iter().filter(|t| t.truncated).count();
            encoded.extend(encoder.encode_queries(&texts)?);
        } else {
            let toks = encoder.tokenizer().documents(&texts)?;
            tokens += toks.iter().map(|t| t.ids.len()).sum::<usize>();
            truncated += toks.iter().filter(|t| t.truncated).count();
            encoded.extend(encoder.encode_documents(&texts)?);
        }
        progress.inc(part.len() as u64);
    }
    let seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let kind = if is_query { "queries" } else { "documents" };
    colwgpu::io::write_vectors(
        &out,
        &ids,
        &encoded,
        encoder.dim(),
        &[
            ("kind", kind.to_string()),
            ("model", model.display().to_string()),
        ],
        &[&input, &model],
    )?;
    let vectors: usize = encoded.iter().map(|e| e.len()).sum();
    let split = encoder.profile();
    if !split.is_empty() {
        let total: f64 = split.iter().map(|(_, _, s)| s).sum();
        eprintln!(
            "op time split (each op waited for separately; total {total:.3} s of {seconds:.3} s):"
        );
        for (op, calls, s) in &split {
            eprintln!(
                "  {op:<13} {calls:>6} calls {s:>9.3} s {:>5.1}%",
                100.0 * s / total
            );
        }
    }
    let device_name = encoder.describe_backend();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "texts": records.len(), "tokens": tokens, "vectors": vectors, "seconds": seconds,
                "tokens_per_s": tokens as f64 / seconds, "device": device_name, "truncated": truncated,
            })
        );
    } else {
        eprintln!(
            "encoded {} {kind}: {tokens} tokens → {vectors} vectors of dim {} in {seconds:.2} s ({:.0} tokens/s) on {device_name}{}; wrote {}",
            records.len(),
            encoder.dim(),
            tokens as f64 / seconds,
            if truncated > 0 { format!("; {truncated} texts truncated to the length limit") } else { String::new() },
            out.display()
        );
    }
    Ok(())
}

#[derive(clap::Args)]
struct IndexArgs {
    /// Model directory
    #[arg(long)]
    model: PathBuf,
    /// BEIR corpus.jsonl (or one text per line)
    #[arg(long)]
    corpus: PathBuf,
    /// Index directory to create (replaced atomically if it exists)
    #[arg(long)]
    index: PathBuf,
    /// Residual bits per dimension: 1, 2 or 4
    #[arg(long, default_value_t = 2, value_parser = nbits)]
    nbits: usize,
    /// Centroid count, at least 1 (default: ColBERTv2's 2^floor(log2(16·√vectors)))
    #[arg(long, value_parser = at_least_1)]
    centroids: Option<usize>,
    /// k-means iterations, at least 1 (ColBERTv2's default; 10 costs 2.5x the k-means time for +0.001 codec cosine)
    #[arg(long, default_value_t = 4, value_parser = at_least_1)]
    kmeans_iters: usize,
    /// Index only the first N documents (at least 1)
    #[arg(long, value_parser = at_least_1)]
    limit: Option<usize>,
    /// Texts per forward pass (at least 1)
    #[arg(long, default_value_t = 32, value_parser = at_least_1)]
    batch_size: usize,
    /// If another process is writing this index, wait for it instead of failing
    #[arg(long)]
    wait: bool,
    /// Print the summary as one JSON line on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

fn build_index(a: IndexArgs) -> Result<()> {
    use colwgpu::index::{IndexOptions, ModelInfo, Stage};
    // The index replaces a directory: never one holding an input.
    colwgpu::io::output::check_not_input(&a.index, &[&a.corpus, &a.model])?;
    let mut docs = colwgpu::io::read_records(&a.corpus)?;
    if let Some(n) = a.limit {
        docs.truncate(n);
    }
    let choice = a.device.choice()?;
    let options = a.device.options();
    let mut encoder = Encoder::open(&a.model, choice, &options)
        .with_context(|| format!("loading model {}", a.model.display()))?;
    encoder.set_batch_size(a.batch_size)?;
    let compute = match &encoder {
        Encoder::Gpu(e) => colwgpu::backend::Compute::Gpu(e.backend().context().clone()),
        Encoder::Cpu(_) => colwgpu::backend::Compute::Cpu,
    };
    let model = ModelInfo::from_dir(&a.model, encoder.dim())?;
    let opts = IndexOptions {
        nbits: a.nbits,
        num_centroids: a.centroids,
        kmeans_iters: a.kmeans_iters,
        compute,
        wait_for_lock: a.wait,
        ..Default::default()
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>22} [{bar:30}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if a.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let summary =
        colwgpu::index::build_index(&mut encoder, &model, &docs, &a.index, &opts, &mut |p| {
            bar.set_message(match p.stage {
                Stage::EncodeSample => "encoding k-means sample",
                Stage::Kmeans => "k-means",
                Stage::Compress => "encoding + compressing",
                Stage::Write => "writing",
            });
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
        })
        .with_context(|| format!("building index {}", a.index.display()))?;
    bar.finish_and_clear();
    let m = &summary.metadata;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "docs": m.num_docs, "vectors": m.num_vectors, "centroids": m.num_centroids,
                "nbits": m.nbits, "bytes_per_vector": m.bytes_per_vector, "index_bytes": summary.index_bytes,
                "seconds": summary.seconds, "device": encoder.describe_backend(),
                "codec_mean_cosine": m.stats.codec_mean_cosine,
            })
        );
    } else {
        eprintln!(
            "indexed {} documents: {} vectors, {} centroids, {} bits → {} bytes/vector, {:.1} MiB on disk, \
             in {:.1} s on {} (codec mean cosine {:.4}); wrote {}",
            m.num_docs,
            m.num_vectors,
            m.num_centroids,
            m.nbits,
            m.bytes_per_vector,
            summary.index_bytes as f64 / (1u64 << 20) as f64,
            summary.seconds,
            encoder.describe_backend(),
            m.stats.codec_mean_cosine,
            a.index.display()
        );
    }
    Ok(())
}

#[derive(clap::Args)]
struct SearchKnobs {
    /// Results per query (at least 1)
    #[arg(short, long, default_value_t = 10, value_parser = at_least_1)]
    k: usize,
    /// PLAID: centroids probed per query token, at least 1 (default by k, as the PLAID authors)
    #[arg(long, value_parser = at_least_1)]
    ncells: Option<usize>,
    /// PLAID: centroid pruning threshold, -inf to 1 (default by k)
    #[arg(long, value_parser = threshold, allow_hyphen_values = true)]
    centroid_score_threshold: Option<f32>,
    /// PLAID: documents kept after pruning, at least 1; a quarter are reranked exactly (default by k)
    #[arg(long, value_parser = at_least_1)]
    ndocs: Option<usize>,
    /// Exact MaxSim against every document instead of PLAID
    #[arg(long)]
    exhaustive: bool,
    /// Queries encoded and searched per batch (at least 1)
    #[arg(long, default_value_t = 32, value_parser = at_least_1)]
    batch_size: usize,
}

impl SearchKnobs {
    fn options(&self) -> colwgpu::search::SearchOptions {
        let mut p = colwgpu::search::PlaidParams::for_k(self.k);
        if let Some(n) = self.ncells {
            p.ncells = n;
        }
        if let Some(t) = self.centroid_score_threshold {
            p.centroid_score_threshold = t;
        }
        if let Some(n) = self.ndocs {
            p.ndocs = n;
        }
        colwgpu::search::SearchOptions {
            k: self.k,
            plaid: Some(p),
            exhaustive: self.exhaustive,
        }
    }
}

#[derive(clap::Args)]
struct SearchArgs {
    /// Index directory
    #[arg(long)]
    index: PathBuf,
    /// The model the index was built with
    #[arg(long)]
    model: PathBuf,
    /// One query
    #[arg(long, conflicts_with = "queries", required_unless_present = "queries")]
    query: Option<String>,
    /// Queries: BEIR queries.jsonl or one per line
    #[arg(long)]
    queries: Option<PathBuf>,
    /// JSON lines output: {"query_id", "query", "results": [{"rank", "doc_id", "score"}]}
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    knobs: SearchKnobs,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(clap::Args)]
struct EvalArgs {
    #[arg(long)]
    index: PathBuf,
    #[arg(long)]
    model: PathBuf,
    /// BEIR queries.jsonl
    #[arg(long)]
    queries: PathBuf,
    /// BEIR qrels TSV (e.g. qrels/test.tsv): only the queries judged there are run
    #[arg(long)]
    qrels: PathBuf,
    /// Write the run (query id, doc id, rank, score) as TSV here
    #[arg(long)]
    run: Option<PathBuf>,
    /// Print the summary as one JSON line on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    knobs: SearchKnobs,
    #[command(flatten)]
    device: DeviceArgs,
}

/// An open index, the encoder of its model (checked to be the same model) and
/// where the search kernels run.
struct Session {
    index: colwgpu::index::Index,
    encoder: Encoder,
    compute: colwgpu::backend::Compute,
}

fn open_session(index: &Path, model: &Path, device: &DeviceArgs) -> Result<Session> {
    let index_ = colwgpu::index::Index::open(index)
        .with_context(|| format!("opening index {}", index.display()))?;
    let encoder = Encoder::open(model, device.choice()?, &device.options())
        .with_context(|| format!("loading model {}", model.display()))?;
    let info = colwgpu::index::ModelInfo::from_dir(model, encoder.dim())?;
    index_.check_model(&info).with_context(|| {
        format!(
            "index {} was built with another model than {}",
            index.display(),
            model.display()
        )
    })?;
    let compute = match &encoder {
        Encoder::Gpu(e) => colwgpu::backend::Compute::Gpu(e.backend().context().clone()),
        Encoder::Cpu(_) => colwgpu::backend::Compute::Cpu,
    };
    Ok(Session {
        index: index_,
        encoder,
        compute,
    })
}

/// Encodes and searches `texts` in batches; returns the hits per text and the
/// seconds spent encoding and searching.
fn run_queries(
    s: &mut Session,
    texts: &[&str],
    knobs: &SearchKnobs,
    progress: &indicatif::ProgressBar,
) -> Result<(Vec<Vec<colwgpu::search::Hit>>, f64, f64)> {
    let options = knobs.options();
    let searcher = colwgpu::search::Searcher::new(&s.index, s.compute.clone())?;
    let dim = s.encoder.dim();
    let (mut encode_s, mut search_s) = (0.0, 0.0);
    let mut hits = Vec::with_capacity(texts.len());
    options.validate(s.index.num_docs())?;
    for batch in texts.chunks(knobs.batch_size.max(1)) {
        let t = Instant::now();
        let encoded = s.encoder.encode_queries(batch)?;
        encode_s += t.elapsed().as_secs_f64();
        let qlen = encoded.first().map(|e| e.len()).unwrap_or(0);
        if encoded.iter().any(|e| e.len() != qlen) {
            bail!("queries encoded to different lengths (query expansion is off): search them one at a time");
        }
        let flat: Vec<f32> = encoded
            .iter()
            .flat_map(|e| e.vectors.iter().copied())
            .collect();
        let t = Instant::now();
        hits.extend(searcher.search(&flat, qlen, &options)?);
        search_s += t.elapsed().as_secs_f64();
        debug_assert_eq!(flat.len() % dim.max(1), 0);
        progress.inc(batch.len() as u64);
    }
    Ok((hits, encode_s, search_s))
}

fn search(a: SearchArgs) -> Result<()> {
    let records = match (&a.query, &a.queries) {
        (Some(q), _) => {
            colwgpu::io::check_query_text(q, "--query")?;
            vec![colwgpu::io::Record {
                id: "query".into(),
                text: q.clone(),
            }]
        }
        (None, Some(path)) => colwgpu::io::read_queries(path)?,
        (None, None) => bail!("give --query TEXT or --queries FILE"),
    };
    let mut s = open_session(&a.index, &a.model, &a.device)?;
    let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
    let bar = indicatif::ProgressBar::hidden();
    let (hits, encode_s, search_s) = run_queries(&mut s, &texts, &a.knobs, &bar)?;
    for (r, h) in records.iter().zip(&hits) {
        if a.json {
            let results: Vec<_> = h
                .iter()
                .enumerate()
                .map(|(i, x)| serde_json::json!({"rank": i + 1, "doc_id": x.id, "score": x.score}))
                .collect();
            println!(
                "{}",
                serde_json::json!({"query_id": r.id, "query": r.text, "results": results})
            );
        } else {
            if a.query.is_some() {
                println!("query: {}", r.text);
            } else {
                println!("query {}: {}", r.id, r.text);
            }
            for (i, x) in h.iter().enumerate() {
                println!("{:>4}  {:>9.4}  {}", i + 1, x.score, x.id);
            }
        }
    }
    if !a.json {
        eprintln!(
            "{} queries: encode {:.3} s, search {:.3} s ({:.1} queries/s search) on {}",
            records.len(),
            encode_s,
            search_s,
            records.len() as f64 / search_s.max(1e-9),
            s.compute.describe()
        );
    }
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    if let Some(run) = &a.run {
        colwgpu::io::output::check_file_target(run, &[&a.queries, &a.qrels, &a.index, &a.model])?;
    }
    let qrels = colwgpu::eval::read_qrels(&a.qrels)?;
    let all = colwgpu::io::read_queries(&a.queries)?;
    let records: Vec<_> = all
        .into_iter()
        .filter(|r| qrels.contains_key(&r.id))
        .collect();
    if records.is_empty() {
        bail!(
            "none of the queries in {} is judged in {}",
            a.queries.display(),
            a.qrels.display()
        );
    }
    let mut s = open_session(&a.index, &a.model, &a.device)?;
    s.encoder.warm_up()?;
    let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
    let bar = indicatif::ProgressBar::new(texts.len() as u64);
    if a.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (hits, encode_s, search_s) = run_queries(&mut s, &texts, &a.knobs, &bar)?;
    bar.finish_and_clear();
    let runs: std::collections::HashMap<String, Vec<String>> = records
        .iter()
        .zip(&hits)
        .map(|(r, h)| (r.id.clone(), h.iter().map(|x| x.id.clone()).collect()))
        .collect();
    if let Some(path) = &a.run {
        let mut out = String::new();
        for (r, h) in records.iter().zip(&hits) {
            for (i, x) in h.iter().enumerate() {
                out.push_str(&format!("{}\t{}\t{}\t{}\n", r.id, x.id, i + 1, x.score));
            }
        }
        colwgpu::io::output::write_file(
            path,
            &[&a.queries, &a.qrels, &a.index, &a.model],
            out.as_bytes(),
        )
        .with_context(|| format!("writing the run file {}", path.display()))?;
    }
    let (m, n) = colwgpu::eval::evaluate(&runs, &qrels);
    let qps = records.len() as f64 / search_s.max(1e-9);
    let qps_total = records.len() as f64 / (search_s + encode_s).max(1e-9);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "queries": n, "k": a.knobs.k, "ndcg@10": m.ndcg_at_10, "recall@10": m.recall_at_10,
                "recall@100": m.recall_at_100, "mrr@10": m.mrr_at_10, "search_qps": qps,
                "end_to_end_qps": qps_total, "device": s.compute.describe(), "exhaustive": a.knobs.exhaustive,
            })
        );
    } else {
        println!(
            "{n} queries, k={}: nDCG@10 {:.4}  Recall@10 {:.4}  Recall@100 {:.4}  MRR@10 {:.4}",
            a.knobs.k, m.ndcg_at_10, m.recall_at_10, m.recall_at_100, m.mrr_at_10
        );
        println!(
            "{:.1} queries/s search, {:.1} queries/s with encoding, on {}",
            qps,
            qps_total,
            s.compute.describe()
        );
    }
    Ok(())
}
