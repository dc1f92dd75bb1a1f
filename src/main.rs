//! The `colwgpu` command line: the CLI only; everything it does is in the library.

use std::path::PathBuf;
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
        /// Encode only the first N texts
        #[arg(long)]
        limit: Option<usize>,
        /// Texts per forward pass
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Print the summary as one JSON line on stdout
        #[arg(long)]
        json: bool,
        /// GPU backend: time each kernel family separately (each op in its own submit) and print the split
        #[arg(long)]
        profile: bool,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Encode a corpus and build a compressed ColBERTv2 / PLAID index
    Index(IndexArgs),
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
    let mut records = colwgpu::io::read_records(&input)?;
    if let Some(n) = limit {
        records.truncate(n);
    }
    if records.is_empty() {
        bail!("{}: nothing to encode", input.display());
    }
    let mut encoder = Encoder::open(&model, device.choice()?, &device.options())
        .with_context(|| format!("loading model {}", model.display()))?;
    encoder.set_batch_size(batch_size);
    encoder.warm_up().context("warming up the encoder")?;
    if profile && !encoder.enable_profiling() {
        bail!("--profile times WGSL kernels: use it with the gpu backend (--device gpu)");
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
    )?;
    let vectors: usize = encoded.iter().map(|e| e.len()).sum();
    let split = encoder.profile();
    if !split.is_empty() {
        let total: f64 = split.iter().map(|(_, _, s)| s).sum();
        eprintln!("kernel time split (each op waited for separately):");
        for (op, calls, s) in &split {
            eprintln!(
                "  {op:<10} {calls:>6} calls {s:>9.3} s {:>5.1}%",
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
    #[arg(long, default_value_t = 2)]
    nbits: usize,
    /// Centroid count (default: ColBERTv2's 2^floor(log2(16·√vectors)))
    #[arg(long)]
    centroids: Option<usize>,
    /// k-means iterations
    #[arg(long, default_value_t = 10)]
    kmeans_iters: usize,
    /// Index only the first N documents
    #[arg(long)]
    limit: Option<usize>,
    /// Texts per forward pass
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Print the summary as one JSON line on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

fn build_index(a: IndexArgs) -> Result<()> {
    use colwgpu::index::{IndexOptions, ModelInfo, Stage};
    let mut docs = colwgpu::io::read_records(&a.corpus)?;
    if let Some(n) = a.limit {
        docs.truncate(n);
    }
    let choice = a.device.choice()?;
    let options = a.device.options();
    let mut encoder = Encoder::open(&a.model, choice, &options)
        .with_context(|| format!("loading model {}", a.model.display()))?;
    encoder.set_batch_size(a.batch_size);
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
