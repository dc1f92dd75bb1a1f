//! One (sequence, head) of attention on AVX-512F, for the CPU backend's BERT
//! attention: `O = softmax(scale · Q·Kᵀ) · V` over a sequence's attended keys,
//! with `Q`, `K` and `V` read in place from the fused QKV tensor.
//!
//! A head is small (d = 32 in MiniLM, 64 in BERT-base; 32 query rows × ~22
//! keys for a ColBERT query), so a general gemm spends most of its time
//! deciding how to run; here the shapes are known:
//! - `Kᵀ` is copied once per (sequence, head) into `d` rows of the key count
//!   rounded up to 16 (zeros past it), so a row of scores is whole vectors,
//!   and `V`'s attended rows into one contiguous block;
//! - then per block of [`ROWS`] query rows, while its scores stay in L1:
//!   scores, up to four key vectors at a time (each step one broadcast of
//!   `q[i, c]` per row and one load of `Kᵀ[c]` per vector, scaled on the way
//!   out); softmax per row in whole vectors with the unattended tail masked
//!   (the generic row softmax stalled on its scalar tails: 60% of a query's
//!   attention), `eˣ` by `vecmath::exp_approx`'s polynomial; values, `d/16`
//!   vectors per row (each key one broadcast of `p[i, j]` per row and `d/16`
//!   loads of `v[j]`).
//!
//! Each score is `scale · Σ_c q[i, c]·k[j, c]` and each output
//! `Σ_j p[i, j]·v[j, c]`, f32 FMAs in order of `c` and of `j`: the error of
//! an f32 dot product. Used when the CPU has AVX-512F and `d` is a multiple
//! of 16 up to 128 ([`supports`]); otherwise the backend keeps its gemm path.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;


/// Query rows per register tile.
const ROWS: usize = 4;
/// Largest head dimension (8 zmm of outputs per row).
const MAX_D: usize = 128;

/// True when [`head`] runs for heads of `d` columns on this CPU.
pub fn supports(d: usize) -> bool {
    d > 0 && d.is_multiple_of(16) && d <= MAX_D && super::sgemm::available()
}

/// Attention for one (sequence, head). `q` points at the sequence's first
/// query row of this head (row stride `stride`), `k` and `v` at its first key
/// and value rows (same stride); `seq` query rows attend to the first
/// `n_keys` keys. Writes `seq × d` outputs at `out` (row stride
/// `out_stride`). `scratch` is reused between calls.
///
/// # Safety
/// `q` addresses `seq` rows and `k`, `v` `n_keys` rows of `d` readable floats
/// at stride `stride`; `out` addresses `seq` rows of `d` writable floats at
/// stride `out_stride`, written by no one else; [`supports`]`(d)` holds.
#[allow(clippy::too_many_arguments)]
pub unsafe fn head(
    q: *const f32,
    k: *const f32,
    v: *const f32,
    stride: usize,
    seq: usize,
    n_keys: usize,
    d: usize,
    out: *mut f32,
    out_stride: usize,
    scratch: &mut Vec<f32>,
) {
    debug_assert!(supports(d));
    let nkp = n_keys.div_ceil(16) * 16;
    // scratch = [Kᵀ: d × nkp | V: n_keys × d | scores: ROWS × nkp]
    scratch.clear();
    scratch.resize(d * nkp + n_keys * d + ROWS * nkp, 0.0);
    let (kt, rest) = scratch.split_at_mut(d * nkp);
    let (vp, scores) = rest.split_at_mut(n_keys * d);
    for j in 0..n_keys {
        let row = std::slice::from_raw_parts(k.add(j * stride), d);
        for (c, &x) in row.iter().enumerate() {
            *kt.get_unchecked_mut(c * nkp + j) = x;
        }
        vp[j * d..][..d].copy_from_slice(std::slice::from_raw_parts(v.add(j * stride), d));
    }
    let scale = 1.0 / (d as f32).sqrt();
    // Row blocks: scores, softmax and values while the block's scores are in L1.
    let mut i = 0;
    while i < seq {
        let r = if seq - i >= ROWS { ROWS } else { 1 };
        scores_rows(q.add(i * stride), stride, r, d, kt.as_ptr(), nkp, scale, scores.as_mut_ptr());
        for row in scores.chunks_exact_mut(nkp).take(r) {
            softmax_row(row.as_mut_ptr(), n_keys, nkp / 16);
        }
        values_rows(scores.as_ptr(), nkp, r, n_keys, vp.as_ptr(), d, out.add(i * out_stride), out_stride);
        i += r;
    }
}

