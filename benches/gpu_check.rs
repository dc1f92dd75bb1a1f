//! The WGSL path's throughput on the adapter wgpu picks, in one bounded run
//! that prints one Markdown table (what `scripts/gpu-check.sh` carries to a
//! machine with a GPU; `cargo bench --bench gpu_check` runs it here):
//!
//! * the adapter (name, backend, driver) and its limits;
//! * matmul GFLOP/s at BERT shapes (`rows × in → out`, FLOP = 2·rows·in·out),
//!   the four linears of a MiniLM layer, weights and input resident;
//! * encode tokens/s, documents and queries, on the GPU and on the native CPU
//!   backend for the same texts (and the smallest token-vector cosine between
//!   the two), with the real model; and on the GPU with `--precision f16`
//!   (f16 linear weights) where the adapter has SHADER_F16: tokens/s, the
//!   smallest token cosine against the f32 GPU vectors, and the GPU weight
//!   bytes at f32 and f16;
//! * MaxSim documents/s (one 32-token query, and 32 queries at once, against
//!   resident documents of 180 vectors);
//! * residual decompression vectors/s (2 bits, 4,096 centroids, resident);
//! * PLAID queries/s over an index built on the GPU from SciFact documents:
//!   query encoding and search apart and end to end (and nDCG@10 when the
//!   whole corpus is indexed and qrels are given).
//!
//! Every step is bounded: sizes come from the environment, with small
//! defaults on a software adapter (lavapipe) and larger ones on a real GPU,
//! and each timed loop stops after `COLWGPU_CHECK_SECONDS` (default 2) or 50
//! iterations. Environment: `COLWGPU_CHECK_MODEL` (model directory; encode and
//! PLAID rows need it), `COLWGPU_CHECK_DATA` (a BEIR directory: corpus.jsonl,
//! queries.jsonl, optional qrels/test.tsv), `COLWGPU_CHECK_DOCS` /
//! `_QUERIES` (encode), `_PLAID_DOCS` / `_PLAID_QUERIES`, `_ROWS` (matmul rows),
//! `_MAXSIM_DOCS`, `_DECOMPRESS` (vectors). A failed step prints its error and
//! makes the exit status non-zero; the other steps still run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use colwgpu::backend::gpu::GpuBackend;
use colwgpu::backend::{Activation, Backend, Compute, HostMatrix};
use colwgpu::gpu::{GpuContext, GpuOptions};
use colwgpu::index::ResidualCodec;
use colwgpu::kernels;
use colwgpu::{Device, Document, IndexOptions, Model, ModelOptions, Precision, SearchOptions};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const DIM: usize = 128;
const QLEN: usize = 32;
const DOCLEN: usize = 180;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(format!("COLWGPU_CHECK_{name}"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

struct Config {
    model: Option<PathBuf>,
    data: Option<PathBuf>,
    docs: usize,
    queries: usize,
    plaid_docs: usize,
    plaid_queries: usize,
    rows: usize,
    maxsim_docs: usize,
    decompress: usize,
    budget: Duration,
}

impl Config {
    fn new(software: bool) -> Self {
        // (software adapter, real GPU)
        let pick = |s: usize, g: usize| if software { s } else { g };
        Self {
            model: std::env::var_os("COLWGPU_CHECK_MODEL").map(PathBuf::from),
            data: std::env::var_os("COLWGPU_CHECK_DATA").map(PathBuf::from),
            docs: env_usize("DOCS", pick(8, 2000)),
            queries: env_usize("QUERIES", pick(16, 1109)),
            plaid_docs: env_usize("PLAID_DOCS", pick(24, usize::MAX)),
            plaid_queries: env_usize("PLAID_QUERIES", pick(8, usize::MAX)),
            rows: env_usize("ROWS", pick(512, 32 * 184)),
            maxsim_docs: env_usize("MAXSIM_DOCS", pick(500, 20_000)),
            decompress: env_usize("DECOMPRESS", pick(20_000, 500_000)),
            budget: Duration::from_secs_f64(
                std::env::var("COLWGPU_CHECK_SECONDS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(2.0),
            ),
        }
    }
}

/// Median seconds per call of `f` after one untimed call, over at most 50
/// calls or `budget` (at least 3 calls).
fn time(budget: Duration, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    f()?;
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 50 && (times.len() < 3 || start.elapsed() < budget) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Deterministic values in [-0.5, 0.5).
struct Gen(u64);
impl Gen {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
    fn matrix(&mut self, rows: usize, cols: usize) -> Res<HostMatrix> {
        let data = (0..rows * cols).map(|_| self.next()).collect();
        Ok(HostMatrix::new(rows, cols, data)?)
    }
    fn unit_vectors(&mut self, n: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n * DIM).map(|_| self.next()).collect();
        for row in v.chunks_mut(DIM) {
            let s = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= s);
        }
        v
    }
}

fn si(x: f64) -> String {
    if x >= 1e12 {
        format!("{:.2} T", x / 1e12)
    } else if x >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.2} k", x / 1e3)
    } else {
        format!("{x:.1} ")
    }
}

