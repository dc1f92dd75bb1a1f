//! One (sequence, head) of attention on AVX-512F, for the CPU backend's BERT
//! attention: `O = softmax(scale · Q·Kᵀ) · V` over a sequence's attended keys,
//! with `Q`, `K` and `V` read in place from the fused QKV tensor.
//!
//! A head is small (d = 32 in MiniLM, 64 in BERT-base; 32 query rows × ~22
//! keys for a ColBERT query), so a general gemm spends most of its time
//! deciding how to run; here the shapes are known:
//! - `Kᵀ` is gathered once per (sequence, head) into `d` rows of the key
//!   count rounded up to 16 (zeros past it), so a row of scores is whole
//!   vectors, and `V`'s attended rows are copied into one contiguous block;
//! - then per block of [`ROWS`] query rows, while its scores stay in L1:
//!   scores, up to four key vectors at a time (each step one broadcast of
//!   `q[i, c]` per row and one load of `Kᵀ[c]` per vector, scaled on the way
//!   out); per row the softmax's numerators `e^(s − max)` in whole vectors,
//!   only the last one masked (the generic row softmax stalled on its scalar
//!   tails: 60% of a query's attention), `eˣ` by Cephes' polynomial in FMAs;
//!   values, `d/16` vectors per row (each key one broadcast of `p[i, j]` per
//!   row and `d/16` loads of `v[j]`), scaled by the inverse of the row's sum
//!   on the way out, so the normalisation costs no pass over the scores.
//!
//! Each score is `scale · Σ_c q[i, c]·k[j, c]` and each output
//! `(Σ_j e[i, j]·v[j, c]) / Σ_j e[i, j]`, f32 FMAs in order of `c` and of `j`:
//! the error of an f32 dot product. Used when the CPU has AVX-512F and `d` is
//! a multiple of 16 up to 128 ([`supports`]); otherwise the backend keeps its
//! gemm path.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;


/// Query rows per register tile.
const ROWS: usize = 4;
/// Query rows per values tile for heads of up to [`WIDE_MAX_D`] columns:
/// per key `d/16` loads of `v[j]` then feed `WIDE` rows of FMAs.
const WIDE: usize = 2 * ROWS;
const WIDE_MAX_D: usize = 32;
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
    // Rows per block: two score tiles where the values' tile of 2·ROWS rows
    // still fits the registers (2·ROWS × d/16 accumulators, d ≤ 32).
    let block = if d <= WIDE_MAX_D { WIDE } else { ROWS };
    // scratch = [Kᵀ: d × nkp | V: n_keys × d | scores: block × nkp]
    scratch.clear();
    scratch.resize(d * nkp + n_keys * d + block * nkp, 0.0);
    let (kt, rest) = scratch.split_at_mut(d * nkp);
    let (vp, scores) = rest.split_at_mut(n_keys * d);
    stage_keys(k, v, stride, n_keys, d, kt.as_mut_ptr(), nkp, vp.as_mut_ptr());
    let scale = 1.0 / (d as f32).sqrt();
    // Row blocks: scores, softmax and values while the block's scores are in L1.
    let mut i = 0;
    while i < seq {
        let r = match seq - i {
            left if left >= block => block,
            left if left >= ROWS => ROWS,
            _ => 1,
        };
        let mut t = 0;
        while t < r {
            let rt = (r - t).min(ROWS);
            let (qt, st) = (q.add((i + t) * stride), scores.as_mut_ptr().add(t * nkp));
            scores_rows(qt, stride, rt, d, kt.as_ptr(), nkp, scale, st);
            t += rt;
        }
        let mut inv = [0.0f32; WIDE];
        for (row, inv) in scores.chunks_exact_mut(nkp).zip(&mut inv).take(r) {
            *inv = softmax_row(row.as_mut_ptr(), n_keys, nkp / 16);
        }
        values_rows(scores.as_ptr(), &inv, nkp, r, n_keys, vp.as_ptr(), d, out.add(i * out_stride), out_stride);
        i += r;
    }
}

/// `kt[c·nkp + j] = k[j·stride + c]` (zero for `n_keys ≤ j < nkp`) and
/// `vp[j·d + c] = v[j·stride + c]` for the `n_keys` attended keys: `Kᵀ` by
/// masked gathers, 16 keys of one column each, `V` in whole vectors (a
/// `memcpy` call per 32-float row cost more than the copy).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn stage_keys(
    k: *const f32,
    v: *const f32,
    stride: usize,
    n_keys: usize,
    d: usize,
    kt: *mut f32,
    nkp: usize,
    vp: *mut f32,
) {
    // Key j of a 16-key block sits j·stride floats after the block's first:
    // i32 offsets, at most 15 rows of the fused QKV tensor.
    let lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    let offsets = _mm512_mullo_epi32(lane, _mm512_set1_epi32(stride as i32));
    for block in 0..nkp / 16 {
        let j0 = block * 16;
        let live = ((1u32 << (n_keys - j0).min(16)) - 1) as __mmask16;
        let first = k.add(j0 * stride);
        for c in 0..d {
            let col = _mm512_mask_i32gather_ps::<4>(
                _mm512_setzero_ps(),
                live,
                offsets,
                first.add(c),
            );
            _mm512_storeu_ps(kt.add(c * nkp + j0), col);
        }
    }
    for j in 0..n_keys {
        for t in 0..d / 16 {
            _mm512_storeu_ps(vp.add(j * d + t * 16), _mm512_loadu_ps(v.add(j * stride + t * 16)));
        }
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

/// `out[i·out_stride + c] = inv[i] · Σ_(j < n_keys) p[i·nkp + j] · v[j·d + c]`
/// for `r` rows (`WIDE`, `ROWS` or 1): `p` holds a row's exponentials and
/// `inv[i]` the inverse of their sum, so the softmax's normalisation is one
/// multiply per output instead of a pass over the scores.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn values_rows(
    p: *const f32,
    inv: &[f32; WIDE],
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
                $($nv => values_tile::<$r, $nv>(p, inv, nkp, n_keys, v, d, out, out_stride),)*
                _ => unreachable!("supports() admits d ≤ {MAX_D}"),
            }
        };
    }
    match r {
        WIDE => match d / 16 {
            1 => values_tile::<WIDE, 1>(p, inv, nkp, n_keys, v, d, out, out_stride),
            2 => values_tile::<WIDE, 2>(p, inv, nkp, n_keys, v, d, out, out_stride),
            _ => unreachable!("head() takes WIDE rows only for d ≤ {WIDE_MAX_D}"),
        },
        ROWS => go!(ROWS, 1 2 3 4 5 6 7 8),
        _ => go!(1, 1 2 3 4 5 6 7 8),
    }
}

