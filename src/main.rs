//! The `colwgpu` command line: argument parsing, progress bars and printing
//! over the library's front door ([`colwgpu::Model`], [`colwgpu::Index`]);
//! no pipeline logic of its own.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use colwgpu::api::{self, GpuOptions, Progress, Stage};
use colwgpu::{Device, Document, Hit, Index, IndexOptions, Model, ModelOptions, SearchOptions};

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
    /// Linear layers: f32; bf16 on the cpu backend (bf16 weights and activations, f32 sums; CPUs with AMX-BF16 or AVX512-BF16); f16 on the gpu backend (f16 weights, f32 activations and sums; adapters with SHADER_F16). Each is refused on the other backend
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Restrict wgpu to these backends: vulkan, metal, dx12, gl (comma separated; env WGPU_BACKEND)
    #[arg(long)]
    backend: Option<String>,
    /// Use the first adapter whose name contains this (env COLWGPU_ADAPTER)
    #[arg(long)]
    adapter: Option<String>,
    /// Base model directory of a LoRA adapter given as --model (default: from adapter_config.json)
    #[arg(long)]
    base: Option<PathBuf>,
}

impl DeviceArgs {
    fn choice(&self) -> Result<Device> {
        Ok(self.device.parse()?)
    }
    fn gpu(&self) -> GpuOptions {
        GpuOptions {
            backends: self.backend.clone(),
            adapter_name: self.adapter.clone(),
        }
    }
    fn open_model(&self, dir: &Path, batch_size: usize) -> Result<Model> {
        Model::open_with(
            dir,
            &ModelOptions {
                base: self.base.clone(),
                device: self.choice()?,
                gpu: self.gpu(),
                batch_size,
                precision: self.precision.parse()?,
            },
        )
        .with_context(|| format!("loading model {}", dir.display()))
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
    Encode(EncodeArgs),
    /// Build a compressed ColBERTv2 / PLAID index from texts (encoded now) or from token vectors
    Index(IndexArgs),
    /// Search an index with one query, a queries file, or precomputed query vectors
    Search(SearchArgs),
    /// Search every judged query of a BEIR qrels file and report nDCG@10, Recall@10/100, MRR@10
    Eval(EvalArgs),
    /// Add (or with --update replace) documents in an existing index, without rebuilding
    Add(AddArgs),
    /// Delete documents from an index by id (hidden from search at once)
    Delete(DeleteArgs),
    /// Rewrite an index without its deleted documents (reclaims space, rebuilds the lists)
    Compact(CompactArgs),
    /// Serve indexes over HTTP: search, add / update / delete, metadata, encode (docs/openapi.yaml)
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// An index to serve, as NAME=DIR (repeat for more)
    #[arg(long = "index", required = true)]
    indexes: Vec<String>,
    /// Model directory (text search, adds of texts, /encode); default: the first index's model
    #[arg(long)]
    model: Option<PathBuf>,
    /// Serve without a model (vector search and vector adds only)
    #[arg(long, conflicts_with = "model")]
    no_model: bool,
    /// Address to bind (loopback by default)
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port, printed at start)
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Longest wait, in milliseconds, for more queries to batch with the first
    #[arg(long, default_value_t = 2.0)]
    batch_wait_ms: f64,
    /// Most queries encoded in one batch (at least 1)
    #[arg(long, default_value_t = 32, value_parser = at_least_1)]
    max_batch: usize,
    /// Text queries waiting at most; beyond, 503 (at least 1)
    #[arg(long, default_value_t = 1024, value_parser = at_least_1)]
    queue: usize,
    /// Largest request body, MiB (at least 1)
    #[arg(long, default_value_t = 16, value_parser = at_least_1)]
    body_limit_mb: usize,
    /// Seconds an index's writer (and its lock) is kept after the last write,
    /// then released so other processes can write the index
    #[arg(long, default_value_t = 2.0)]
    writer_idle_s: f64,
    /// Seconds between checks for another process's commits to a served
    /// index (seen while the server holds no writer for it)
    #[arg(long, default_value_t = 1.0)]
    refresh_s: f64,
    #[command(flatten)]
    device: DeviceArgs,
}