/// `s[i·nkp + j] = scale · Σ_c q[i·stride + c] · kt[c·nkp + j]`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn scores_rows(
    q: *const f32,
    stride: usize,
    r: usize,
    d: usize,
    kt: *const f32,
    nkp: usize,
    scale: f32,
    s: *mut f32,
) {
    let vecs = nkp / 16;
    let mut v0 = 0;
    while v0 < vecs {
        let nv = (vecs - v0).min(4);
        let (kt0, s0) = (kt.add(v0 * 16), s.add(v0 * 16));
        match (r, nv) {
            (ROWS, 4) => scores_tile::<ROWS, 4>(q, stride, d, kt0, nkp, scale, s0),
            (ROWS, 3) => scores_tile::<ROWS, 3>(q, stride, d, kt0, nkp, scale, s0),
            (ROWS, 2) => scores_tile::<ROWS, 2>(q, stride, d, kt0, nkp, scale, s0),
            (ROWS, _) => scores_tile::<ROWS, 1>(q, stride, d, kt0, nkp, scale, s0),
            (_, 4) => scores_tile::<1, 4>(q, stride, d, kt0, nkp, scale, s0),
            (_, 3) => scores_tile::<1, 3>(q, stride, d, kt0, nkp, scale, s0),
            (_, 2) => scores_tile::<1, 2>(q, stride, d, kt0, nkp, scale, s0),
            _ => scores_tile::<1, 1>(q, stride, d, kt0, nkp, scale, s0),
        }
        v0 += nv;
    }
}

/// `R` query rows × `NV` vectors of 16 keys of [`scores_rows`].
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn scores_tile<const R: usize, const NV: usize>(
    q: *const f32,
    stride: usize,
    d: usize,
    kt: *const f32,
    nkp: usize,
    scale: f32,
    s: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    for c in 0..d {
        let mut kv = [_mm512_setzero_ps(); NV];
        for (t, x) in kv.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(kt.add(c * nkp + t * 16));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let a = _mm512_set1_ps(*q.add(r * stride + c));
            for (x, k) in row.iter_mut().zip(&kv) {
                *x = _mm512_fmadd_ps(a, *k, *x);
            }
        }
    }
    let sc = _mm512_set1_ps(scale);
    for (r, row) in acc.iter().enumerate() {
        for (t, x) in row.iter().enumerate() {
            _mm512_storeu_ps(s.add(r * nkp + t * 16), _mm512_mul_ps(*x, sc));
        }
    }
}

/// `out[i·out_stride + c] = Σ_(j < n_keys) p[i·nkp + j] · v[j·d + c]` for
/// `r` rows (`ROWS` or 1).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn values_rows(
    p: *const f32,
    nkp: usize,
    r: usize,
    n_keys: usize,
    v: *const f32,
    d: usize,
    out: *mut f32,
    out_stride: usize,
) {
    macro_rules! go {
        ($r:expr, $($nv:literal)*) => {
            match d / 16 {
                $($nv => values_tile::<$r, $nv>(p, nkp, n_keys, v, d, out, out_stride),)*
                _ => unreachable!("supports() admits d ≤ {MAX_D}"),
            }
        };
    }
    if r == ROWS {
        go!(ROWS, 1 2 3 4 5 6 7 8);
    } else {
        go!(1, 1 2 3 4 5 6 7 8);
    }
}

/// `R` rows × `NV` vectors of 16 output columns of [`values_rows`].
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn values_tile<const R: usize, const NV: usize>(
    p: *const f32,
    nkp: usize,
    n_keys: usize,
    v: *const f32,
    stride: usize,
    out: *mut f32,
    out_stride: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    for j in 0..n_keys {
        let mut vv = [_mm512_setzero_ps(); NV];
        for (t, x) in vv.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(v.add(j * stride + t * 16));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let a = _mm512_set1_ps(*p.add(r * nkp + j));
            for (x, y) in row.iter_mut().zip(&vv) {
                *x = _mm512_fmadd_ps(a, *y, *x);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (t, x) in row.iter().enumerate() {
            _mm512_storeu_ps(out.add(r * out_stride + t * 16), *x);
        }
    }
}

/// Softmax in place over the first `n` of `vecs·16` scores; the rest become 0.
/// `eˣ` is [`super::vecmath::exp_approx`]'s polynomial, operation for operation.
#[target_feature(enable = "avx512f")]
unsafe fn softmax_row(row: *mut f32, n: usize, vecs: usize) {
    let live = |t: usize| -> __mmask16 {
        let left = n.saturating_sub(t * 16).min(16);
        ((1u32 << left) - 1) as __mmask16
    };
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for t in 0..vecs {
        max = _mm512_mask_max_ps(max, live(t), max, _mm512_loadu_ps(row.add(t * 16)));
    }
    let m = _mm512_set1_ps(_mm512_reduce_max_ps(max));
    let mut sum = _mm512_setzero_ps();
    for t in 0..vecs {
        let e = exp_approx(_mm512_sub_ps(_mm512_loadu_ps(row.add(t * 16)), m));
        let e = _mm512_maskz_mov_ps(live(t), e);
        sum = _mm512_add_ps(sum, e);
        _mm512_storeu_ps(row.add(t * 16), e);
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
    for t in 0..vecs {
        let p = row.add(t * 16);
        _mm512_storeu_ps(p, _mm512_mul_ps(_mm512_loadu_ps(p), inv));
    }
}

/// [`super::vecmath::exp_approx`] on 16 lanes (the same operations, unfused).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn exp_approx(x: __m512) -> __m512 {
    let c = _mm512_set1_ps;
    let x = _mm512_min_ps(_mm512_max_ps(x, c(-87.3)), c(88.3));
    let shifted = _mm512_add_ps(_mm512_mul_ps(x, c(std::f32::consts::LOG2_E)), c(12_582_912.0));
    let n = _mm512_sub_ps(shifted, c(12_582_912.0));
    let r = _mm512_sub_ps(
        _mm512_sub_ps(x, _mm512_mul_ps(n, c(0.693_359_4))),
        _mm512_mul_ps(n, c(-2.121_944_4e-4)),
    );
    let mut p = c(1.987_569_1e-4);
    for k in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm512_add_ps(_mm512_mul_ps(p, r), c(k));
    }
    let er = _mm512_add_ps(
        _mm512_add_ps(_mm512_mul_ps(p, _mm512_mul_ps(r, r)), r),
        c(1.0),
    );
    let biased = _mm512_add_epi32(
        _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x4B40_0000)),
        _mm512_set1_epi32(127),
    );
    _mm512_mul_ps(er, _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased)))
}

