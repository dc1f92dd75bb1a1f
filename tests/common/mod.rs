//! Shared test helpers: a seeded generator, the one GPU context, closeness checks.
#![allow(dead_code)]

pub mod fixture;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use colwgpu::gpu::{GpuContext, GpuOptions};

/// splitmix64: small, seeded, good enough for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The GPU context all tests share (pipelines compile once). Panics — fails the
/// test, never skips it — when no adapter is found: the set-up installs lavapipe.
pub fn gpu() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new(&GpuOptions::default()) {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("GPU tests need a wgpu adapter (run scripts/install-system.sh): {e}"),
    })
    .clone()
}

/// The shared context when its adapter offers SHADER_F16 (what `--precision
/// f16` needs); otherwise `None`, after printing why the caller skips.
pub fn gpu_with_f16() -> Option<Arc<GpuContext>> {
    let ctx = gpu();
    if ctx.supports_f16() {
        return Some(ctx);
    }
    eprintln!(
        "skipped: adapter '{}' does not offer SHADER_F16",
        ctx.info.name
    );
    None
}

/// Asserts that f16 storage halves a model's linear weights and leaves its
/// other weights as they are: `bytes(precision)` builds the model on a GPU
/// backend at that precision and returns its (all, linear) weight bytes.
pub fn assert_f16_halves_linear_weights(bytes: impl Fn(colwgpu::backend::Precision) -> (u64, u64)) {
    use colwgpu::backend::Precision;
    let (all32, lin32) = bytes(Precision::F32);
    let (all16, lin16) = bytes(Precision::F16);
    println!("gpu weights: f32 {all32} bytes ({lin32} linear), f16 {all16} ({lin16} linear)");
    assert!(lin32 > 0 && 2 * lin16 == lin32 && all32 - lin32 == all16 - lin16);
}

/// Asserts `|a - b| <= atol + rtol·|b|` element-wise, reporting the worst element.
pub fn assert_close(what: &str, a: &[f32], b: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: lengths differ ({} vs {})",
        a.len(),
        b.len()
    );
    let mut worst = (0usize, 0.0f32, 0.0f32);
    let mut bad = 0usize;
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        // Written so that NaN counts as out of tolerance (and as the worst).
        let within = d <= atol + rtol * y.abs();
        if !within {
            bad += 1;
        }
        let no_worse = d <= worst.1;
        if !no_worse {
            worst = (i, d, y);
        }
    }
    assert!(
        bad == 0,
        "{what}: {bad} of {} elements out of tolerance (atol {atol}, rtol {rtol}); max |Δ| = {} at index {} (expected {})",
        a.len(),
        worst.1,
        worst.0,
        worst.2
    );
}

/// Max |a - b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real ColBERT checkpoint built by `models/fetch-model.sh`. Panics with the
/// command to run when it is missing: tests that need it fail, never skip.
pub fn model_dir() -> PathBuf {
    let dir = std::env::var("COLWGPU_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("models/colbert-minilm"));
    assert!(
        dir.join("1_Dense/model.safetensors").is_file(),
        "the real model is missing at {}: run `bash models/fetch-model.sh`",
        dir.display()
    );
    dir
}

/// The committed real data slices, `tests/data/` (each folder has its
/// PROVENANCE.md; cut by `scripts/data/make_test_slices.py`).
pub fn data_dir() -> PathBuf {
    root().join("tests/data")
}

/// erf(x) in f64 with |ε| < 1.2e-7 (Numerical Recipes' erfc:
/// `t·exp(−z² + P(t))`, `t = 1/(1 + z/2)`, `z = |x|`), the reference the GELU
/// kernels are checked against.
pub fn erf_f64(x: f64) -> f64 {
    const P: [f64; 10] = [
        -1.26551223,
        1.00002368,
        0.37409196,
        0.09678418,
        -0.18628806,
        0.27886807,
        -1.13520398,
        1.48851587,
        -0.82215223,
        0.17087277,
    ];
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = P.iter().rev().fold(0.0, |acc, &c| acc * t + c);
    let erfc = t * (-z * z + poly).exp();
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}