fn serve(a: ServeArgs) -> Result<()> {
    let mut indexes = Vec::new();
    for spec in &a.indexes {
        let Some((name, dir)) = spec
            .split_once('=')
            .filter(|(n, d)| !n.is_empty() && !d.is_empty())
        else {
            bail!("--index takes NAME=DIR, got '{spec}'");
        };
        if indexes.iter().any(|(n, _): &(String, PathBuf)| n == name) {
            bail!("index name '{name}' is given twice");
        }
        indexes.push((name.to_string(), PathBuf::from(dir)));
    }
    if !(a.batch_wait_ms.is_finite() && (0.0..=1000.0).contains(&a.batch_wait_ms)) {
        bail!("--batch-wait-ms must be between 0 and 1000");
    }
    if !(a.writer_idle_s.is_finite() && (0.0..=86400.0).contains(&a.writer_idle_s)) {
        bail!("--writer-idle-s must be between 0 and 86400");
    }
    if !(a.refresh_s.is_finite() && (0.01..=86400.0).contains(&a.refresh_s)) {
        bail!("--refresh-s must be between 0.01 and 86400");
    }
    let model = if a.no_model {
        None
    } else {
        Some(match &a.model {
            Some(d) => a.device.open_model(d, a.max_batch)?,
            None => {
                let first = Index::open(&indexes[0].1)
                    .with_context(|| format!("opening index {}", indexes[0].1.display()))?;
                let dir = first.model_dir().map(Path::to_path_buf).ok_or_else(|| {
                    anyhow::anyhow!(
                        "index {} does not record its model: give --model or --no-model",
                        indexes[0].1.display()
                    )
                })?;
                a.device.open_model(&dir, a.max_batch)?
            }
        })
    };
    let addr: std::net::SocketAddr = format!("{}:{}", a.host, a.port)
        .parse()
        .with_context(|| format!("'{}:{}' is not an address to bind", a.host, a.port))?;
    let options = colwgpu::server::ServeOptions {
        indexes,
        addr,
        batch_wait: std::time::Duration::from_secs_f64(a.batch_wait_ms / 1e3),
        max_batch: a.max_batch,
        queue: a.queue,
        body_limit: a.body_limit_mb << 20,
        writer_idle: std::time::Duration::from_secs_f64(a.writer_idle_s),
        refresh: std::time::Duration::from_secs_f64(a.refresh_s),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Ok(addr) = rx.await {
                eprintln!("colwgpu serve: listening on http://{addr}");
            }
        });
        let shutdown = async {
            let term = async {
                #[cfg(unix)]
                if let Ok(mut s) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    s.recv().await;
                    return;
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = term => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            eprintln!("colwgpu serve: draining in-flight requests");
        };
        colwgpu::server::serve(model, options, shutdown, Some(tx)).await
    })?;
    Ok(())
}

#[derive(clap::Args)]
struct AddArgs {
    /// Index directory (built by `colwgpu index`)
    #[arg(long)]
    index: PathBuf,
    /// Model directory; default: the model the index was built with
    #[arg(long)]
    model: Option<PathBuf>,
    /// BEIR corpus.jsonl (or one text per line), encoded now
    #[arg(long, conflicts_with = "vectors", required_unless_present = "vectors")]
    corpus: Option<PathBuf>,
    /// Precomputed document token vectors (.safetensors from `colwgpu encode --docs`)
    #[arg(long)]
    vectors: Option<PathBuf>,
    /// Document metadata: JSON lines {"id": "...", "metadata": {...}}
    #[arg(long)]
    metadata: Option<PathBuf>,
    /// Replace documents with these ids (they must exist) instead of adding new ones
    #[arg(long)]
    update: bool,
    /// Seconds to wait for another writer of the index (default: fail at once)
    #[arg(long, default_value_t = 0.0)]
    wait: f64,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(clap::Args)]
struct DeleteArgs {
    #[arg(long)]
    index: PathBuf,
    /// Document ids
    ids: Vec<String>,
    /// More ids, one per line
    #[arg(long)]
    ids_file: Option<PathBuf>,
    /// Seconds to wait for another writer of the index
    #[arg(long, default_value_t = 0.0)]
    wait: f64,
}

#[derive(clap::Args)]
struct CompactArgs {
    #[arg(long)]
    index: PathBuf,
    /// Seconds to wait for another writer of the index
    #[arg(long, default_value_t = 0.0)]
    wait: f64,
}

fn wait_arg(secs: f64) -> Result<std::time::Duration> {
    if !(secs.is_finite() && secs >= 0.0) {
        bail!("--wait must be a number of seconds, 0 or more (got {secs})");
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// `{"id": ..., "metadata": {...}}` lines, by id.
fn read_metadata_lines(
    path: &Path,
) -> Result<std::collections::HashMap<String, serde_json::Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading metadata {}", path.display()))?;
    let mut out = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        let (Some(id), Some(m)) = (v.get("id").and_then(|x| x.as_str()), v.get("metadata")) else {
            bail!(
                "{} line {}: expected {{\"id\": \"...\", \"metadata\": {{...}}}}",
                path.display(),
                i + 1
            );
        };
        out.insert(id.to_string(), m.clone());
    }
    Ok(out)
}

fn add(a: AddArgs) -> Result<()> {
    let wait = wait_arg(a.wait)?;
    let mut meta = match &a.metadata {
        Some(p) => read_metadata_lines(p)?,
        None => Default::default(),
    };
    let t = Instant::now();
    let summary = if let Some(path) = &a.vectors {
        let set = read_vector_args(path, None, None, None)?;
        let mut writer = colwgpu::IndexWriter::open(&a.index, wait)
            .with_context(|| format!("opening index {} for writing", a.index.display()))?;
        let docs: Vec<api::NewDoc> = (0..set.len())
            .map(|i| api::NewDoc {
                id: set.ids[i].clone(),
                vectors: set.get(i).to_vec(),
                metadata: meta.remove(&set.ids[i]),
            })
            .collect();
        writer.add_vectors(&docs, a.update)?
    } else {
        let Some(corpus) = &a.corpus else {
            bail!("give --corpus FILE or --vectors FILE");
        };
        let records = read_texts(corpus, None, false)?;
        let index = Index::open(&a.index)
            .with_context(|| format!("opening index {}", a.index.display()))?;
        let model = match &a.model {
            Some(d) => a.device.open_model(d, 32)?,
            None => index.open_model(a.device.choice()?)?,
        };
        drop(index);
        let mut writer = colwgpu::IndexWriter::open(&a.index, wait)
            .with_context(|| format!("opening index {} for writing", a.index.display()))?;
        let m: Vec<Option<serde_json::Value>> =
            records.iter().map(|r| meta.remove(&r.id)).collect();
        writer.add_texts(&model, &records, Some(&m), a.update)?
    };
    if let Some(id) = meta.keys().next() {
        eprintln!(
            "warning: metadata for '{id}' (and {} more) matched no added document",
            meta.len() - 1
        );
    }
    eprintln!(
        "{} {} documents ({} vectors, {} outliers, {} new centroids) in {:.2} s: generation {}",
        if a.update { "updated" } else { "added" },
        summary.docs,
        summary.vectors,
        summary.outliers,
        summary.new_centroids,
        t.elapsed().as_secs_f64(),
        summary.generation
    );
    Ok(())
}

