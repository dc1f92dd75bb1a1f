//! f32 linear layers on AVX-512F with the weight packed once: the CPU
//! backend's default f32 kernel where the CPU has AVX-512F.
//!
//! `y[m, n] = x[m, k] · w[n, k]ᵀ (+ bias)`, then GELU when asked. The weight
//! is packed at first use into panels of [`NR`] output columns, `k` rows of
//! 32 consecutive floats each (one cache-line pair, 64-byte aligned), and
//! kept with the weight ([`PackedF32`]); a general gemm packs both operands
//! on every call. A task owns [`MC`] rows × a run of panels, and for each
//! panel's k-slice ([`KC`] deep, kept in L1) runs a 12 × 32 micro-kernel over
//! its row tiles, reading `x` in place: per k-step two 16-float loads of `w`,
//! twelve broadcasts of `x` and 24 FMAs into 24 zmm accumulators. Only a last
//! tile of fewer than 12 rows is copied (zero-padded), so nothing reads past
//! `x`. GELU runs on the task's block while it is still in cache.
//!
//! Measured against the `gemm` crate given `w` (2 threads, Sapphire Rapids
//! VM): 1.7–5× its rate for the 32 rows of one query; one query encodes 2.4×
//! faster end to end. Given the weight transposed ([`TransposedF32`]) the
//! crate catches up from about a hundred rows, so the backend runs this
//! kernel up to [`PACKED_MAX_ROWS`] rows and the crate past them.
//!
//! Each output is `bias + Σ_p x[i, p]·w[j, p]` accumulated in f32 FMAs in
//! order of `p`: the error of an f32 dot product, like any f32 gemm.
//!
//! Only on x86-64 with AVX-512F ([`available`]); elsewhere the backend keeps
//! the `gemm` crate.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rayon::prelude::*;

use super::blocks::OutPtr;

/// Output columns per panel (two zmm registers of accumulators).
pub const NR: usize = 32;
/// Rows per micro-kernel tile.
pub const MR: usize = 12;
/// Depth of one k slice: a panel's slice (`KC × NR` floats, 32 KiB) stays
/// in the 48 KiB L1 while the row tiles pass over it.
const KC: usize = 256;
/// Rows per task (a multiple of [`MR`]).
const MC: usize = 96;

/// True when this CPU has AVX-512F (checked once) and `COLWGPU_F32_GEMM=gemm`
/// does not ask for the `gemm` crate instead.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let refused =
            std::env::var("COLWGPU_F32_GEMM").is_ok_and(|v| v.eq_ignore_ascii_case("gemm"));
        !refused && has_avx512f()
    })
}

/// True when `COLWGPU_F32_GEMM=packed` asks for this kernel at every batch
/// size (read once; see `CpuBackend::batch_invariant_f32`).
pub fn packed_requested() -> bool {
    static ASKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ASKED.get_or_init(|| {
        std::env::var("COLWGPU_F32_GEMM").is_ok_and(|v| v.eq_ignore_ascii_case("packed"))
    })
}

fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// 16 floats on a 64-byte boundary (the packed weight's unit).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[repr(C, align(64))]
struct Line([f32; 16]);
// SAFETY: sixteen f32 and no padding (size 64 = alignment).
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; every bit pattern is a valid [f32; 16].
unsafe impl bytemuck::Pod for Line {}

/// Most bytes of packed weights alive at once in a process: a packed weight
/// (panels, or the transpose for the `gemm` crate) is another copy of an f32
/// one, welcome for a ColBERT encoder (90 MB each for MiniLM-L6, 440 MB for
/// BERT-base) but not for a multi-billion-parameter page model on the CPU,
/// whose weights past this budget keep the `gemm` crate on the weight as
/// loaded (packing per call, no other copy).
pub const PACK_BUDGET_BYTES: usize = 2 << 30;

/// Bytes of [`PackedF32`] and [`TransposedF32`] alive now.
static PACKED_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `bytes` of packed weights counted against [`PACK_BUDGET_BYTES`] while
/// this lives ([`Reservation::within_budget`]).
#[derive(Debug)]
pub(crate) struct Reservation(usize);

