//! One attention head of one sequence on AVX-512 (f32): the CPU twin's fast
//! path for head sizes 16, 32 and 64, replacing two small `gemm` calls whose
//! fixed per-call cost dominated at BERT shapes (184 × 184 × 32).
//!
//! `S = scale · Q·Kᵀ` (keys packed transposed once, `kt[c][j]`, zero-padded
//! to 32 keys), row softmax over the `nk` attended keys, `O = P·V` (V rows read
//! in place: a head's `d` values are contiguous). Both products run a
//! register-tiled micro-kernel over rows packed `[step][row]`; every sum is f32
//! in index order, so the result differs from the `gemm` path only by
//! summation order (tests compare both to an f64 reference).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::vecmath::softmax_in_place;

/// True when [`head`] can run a head of size `d` on this CPU
/// (`COLWGPU_NO_FAST_ATTENTION=1` turns the path off, for comparisons).
pub fn supports(d: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        matches!(d, 16 | 32 | 64)
            && *AVX512.get_or_init(|| {
                std::is_x86_feature_detected!("avx512f")
                    && !std::env::var_os("COLWGPU_NO_FAST_ATTENTION").is_some_and(|v| v != "0")
            })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = d;
        false
    }
}

/// Per-thread scratch reused across heads.
#[derive(Default)]
pub struct Scratch {
    kt: Vec<f32>,
    scores: Vec<f32>,
    tile: Vec<f32>,
}

/// Keys per score block (two zmm).
const NB: usize = 32;

/// Attention of `m` query rows over `nk` keys for one head of size `d`:
/// `q`, `k`, `v` point at the first row of the head's columns, rows `stride`
/// apart; `out` gets `m` rows of `d` values, `out_stride` apart.
///
/// # Safety
/// [`supports`]`(d)` is true; `q` addresses `m` rows and `k`, `v` `nk` rows of
/// `d` readable floats at `stride`; `out` `m` rows of `d` writable floats at
/// `out_stride`, written by no one else meanwhile; `nk ≥ 1`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn head(
    q: *const f32,
    k: *const f32,
    v: *const f32,
    stride: usize,
    m: usize,
    nk: usize,
    d: usize,
    scale: f32,
    out: *mut f32,
    out_stride: usize,
    s: &mut Scratch,
) {
    #[cfg(target_arch = "x86_64")]
    match d {
        16 => head_avx512::<1, 24>(q, k, v, stride, m, nk, scale, out, out_stride, s),
        32 => head_avx512::<2, 12>(q, k, v, stride, m, nk, scale, out, out_stride, s),
        64 => head_avx512::<4, 6>(q, k, v, stride, m, nk, scale, out, out_stride, s),
        _ => unreachable!("attention512::head called for d = {d} (check supports)"),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (q, k, v, stride, m, nk, d, scale, out, out_stride, s);
        unreachable!("attention512 is x86-64 only")
    }
}

/// [`head`] for `d = 16·DV`, `MR` rows per P·V tile (`MR·DV = 24` accumulators).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn head_avx512<const DV: usize, const MR: usize>(
    q: *const f32,
    k: *const f32,
    v: *const f32,
    stride: usize,
    m: usize,
    nk: usize,
    scale: f32,
    out: *mut f32,
    out_stride: usize,
    s: &mut Scratch,
) {
    let d = 16 * DV;
    let nkp = nk.div_ceil(NB) * NB;
    // Keys transposed: kt[c·nkp + j] = k[j][c].
    s.kt.clear();
    s.kt.resize(d * nkp, 0.0);
    for j in 0..nk {
        let kr = k.add(j * stride);
        for c in 0..d {
            *s.kt.get_unchecked_mut(c * nkp + j) = *kr.add(c);
        }
    }
    s.scores.clear();
    s.scores.resize(m * nkp, 0.0);
    // S = scale · Q·Kᵀ, 12 rows × 32 keys per tile.
    const SR: usize = 12;
    s.tile.clear();
    s.tile.resize(d.max(nk) * SR.max(MR), 0.0);
    let mut i0 = 0;
    while i0 < m {
        let rows = SR.min(m - i0);
        // tile[c·SR + r] = q[i0 + r][c]
        for r in 0..SR {
            for c in 0..d {
                *s.tile.get_unchecked_mut(c * SR + r) = if r < rows {
                    *q.add((i0 + r) * stride + c)
                } else {
                    0.0
                };
            }
        }
        let mut j0 = 0;
        while j0 < nkp {
            scores_12x32(
                d,
                s.tile.as_ptr(),
                s.kt.as_ptr().add(j0),
                nkp,
                s.scores.as_mut_ptr().add(i0 * nkp + j0),
                nkp,
                rows,
                scale,
            );
            j0 += NB;
        }
        i0 += SR;
    }
    for row in s.scores.chunks_mut(nkp) {
        softmax_in_place(&mut row[..nk]);
    }
    // O = P·V, MR rows per tile.
    let mut i0 = 0;
    while i0 < m {
        let rows = MR.min(m - i0);
        // tile[j·MR + r] = p[i0 + r][j]
        for r in 0..MR {
            for j in 0..nk {
                *s.tile.get_unchecked_mut(j * MR + r) = if r < rows {
                    *s.scores.get_unchecked((i0 + r) * nkp + j)
                } else {
                    0.0
                };
            }
        }
        let mut acc = [[_mm512_setzero_ps(); DV]; MR];
        let mut p = s.tile.as_ptr();
        for j in 0..nk {
            let vr = v.add(j * stride);
            let mut vv = [_mm512_setzero_ps(); DV];
            for (c, x) in vv.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(vr.add(16 * c));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*p.add(r));
                for c in 0..DV {
                    row[c] = _mm512_fmadd_ps(a, vv[c], row[c]);
                }
            }
            p = p.add(MR);
        }
        for (r, row) in acc.iter().enumerate().take(rows) {
            let o = out.add((i0 + r) * out_stride);
            for (c, x) in row.iter().enumerate() {
                _mm512_storeu_ps(o.add(16 * c), *x);
            }
        }
        i0 += MR;
    }
}