fn delete(a: DeleteArgs) -> Result<()> {
    let mut ids = a.ids.clone();
    if let Some(p) = &a.ids_file {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        ids.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
    }
    if ids.is_empty() {
        bail!("no ids to delete: give them as arguments or with --ids-file");
    }
    let mut writer = colwgpu::IndexWriter::open(&a.index, wait_arg(a.wait)?)
        .with_context(|| format!("opening index {} for writing", a.index.display()))?;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let generation = writer.delete(&refs)?;
    eprintln!("deleted {} documents: generation {generation}", refs.len());
    Ok(())
}

fn compact(a: CompactArgs) -> Result<()> {
    let writer = colwgpu::IndexWriter::open(&a.index, wait_arg(a.wait)?)
        .with_context(|| format!("opening index {} for writing", a.index.display()))?;
    let t = Instant::now();
    let kept = writer.compact()?;
    eprintln!(
        "compacted {}: {kept} documents in {:.2} s",
        a.index.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { model, device } => info(model, device),
        Command::Encode(args) => encode(args),
        Command::Index(args) => build_index(args),
        Command::Search(args) => search(args),
        Command::Eval(args) => eval(args),
        Command::Add(args) => add(args),
        Command::Delete(args) => delete(args),
        Command::Compact(args) => compact(args),
        Command::Serve(args) => serve(args),
    };
    if let Err(e) = result {
        eprintln!("colwgpu: error: {e:#}");
        std::process::exit(1);
    }
}

fn info(model: Option<PathBuf>, device: DeviceArgs) -> Result<()> {
    for line in api::describe_devices(device.choice()?, &device.gpu())? {
        println!("{line}");
    }
    if let Some(dir) = model {
        for line in
            api::describe_model(&dir).with_context(|| format!("loading model {}", dir.display()))?
        {
            println!("{line}");
        }
    }
    Ok(())
}