impl Reservation {
    /// Counts `bytes` when that keeps the packed weights alive within
    /// [`PACK_BUDGET_BYTES`]; `None` (nothing counted) otherwise.
    pub(crate) fn within_budget(bytes: usize) -> Option<Self> {
        reserve_within_budget(bytes).then_some(Self(bytes))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        PACKED_BYTES.fetch_sub(self.0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Counts `bytes` more of packed weights alive when that keeps them within
/// [`PACK_BUDGET_BYTES`]; false (nothing counted) otherwise.
fn reserve_within_budget(bytes: usize) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    PACKED_BYTES
        .fetch_update(Relaxed, Relaxed, |held| {
            (held + bytes <= PACK_BUDGET_BYTES).then_some(held + bytes)
        })
        .is_ok()
}

/// `w` (`[n, k]`) stored transposed, `wᵀ[k, n]`, for the `gemm` crate: it
/// reads such a weight in place, where given `w` it packs it on the calling
/// thread at every call while the other threads wait. At MiniLM's shapes
/// (`examples/matmul_shapes.rs`, 2 threads, Sapphire Rapids class VM) that
/// ran 0.99–1.34× the crate's rate on `w` at 512–5,888 rows and up to 2.5×
/// at 96–128. Counted against [`PACK_BUDGET_BYTES`] while alive.
#[derive(Debug)]
pub struct TransposedF32 {
    data: Vec<f32>,
}

impl Drop for TransposedF32 {
    fn drop(&mut self) {
        PACKED_BYTES.fetch_sub(self.data.len() * 4, std::sync::atomic::Ordering::Relaxed);
    }
}

impl TransposedF32 {
    /// `w` (`n × k`, row-major) transposed, in parallel over blocks of `wᵀ`'s
    /// rows, when the packed bytes alive stay within [`PACK_BUDGET_BYTES`];
    /// `None` otherwise.
    pub fn within_budget(w: &[f32], n: usize, k: usize) -> Option<Self> {
        assert_eq!(w.len(), n * k, "transpose: w is not n × k");
        if !reserve_within_budget(n * k * 4) {
            return None;
        }
        let mut data = vec![0.0f32; n * k];
        if n > 0 {
            // 16 rows of wᵀ (16 input features) per task: each reads a
            // 64-byte column strip of w.
            data.par_chunks_mut(16 * n).enumerate().for_each(|(b, rows)| {
                for (r, row) in rows.chunks_exact_mut(n).enumerate() {
                    let p = b * 16 + r;
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = w[j * k + p];
                    }
                }
            });
        }
        Some(Self { data })
    }

    /// `wᵀ`, `k × n` row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
}

/// `w` (`[n, k]`) packed into panels of [`NR`] columns of `wᵀ`:
/// `data[(panel·k + p)·NR + j] = w[panel·NR + j, p]`, zero past `n`.
/// Counted against [`PACK_BUDGET_BYTES`] while alive.
#[derive(Debug)]
pub struct PackedF32 {
    n: usize,
    k: usize,
    data: Vec<Line>,
}

impl Drop for PackedF32 {
    fn drop(&mut self) {
        PACKED_BYTES.fetch_sub(self.bytes(), std::sync::atomic::Ordering::Relaxed);
    }
}

impl PackedF32 {
    /// Packs `w` (`n × k`, row-major), in parallel over panels, when the
    /// packed bytes alive stay within [`PACK_BUDGET_BYTES`]; `None` otherwise.
    pub fn pack_within_budget(w: &[f32], n: usize, k: usize) -> Option<Self> {
        reserve_within_budget(n.div_ceil(NR) * k * NR * 4).then(|| Self::pack_counted(w, n, k))
    }

    /// Packs `w` (`n × k`, row-major), in parallel over panels, whatever the
    /// budget (still counted against it).
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        let bytes = n.div_ceil(NR) * k * NR * 4;
        PACKED_BYTES.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        Self::pack_counted(w, n, k)
    }

    fn pack_counted(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "sgemm pack: w is not n × k");
        let panels = n.div_ceil(NR);
        let mut data = vec![Line::default(); panels * k * NR / 16];
        if k > 0 {
            bytemuck::cast_slice_mut::<Line, f32>(&mut data)
                .par_chunks_mut(k * NR)
                .enumerate()
                .for_each(|(panel, dst)| {
                    let j0 = panel * NR;
                    for j in 0..NR.min(n - j0) {
                        let row = &w[(j0 + j) * k..][..k];
                        for (p, &v) in row.iter().enumerate() {
                            dst[p * NR + j] = v;
                        }
                    }
                });
        }
        Self { n, k, data }
    }

    /// Output features (rows of `w`).
    pub fn n(&self) -> usize {
        self.n
    }
    /// Input features (columns of `w`).
    pub fn k(&self) -> usize {
        self.k
    }
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 64
    }
    fn as_ptr(&self) -> *const f32 {
        self.data.as_ptr().cast()
    }
}