struct Table(Vec<(String, String)>);
impl Table {
    fn row(&mut self, what: impl Into<String>, value: impl Into<String>) {
        let (what, value) = (what.into(), value.into());
        eprintln!("  {what}: {value}");
        self.0.push((what, value));
    }
}

fn matmul(ctx: &Arc<GpuContext>, cfg: &Config, t: &mut Table) -> Res<()> {
    let m = cfg.rows;
    let mut g = Gen(1);
    let mut backends = vec![("", GpuBackend::new(ctx.clone()))];
    if ctx.supports_f16() {
        backends.push((
            ", f16 weights",
            GpuBackend::with_precision(ctx.clone(), Precision::F16)?,
        ));
    }
    for &(n, k, act) in &[
        (1152usize, 384usize, Activation::Identity),
        (384, 384, Activation::Identity),
        (1536, 384, Activation::Gelu),
        (384, 1536, Activation::Identity),
    ] {
        let (xm, wm) = (g.matrix(m, k)?, g.matrix(n, k)?);
        for (what, gpu) in backends.iter_mut() {
            let x = gpu.upload(&xm)?;
            let w = gpu.linear_weight("w", &wm)?;
            let b = gpu.weight("b", &HostMatrix::vector(vec![0.1; n]))?;
            let s = time(cfg.budget, || {
                let y = gpu.linear(&x, &w, Some(&b), act)?;
                gpu.flush()?;
                drop(y);
                Ok(())
            })?;
            let gelu = if act == Activation::Gelu {
                " + GELU"
            } else {
                ""
            };
            t.row(
                format!("matmul {m} × {k} → {n}{gelu}{what}"),
                format!("{}FLOP/s", si((2 * m * n * k) as f64 / s)),
            );
        }
    }
    Ok(())
}

fn read_texts(cfg: &Config, file: &str, limit: usize) -> Res<Vec<Document>> {
    let dir = cfg.data.as_ref().ok_or("COLWGPU_CHECK_DATA is not set")?;
    let path = dir.join(file);
    let mut docs = if file.starts_with("queries") {
        colwgpu::io::read_queries(&path)?
    } else {
        colwgpu::io::read_records(&path)?
    };
    docs.truncate(limit);
    Ok(docs)
}

fn open_model(cfg: &Config, device: Device, precision: Precision) -> Res<Model> {
    let dir = cfg.model.as_ref().ok_or("COLWGPU_CHECK_MODEL is not set")?;
    let model = Model::open_with(
        dir,
        &ModelOptions {
            device,
            precision,
            ..ModelOptions::default()
        },
    )?;
    model.warm_up()?;
    Ok(model)
}

