//! GFLOP/s of the CPU linear kernels at BERT-MiniLM shapes (`y = x·wᵀ + b`),
//! timed alternately in one run so machine load affects all alike: the
//! `gemm` crate on `w` (packs both operands per call, `w` on the calling
//! thread) and on `wᵀ` (reads the weight in place; what the backend runs past
//! [`sgemm::PACKED_MAX_ROWS`] rows), the packed AVX-512 f32 kernel
//! ([`sgemm`]), the exact bf16-split AMX kernel and the bf16 kernel (the
//! last two where the CPU has them). Weights are packed (and transposed)
//! before timing, as the backend does once per model.
//!
//!     [ROUNDS=5] [WALL=1] cargo run --release --example matmul_shapes [-- ROWS...]
//!
//! Times are CPU seconds of the process (wall seconds with `WALL=1`).
use colwgpu::backend::bf16::{self, PackedWeight};
use colwgpu::backend::cpu::{matmul_kn, matmul_transposed};
use colwgpu::backend::sgemm::{self, PackedF32, TransposedF32};

/// CPU seconds this process has used (user + system, from /proc; wall time
/// elsewhere): on a loaded machine it excludes time spent descheduled.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// `len` values uniform in `[-scale, scale)` from a seeded LCG.
fn noise(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn clock() -> f64 {
    if std::env::var_os("WALL").is_some() {
        return std::time::UNIX_EPOCH
            .elapsed()
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
    }
    cpu_seconds().unwrap_or(0.0)
}

fn main() {
    let rows: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = if rows.is_empty() {
        vec![1024, 5888]
    } else {
        rows
    };
    println!(
        "threads {}, avx512f {}, avx512-bf16 {}, amx {}",
        rayon::current_num_threads(),
        sgemm::available(),
        bf16::available(),
        bf16::split_available()
    );
    // Rounds of alternating timings; each path's best round is reported.
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    // `SHAPES=NxK,...` (output × input features) replaces MiniLM's four.
    let shapes: Vec<(usize, usize)> = std::env::var("SHAPES")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|s| {
                    let (n, k) = s.split_once('x')?;
                    Some((n.parse().ok()?, k.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_else(|| vec![(1152, 384), (384, 384), (1536, 384), (384, 1536)]);
    for &m in &rows {
        for &(n, k) in &shapes {
            // Pseudo-random values: AMX runs patterned or sparse data
            // faster than the dense values of real activations and weights.
            let x = noise(m * k, 1, 1.0);
            let w = noise(n * k, 2, 0.05);
            let b: Vec<f32> = vec![0.5; n];
            let mut y = vec![0.0f32; m * n];
            let flops = 2.0 * (m * n * k) as f64;
            let reps = ((1e10 / flops) as usize).max(2);
            let packed = sgemm::available().then(|| PackedF32::pack(&w, n, k));
            let split = bf16::split_available().then(|| PackedWeight::pack_split(&w, n, k));
            let half = bf16::available().then(|| PackedWeight::pack(&w, n, k));
            let wt = TransposedF32::within_budget(&w, n, k);
            let mut best = [f64::MAX; 5];
            for _ in 0..rounds {
                let mut time = |slot: usize, f: &mut dyn FnMut(&mut [f32])| {
                    let s = clock();
                    for _ in 0..reps {
                        f(&mut y);
                    }
                    best[slot] = best[slot].min((clock() - s) / reps as f64);
                };
                time(0, &mut |y| matmul_transposed(&x, &w, y, m, n, k));
                if let Some(wt) = &wt {
                    time(4, &mut |y| matmul_kn(&x, wt.data(), y, m, n, k));
                }
                if let Some(p) = &packed {
                    time(1, &mut |y| {
                        sgemm::linear(&x, m, p, Some(&b), y, false, true)
                    });
                }
                if let Some(p) = &split {
                    time(2, &mut |y| bf16::linear(&x, m, p, Some(&b), y, false, true));
                }
                if let Some(p) = &half {
                    time(3, &mut |y| bf16::linear(&x, m, p, Some(&b), y, false, true));
                }
            }
            let rate = |t: f64| {
                if t == f64::MAX {
                    "     -".to_string()
                } else {
                    format!("{:6.1}", flops / t / 1e9)
                }
            };
            println!(
                "m {m:5} n {n:4} k {k:4}: GFLOP/s gemm-crate {} crate-on-wt {} packed-f32 {} amx-split {} bf16 {}",
                rate(best[0]),
                rate(best[4]),
                rate(best[1]),
                rate(best[2]),
                rate(best[3]),
            );
        }
    }
}