/// `R` rows × `NV` vectors of 16 output columns of [`values_rows`].
#[inline]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn values_tile<const R: usize, const NV: usize>(
    p: *const f32,
    inv: &[f32; WIDE],
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
        let inv = _mm512_set1_ps(inv[r]);
        for (t, x) in row.iter().enumerate() {
            _mm512_storeu_ps(out.add(r * out_stride + t * 16), _mm512_mul_ps(*x, inv));
        }
    }
}

/// The softmax's numerators in place over the first `n` of `vecs·16` scores,
/// `e^(s − max)` (the rest become 0), returning the inverse of their sum.
/// Only the last vector can be partial (`vecs = ⌈n/16⌉`), so only it is masked.
#[target_feature(enable = "avx512f")]
unsafe fn softmax_row(row: *mut f32, n: usize, vecs: usize) -> f32 {
    debug_assert_eq!(vecs, n.div_ceil(16));
    let full = n / 16;
    let tail = ((1u32 << (n % 16)) - 1) as __mmask16;
    let at = |t: usize| _mm512_loadu_ps(row.add(t * 16));
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for t in 0..full {
        max = _mm512_max_ps(max, at(t));
    }
    if tail != 0 {
        max = _mm512_mask_max_ps(max, tail, max, at(full));
    }
    let m = _mm512_set1_ps(_mm512_reduce_max_ps(max));
    // Two sums, so consecutive exponentials do not wait on one add chain.
    let mut sum = [_mm512_setzero_ps(); 2];
    for t in 0..full {
        let e = exp_nonpositive(_mm512_sub_ps(at(t), m));
        sum[t % 2] = _mm512_add_ps(sum[t % 2], e);
        _mm512_storeu_ps(row.add(t * 16), e);
    }
    if tail != 0 {
        let e = _mm512_maskz_mov_ps(tail, exp_nonpositive(_mm512_sub_ps(at(full), m)));
        sum[0] = _mm512_add_ps(sum[0], e);
        _mm512_storeu_ps(row.add(full * 16), e);
    }
    1.0 / _mm512_reduce_add_ps(_mm512_add_ps(sum[0], sum[1]))
}

/// `eˣ` for `x ≤ 0` (a score minus its row's maximum) on 16 lanes: Cephes
/// `expf` as [`super::vecmath::exp_approx`] (`x = n·ln2 + r`, the same
/// degree-6 polynomial for `eʳ`), written for AVX-512: `n` by `vrndscaleps`,
/// the reduction and the polynomial in FMAs, `eʳ·2ⁿ` by `vscalefps`. About
/// half the instructions of the unfused form; relative error ≤ 3e-7 (tested
/// against f64). Inputs below −87.3 are clamped there (a result ≥ 1e-38,
/// never subnormal).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn exp_nonpositive(x: __m512) -> __m512 {
    let c = _mm512_set1_ps;
    let x = _mm512_max_ps(x, c(-87.3));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, c(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, c(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, c(-2.121_944_4e-4), r);
    let mut p = c(1.987_569_1e-4);
    for k in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm512_fmadd_ps(p, r, c(k));
    }
    let er = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), c(1.0));
    _mm512_scalef_ps(er, n)
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
    fn vector_exp_matches_f64() {
        if !supports(16) {
            return;
        }
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let xs: [f32; 16] = std::array::from_fn(|i| (x + i as f32 * 0.0071).min(0.0));
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F is available (supports); 16 floats each way.
            unsafe {
                _mm512_storeu_ps(got.as_mut_ptr(), exp_nonpositive(_mm512_loadu_ps(xs.as_ptr())))
            };
            for (g, &x) in got.iter().zip(&xs) {
                let exact = (x as f64).exp();
                worst = worst.max(((*g as f64 - exact) / exact).abs());
            }
            x += 0.0113;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        let mut got = [0f32; 16];
        let xs = [0.0, -1000.0, f32::NEG_INFINITY, -87.3, -1e-30, -0.5, -1.0, -2.0, -10.0, -20.0, -40.0, -80.0, -86.0, -87.0, -88.0, -0.0];
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp_nonpositive(_mm512_loadu_ps(xs.as_ptr()))) };
        assert_eq!(got[0], 1.0);
        assert_eq!(got[15], 1.0);
        assert!(got[1] > 0.0 && got[1] < 1e-37 && got[1].is_normal(), "{}", got[1]);
        assert!(got[2] > 0.0 && got[2].is_normal());
    }
}