/// Smallest cosine between corresponding token vectors of two encodings.
fn min_cosine(a: &[colwgpu::TokenVectors], b: &[colwgpu::TokenVectors], dim: usize) -> Res<f64> {
    let mut worst = 1.0f64;
    for (a, b) in a.iter().zip(b) {
        if a.vectors.len() != b.vectors.len() {
            return Err("the two encodings gave different vector counts".into());
        }
        for (x, y) in a.vectors.chunks(dim).zip(b.vectors.chunks(dim)) {
            let dot: f64 = x
                .iter()
                .zip(y)
                .map(|(p, q)| (*p as f64) * (*q as f64))
                .sum();
            let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            worst = worst.min(dot / (nx * ny).max(1e-30));
        }
    }
    Ok(worst)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn encode(
    cfg: &Config,
    gpu: &Model,
    cpu: &Model,
    gpu_f16: Option<&Model>,
    t: &mut Table,
) -> Res<()> {
    if let (Some((all32, lin32)), Some((all16, lin16))) = (
        gpu.gpu_weight_bytes(),
        gpu_f16.and_then(|m| m.gpu_weight_bytes()),
    ) {
        t.row(
            "GPU weight memory, f32 / --precision f16 (linear weights)",
            format!(
                "{} ({}) / {} ({})",
                mib(all32),
                mib(lin32),
                mib(all16),
                mib(lin16)
            ),
        );
    }
    for (kind, file, n) in [
        ("documents", "corpus.jsonl", cfg.docs),
        ("queries", "queries.jsonl", cfg.queries),
    ] {
        let docs = read_texts(cfg, file, n)?;
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        let queries = kind == "queries";
        let tokens = gpu.count_tokens(&texts, queries)?.tokens as f64;
        let run = |m: &Model| -> Res<(f64, Vec<colwgpu::TokenVectors>)> {
            let start = Instant::now();
            let v = if queries {
                m.encode_queries(&texts)?
            } else {
                m.encode_documents(&texts)?
            };
            Ok((start.elapsed().as_secs_f64(), v))
        };
        let (sg, vg) = run(gpu)?;
        let (sc, vc) = run(cpu)?;
        let worst =
            min_cosine(&vg, &vc, gpu.dim()).map_err(|e| format!("{kind}: GPU vs CPU: {e}"))?;
        let what = format!("encode {kind} ({} texts, {} tokens)", texts.len(), tokens);
        t.row(
            format!("{what}, GPU"),
            format!("{}tokens/s", si(tokens / sg)),
        );
        t.row(
            format!("{what}, {}", cpu.describe()),
            format!("{}tokens/s", si(tokens / sc)),
        );
        t.row(
            format!("encode {kind}: GPU / CPU; min token cosine GPU vs CPU"),
            format!("{:.2}×; {worst:.6}", sc / sg),
        );
        if let Some(m16) = gpu_f16 {
            let (s16, v16) = run(m16)?;
            let worst =
                min_cosine(&v16, &vg, gpu.dim()).map_err(|e| format!("{kind}: f16 vs f32: {e}"))?;
            t.row(
                format!("{what}, GPU --precision f16"),
                format!("{}tokens/s", si(tokens / s16)),
            );
            t.row(
                // A checkpoint already in f16 (the gpu-check bundle's) loses
                // nothing more to f16 storage: the cosine then shows the
                // kernels' f32 arithmetic only.
                format!("encode {kind}: GPU f16 / GPU f32; min token cosine f16 vs f32 (same checkpoint)"),
                format!("{:.2}×; {worst:.8}", sg / s16),
            );
        }
    }
    Ok(())
}

fn maxsim(ctx: &Arc<GpuContext>, cfg: &Config, t: &mut Table) -> Res<()> {
    let per_doc = (DOCLEN * DIM * 4) as u64;
    let n = cfg
        .maxsim_docs
        .min((ctx.max_binding_bytes() / per_doc) as usize)
        .max(1);
    let mut g = Gen(42);
    let docs = g.unit_vectors(n * DOCLEN);
    let queries = g.unit_vectors(32 * QLEN);
    let offsets: Vec<u32> = (0..=n as u32).map(|d| d * DOCLEN as u32).collect();
    let d_buf = ctx.upload("docs", &docs)?;
    drop(docs);
    let o_buf = ctx.upload("offsets", &offsets)?;
    for nq in [1usize, 32] {
        let q_buf = ctx.upload("queries", &queries[..nq * QLEN * DIM])?;
        let scores = ctx.pool().get((n * nq * 4) as u64);
        let shape = kernels::maxsim::AllPairs {
            num_queries: nq,
            qlen: QLEN,
            dim: DIM,
            num_docs: n,
            out_stride: n,
            out_offset: 0,
        };
        let s = time(cfg.budget, || {
            let mut enc = ctx.encoder("check maxsim");
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
            )?;
            ctx.submit_and_wait(enc)?;
            Ok(())
        })?;
        t.row(
            format!("MaxSim, {nq} × {QLEN}-token queries vs {n} docs of {DOCLEN} (resident)"),
            format!("{}docs·queries/s", si((n * nq) as f64 / s)),
        );
    }
    Ok(())
}

