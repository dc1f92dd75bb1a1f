//! Full-size ColPali (PaliGemma-3B-448: SigLIP so400m/14 + Gemma-2B, 128-d head)
//! with seeded random weights built in memory (nothing downloaded or committed):
//! seconds per page and per query and peak memory on the CPU backend, then what
//! runs on the `gpu` backend (lavapipe here): `COLPALI_BENCH_GPU_VISION_LAYERS`
//! SigLIP layers (default all 27), the projector and `COLPALI_BENCH_GPU_LAYERS`
//! Gemma layers (default 2) at full width, for one page and one query
//! (`COLPALI_BENCH_SKIP_CPU=1` skips the CPU part). Not a CI
//! test (`cargo bench --no-run` only builds it); run with
//!
//! ```sh
//! cargo bench --bench colpali_full            # CPU, then the gpu backend
//! COLPALI_BENCH_GPU_LAYERS=0 cargo bench --bench colpali_full   # CPU only
//! ```
//!
//! Shapes: vision 27 layers of 1152, 16 heads of 72, MLP 4304, 448 × 448 in 14-px
//! patches → 1024 image tokens, projector 1152 → 2048; text 18 layers of 2048, 8
//! query heads and 1 key/value head of 256, GeGLU 16384, vocabulary 257,216; head
//! 2048 → 128. Token ids come from the tiny fixture tokenizer (the Gemma vocabulary
//! cannot be downloaded; the cost is the same). f32 weights: 11.7 GB, the embedding
//! table (2.1 GB) on the host.

use std::path::{Path, PathBuf};
use std::time::Instant;

use colwgpu::backend::cpu::CpuBackend;
use colwgpu::backend::gpu::GpuBackend;
use colwgpu::backend::HostMatrix;
use colwgpu::gpu::{GpuContext, GpuOptions};
use colwgpu::model::colpali::{ColPaliCheckpoint, ColPaliEncoder, SiglipImageConfig};
use colwgpu::model::paligemma::{
    GemmaConfig, GemmaLayer, PaliGemmaConfig, PaliGemmaWeights, SiglipConfig, SiglipLayer,
};
use colwgpu::vision::load_rgb;
use rayon::prelude::*;

/// Uniform values of standard deviation `std`, from a per-matrix seed (splitmix64).
fn random(rows: usize, cols: usize, std: f32, seed: u64) -> HostMatrix {
    let half_width = std * 3f32.sqrt();
    let mut data = vec![0.0f32; rows * cols];
    data.par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (c as u64) << 20;
            for v in chunk {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                *v = ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * half_width;
            }
        });
    HostMatrix::new(rows, cols, data).expect("shape")
}

fn ones(n: usize) -> HostMatrix {
    HostMatrix::vector(vec![1.0; n])
}

fn zeros(n: usize) -> HostMatrix {
    HostMatrix::vector(vec![0.0; n])
}

fn peak_rss_gib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / (1024.0 * 1024.0))
        .unwrap_or(f64::NAN)
}

const QUERY: &str = "Based on the graph, what is the impact of correcting for fspec not equal to 1 on the surface density trend?";