#[cfg(test)]
mod tests {
    use super::super::sgemm::tests::lcg;
    use super::*;

    /// Against attention in f64 over ragged shapes (row tails, key counts
    /// off the 16-key vectors and past one 64-key block, every head size
    /// admitted), with NaN in every row past the attended keys: they must
    /// never be read.
    #[test]
    fn head_matches_f64_and_reads_only_attended_keys() {
        if !supports(32) {
            eprintln!("no AVX-512F: attend not tested");
            return;
        }
        let mut seed = 11u64;
        let mut scratch = Vec::new();
        for &(seq, n_keys, d) in &[
            (1, 1, 16),
            (5, 3, 32),
            (32, 22, 32),
            (33, 33, 64),
            (7, 70, 48),
            (130, 129, 32),
            (6, 200, 128),
        ] {
            // Q, K, V side by side in rows of 3d + 5 (a stride that is not 3d).
            let stride = 3 * d + 5;
            let rows = seq.max(n_keys);
            let mut qkv: Vec<f32> = (0..rows * stride).map(|_| 2.0 * lcg(&mut seed)).collect();
            for row in qkv.chunks_exact_mut(stride).skip(n_keys) {
                row[d..3 * d].fill(f32::NAN);
            }
            let out_stride = d + 3;
            let mut out = vec![f32::NAN; seq * out_stride];
            // SAFETY: q has `seq` rows, k and v `n_keys` rows of d at `stride`;
            // out has `seq` rows of `d` at `out_stride`; supports(d) holds.
            unsafe {
                head(
                    qkv.as_ptr(),
                    qkv.as_ptr().add(d),
                    qkv.as_ptr().add(2 * d),
                    stride,
                    seq,
                    n_keys,
                    d,
                    out.as_mut_ptr(),
                    out_stride,
                    &mut scratch,
                )
            };
            let scale = 1.0 / (d as f64).sqrt();
            let at = |i: usize, c: usize| qkv[i * stride + c] as f64;
            for i in 0..seq {
                let s: Vec<f64> = (0..n_keys)
                    .map(|j| scale * (0..d).map(|c| at(i, c) * at(j, d + c)).sum::<f64>())
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for c in 0..d {
                    let want: f64 =
                        (0..n_keys).map(|j| e[j] / total * at(j, 2 * d + c)).sum::<f64>();
                    let got = out[i * out_stride + c] as f64;
                    // |v| ≤ 2, so an f32 result is within a few 1e-7 of it.
                    assert!(
                        (got - want).abs() <= 1e-6,
                        "seq {seq} keys {n_keys} d {d}: out[{i}, {c}] = {got}, f64 says {want}"
                    );
                }
                assert!(out[i * out_stride + d..][..3].iter().all(|v| v.is_nan()));
            }
        }
    }

    /// The vector exponential is the scalar one, bit for bit.
    #[test]
    fn vector_exp_is_the_scalar_exp() {
        if !supports(16) {
            return;
        }
        let mut x = -100.0f32;
        while x < 100.0 {
            let xs: [f32; 16] = std::array::from_fn(|i| x + i as f32 * 0.0071);
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F is available (supports); 16 floats each way.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp_approx(_mm512_loadu_ps(xs.as_ptr()))) };
            for (g, &x) in got.iter().zip(&xs) {
                assert_eq!(g.to_bits(), super::super::vecmath::exp_approx(x).to_bits(), "exp({x})");
            }
            x += 0.113;
        }
    }
}