/// `y[m, n] = x[m, k] · wᵀ (+ bias)` in f32, then GELU when `gelu`; `y` is
/// overwritten. Work is shared over the rayon pool when `parallel`. Panics
/// on mismatched lengths or when [`available`] is false (the backend checks
/// both before calling).
pub fn linear(
    x: &[f32],
    m: usize,
    w: &PackedF32,
    bias: Option<&[f32]>,
    y: &mut [f32],
    gelu: bool,
    parallel: bool,
) {
    let (n, k) = (w.n, w.k);
    check_lengths(x, m, n, k, bias, y);
    if m == 0 || n == 0 {
        return;
    }
    let out = OutPtr(y.as_mut_ptr());
    super::blocks::for_each_block(
        m.div_ceil(MC),
        n.div_ceil(NR),
        parallel,
        |apack: &mut Vec<f32>, rb, p0, p1| {
            let i0 = rb * MC;
            // SAFETY: the task writes rows i0..i0+rows, columns
            // p0·NR..min(p1·NR, n) of y, a block no other task touches; all
            // reads are in bounds of x, w.data and bias (lengths checked
            // above); AVX-512F is available.
            unsafe {
                block(x, k, i0, MC.min(m - i0), w, bias, out.ptr(), n, p0, p1, apack, gelu)
            };
        },
    );
}

/// Rows up to which the CPU backend runs [`linear`]; past them it runs the
/// `gemm` crate on [`TransposedF32`]. Interleaved in one process
/// (`examples/matmul_shapes.rs`, MiniLM's four shapes, Emerald Rapids class
/// VM, wall time, medians of 7): on one thread, as each lane runs
/// ([`super::lanes`]), this kernel was ahead on 3 of 4 shapes at 96 rows and
/// behind on 3–4 of 4 from 128 to 512 rows (e.g. 90 against 120 GFLOP/s at
/// 512 × 1152 × 384); on two threads it tied at 64–128 rows and fell behind
/// from 192. Whole encodes agreed: 16-query batches (512 rows) on two lanes
/// ran 5,150–5,570 tokens/s here and 6,860–8,040 on the crate. (Before the
/// crate read the weight transposed, this kernel led up to ~512 rows.)
pub const PACKED_MAX_ROWS: usize = 96;

/// Rows up to which [`linear_in_place`] runs instead of packing the weight:
/// one query's 32 tokens, or a handful of texts.
pub const IN_PLACE_ROWS: usize = 64;