fn decompress(ctx: &Arc<GpuContext>, cfg: &Config, t: &mut Table) -> Res<()> {
    let n = cfg.decompress.max(1);
    let mut g = Gen(3);
    let centroids = g.unit_vectors(4096);
    let sample = g.unit_vectors(4096);
    let codec = ResidualCodec::train(&Compute::Cpu, centroids, DIM, 2, &sample)?;
    let x = g.unit_vectors(n);
    let gc = codec.upload(ctx)?;
    let comp = gc.compress(&x)?;
    drop(x);
    let codes = ctx.upload("codes", &comp.codes)?;
    let packed = ctx.upload("packed", &comp.packed)?;
    let out = ctx.pool().get((n * DIM * 4) as u64);
    let s = time(cfg.budget, || {
        let mut enc = ctx.encoder("check decompress");
        gc.record_decompress(&mut enc, &codes, &packed, out.buffer(), n)?;
        ctx.submit_and_wait(enc)?;
        Ok(())
    })?;
    t.row(
        format!("decompress {n} vectors, 2 bits, 4096 centroids (resident)"),
        format!("{}vectors/s", si(n as f64 / s)),
    );
    Ok(())
}

fn plaid(cfg: &Config, model: &Model, t: &mut Table) -> Res<()> {
    let docs = read_texts(cfg, "corpus.jsonl", usize::MAX)?;
    let whole = cfg.plaid_docs >= docs.len();
    let docs = &docs[..cfg.plaid_docs.min(docs.len())];
    let mut queries = read_texts(cfg, "queries.jsonl", usize::MAX)?;
    let qrels = match cfg.data.as_ref().map(|d| d.join("qrels/test.tsv")) {
        Some(p) if p.is_file() => Some(colwgpu::eval::read_qrels(&p)?),
        _ => None,
    };
    if let Some(q) = &qrels {
        queries.retain(|r| q.contains_key(&r.id));
    }
    queries.truncate(cfg.plaid_queries);
    let tmp = std::env::temp_dir().join(format!("colwgpu-gpu-check-{}", std::process::id()));
    let start = Instant::now();
    let index = model.index(docs, tmp.join("index"), &IndexOptions::default());
    let build = start.elapsed().as_secs_f64();
    let result = index.map_err(Into::into).and_then(|index| -> Res<()> {
        t.row(
            format!(
                "index build on the GPU, {} SciFact docs (encode + k-means + compress)",
                docs.len()
            ),
            format!("{build:.1} s"),
        );
        let texts: Vec<&str> = queries.iter().map(|q| q.text.as_str()).collect();
        let opts = SearchOptions::new(10);
        // Untimed pass: shaders compiled, index lists resident.
        index.search_batch(model, &texts[..texts.len().min(4)], &opts)?;
        let t0 = Instant::now();
        let encoded = model.encode_queries(&texts)?;
        let t1 = Instant::now();
        let hits = index.search_encoded(model, &encoded, &opts)?;
        let t2 = Instant::now();
        let nq = texts.len() as f64;
        let (enc, search) = ((t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64());
        let what = format!(
            "PLAID k = 10, {} queries over {} docs",
            texts.len(),
            docs.len()
        );
        t.row(
            format!("{what}: search only"),
            format!("{}queries/s", si(nq / search)),
        );
        t.row(
            format!("{what}: encode + search"),
            format!("{}queries/s", si(nq / (enc + search))),
        );
        if let (true, Some(q)) = (whole, &qrels) {
            let runs: HashMap<String, Vec<String>> = queries
                .iter()
                .zip(&hits)
                .map(|(r, h)| (r.id.clone(), h.iter().map(|x| x.id.clone()).collect()))
                .collect();
            let (m, n) = colwgpu::eval::evaluate(&runs, q);
            t.row(
                format!("PLAID nDCG@10 on the GPU-built index ({n} judged queries)"),
                format!("{:.4}", m.ndcg_at_10),
            );
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn main() {
    let ctx = match GpuContext::new(&GpuOptions::default()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("gpu_check: no GPU adapter: {e}");
            std::process::exit(1);
        }
    };
    // What `colwgpu info` prints: every adapter wgpu sees, the one chosen, its limits.
    match colwgpu::api::describe_devices(Device::Gpu, &GpuOptions::default()) {
        Ok(lines) => lines.iter().for_each(|l| eprintln!("{l}")),
        Err(e) => eprintln!("gpu_check: listing adapters failed: {e}"),
    }
    let cfg = Config::new(ctx.is_software());
    let mut t = Table(Vec::new());
    t.row("adapter", ctx.describe());
    let l = &ctx.limits;
    t.row(
        "limits",
        format!(
            "storage binding {} MiB, buffer {} MiB, workgroups/dim {}, workgroup storage {} KiB, invocations/workgroup {}",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_compute_workgroups_per_dimension,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup
        ),
    );
    let mut failed = Vec::new();
    let mut step = |name: &str, r: Res<()>| {
        if let Err(e) = r {
            eprintln!("gpu_check: {name} failed: {e}");
            failed.push(name.to_string());
        }
    };
    let start = Instant::now();
    eprintln!("matmul ({} rows)", cfg.rows);
    step("matmul", matmul(&ctx, &cfg, &mut t));
    eprintln!("MaxSim ({} docs)", cfg.maxsim_docs);
    step("maxsim", maxsim(&ctx, &cfg, &mut t));
    eprintln!("decompress ({} vectors)", cfg.decompress);
    step("decompress", decompress(&ctx, &cfg, &mut t));
    if cfg.model.is_some() && cfg.data.is_some() {
        match open_model(&cfg, Device::Gpu, Precision::F32)
            .and_then(|g| Ok((g, open_model(&cfg, Device::Cpu, Precision::F32)?)))
        {
            Ok((gpu, cpu)) => {
                let gpu_f16 = if ctx.supports_f16() {
                    match open_model(&cfg, Device::Gpu, Precision::F16) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            step("open f16 model", Err(e));
                            None
                        }
                    }
                } else {
                    t.row(
                        "--precision f16",
                        "not available: the adapter lacks SHADER_F16",
                    );
                    None
                };
                eprintln!("encode ({} docs, {} queries)", cfg.docs, cfg.queries);
                step("encode", encode(&cfg, &gpu, &cpu, gpu_f16.as_ref(), &mut t));
                drop(cpu);
                drop(gpu_f16);
                eprintln!("PLAID");
                step("plaid", plaid(&cfg, &gpu, &mut t));
            }
            Err(e) => step("model", Err(e)),
        }
    } else {
        eprintln!(
            "gpu_check: COLWGPU_CHECK_MODEL / COLWGPU_CHECK_DATA not set: encode and PLAID skipped"
        );
    }
    t.row(
        "gpu_check wall time",
        format!("{:.1} s", start.elapsed().as_secs_f64()),
    );
    println!("| measure | value |");
    println!("|---|---|");
    for (what, value) in &t.0 {
        println!("| {what} | {value} |");
    }
    if !failed.is_empty() {
        eprintln!("gpu_check: failed steps: {}", failed.join(", "));
        std::process::exit(1);
    }
}