/// A progress bar counting texts, hidden for `--json`.
fn text_bar(len: usize, message: &'static str, hidden: bool) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} texts ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(message);
    if hidden {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// Documents (`queries` false) or queries (empty ones refused) from `path`.
fn read_texts(path: &Path, limit: Option<usize>, queries: bool) -> Result<Vec<Document>> {
    let mut records = if queries {
        colwgpu::io::read_queries(path)?
    } else {
        colwgpu::io::read_records(path)?
    };
    if let Some(n) = limit {
        records.truncate(n);
    }
    if records.is_empty() {
        bail!("{}: nothing to read", path.display());
    }
    Ok(records)
}

/// A PDF resolution: a number above 0, at most 1200.
fn dpi(s: &str) -> std::result::Result<f32, String> {
    let d: f32 = s.trim().parse().map_err(|_| {
        format!("'{s}' is not a number (expected a resolution above 0, at most 1200)")
    })?;
    if !(d.is_finite() && d > 0.0 && d <= 1200.0) {
        return Err(format!(
            "{d} is out of range: expected above 0, at most 1200 DPI"
        ));
    }
    Ok(d)
}

#[derive(clap::Args, Clone)]
struct PageArgs {
    /// PDF rendering resolution (default: per page, the smallest DPI that gives the
    /// model's pre-processing its full pixel budget)
    #[arg(long, value_parser = dpi)]
    dpi: Option<f32>,
    /// A page (or PDF) that fails to render becomes a warning, listed at the end, instead of an error
    #[arg(long)]
    skip_bad_pages: bool,
}

/// A progress bar counting pages, hidden for `--json`.
fn page_bar(hidden: bool) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} pages [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if hidden {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// The pages of `path` (PDFs, images, or a folder of both), cut to `limit`.
fn list_pages(
    path: &Path,
    limit: Option<usize>,
    skip_bad: bool,
) -> Result<(Vec<api::PageInput>, Vec<String>)> {
    let (mut pages, skipped) = api::list_pages(path, skip_bad)
        .with_context(|| format!("listing the pages of {}", path.display()))?;
    if let Some(n) = limit {
        pages.truncate(n);
    }
    if pages.is_empty() {
        bail!("{}: no PDF pages, no PNG or JPEG images", path.display());
    }
    Ok((pages, skipped))
}

fn print_warnings(warnings: &[String]) {
    if !warnings.is_empty() {
        eprintln!(
            "colwgpu: warning: {} page(s) or file(s) skipped:",
            warnings.len()
        );
        for w in warnings {
            eprintln!("  {w}");
        }
    }
}

#[derive(clap::Args)]
struct EncodeArgs {
    /// Model directory (Hugging Face BERT + ColBERT head, PyLate or stanford layout)
    #[arg(long)]
    model: PathBuf,
    /// Queries: BEIR queries.jsonl or one text per line
    #[arg(long, conflicts_with_all = ["docs", "images"], required_unless_present_any = ["docs", "images", "pdf"])]
    queries: Option<PathBuf>,
    /// Documents: BEIR corpus.jsonl or one text per line
    #[arg(long, conflicts_with = "images")]
    docs: Option<PathBuf>,
    /// Page images (a PNG/JPEG file, or a directory of them; ids = file names without
    /// extension), for a page-image model (ColQwen2 or ColPali)
    #[arg(long, conflicts_with = "pdf")]
    images: Option<PathBuf>,
    /// A PDF, or a directory of PDFs and page images: every PDF page is a document
    /// with id FILE#PAGE (pages from 1), for a page-image model
    #[arg(long, conflicts_with_all = ["docs", "queries"])]
    pdf: Option<PathBuf>,
    #[command(flatten)]
    pages: PageArgs,
    /// Output file (.safetensors): vectors, offsets, token_ids; ids and the model in metadata
    #[arg(long)]
    out: PathBuf,
    /// Encode only the first N texts (at least 1)
    #[arg(long, value_parser = at_least_1)]
    limit: Option<usize>,
    /// Texts per forward pass, at most (at least 1; the cpu backend cuts a pass at about 1,024 token rows)
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
}

/// `encode --images` / `--pdf`: pages through a page-image model.
fn encode_pages(a: &EncodeArgs, source: &Path) -> Result<()> {
    let inputs: [&Path; 2] = [source, &a.model];
    colwgpu::io::output::check_file_target(&a.out, &inputs)?;
    let (pages, mut warnings) = list_pages(source, a.limit, a.pages.skip_bad_pages)?;
    let model = a.device.open_model(&a.model, a.batch_size)?;
    if !model.takes_images() {
        bail!(
            "{} is a text model: --images / --pdf need a page-image model (ColQwen2 or ColPali)",
            a.model.display()
        );
    }
    let bar = page_bar(a.json);
    let start = Instant::now();
    let options = api::PageOptions {
        dpi: a.pages.dpi,
        skip_bad_pages: a.pages.skip_bad_pages,
        batch_size: a.batch_size.min(8),
    };
    let encoded = model.encode_pages(&pages, &options, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    colwgpu::io::write_vectors(
        &a.out,
        &encoded.ids,
        &encoded.vectors,
        model.dim(),
        &api::vector_metadata(&model, "documents"),
        &inputs,
    )?;
    let vectors: usize = encoded.vectors.iter().map(|e| e.len()).sum();
    warnings.extend(encoded.warnings);
    if a.json {
        println!(
            "{}",
            serde_json::json!({"pages": encoded.ids.len(), "vectors": vectors, "seconds": seconds,
                "device": model.describe(), "skipped": warnings})
        );
    } else {
        eprintln!(
            "encoded {} pages → {vectors} vectors of dim {} in {seconds:.2} s on {}; wrote {}",
            encoded.ids.len(),
            model.dim(),
            model.describe(),
            a.out.display()
        );
        print_warnings(&warnings);
    }
    Ok(())
}

fn encode(a: EncodeArgs) -> Result<()> {
    if let Some(pages) = a.images.as_ref().or(a.pdf.as_ref()) {
        return encode_pages(&a, pages);
    }
    let (input, is_query) = match (&a.queries, &a.docs) {
        (Some(q), None) => (q, true),
        (None, Some(d)) => (d, false),
        _ => bail!("give exactly one of --queries or --docs"),
    };
    // The output is checked before any work: a regular file or new path, not an input.
    let inputs: [&Path; 2] = [input, &a.model];
    colwgpu::io::output::check_file_target(&a.out, &inputs)?;
    let records = read_texts(input, a.limit, is_query)?;
    let model = a.device.open_model(&a.model, a.batch_size)?;
    model.warm_up().context("warming up the encoder")?;
    if a.profile {
        model.enable_profiling();
    }
    let kind = if is_query { "queries" } else { "documents" };
    let progress = text_bar(records.len(), kind, a.json);
    // Big chunks keep length-sorting effective and give the CPU backend's
    // lanes (up to 8) two batches each; the progress bar moves per chunk.
    let chunk = (a.batch_size * 16).max(1);
    let start = Instant::now();
    let mut encoded = Vec::with_capacity(records.len());
    let mut counts = api::TokenCounts::default();
    for part in records.chunks(chunk) {
        let texts: Vec<&str> = part.iter().map(|r| r.text.as_str()).collect();
        let (vectors, c) = model.encode_counted(&texts, is_query)?;
        counts.tokens += c.tokens;
        counts.truncated += c.truncated;
        encoded.extend(vectors);
        progress.inc(part.len() as u64);
    }
    let seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    colwgpu::io::write_vectors(
        &a.out,
        &ids,
        &encoded,
        model.dim(),
        &api::vector_metadata(&model, kind),
        &inputs,
    )?;
    let vectors: usize = encoded.iter().map(|e| e.len()).sum();
    let split = model.profile();
    if !split.is_empty() {
        let total: f64 = split.iter().map(|(_, _, s)| s).sum();
        eprintln!(
            "op time split (each op waited for separately; CPU lanes running side by side \
             each add their own; total {total:.3} s of {seconds:.3} s):"
        );
        for (op, calls, s) in &split {
            eprintln!(
                "  {op:<13} {calls:>6} calls {s:>9.3} s {:>5.1}%",
                100.0 * s / total
            );
        }
    }
    let device_name = model.describe();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "texts": records.len(), "tokens": counts.tokens, "vectors": vectors, "seconds": seconds,
                "tokens_per_s": counts.tokens as f64 / seconds, "device": device_name,
                "truncated": counts.truncated,
            })
        );
    } else {
        eprintln!(
            "encoded {} {kind}: {} tokens → {vectors} vectors of dim {} in {seconds:.2} s ({:.0} tokens/s) on {device_name}{}; wrote {}",
            records.len(),
            counts.tokens,
            model.dim(),
            counts.tokens as f64 / seconds,
            if counts.truncated > 0 {
                format!("; {} texts truncated to the length limit", counts.truncated)
            } else {
                String::new()
            },
            a.out.display()
        );
    }
    Ok(())
}