/// [`linear`] for a few rows without a packed weight: `x` is packed instead
/// (32 rows per panel, transposed), and the weight's rows are read in place
/// and broadcast, so a one-off call (one query in a fresh process) pays no
/// weight packing. The micro-kernel is the same with the operands' roles
/// swapped, and every output is the same sequence of FMAs (`bias`, then
/// `x[i, p]·w[j, p]` in order of `p`; a product is commutative), so the
/// result equals [`linear`]'s bit for bit. `w` is `[n, k]` row-major.
/// Panics on mismatched lengths or without AVX-512F.
#[allow(clippy::too_many_arguments)]
pub fn linear_in_place(
    x: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
    gelu: bool,
    parallel: bool,
) {
    assert!(n > 0 || w.is_empty(), "sgemm: w has no rows");
    let k = w.len().checked_div(n).unwrap_or(0);
    assert_eq!(w.len(), n * k, "sgemm: w is not n × k");
    check_lengths(x, m, n, k, bias, y);
    if m == 0 || n == 0 {
        return;
    }
    // xt[panel][p][i] = x[panel·NR + i, p], zero past m.
    let panels = m.div_ceil(NR);
    let mut xt = vec![Line::default(); panels * k * NR / 16];
    {
        let xt = bytemuck::cast_slice_mut::<Line, f32>(&mut xt);
        for (i, row) in x.chunks_exact(k.max(1)).enumerate().take(m) {
            let dst = &mut xt[(i / NR) * k * NR..];
            for (p, &v) in row.iter().enumerate() {
                dst[p * NR + i % NR] = v;
            }
        }
    }
    let xt_ptr = xt.as_ptr() as usize;
    let out = OutPtr(y.as_mut_ptr());
    // Tasks: a panel of rows × a run of 12-feature tiles.
    super::blocks::for_each_block(
        panels,
        n.div_ceil(MR),
        parallel,
        |wpad: &mut Vec<f32>, panel, t0, t1| {
            let i0 = panel * NR;
            let rows = NR.min(m - i0);
            let b = (xt_ptr as *const f32).wrapping_add(panel * k * NR);
            for t in t0..t1 {
                let j0 = t * MR;
                let feats = MR.min(n - j0);
                // The last tile's missing features read zero-padded rows.
                let (a, lda) = if feats == MR {
                    (w[j0 * k..].as_ptr(), k)
                } else {
                    wpad.clear();
                    wpad.resize(MR * k.max(1), 0.0);
                    wpad[..feats * k].copy_from_slice(&w[j0 * k..]);
                    (wpad.as_ptr(), k)
                };
                // tile[r][i]: feature j0 + r of row i0 + i, started at its bias.
                let mut tile = [[0f32; NR]; MR];
                if let Some(bv) = bias {
                    for (r, row) in tile.iter_mut().enumerate().take(feats) {
                        row.fill(bv[j0 + r]);
                    }
                }
                // SAFETY: `a` addresses 12 rows of k floats (w's own rows or
                // the padded copy), `b` the panel's k·NR floats, 64-byte
                // aligned (xt is made of Lines, k·NR is a multiple of 16);
                // `tile` is 12 rows of NR writable floats; AVX-512F is
                // available (asserted above).
                unsafe {
                    micro_12x32(
                        k,
                        a,
                        lda,
                        b,
                        tile.as_mut_ptr().cast(),
                        NR,
                        MR,
                        NR,
                        Init::Load,
                    )
                };
                for i in 0..rows {
                    for (r, row) in tile.iter().enumerate().take(feats) {
                        // SAFETY: row i0 + i < m, column j0 + r < n; this
                        // task alone writes features t0·12..t1·12 of its rows.
                        unsafe { *out.ptr().add((i0 + i) * n + j0 + r) = row[i] };
                    }
                }
            }
        },
    );
    if gelu {
        for row in y.chunks_exact_mut(n) {
            super::vecmath::gelu_in_place(row);
        }
    }
}

/// The checks both entry points make before their unsafe blocks rely on
/// them: AVX-512F, and `x` `m × k`, `y` `m × n`, `bias` `n` long.
fn check_lengths(x: &[f32], m: usize, n: usize, k: usize, bias: Option<&[f32]>, y: &[f32]) {
    assert!(has_avx512f(), "sgemm needs AVX-512F");
    assert_eq!(x.len(), m * k, "sgemm: x is not m × k");
    assert_eq!(y.len(), m * n, "sgemm: y is not m × n");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "sgemm: bias is not n long");
    }
}

/// One task: rows `i0..i0+rows` × panels `p0..p1`.
///
/// # Safety
/// `y` addresses `m × n` floats and no other thread touches the block written
/// here; AVX-512F is available.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    x: &[f32],
    k: usize,
    i0: usize,
    rows: usize,
    w: &PackedF32,
    bias: Option<&[f32]>,
    y: *mut f32,
    n: usize,
    p0: usize,
    p1: usize,
    apack: &mut Vec<f32>,
    gelu: bool,
) {
    let tiles = rows.div_ceil(MR);
    let (c0, c1) = (p0 * NR, (p1 * NR).min(n));
    if k == 0 {
        // y = bias (or 0).
        for i in i0..i0 + rows {
            let dst = std::slice::from_raw_parts_mut(y.add(i * n + c0), c1 - c0);
            match bias {
                Some(b) => dst.copy_from_slice(&b[c0..c1]),
                None => dst.fill(0.0),
            }
        }
    }
    let mut kb = 0;
    while kb < k {
        let kc = KC.min(k - kb);
        // Full row tiles are read in place (row stride k); the last, short
        // one is copied, zero-padded to MR rows of kc, so no read runs past x.
        let full = rows / MR;
        let tail = rows % MR;
        if tail > 0 {
            apack.clear();
            apack.resize(MR * kc, 0.0);
            for r in 0..tail {
                apack[r * kc..][..kc].copy_from_slice(&x[(i0 + full * MR + r) * k + kb..][..kc]);
            }
        }
        for panel in p0..p1 {
            let c = panel * NR;
            let cols = NR.min(n - c);
            let b = w.as_ptr().add((panel * k + kb) * NR);
            let init = if kb > 0 {
                Init::Load
            } else {
                match bias {
                    Some(bv) => Init::Bias(bv.as_ptr().add(c)),
                    None => Init::Zero,
                }
            };
            for t in 0..tiles {
                let (a, lda) = if t < full {
                    (x.as_ptr().add((i0 + t * MR) * k + kb), k)
                } else {
                    (apack.as_ptr(), kc)
                };
                micro_12x32(
                    kc,
                    a,
                    lda,
                    b,
                    y.add((i0 + t * MR) * n + c),
                    n,
                    MR.min(rows - t * MR),
                    cols,
                    init,
                );
            }
        }
        kb += kc;
    }
    if gelu {
        for i in i0..i0 + rows {
            let row = std::slice::from_raw_parts_mut(y.add(i * n + c0), c1 - c0);
            super::vecmath::gelu_in_place(row);
        }
    }
}

