//! Full-size ColQwen2 (Qwen2-VL-2B + 128-d head) with seeded random weights built
//! in memory (nothing downloaded or committed): seconds per page and per query
//! and peak memory on the CPU backend. Not a CI test (`cargo bench --no-run`
//! only builds it); run with
//!
//! ```sh
//! COLQWEN2_BENCH_IMAGE=path/to/page.png cargo bench --bench colqwen2_full
//! ```
//!
//! (default page: the committed, downscaled fixture page 0; the figures in the
//! issue notes used the full-resolution page 0 of the ViDoRe arxivqa set.)
//!
//! Shapes are those of `vidore/colqwen2-base` (vision: 32 blocks of 1280, 16
//! heads, MLP 5120, merger 5120 → 1536; text: 28 layers of 1536, 12/2 heads,
//! SwiGLU 8960, vocabulary 151,936; head 1536 → 128); pages are resized with
//! colqwen2-v1.0's `max_num_visual_tokens` = 768. Token ids come from the tiny
//! fixture tokenizer (same special tokens; no Qwen2 vocabulary ships on PyPI),
//! which changes nothing to the cost. f32 weights: 8.8 GB.

use std::path::PathBuf;
use std::time::Instant;

use colwgpu::backend::cpu::CpuBackend;
use colwgpu::backend::HostMatrix;
use colwgpu::model::colqwen2::{ColQwen2Checkpoint, ColQwen2Encoder};
use colwgpu::model::qwen2_vl::{
    Qwen2VlConfig, Qwen2VlWeights, TextConfig, TextLayer, VisionBlock, VisionConfig,
};
use colwgpu::vision::{load_rgb, ImageProcessorConfig};
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

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixture = root.join("tests/fixtures/colqwen2/model");
    let image_path = std::env::var("COLQWEN2_BENCH_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("tests/fixtures/colqwen2/images/0.png"));
    let text = TextConfig {
        vocab_size: 151_936,
        hidden_size: 1536,
        intermediate_size: 8960,
        num_hidden_layers: 28,
        num_attention_heads: 12,
        num_key_value_heads: 2,
        rms_norm_eps: 1e-6,
        rope_theta: 1_000_000.0,
        mrope_section: [16, 24, 24],
    };
    let vision = VisionConfig {
        depth: 32,
        embed_dim: 1280,
        num_heads: 16,
        mlp_hidden: 5120,
        patch_size: 14,
        temporal_patch_size: 2,
        spatial_merge_size: 2,
        in_channels: 3,
        out_hidden: 1536,
        rope_theta: 10_000.0,
    };
    // The tiny tokenizer's <|image_pad|>.
    let image_token_id = 412;
    let start = Instant::now();
    let mut seed = 1u64;
    let mut rnd = |rows: usize, cols: usize| {
        seed += 1;
        random(rows, cols, 1.0 / (cols as f32).sqrt(), seed)
    };
    let (e, f, h, d) = (1280, 5120, 1536, 128);
    let blocks = (0..vision.depth)
        .map(|_| VisionBlock {
            norm1_g: ones(e),
            norm1_b: HostMatrix::vector(vec![0.0; e]),
            qkv_w: rnd(3 * e, e),
            qkv_b: HostMatrix::vector(vec![0.0; 3 * e]),
            proj_w: rnd(e, e),
            proj_b: HostMatrix::vector(vec![0.0; e]),
            norm2_g: ones(e),
            norm2_b: HostMatrix::vector(vec![0.0; e]),
            fc1_w: rnd(f, e),
            fc1_b: HostMatrix::vector(vec![0.0; f]),
            fc2_w: rnd(e, f),
            fc2_b: HostMatrix::vector(vec![0.0; e]),
        })
        .collect();
    let layers = (0..text.num_hidden_layers)
        .map(|_| TextLayer {
            input_norm: ones(h),
            qkv_w: rnd((12 + 4) * d, h),
            qkv_b: HostMatrix::vector(vec![0.0; 16 * d]),
            o_w: rnd(h, h),
            post_norm: ones(h),
            gate_up_w: rnd(2 * text.intermediate_size, h),
            down_w: rnd(h, text.intermediate_size),
        })
        .collect();
    let weights = Qwen2VlWeights {
        patch_embed: rnd(e, 1176),
        blocks,
        merger_ln_g: ones(e),
        merger_ln_b: HostMatrix::vector(vec![0.0; e]),
        merger_fc1_w: rnd(4 * e, 4 * e),
        merger_fc1_b: HostMatrix::vector(vec![0.0; 4 * e]),
        merger_fc2_w: rnd(h, 4 * e),
        merger_fc2_b: HostMatrix::vector(vec![0.0; h]),
        layers,
        final_norm: ones(h),
    };
    let tiny = ColQwen2Checkpoint::load(&fixture).expect("fixture model");
    let ckpt = ColQwen2Checkpoint {
        dir: fixture.clone(),
        config: Qwen2VlConfig {
            text,
            vision,
            image_token_id,
        },
        image: ImageProcessorConfig::default().with_max_visual_tokens(768),
        tokenizer: tiny.tokenizer,
        embed_tokens: rnd(151_936, h),
        weights,
        proj_w: rnd(128, h),
        proj_b: HostMatrix::vector(vec![0.0; 128]),
        query_prefix: String::new(),
        query_suffix: String::new(),
        adapter: None,
    };
    let built = start.elapsed().as_secs_f64();
    let mut enc = ColQwen2Encoder::new(ckpt, CpuBackend::new()).expect("encoder");
    let img = load_rgb(&image_path).expect("image");
    let patches = enc.patches(&img).expect("patches");
    println!(
        "colqwen2 full size: weights built in {built:.1} s; page {}×{} → {} patches, {} tokens",
        img.width,
        img.height,
        patches.pixels.rows,
        patches.tokens(2)
    );
    for run in 0..2 {
        let t = Instant::now();
        let v = enc
            .encode_patches(std::slice::from_ref(&patches))
            .expect("page");
        let page = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let q = enc
            .encode_queries(&["Based on the graph, what is the impact of correcting for fspec not equal to 1 on the surface density trend?"])
            .expect("query");
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