/// A full-width ColPali with `vision_layers` SigLIP and `text_layers` Gemma
/// layers (27 and 18 for the real model).
fn checkpoint(fixture: &Path, vision_layers: usize, text_layers: usize) -> ColPaliCheckpoint {
    let vision = SiglipConfig {
        hidden_size: 1152,
        intermediate_size: 4304,
        num_hidden_layers: vision_layers,
        num_attention_heads: 16,
        image_size: 448,
        patch_size: 14,
        num_channels: 3,
        layer_norm_eps: 1e-6,
    };
    let text = GemmaConfig {
        vocab_size: 257_216,
        hidden_size: 2048,
        intermediate_size: 16_384,
        num_hidden_layers: text_layers,
        num_attention_heads: 8,
        num_key_value_heads: 1,
        head_dim: 256,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
    };
    let tiny = ColPaliCheckpoint::load(fixture).expect("fixture model");
    let mut seed = 1u64;
    let mut rnd = |rows: usize, cols: usize| {
        seed += 1;
        random(rows, cols, 1.0 / (cols as f32).sqrt(), seed)
    };
    let (e, f, h, ff) = (1152, 4304, 2048, 16_384);
    let vision_layers = (0..vision.num_hidden_layers)
        .map(|_| SiglipLayer {
            ln1_g: ones(e),
            ln1_b: zeros(e),
            qkv_w: rnd(3 * e, e),
            qkv_b: zeros(3 * e),
            out_w: rnd(e, e),
            out_b: zeros(e),
            ln2_g: ones(e),
            ln2_b: zeros(e),
            fc1_w: rnd(f, e),
            fc1_b: zeros(f),
            fc2_w: rnd(e, f),
            fc2_b: zeros(e),
        })
        .collect();
    let layers = (0..text_layers)
        .map(|_| GemmaLayer {
            input_norm: ones(h),
            qkv_w: rnd((8 + 2) * 256, h),
            o_w: rnd(h, 8 * 256),
            post_norm: ones(h),
            gate_w: rnd(ff, h),
            up_w: rnd(ff, h),
            down_w: rnd(h, ff),
        })
        .collect();
    let weights = PaliGemmaWeights {
        patch_w: rnd(e, 3 * 14 * 14),
        patch_b: zeros(e),
        position: rnd(1024, e),
        vision_layers,
        post_ln_g: ones(e),
        post_ln_b: zeros(e),
        proj_w: rnd(h, e),
        proj_b: zeros(h),
        layers,
        final_norm: ones(h),
    };
    ColPaliCheckpoint {
        dir: fixture.to_path_buf(),
        config: PaliGemmaConfig {
            vision,
            text,
            projection_dim: h,
            // The tiny tokenizer's <image>.
            image_token_id: tiny.config.image_token_id,
        },
        image: SiglipImageConfig::default(),
        tokenizer: tiny.tokenizer,
        embed_tokens: rnd(257_216, h),
        weights,
        proj_w: rnd(128, h),
        proj_b: zeros(128),
        transformers_layout: false,
        adapter: None,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixture = root.join("tests/fixtures/colpali/model");
    let image_path = std::env::var("COLPALI_BENCH_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("tests/fixtures/colqwen2/images/0.png"));
    let img = load_rgb(&image_path).expect("image");
    let env = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let gpu_layers = env("COLPALI_BENCH_GPU_LAYERS", 2);
    let gpu_vision_layers = env("COLPALI_BENCH_GPU_VISION_LAYERS", 27);
    if std::env::var("COLPALI_BENCH_SKIP_CPU").is_err() {
        let start = Instant::now();
        let ckpt = checkpoint(&fixture, 27, 18);
        let built = start.elapsed().as_secs_f64();
        let mut enc = ColPaliEncoder::new(ckpt, CpuBackend::new()).expect("encoder");
        println!(
            "colpali full size (cpu): weights built in {built:.1} s, peak RSS {:.1} GiB; page {}×{} → 448×448, 1024 image tokens",
            peak_rss_gib(),
            img.width,
            img.height
        );
        for run in 0..2 {
            let t = Instant::now();
            let v = enc.encode_images(std::slice::from_ref(&img)).expect("page");
            let page = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let q = enc.encode_queries(&[QUERY]).expect("query");
            let query = t.elapsed().as_secs_f64();
            println!(
                "run {run}: page {page:.1} s ({} vectors), query {query:.2} s ({} vectors), peak RSS {:.1} GiB ({})",
                v[0].len(),
                q[0].len(),
                peak_rss_gib(),
                enc.describe_backend()
            );
        }
    }
    if gpu_layers == 0 {
        return;
    }
    // The gpu backend: every weight must fit one storage binding (128 MiB on
    // lavapipe: Gemma's gate and up weights are 128 MiB each, hence unfused).
    let ctx = match GpuContext::new(&GpuOptions::default()) {
        Ok(c) => std::sync::Arc::new(c),
        Err(e) => {
            println!("gpu backend: no adapter ({e})");
            return;
        }
    };
    let start = Instant::now();
    let ckpt = checkpoint(&fixture, gpu_vision_layers, gpu_layers);
    let mut enc = ColPaliEncoder::new(ckpt, GpuBackend::new(ctx)).expect("gpu encoder");
    println!(
        "colpali on the gpu backend: {gpu_vision_layers} of SigLIP's 27 layers + projector + {gpu_layers} of Gemma's 18 layers, uploaded in {:.1} s; {}",
        start.elapsed().as_secs_f64(),
        enc.describe_backend()
    );
    for run in 0..2 {
        let t = Instant::now();
        let v = enc.encode_images(std::slice::from_ref(&img)).expect("page");
        let page = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let q = enc.encode_queries(&[QUERY]).expect("query");
        let query = t.elapsed().as_secs_f64();
        println!(
            "gpu run {run}: page {page:.1} s ({} vectors), query {query:.2} s ({} vectors), peak RSS {:.1} GiB",
            v[0].len(),
            q[0].len(),
            peak_rss_gib()
        );
    }
}