/// `c[r][j] = scale · Σ_t a[t][r] · b[t][j]` for a 12 × 32 tile over `depth`
/// steps (`a` rows 12 apart, `b` rows `ldb` apart), rows `< rows` stored.
///
/// # Safety
/// `a` holds `12·depth`, `b` `depth` rows of 32 readable floats; `c` `rows`
/// rows of 32 writable floats `ldc` apart; AVX-512F is available.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn scores_12x32(
    depth: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    scale: f32,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; 12];
    let mut a = a;
    let mut b = b;
    for _ in 0..depth {
        let b0 = _mm512_loadu_ps(b);
        let b1 = _mm512_loadu_ps(b.add(16));
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(r));
            row[0] = _mm512_fmadd_ps(av, b0, row[0]);
            row[1] = _mm512_fmadd_ps(av, b1, row[1]);
        }
        a = a.add(12);
        b = b.add(ldb);
    }
    let sv = _mm512_set1_ps(scale);
    for (r, row) in acc.iter().enumerate().take(rows) {
        let cr = c.add(r * ldc);
        _mm512_storeu_ps(cr, _mm512_mul_ps(row[0], sv));
        _mm512_storeu_ps(cr.add(16), _mm512_mul_ps(row[1], sv));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against an f64 softmax attention, for every supported head size and
    /// ragged row / key counts (keys fewer than rows: padding masked).
    #[test]
    fn matches_f64_attention() {
        for d in [16, 32, 64] {
            if !supports(d) {
                eprintln!("skipped: no AVX-512F");
                return;
            }
            for &(m, nk) in &[(1, 1), (5, 3), (13, 13), (40, 33), (184, 150)] {
                let stride = 3 * d + 5;
                let data: Vec<f32> = (0..m.max(nk) * stride)
                    .map(|i| (((i * 7919) % 1999) as f32 / 1999.0 - 0.5) * 3.0)
                    .collect();
                let (q, k, v) = (data.as_ptr(), data[d..].as_ptr(), data[2 * d..].as_ptr());
                let out_stride = d + 3;
                let mut out = vec![f32::NAN; m * out_stride];
                let scale = 1.0 / (d as f32).sqrt();
                let mut scratch = Scratch::default();
                // SAFETY: the pointers address m.max(nk) rows of `stride` floats.
                unsafe {
                    head(
                        q,
                        k,
                        v,
                        stride,
                        m,
                        nk,
                        d,
                        scale,
                        out.as_mut_ptr(),
                        out_stride,
                        &mut scratch,
                    )
                };
                for i in 0..m {
                    let at = |r: usize, c: usize| data[r * stride + c] as f64;
                    let s: Vec<f64> = (0..nk)
                        .map(|j| (0..d).map(|c| at(i, c) * at(j, d + c)).sum::<f64>() * scale as f64)
                        .collect();
                    let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..d {
                        let want: f64 = (0..nk).map(|j| e[j] / z * at(j, 2 * d + c)).sum();
                        let got = out[i * out_stride + c] as f64;
                        assert!(
                            (got - want).abs() < 2e-5,
                            "d={d} m={m} nk={nk} ({i},{c}): {got} vs {want}"
                        );
                    }
                    for c in d..out_stride {
                        assert!(out[i * out_stride + c].is_nan(), "wrote past the head");
                    }
                }
            }
        }
    }
}