#[derive(clap::Args)]
struct IndexArgs {
    /// Model directory (needed with --corpus; with --vectors it overrides the model the vectors record)
    #[arg(long, required_unless_present = "vectors")]
    model: Option<PathBuf>,
    /// BEIR corpus.jsonl (or one text per line), encoded now
    #[arg(long, conflicts_with_all = ["vectors", "images", "pdf"], required_unless_present_any = ["vectors", "images", "pdf"])]
    corpus: Option<PathBuf>,
    /// Page images (a PNG/JPEG file or a directory of them; ids = file names without
    /// extension), encoded now with a page-image model (ColQwen2 or ColPali)
    #[arg(long, conflicts_with_all = ["vectors", "pdf"])]
    images: Option<PathBuf>,
    /// A PDF, or a directory of PDFs and page images: every PDF page is a document
    /// with id FILE#PAGE (pages from 1), encoded now with a page-image model
    #[arg(long, conflicts_with = "vectors")]
    pdf: Option<PathBuf>,
    #[command(flatten)]
    pages: PageArgs,
    /// Precomputed document token vectors: the .safetensors `colwgpu encode --docs` writes,
    /// or a .npy array ([texts, len, dim], or [rows, dim] with --offsets)
    #[arg(long)]
    vectors: Option<PathBuf>,
    /// With a 2-D .npy --vectors: the [n + 1] row offsets (.npy)
    #[arg(long, requires = "vectors")]
    offsets: Option<PathBuf>,
    /// With .npy --vectors: document ids, one per line (default 0..n-1)
    #[arg(long, requires = "vectors")]
    ids: Option<PathBuf>,
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
    /// Train nothing: compress with the centroids and codec of the index DIR (e.g. one built
    /// on a sample of the corpus), so shards built apart score on one scale
    #[arg(long, value_name = "DIR")]
    codec_from: Option<PathBuf>,
    /// Index only the first N documents (at least 1)
    #[arg(long, value_parser = at_least_1)]
    limit: Option<usize>,
    /// Texts per forward pass, at most (at least 1; the cpu backend cuts a pass at about 1,024 token rows)
    #[arg(long, default_value_t = 32, value_parser = at_least_1)]
    batch_size: usize,
    /// If another process is writing this index, wait for it instead of failing at once
    #[arg(long)]
    wait: bool,
    /// Token pooling: Ward-cluster each document's vectors so about N become one (1 = none)
    #[arg(long, default_value_t = 1, value_parser = at_least_1)]
    pool_factor: usize,
    /// With --pool-factor: leading vectors of each document kept unpooled (PyLate's default)
    #[arg(long, default_value_t = 1)]
    protected_tokens: usize,
    /// Print the summary as one JSON line on stdout
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Reads `--vectors` (+ `--offsets`, `--ids`), cut to `--limit`.
fn read_vector_args(
    vectors: &Path,
    offsets: Option<&Path>,
    ids: Option<&Path>,
    limit: Option<usize>,
) -> Result<colwgpu::VectorSet> {
    let mut set = colwgpu::io::read_vectors(vectors, offsets)
        .with_context(|| format!("reading vectors {}", vectors.display()))?;
    if let Some(path) = ids {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let list: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if list.len() != set.len() {
            bail!(
                "{}: {} ids for {} vector sets in {}",
                path.display(),
                list.len(),
                set.len(),
                vectors.display()
            );
        }
        set.ids = list;
    }
    if let Some(n) = limit {
        if n < set.len() {
            set = colwgpu::VectorSet::from_blocks(Some(set.ids[..n].to_vec()), set.dim, &{
                let mut b = set.blocks();
                b.truncate(n);
                b
            })?;
        }
    }
    if set.is_empty() {
        bail!("{}: no vectors", vectors.display());
    }
    Ok(set)
}

fn build_index(a: IndexArgs) -> Result<()> {
    // The index replaces a directory: never one holding (or inside) an input.
    let inputs: Vec<&Path> = [
        &a.corpus,
        &a.vectors,
        &a.offsets,
        &a.ids,
        &a.model,
        &a.images,
        &a.pdf,
        &a.codec_from,
    ]
    .into_iter()
    .flatten()
    .map(PathBuf::as_path)
    .collect();
    colwgpu::io::output::check_not_input(&a.index, &inputs)?;
    let options = IndexOptions {
        nbits: a.nbits,
        num_centroids: a.centroids,
        kmeans_iters: a.kmeans_iters,
        wait_for_lock: a.wait,
        pool_factor: a.pool_factor,
        protected_tokens: a.protected_tokens,
        codec_from: a.codec_from.clone(),
        ..IndexOptions::default()
    };
    let model = match &a.model {
        Some(dir) => Some(a.device.open_model(dir, a.batch_size)?),
        None => None,
    };
    let start = Instant::now();
    let mut warnings: Vec<String> = Vec::new();
    let context = || format!("building index {}", a.index.display());
    let index = match (&a.corpus, &a.vectors) {
        (Some(corpus), _) => {
            let docs = read_texts(corpus, a.limit, false)?;
            let model = model.as_ref().context("--corpus needs --model")?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg:>22} [{bar:30}] {pos}/{len} ({eta})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            if a.json {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let (index, _) = model
                .index_with_progress(&docs, &a.index, &options, &mut |p: Progress| {
                    bar.set_message(match p.stage {
                        Stage::EncodeSample => "encoding k-means sample",
                        Stage::Kmeans => "k-means",
                        Stage::Compress => "encoding + compressing",
                        Stage::Write => "writing",
                    });
                    bar.set_length(p.total as u64);
                    bar.set_position(p.done as u64);
                })
                .with_context(context)?;
            bar.finish_and_clear();
            index
        }
        (None, Some(vectors)) => {
            let set = read_vector_args(vectors, a.offsets.as_deref(), a.ids.as_deref(), a.limit)?;
            Index::build_from_vectors(&a.index, &set, model.as_ref(), &options, a.device.choice()?)
                .with_context(context)?
        }
        (None, None) => {
            let source = a
                .images
                .as_deref()
                .or(a.pdf.as_deref())
                .context("give --corpus FILE, --images DIR or --pdf FILE|DIR (with --model), or --vectors FILE")?;
            let model = model.as_ref().context("--images / --pdf need --model")?;
            if !model.takes_images() {
                bail!("--images / --pdf need a page-image model (ColQwen2 or ColPali); this is a text model");
            }
            let (pages, skipped) = list_pages(source, a.limit, a.pages.skip_bad_pages)?;
            warnings.extend(skipped);
            let bar = page_bar(a.json);
            let page_options = api::PageOptions {
                dpi: a.pages.dpi,
                skip_bad_pages: a.pages.skip_bad_pages,
                batch_size: a.batch_size.min(8),
            };
            let (index, skipped) = model
                .index_pages(
                    &pages,
                    &a.index,
                    &options,
                    &page_options,
                    &mut |done, total| {
                        bar.set_length(total as u64);
                        bar.set_position(done as u64);
                    },
                )
                .with_context(context)?;
            bar.finish_and_clear();
            warnings.extend(skipped);
            index
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let m = index.metadata();
    let bytes: u64 = m.files.values().map(|f| f.bytes).sum();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "docs": m.num_docs, "vectors": m.num_vectors, "centroids": m.num_centroids,
                "nbits": m.nbits, "bytes_per_vector": m.bytes_per_vector, "index_bytes": bytes,
                "seconds": seconds, "device": m.settings.compute,
                "codec_mean_cosine": m.stats.codec_mean_cosine, "skipped": warnings,
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
            bytes as f64 / (1u64 << 20) as f64,
            seconds,
            model.as_ref().map(Model::describe).unwrap_or_else(|| m.settings.compute.clone()),
            m.stats.codec_mean_cosine,
            a.index.display()
        );
        print_warnings(&warnings);
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
    fn options(&self) -> SearchOptions {
        let mut p = colwgpu::api::PlaidParams::for_k(self.k);
        if let Some(n) = self.ncells {
            p.ncells = n;
        }
        if let Some(t) = self.centroid_score_threshold {
            p.centroid_score_threshold = t;
        }
        if let Some(n) = self.ndocs {
            p.ndocs = n;
        }
        SearchOptions {
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
    /// Model directory; default: the model the index was built with
    #[arg(long)]
    model: Option<PathBuf>,
    /// One query
    #[arg(long, conflicts_with_all = ["queries", "query_vectors"], required_unless_present_any = ["queries", "query_vectors"])]
    query: Option<String>,
    /// Queries: BEIR queries.jsonl or one per line
    #[arg(long, conflicts_with = "query_vectors")]
    queries: Option<PathBuf>,
    /// Precomputed query vectors (.safetensors from `colwgpu encode --queries`, or a
    /// [queries, len, dim] .npy); no model is loaded
    #[arg(long)]
    query_vectors: Option<PathBuf>,
    /// JSON lines output: {"query_id", "query", "results": [{"rank", "doc_id", "score"}]}
    #[arg(long)]
    json: bool,
    /// Why each result matched: per query token, the document token or patch giving its
    /// maximum and its contribution (from the results' exact vectors)
    #[arg(long, conflicts_with = "query_vectors")]
    explain: bool,
    /// With --explain on a page index: write heat maps (PNG, per query token and summed) here
    #[arg(long, requires = "explain")]
    explain_dir: Option<PathBuf>,
    /// With --explain on a text index: the corpus the index was built from, to show the
    /// matched tokens' text and character offsets
    #[arg(long, requires = "explain")]
    corpus: Option<PathBuf>,
    /// Metadata filter: an SQL condition on the metadata columns with ? placeholders
    /// (e.g. "year >= ? AND topic = ?")
    #[arg(long)]
    filter: Option<String>,
    /// A value bound to the filter's next ? (JSON: 2020, "biology", true); repeat in order
    #[arg(long = "param", requires = "filter")]
    params: Vec<String>,
    #[command(flatten)]
    knobs: SearchKnobs,
    #[command(flatten)]
    device: DeviceArgs,
}

/// A file-name-safe form of a document id.
fn safe_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `--explain`: explanations of `hits` for query `text`, printed (or returned
/// as JSON) and heat maps written to `dir`.
#[allow(clippy::too_many_arguments)]
fn explain_hits(
    index: &Index,
    model: &Model,
    query_id: &str,
    text: &str,
    hits: &[Hit],
    json: bool,
    dir: Option<&Path>,
    corpus: Option<&std::collections::HashMap<String, String>>,
) -> Result<Vec<serde_json::Value>> {
    let explanations = index.explain(model, text, hits)?;
    let mut out = Vec::with_capacity(explanations.len());
    for (rank, e) in explanations.iter().enumerate() {
        // Text documents: each matched vector's span in the document's text.
        let doc_text = corpus.and_then(|c| c.get(&e.id));
        let spans = match doc_text {
            Some(t) if !model.takes_images() => Some(model.document_token_spans(t)?),
            _ => None,
        };
        let span_of = |j: usize| -> Option<(usize, usize, String)> {
            let (a, b) = spans.as_ref()?.get(j).copied().flatten()?;
            let t: String = doc_text?.chars().skip(a).take(b - a).collect();
            Some((a, b, t))
        };
        let mut files = Vec::new();
        if let Some(dir) = dir {
            let prefix = format!("{}-{}-{}", safe_name(query_id), rank + 1, safe_name(&e.id));
            files = e
                .write_heat_maps(dir, &prefix)
                .with_context(|| format!("writing heat maps of {} into {}", e.id, dir.display()))?;
        }
        if json {
            let mut v = serde_json::to_value(e)?;
            v["heat_maps"] = serde_json::json!(files);
            if spans.is_some() {
                if let Some(ms) = v["matches"].as_array_mut() {
                    for m in ms.iter_mut() {
                        let j = m["doc_token"].as_u64().unwrap_or(0) as usize;
                        if let Some((a, b, t)) = span_of(j) {
                            m["start"] = serde_json::json!(a);
                            m["end"] = serde_json::json!(b);
                            m["text"] = serde_json::json!(t);
                        }
                    }
                }
            }
            out.push(v);
        } else {
            println!("  why {} ({:.4}):", e.id, e.score);
            for m in &e.matches {
                match m.patch {
                    Some((r, c)) => println!(
                        "    query token {:>3} → patch row {r} col {c} (vector {}): {:.4}",
                        m.query_token, m.doc_token, m.score
                    ),
                    None => match span_of(m.doc_token) {
                        Some((a, b, t)) => println!(
                            "    query token {:>3} → {t:?} (chars {a}..{b}, vector {}): {:.4}",
                            m.query_token, m.doc_token, m.score
                        ),
                        None => println!(
                            "    query token {:>3} → document vector {}: {:.4}",
                            m.query_token, m.doc_token, m.score
                        ),
                    },
                }
            }
            for f in &files {
                println!("    heat map: {}", f.display());
            }
        }
    }
    Ok(out)
}

impl SearchArgs {
    fn filter(&self) -> Result<Option<colwgpu::Filter>> {
        let Some(cond) = &self.filter else {
            return Ok(None);
        };
        let params = self
            .params
            .iter()
            .map(|p| {
                // A bare word is a string; anything else must be JSON.
                serde_json::from_str(p).or_else(|_| Ok(serde_json::Value::String(p.clone())))
            })
            .collect::<Result<Vec<serde_json::Value>>>()?;
        Ok(Some(colwgpu::Filter::new(cond.clone(), params)))
    }
}

#[derive(clap::Args)]
struct EvalArgs {
    #[arg(long)]
    index: PathBuf,
    /// Model directory; default: the model the index was built with
    #[arg(long)]
    model: Option<PathBuf>,
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

/// The index at `path` and the model to search it with: `model` if given,
/// else the one the index records (refused if it is another model).
fn open_for_search(
    path: &Path,
    model: Option<&Path>,
    device: &DeviceArgs,
    batch_size: usize,
) -> Result<(Index, Model)> {
    let index = Index::open(path).with_context(|| format!("opening index {}", path.display()))?;
    let dir = match model {
        Some(d) => d.to_path_buf(),
        None => index
            .model_dir()
            .map(Path::to_path_buf)
            .with_context(|| {
                format!(
                    "index {} does not record its model (built from vectors of an unknown model): give --model",
                    path.display()
                )
            })?,
    };
    let model = device.open_model(&dir, batch_size)?;
    index.check_model(&model).with_context(|| {
        format!(
            "index {} was built with another model than {}",
            path.display(),
            dir.display()
        )
    })?;
    Ok((index, model))
}

/// Encodes and searches `texts` in batches; returns the hits per text and the
/// seconds spent encoding and searching.
fn run_queries(
    index: &Index,
    model: &Model,
    texts: &[&str],
    knobs: &SearchKnobs,
    progress: &indicatif::ProgressBar,
) -> Result<(Vec<Vec<Hit>>, f64, f64)> {
    let options = knobs.options();
    options.validate(index.num_docs())?;
    let (mut encode_s, mut search_s) = (0.0, 0.0);
    let mut hits = Vec::with_capacity(texts.len());
    for batch in texts.chunks(knobs.batch_size.max(1)) {
        let t = Instant::now();
        let encoded = model.encode_queries(batch)?;
        encode_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        hits.extend(index.search_encoded(model, &encoded, &options)?);
        search_s += t.elapsed().as_secs_f64();
        progress.inc(batch.len() as u64);
    }
    Ok((hits, encode_s, search_s))
}

fn print_hits(json: bool, single: bool, id: &str, text: Option<&str>, hits: &[Hit]) {
    if json {
        let results: Vec<_> = hits
            .iter()
            .enumerate()
            .map(|(i, x)| serde_json::json!({"rank": i + 1, "doc_id": x.id, "score": x.score}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"query_id": id, "query": text, "results": results})
        );
    } else {
        match (single, text) {
            (true, Some(t)) => println!("query: {t}"),
            (_, Some(t)) => println!("query {id}: {t}"),
            (_, None) => println!("query {id}"),
        }
        for (i, x) in hits.iter().enumerate() {
            println!("{:>4}  {:>9.4}  {}", i + 1, x.score, x.id);
        }
    }
}

fn search(a: SearchArgs) -> Result<()> {
    if let Some(path) = &a.query_vectors {
        let index = Index::open_on(&a.index, a.device.choice()?, &a.device.gpu())
            .with_context(|| format!("opening index {}", a.index.display()))?;
        let set = read_vector_args(path, None, None, None)?;
        let blocks: Vec<&[f32]> = (0..set.len()).map(|i| set.get(i)).collect();
        let t = Instant::now();
        let hits = match a.filter()? {
            Some(f) => index.search_vectors_filtered(&blocks, &a.knobs.options(), &f)?,
            None => index.search_vectors(&blocks, &a.knobs.options())?,
        };
        let search_s = t.elapsed().as_secs_f64();
        for (id, h) in set.ids.iter().zip(&hits) {
            print_hits(a.json, false, id, None, h);
        }
        if !a.json {
            eprintln!(
                "{} query vector sets: search {search_s:.3} s on {}",
                set.len(),
                index.describe_device()
            );
        }
        return Ok(());
    }
    let records = match (&a.query, &a.queries) {
        (Some(q), _) => {
            colwgpu::io::check_query_text(q, "--query")?;
            vec![Document::new("query", q.clone())]
        }
        (None, Some(path)) => read_texts(path, None, true)?,
        (None, None) => bail!("give --query TEXT, --queries FILE or --query-vectors FILE"),
    };
    let (index, model) =
        open_for_search(&a.index, a.model.as_deref(), &a.device, a.knobs.batch_size)?;
    let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
    let bar = indicatif::ProgressBar::hidden();
    let (hits, encode_s, search_s) = match a.filter()? {
        Some(f) => {
            let t = Instant::now();
            let hits = index.search_filtered(&model, &texts, &a.knobs.options(), &f)?;
            (hits, 0.0, t.elapsed().as_secs_f64())
        }
        None => run_queries(&index, &model, &texts, &a.knobs, &bar)?,
    };
    let corpus: Option<std::collections::HashMap<String, String>> = match &a.corpus {
        Some(path) => Some(
            read_texts(path, None, false)?
                .into_iter()
                .map(|d| (d.id, d.text))
                .collect(),
        ),
        None => None,
    };
    for (r, h) in records.iter().zip(&hits) {
        if a.explain && a.json {
            let why = explain_hits(
                &index,
                &model,
                &r.id,
                &r.text,
                h,
                true,
                a.explain_dir.as_deref(),
                corpus.as_ref(),
            )?;
            let results: Vec<_> = h
                .iter()
                .zip(why)
                .enumerate()
                .map(|(i, (x, w))| {
                    serde_json::json!({"rank": i + 1, "doc_id": x.id, "score": x.score, "explain": w})
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"query_id": r.id, "query": r.text, "results": results})
            );
            continue;
        }
        print_hits(a.json, a.query.is_some(), &r.id, Some(&r.text), h);
        if a.explain {
            explain_hits(
                &index,
                &model,
                &r.id,
                &r.text,
                h,
                false,
                a.explain_dir.as_deref(),
                corpus.as_ref(),
            )?;
        }
    }
    if !a.json {
        eprintln!(
            "{} queries: encode {:.3} s, search {:.3} s ({:.1} queries/s search) on {}",
            records.len(),
            encode_s,
            search_s,
            records.len() as f64 / search_s.max(1e-9),
            index.describe_device()
        );
    }
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let mut inputs: Vec<&Path> = vec![&a.queries, &a.qrels, &a.index];
    inputs.extend(a.model.as_deref());
    if let Some(run) = &a.run {
        colwgpu::io::output::check_file_target(run, &inputs)?;
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
    let (index, model) =
        open_for_search(&a.index, a.model.as_deref(), &a.device, a.knobs.batch_size)?;
    model.warm_up()?;
    let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
    let bar = indicatif::ProgressBar::new(texts.len() as u64);
    if a.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (hits, encode_s, search_s) = run_queries(&index, &model, &texts, &a.knobs, &bar)?;
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
        colwgpu::io::output::write_file(path, &inputs, out.as_bytes())
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
                "end_to_end_qps": qps_total, "device": index.describe_device(),
                "exhaustive": a.knobs.exhaustive,
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
            index.describe_device()
        );
    }
    Ok(())
}