/// Where a tile's accumulators start (shared with [`super::bf16`]'s kernel).
#[derive(Clone, Copy)]
pub(crate) enum Init {
    Zero,
    /// `NR` bias values (only the first `cols` are read).
    Bias(*const f32),
    /// The partial sums already in `c`.
    Load,
}

/// One 12 × 32 tile over `kc` k-steps: `c[r][j] = init + Σ_p a[r·lda + p] · b[p·NR + j]`
/// for `r < rows`, `j < cols` (all 12 rows of `a` are read).
///
/// # Safety
/// `a` addresses 12 rows (stride `lda`) of `kc` readable floats, `b` holds
/// `kc·NR` readable floats, 64-byte aligned; `c` addresses `rows` rows
/// (stride `ldc`) of `cols` writable floats; AVX-512F is available.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn micro_12x32(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    init: Init,
) {
    let (mut acc, masks) = tile_start(init, c, ldc, rows, cols);
    let mut a = a;
    let mut b = b;
    for _ in 0..kc {
        let b0 = _mm512_load_ps(b);
        let b1 = _mm512_load_ps(b.add(16));
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(r * lda));
            row[0] = _mm512_fmadd_ps(av, b0, row[0]);
            row[1] = _mm512_fmadd_ps(av, b1, row[1]);
        }
        a = a.add(1);
        b = b.add(NR);
    }
    tile_store(&acc, masks, c, ldc, rows);
}

/// A 12 × 32 tile's accumulators (two zmm per row) started as `init` says,
/// and the masks of its first `cols` columns (for the 16 lower, the 16 upper).
///
/// # Safety
/// For [`Init::Bias`], the pointer addresses `cols` readable floats; for
/// [`Init::Load`], `c` addresses `rows` rows (stride `ldc`) of `cols`
/// readable floats; AVX-512F is available.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn tile_start(
    init: Init,
    c: *const f32,
    ldc: usize,
    rows: usize,
    cols: usize,
) -> ([[__m512; 2]; MR], [__mmask16; 2]) {
    let mask = |n: usize| -> __mmask16 { ((1u32 << n.min(16)) - 1) as __mmask16 };
    let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    match init {
        Init::Zero => {}
        Init::Bias(bias) => {
            let b0 = _mm512_maskz_loadu_ps(m0, bias);
            let b1 = _mm512_maskz_loadu_ps(m1, bias.add(16));
            for row in acc.iter_mut() {
                *row = [b0, b1];
            }
        }
        Init::Load => {
            for (r, row) in acc.iter_mut().enumerate().take(rows) {
                let cr = c.add(r * ldc);
                *row = [
                    _mm512_maskz_loadu_ps(m0, cr),
                    _mm512_maskz_loadu_ps(m1, cr.add(16)),
                ];
            }
        }
    }
    (acc, [m0, m1])
}

