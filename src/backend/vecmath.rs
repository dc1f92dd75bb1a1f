//! Element-wise and row kernels of the CPU backend written so that LLVM
//! vectorises them: no calls into libm (`exp` is a polynomial here), and
//! reductions run over [`LANES`] independent accumulators.
//!
//! Each public kernel is compiled three times (AVX-512, AVX2 and the baseline
//! target) and picks the widest the CPU has at run time. The source fixes the
//! order of every operation (no FMA contraction, the same lane split), so all
//! three produce bit-identical results.

/// Independent accumulators per reduction: one AVX-512 register of f32.
const LANES: usize = 16;

/// `eˣ` for f32, Cephes `expf`: `x = n·ln2 + r` with |r| ≤ ln2/2, a degree-6
/// polynomial for `eʳ` (relative error ≤ 2e-7 over the whole range) and `2ⁿ`
/// built from its bits. Inputs are clamped to [-87.3, 88.3], so the result is
/// finite and at least ~1e-38 (never a subnormal or zero).
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer n without a libm call and
    // leaves n in the low mantissa bits: bits(shifted) = bits(ROUND) + n.
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: u32 = 0x4B40_0000;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let er = p * (r * r) + r + 1.0;
    // n ∈ [-126, 127] after the clamp, so the biased exponent n + 127 is a
    // normal one; integer ops only (a float→int cast would not vectorise).
    let biased_exponent = shifted.to_bits().wrapping_sub(ROUND_BITS).wrapping_add(127);
    let two_n = f32::from_bits(biased_exponent << 23);
    er * two_n
}

/// GELU, erf form: `0.5·x·(1 + erf(x/√2))`, with erf by Abramowitz & Stegun
/// 7.1.26 (|error| ≤ 1.5e-7), the formula of `shaders/common/gelu.wgsl`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    let a = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    // Beyond a² = 20 the product below is < 1e-9, so erf rounds to ±1 exactly
    // either way; the clamp keeps exp away from subnormals (slow on x86).
    let erf = (1.0 - poly * exp_approx((-a * a).max(-20.0))).copysign(x);
    0.5 * x * (1.0 + erf)
}

/// The sum of `xs` over [`LANES`] accumulators.
#[inline(always)]
fn sum_lanes(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// The maximum of `xs` (−∞ when empty) over [`LANES`] accumulators.
#[inline(always)]
pub(crate) fn max_lanes(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    acc.iter()
        .chain(tail)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

#[inline(always)]
fn gelu_generic(xs: &mut [f32]) {
    for v in xs.iter_mut() {
        *v = gelu(*v);
    }
}

/// Softmax in place: `eˢ⁻ᵐᵃˣ / Σ`.
#[inline(always)]
fn softmax_generic(row: &mut [f32]) {
    let max = max_lanes(row);
    for s in row.iter_mut() {
        *s = exp_approx(*s - max);
    }
    let inv = 1.0 / sum_lanes(row);
    for s in row.iter_mut() {
        *s *= inv;
    }
}

/// LayerNorm in place, statistics in f32 over two passes (mean, then the
/// mean squared deviation).
#[inline(always)]
fn layernorm_generic(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum_lanes(row) / n;
    let mut acc = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            let d = v - mean;
            *a += d * d;
        }
    }
    let var =
        (acc.iter().sum::<f32>() + tail.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>()) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

/// Defines `pub fn $name` that runs `$generic` compiled for AVX-512, AVX2 or
/// the baseline target, whichever the CPU supports.
macro_rules! dispatch_simd {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) => $generic:ident) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) {
                    $generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

dispatch_simd!(
    /// [`gelu`] applied to every element.
    fn gelu_in_place(xs: &mut [f32]) => gelu_generic
);
dispatch_simd!(
    /// Softmax of one row in place (exponentials by [`exp_approx`]).
    fn softmax_in_place(row: &mut [f32]) => softmax_generic
);
dispatch_simd!(
    /// LayerNorm of one row in place: `(x − mean)/√(var + eps)·gamma + beta`,
    /// statistics in f32.
    fn layernorm_in_place(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) => layernorm_generic
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_matches_libm() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = (x as f64).exp();
            let rel = ((exp_approx(x) as f64 - exact) / exact).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_approx(0.0), 1.0);
        assert!(exp_approx(-1000.0) > 0.0 && exp_approx(-1000.0) < 1e-37);
        assert!(exp_approx(1000.0).is_finite());
    }

    #[test]
    fn gelu_matches_exact_erf_form() {
        // The exact erf GELU in f64 through erf's series/continued fraction is not in
        // std; compare against the same A&S formula with libm's exp in f64 plus its bound.
        for i in -2000..=2000 {
            let x = i as f32 * 0.005;
            let a = (x.abs() as f64) / std::f64::consts::SQRT_2;
            let t = 1.0 / (1.0 + 0.3275911 * a);
            let poly = t
                * (0.254829592
                    + t * (-0.284496736
                        + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
            let erf = (1.0 - poly * (-a * a).exp()).copysign(x as f64);
            let reference = 0.5 * x as f64 * (1.0 + erf);
            let err = (gelu(x) as f64 - reference).abs();
            assert!(err <= 1e-6 * (1.0 + x.abs() as f64), "x={x}: {err}");
        }
    }

    #[test]
    fn slice_kernels_match_scalar_definitions() {
        let xs: Vec<f32> = (0..203)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.11)
            .collect();
        let mut g = xs.clone();
        gelu_in_place(&mut g);
        for (a, &x) in g.iter().zip(&xs) {
            assert_eq!(*a, gelu(x));
        }

        let mut s = xs.clone();
        softmax_in_place(&mut s);
        let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let denom: f64 = xs.iter().map(|&v| (v as f64 - max).exp()).sum();
        for (p, &x) in s.iter().zip(&xs) {
            let exact = (x as f64 - max).exp() / denom;
            assert!(
                (*p as f64 - exact).abs() <= 1e-6 * exact + 1e-12,
                "{p} vs {exact}"
            );
        }

        let gamma: Vec<f32> = (0..xs.len()).map(|i| 1.0 + i as f32 * 0.01).collect();
        let beta: Vec<f32> = (0..xs.len()).map(|i| i as f32 * -0.02).collect();
        let mut l = xs.clone();
        layernorm_in_place(&mut l, &gamma, &beta, 1e-12);
        let n = xs.len() as f64;
        let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        for (i, (&y, &x)) in l.iter().zip(&xs).enumerate() {
            let exact = (x as f64 - mean) / (var + 1e-12).sqrt() * gamma[i] as f64 + beta[i] as f64;
            assert!((y as f64 - exact).abs() < 2e-6, "{y} vs {exact}");
        }
    }
}
