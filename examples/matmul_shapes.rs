//! GFLOP/s of the CPU matmul paths at BERT-MiniLM shapes (`y = x·wᵀ + b`):
//! the f32 `gemm` crate path against the bf16 kernel (weights packed once), timed
//! alternately in one run so machine load affects both alike.
//!
//!     cargo run --release --example matmul_shapes [-- ROWS...]
use colwgpu::backend::bf16::{self, PackedWeight};
use colwgpu::backend::cpu::matmul_transposed;

/// CPU seconds this process has used (user + system, from /proc; wall time
/// elsewhere): on a loaded machine it excludes time spent descheduled.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
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
        vec![1024, 9600]
    } else {
        rows
    };
    println!(
        "threads {}, avx512-bf16 {}",
        rayon::current_num_threads(),
        bf16::available()
    );
    for &m in &rows {
        for &(n, k) in &[
            (1152, 384),
            (384, 384),
            (1536, 384),
            (384, 1536),
            (128, 384),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.01)
                .collect();
            let b: Vec<f32> = vec![0.5; n];
            let mut y = vec![0.0f32; m * n];
            let flops = 2.0 * (m * n * k) as f64;
            let reps = ((3e10 / flops) as usize).max(2);
            let (mut t_gemm, mut t_ours, mut t_pack) = (f64::MAX, f64::MAX, f64::MAX);
            for _ in 0..2 {
                let s = clock();
                for _ in 0..reps {
                    matmul_transposed(&x, &w, &mut y, m, n, k);
                }
                t_gemm = t_gemm.min((clock() - s) / reps as f64);
                if bf16::available() {
                    let s = clock();
                    let packed = PackedWeight::pack(&w, n, k);
                    t_pack = t_pack.min(clock() - s);
                    let s = clock();
                    for _ in 0..reps {
                        bf16::linear(&x, m, &packed, Some(&b), &mut y, false, true);
                    }
                    t_ours = t_ours.min((clock() - s) / reps as f64);
                }
            }
            println!(
                "m {m:5} n {n:4} k {k:4}: gemm {:6.1} GFLOP/s, bf16 (avx512-bf16) {:6.1} GFLOP/s ({:.2}x)",
                flops / t_gemm / 1e9,
                flops / t_ours / 1e9,
                t_gemm / t_ours,
            );
        }
    }
}