/// Stores the first `rows` rows of a tile's accumulators, masked to its
/// columns ([`tile_start`]'s masks).
///
/// # Safety
/// `c` addresses `rows` rows (stride `ldc`) of the masked columns, writable;
/// AVX-512F is available.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn tile_store(
    acc: &[[__m512; 2]; MR],
    masks: [__mmask16; 2],
    c: *mut f32,
    ldc: usize,
    rows: usize,
) {
    for (r, row) in acc.iter().enumerate().take(rows) {
        let cr = c.add(r * ldc);
        _mm512_mask_storeu_ps(cr, masks[0], row[0]);
        _mm512_mask_storeu_ps(cr.add(16), masks[1], row[1]);
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_12x32(
    _kc: usize,
    _a: *const f32,
    _lda: usize,
    _b: *const f32,
    _c: *mut f32,
    _ldc: usize,
    _rows: usize,
    _cols: usize,
    _init: Init,
) {
    unreachable!("sgemm::available() is false off x86-64")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A value in [-1, 1) from a 64-bit LCG (the kernels' tests' inputs).
    pub(crate) fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Against an f64 product, over shapes with ragged rows, columns and k
    /// slices, with and without bias and GELU, serial and parallel.
    #[test]
    fn linear_matches_f64() {
        if !has_avx512f() {
            eprintln!("no AVX-512F: sgemm not tested");
            return;
        }
        let mut seed = 7u64;
        for &(m, n, k) in &[
            (1, 1, 1),
            (13, 33, 7),
            (96, 32, 256),
            (97, 70, 300),
            (200, 128, 513),
            (5, 17, 0),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
            let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let packed = PackedF32::pack(&w, n, k);
            for &(with_bias, gelu, parallel) in
                &[(false, false, false), (true, false, true), (true, true, true)]
            {
                let mut y = vec![f32::NAN; m * n];
                linear(
                    &x,
                    m,
                    &packed,
                    with_bias.then_some(&bias[..]),
                    &mut y,
                    gelu,
                    parallel,
                );
                for i in 0..m {
                    for j in 0..n {
                        let mut s = if with_bias { bias[j] as f64 } else { 0.0 };
                        let mut mag = s.abs();
                        for p in 0..k {
                            let t = x[i * k + p] as f64 * w[j * k + p] as f64;
                            s += t;
                            mag += t.abs();
                        }
                        let mut want = [s as f32];
                        if gelu {
                            crate::backend::vecmath::gelu_in_place(&mut want);
                        }
                        let got = y[i * n + j];
                        // f32 accumulation: error within a few ulps of the
                        // sum of magnitudes (k terms, each rounded once).
                        let tol = (mag as f32) * f32::EPSILON * (k as f32).sqrt().max(1.0) * 2.0
                            + 1e-7;
                        assert!(
                            (got - want[0]).abs() <= tol,
                            "m{m} n{n} k{k} bias{with_bias} gelu{gelu}: y[{i},{j}] = {got}, \
                             f64 says {}",
                            want[0]
                        );
                    }
                }
            }
        }
    }

    /// Every output is the same sequence of FMAs whatever the batch: a row
    /// computed inside 100 rows (parallel, several row blocks and a short
    /// last tile) equals, bit for bit, the row computed alone.
    #[test]
    fn a_row_does_not_depend_on_its_batch() {
        if !has_avx512f() {
            eprintln!("no AVX-512F: sgemm not tested");
            return;
        }
        let mut seed = 3u64;
        let (m, n, k) = (100, 96, 700);
        let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
        let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
        let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
        let packed = PackedF32::pack(&w, n, k);
        let mut all = vec![0.0; m * n];
        linear(&x, m, &packed, Some(&bias), &mut all, true, true);
        for i in [0, 11, 12, 95, 96, 99] {
            let mut one = vec![0.0; n];
            linear(&x[i * k..][..k], 1, &packed, Some(&bias), &mut one, true, false);
            assert_eq!(one, all[i * n..][..n], "row {i}");
        }
    }

    /// The in-place path (few rows, the weight read as it is) gives the
    /// packed path's bits: ragged rows, features and depths, bias and GELU.
    #[test]
    fn in_place_rows_equal_packed_rows() {
        if !has_avx512f() {
            eprintln!("no AVX-512F: sgemm not tested");
            return;
        }
        let mut seed = 5u64;
        for &(m, n, k) in &[(1, 1, 1), (5, 70, 300), (32, 384, 384), (33, 13, 513), (64, 40, 0)] {
            let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
            let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let packed = PackedF32::pack(&w, n, k);
            for &(with_bias, gelu, parallel) in &[(false, false, false), (true, true, true)] {
                let b = with_bias.then_some(&bias[..]);
                let mut want = vec![f32::NAN; m * n];
                linear(&x, m, &packed, b, &mut want, gelu, parallel);
                let mut got = vec![f32::NAN; m * n];
                linear_in_place(&x, m, &w, n, b, &mut got, gelu, parallel);
                assert_eq!(got, want, "m{m} n{n} k{k} bias {with_bias} gelu {gelu}");
            }
        }
    }
}
