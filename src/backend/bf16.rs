//! The CPU backend's reduced-precision linear layer (`--precision bf16`):
//! `y = x · wᵀ (+ bias)` with `x` and `w` rounded to bfloat16 (round to
//! nearest even) and products summed in f32 by AVX512-BF16 `vdpbf16ps`
//! (`acc += a₀·b₀ + a₁·b₁` per f32 lane, two k-steps per instruction).
//!
//! Layout (BLIS-style): `w` (`[n, k]`, the checkpoint's `[out, in]`) is packed
//! once per weight into panels of [`NR`] = 32 output columns, one u32 per
//! (k-pair, column) holding `bf16(w[j][2q]) | bf16(w[j][2q+1]) << 16` (zeros
//! past `n` and past an odd `k`), so one k-pair of a panel is two 512-bit
//! loads. A task owns a block of up to [`MC`] rows × a range of panels; per
//! [`KC`]-deep slice of k it packs its rows of `x` the same way into tiles of
//! [`MR`] = 12 rows (`tile[q][r]` = the pair of row r), then for every panel
//! runs the 12 × 32 micro-kernel: 24 zmm accumulators, two panel loads and
//! twelve broadcast `vdpbf16ps` pairs per k-pair. The first slice starts from
//! the bias (or zero), later ones from the f32 partial sums in `y`; GELU, when
//! asked, runs over the task's block while it is still in cache.
//!
//! On AMX (Sapphire Rapids and later) the same product runs on the tiles
//! instead: the packed panels are already the tiles' B layout, `x` is
//! rounded into 64-byte-aligned buffers in tile order, and a task runs a
//! superblock of rows (kept in L2) past every panel, 32 rows × 32 columns at
//! a time in four C tiles. The tiles also give an exact f32 product
//! ([`PackedWeight::pack_split`], the CPU backend's default f32 linear on AMX
//! where [`split_pays`]): `x` and `w` split into three bf16 parts each
//! ([`split3`]), six part products summed in f32.
//!
//! Only on x86-64 CPUs with AVX512-BF16 ([`available`]); elsewhere the
//! backend refuses the mode with a clear error (see `CpuBackend::with_precision`).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rayon::prelude::*;

use super::blocks::OutPtr;

use super::sgemm::Init;

/// Output columns per panel (two zmm registers of f32 accumulators).
pub const NR: usize = 32;
/// Rows per micro-kernel tile (the tile helpers shared with [`super::sgemm`]
/// hold its 12).
pub const MR: usize = super::sgemm::MR;
/// Depth (k-steps, even) of one k slice.
const KC: usize = 512;
/// Rows per task (a multiple of [`MR`]).
const MC: usize = 96;

/// True when this CPU has AVX512-BF16 (and AVX-512F) for [`linear`] (checked once).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `v` rounded to the nearest bfloat16 (ties to even), as bits; NaN stays NaN.
#[inline(always)]
pub fn to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The f32 a bfloat16 bit pattern stands for.
#[inline(always)]
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Two values as one bf16 pair (the first in the low half).
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16
}

/// 64 bytes on a 64-byte boundary: the unit of the buffers AMX loads tiles
/// from. A tile row that straddles two cache lines loads about 6× slower
/// (measured on Sapphire Rapids: 24 ns against 4 ns per 1 KiB tile).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[repr(C, align(64))]
struct Line([u32; 16]);
// SAFETY: sixteen u32 and no padding (size 64 = alignment).
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; every bit pattern is a valid [u32; 16].
unsafe impl bytemuck::Pod for Line {}

/// `len` u32 (zeroed) in 64-byte-aligned storage.
#[derive(Clone, Debug, PartialEq, Default)]
struct AlignedU32 {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedU32 {
    fn zeroed(len: usize) -> Self {
        Self {
            lines: vec![Line::default(); len.div_ceil(16)],
            len,
        }
    }
    /// Holds `len` u32 from now on, reusing the storage: the old contents
    /// stay (callers overwrite what they read), new storage is zero.
    fn reuse(&mut self, len: usize) {
        let lines = len.div_ceil(16);
        if self.lines.len() < lines {
            self.lines.resize(lines, Line::default());
        }
        self.len = len;
    }
    fn as_mut_slice(&mut self) -> &mut [u32] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
    fn as_ptr(&self) -> *const u32 {
        self.lines.as_ptr().cast()
    }
}

/// `w` (`[n, k]`) in bf16, packed into panels of [`NR`] columns of `wᵀ`;
/// either one bf16 rounding of `w` ([`PackedWeight::pack`]) or its exact
/// three-term split ([`PackedWeight::pack_split`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeight {
    n: usize,
    k: usize,
    /// Pairs per panel row: `k.div_ceil(2)` rounded up to [`TILE_PAIRS`].
    kq: usize,
    /// bf16 terms per weight: 1 (`pack`) or 3 (`pack_split`: hi, mid, lo).
    parts: usize,
    /// `panels × parts × kq × NR` pairs, 64-byte aligned.
    data: AlignedU32,
}

/// k-pairs per AMX tile row (64 bytes); packed weights pad k to a multiple.
const TILE_PAIRS: usize = 16;

/// `v` as `hi + mid + lo`, three bfloat16 (each the nearest to what the
/// earlier ones leave): exact for every f32 whose parts stay normal and
/// finite, i.e. 2⁻¹¹⁰ ≲ |v| < 3.39e38 (above that `hi` rounds to ∞); the
/// parts shrink by 2⁻⁸ each (`|mid| ≤ 2⁻⁸·|v|`, `|lo| ≤ 2⁻¹⁶·|v|`).
#[inline(always)]
pub fn split3(v: f32) -> [u16; 3] {
    let hi = to_bf16(v);
    let r1 = v - from_bf16(hi);
    let mid = to_bf16(r1);
    let r2 = r1 - from_bf16(mid);
    [hi, mid, to_bf16(r2)]
}

impl PackedWeight {
    /// Packs `w` (`n × k`, row-major), in parallel over panels.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        Self::pack_parts(w, n, k, 1)
    }

    /// Packs the exact split `w = hi + mid + lo` ([`split3`]) for the f32
    /// product on AMX: [`linear`] then splits `x` the same way (exact) and
    /// sums the six part products whose size reaches 2⁻¹⁸·|x·w| (hi·hi,
    /// hi·mid, mid·hi, hi·lo, mid·mid, lo·hi) in f32; bf16 × bf16 is exact in
    /// f32, and the three dropped ones (mid·lo, lo·mid, lo·lo) are below 2⁻²⁶
    /// of each product, under f32's own rounding. So the error is an f32 dot
    /// product's. Needs [`split_available`].
    pub fn pack_split(w: &[f32], n: usize, k: usize) -> Self {
        Self::pack_parts(w, n, k, 3)
    }

    /// Bytes [`PackedWeight::pack_split`] holds for an `n × k` weight.
    pub fn split_bytes(n: usize, k: usize) -> usize {
        n.div_ceil(NR) * 3 * k.div_ceil(2).div_ceil(TILE_PAIRS) * TILE_PAIRS * NR * 4
    }

    fn pack_parts(w: &[f32], n: usize, k: usize, parts: usize) -> Self {
        assert_eq!(w.len(), n * k, "bf16 pack: w is not n × k");
        let panels = n.div_ceil(NR);
        let kq = k.div_ceil(2).div_ceil(TILE_PAIRS) * TILE_PAIRS;
        let mut data = AlignedU32::zeroed(panels * parts * kq * NR);
        let terms = |v: f32| -> [u16; 3] {
            if parts == 1 {
                [to_bf16(v), 0, 0]
            } else {
                split3(v)
            }
        };
        if kq > 0 {
            data.as_mut_slice()
                .par_chunks_mut(parts * kq * NR)
                .enumerate()
                .for_each(|(panel, dst)| {
                    let j0 = panel * NR;
                    for j in 0..NR.min(n - j0) {
                        let row = &w[(j0 + j) * k..][..k];
                        for q in 0..k.div_ceil(2) {
                            let lo = terms(row[2 * q]);
                            let hi = terms(row.get(2 * q + 1).copied().unwrap_or(0.0));
                            for s in 0..parts {
                                dst[(s * kq + q) * NR + j] = lo[s] as u32 | (hi[s] as u32) << 16;
                            }
                        }
                    }
                });
        }
        Self {
            n,
            k,
            kq,
            parts,
            data,
        }
    }

    /// Output features (rows of `w`).
    pub fn n(&self) -> usize {
        self.n
    }
    /// Input features (columns of `w`).
    pub fn k(&self) -> usize {
        self.k
    }
    /// True for the three-term split ([`PackedWeight::pack_split`]).
    pub fn is_split(&self) -> bool {
        self.parts == 3
    }
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len * 4
    }
}

/// `y[m, n] = bf16(x[m, k]) · bf16(w)ᵀ (+ bias)` summed in f32, then GELU when
/// `gelu`; `y` is overwritten. For a split weight ([`PackedWeight::pack_split`],
/// AMX only) the product is the exact one to f32 accuracy.
/// Work is shared over the rayon pool when `parallel`. Panics on mismatched
/// lengths or when [`available`] is false (the backend checks both before
/// calling).
pub fn linear(
    x: &[f32],
    m: usize,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    y: &mut [f32],
    gelu: bool,
    parallel: bool,
) {
    let (n, k) = (w.n, w.k);
    assert!(available(), "bf16::linear needs AVX512-BF16");
    assert_eq!(x.len(), m * k, "bf16: x is not m × k");
    assert_eq!(y.len(), m * n, "bf16: y is not m × n");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bf16: bias is not n long");
    }
    if w.is_split() {
        assert!(amx_available(), "bf16::linear: a split weight needs AMX");
    }
    if m == 0 || n == 0 {
        return;
    }
    if k > 0 && amx_available() {
        linear_amx(x, m, w, bias, y, gelu, parallel)
    } else {
        linear_vdp(x, m, w, bias, y, gelu, parallel)
    }
}

/// True when f32 linear layers can run as split bf16 on AMX
/// ([`PackedWeight::pack_split`]): this CPU has AMX-BF16 and AVX512-BF16 and the OS
/// grants the tiles (`COLWGPU_NO_AMX=1` says no).
pub fn split_available() -> bool {
    available() && amx_available()
}

/// True unless `COLWGPU_F32_GEMM` names an FMA kernel (`fma`, `gemm`,
/// `packed`; any value but `amx-split`): f32 linears then run as splits on
/// AMX where [`split_available`] (read once).
pub fn split_by_default() -> bool {
    static DEFAULT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::env::var("COLWGPU_F32_GEMM").map_or(true, |v| v.eq_ignore_ascii_case("amx-split"))
    })
}

/// True when the default f32 path should run an `n × k` weight as a split
/// on AMX: its split packing is at most 32 MiB and k at most 4096. The
/// kernel re-reads the whole weight for every superblock of rows, which
/// pays while the weight stays in L3 (BERT shapes at 1,024 rows, one thread:
/// 1.3–1.4× the `gemm` crate at k = 384 and 768, level at k = 1536 and 3072;
/// 4096 × 1024, 25 MB: 1.1×) and not beyond (a page model's 8960 × 1536,
/// 82 MB: 0.93×; 1536 × 8960: 0.48×), where the FMA kernels block for cache.
pub fn split_pays(n: usize, k: usize) -> bool {
    k <= 4096 && PackedWeight::split_bytes(n, k) <= 32 << 20
}

/// [`linear`] with `vdpbf16ps` (AVX512-BF16); inputs checked by the caller.
fn linear_vdp(
    x: &[f32],
    m: usize,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    y: &mut [f32],
    gelu: bool,
    parallel: bool,
) {
    let (n, k) = (w.n, w.k);
    debug_assert_eq!(w.parts, 1, "the AVX512-BF16 kernel takes single-term weights");
    let out = OutPtr(y.as_mut_ptr());
    super::blocks::for_each_block(
        m.div_ceil(MC),
        n.div_ceil(NR),
        parallel,
        |apack: &mut Vec<u32>, rb, p0, p1| {
            let i0 = rb * MC;
            // SAFETY: the task writes rows i0..i0+rows, columns
            // p0·NR..min(p1·NR, n) of y, a block no other task touches; all
            // reads are in bounds of x, w.data and bias (lengths checked
            // above); AVX512-BF16 is available.
            unsafe { block(x, k, i0, MC.min(m - i0), w, bias, out, n, p0, p1, apack, gelu) };
        },
    );
}

/// One task: rows `i0..i0+rows` × panels `p0..p1`.
///
/// # Safety
/// `y` addresses `m × n` floats and no other thread touches the block written
/// here; AVX512-BF16 is available.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    x: &[f32],
    k: usize,
    i0: usize,
    rows: usize,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    y: OutPtr,
    n: usize,
    p0: usize,
    p1: usize,
    apack: &mut Vec<u32>,
    gelu: bool,
) {
    let tiles = rows.div_ceil(MR);
    let kq_total = w.kq;
    if k == 0 {
        // y = bias (or 0).
        for i in i0..i0 + rows {
            let c0 = p0 * NR;
            let c1 = (p1 * NR).min(n);
            let dst = std::slice::from_raw_parts_mut(y.ptr().add(i * n + c0), c1 - c0);
            match bias {
                Some(b) => dst.copy_from_slice(&b[c0..c1]),
                None => dst.fill(0.0),
            }
        }
    }
    let mut kb = 0;
    while kb < k {
        let kc = KC.min(k - kb);
        let kq = kc.div_ceil(2);
        // Pack the rows' k-slice, tile by tile: apack[(t·kq + q)·MR + r].
        apack.clear();
        apack.resize(tiles * kq * MR, 0);
        for t in 0..tiles {
            let dst = &mut apack[t * kq * MR..][..kq * MR];
            for r in 0..MR.min(rows - t * MR) {
                let src = &x[(i0 + t * MR + r) * k + kb..][..kc];
                let mut pairs = src.chunks_exact(2);
                for (q, p) in pairs.by_ref().enumerate() {
                    dst[q * MR + r] = pair(p[0], p[1]);
                }
                if let [last] = pairs.remainder() {
                    dst[(kq - 1) * MR + r] = pair(*last, 0.0);
                }
            }
        }
        for panel in p0..p1 {
            let c0 = panel * NR;
            let cols = NR.min(n - c0);
            let b = w.data.as_ptr().add((panel * kq_total + kb / 2) * NR);
            let init = if kb > 0 {
                Init::Load
            } else {
                match bias {
                    Some(bv) => Init::Bias(bv.as_ptr().add(c0)),
                    None => Init::Zero,
                }
            };
            for t in 0..tiles {
                let r = MR.min(rows - t * MR);
                micro_12x32(
                    kq,
                    apack.as_ptr().add(t * kq * MR),
                    b,
                    y.ptr().add((i0 + t * MR) * n + c0),
                    n,
                    r,
                    cols,
                    init,
                );
            }
        }
        kb += kc;
    }
    if gelu {
        let c0 = p0 * NR;
        let c1 = (p1 * NR).min(n);
        for i in i0..i0 + rows {
            let row = std::slice::from_raw_parts_mut(y.ptr().add(i * n + c0), c1 - c0);
            super::vecmath::gelu_in_place(row);
        }
    }
}


/// One 12 × 32 tile over `kq` k-pairs: `c[r][j] = init + Σ_q a[q][r] · b[q][j]`
/// (each term a bf16 pair dot product) for `r < rows`, `j < cols`.
///
/// # Safety
/// `a` holds `kq·MR`, `b` `kq·NR` readable pairs; `c` addresses `rows` rows
/// (stride `ldc`) of `cols` writable floats; AVX512-BF16 is available.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro_12x32(
    kq: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    init: Init,
) {
    let (mut acc, masks) = super::sgemm::tile_start(init, c, ldc, rows, cols);
    let mut a = a;
    let mut b = b;
    for _ in 0..kq {
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(16) as *const _));
        for (r, row) in acc.iter_mut().enumerate() {
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r) as i32));
            row[0] = _mm512_dpbf16_ps(row[0], av, b0);
            row[1] = _mm512_dpbf16_ps(row[1], av, b1);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    super::sgemm::tile_store(&acc, masks, c, ldc, rows);
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_12x32(
    _kq: usize,
    _a: *const u32,
    _b: *const u32,
    _c: *mut f32,
    _ldc: usize,
    _rows: usize,
    _cols: usize,
    _init: Init,
) {
    unreachable!("bf16::available() is false off x86-64")
}

// ---- AMX-BF16: the same product on the tile unit (Sapphire Rapids and later).

/// True when this CPU has AMX-BF16 and the OS granted this process the tile
/// state (Linux `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`),
/// asked once. `COLWGPU_NO_AMX=1` turns it off (then AVX512-BF16 is used).
pub fn amx_available() -> bool {
    static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMX.get_or_init(|| {
        if std::env::var_os("COLWGPU_NO_AMX").is_some_and(|v| v != "0") {
            return false;
        }
        amx::request_permission()
    })
}

/// Which kernel [`linear`] runs on this CPU ("amx-bf16", "avx512-bf16" or "none").
pub fn kernel_name() -> &'static str {
    if !available() {
        "none"
    } else if amx_available() {
        "amx-bf16"
    } else {
        "avx512-bf16"
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx {
    use super::*;

    /// CPUID.(7,0):EDX bits 22 (AMX-BF16) and 24 (AMX-TILE), then the
    /// process-wide permission for the tile data state.
    pub fn request_permission() -> bool {
        let leaf7 = __cpuid_count(7, 0);
        if leaf7.edx & (1 << 22) == 0 || leaf7.edx & (1 << 24) == 0 {
            return false;
        }
        const SYS_ARCH_PRCTL: usize = 158;
        const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
        const XFEATURE_XTILEDATA: usize = 18;
        let ret: isize;
        // SAFETY: a plain Linux syscall with integer arguments; it only
        // changes which xsave features this process may use.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack)
            );
        }
        ret == 0
    }

    /// Tile configuration (palette 1): tiles 0-7 all 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: TileConfig = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// Rows per AMX tile block (two A tiles).
    pub const BLOCK_ROWS: usize = 32;
    /// Rows per AMX task ([`block`]) for rows of `row_bytes`: as many tile
    /// blocks (1 to 8) as keep the task's bf16 rows within about 1 MiB, so
    /// they stay in L2 while the panels pass (eight blocks of a split
    /// 384-wide input, 73 KiB each; three of a split 1536-wide one).
    pub fn super_rows(row_bytes: usize) -> usize {
        (((1 << 20) / (BLOCK_ROWS * row_bytes.max(1))).clamp(1, 8)) * BLOCK_ROWS
    }

    /// `c[32][32] = Σ_(s,t) a_s[32 rows][kq pairs] · b_t[kq pairs][32]`, on
    /// tiles: C in tmm0-3, A in tmm4-5, B in tmm6-7. Part `s` of an `a` row
    /// starts `s·kq` pairs in, part `t` of the panel `t·kq·NR` pairs in. The
    /// products: the one bf16 product, or for a split weight (`split`) every
    /// part pair whose indices add up to at most 2 (hi·hi, hi·mid, mid·hi,
    /// hi·lo, mid·mid, lo·hi), the five small ones first: the accumulator
    /// then holds only ~2⁻⁷ of the result while their 5k terms go in, so
    /// their rounding is negligible and the error is that of the k hi·hi
    /// terms, a plain f32 dot product's (hi·hi first measured 2.9× the FMA
    /// gemm's error at k = 1536).
    ///
    /// `a` is one 32-row block in the tile order of [`super::tile_offset`]
    /// (each A tile 1 KiB in one piece), `b` rows (one k-pair of a 32-column
    /// panel) are 128 bytes apart; `c` gets 32 rows of 32 f32 (128 bytes
    /// apart).
    ///
    /// # Safety
    /// The tile configuration is loaded on this thread; `a` addresses the
    /// block's 32 × `parts·kq` pairs, `b` the panel's parts; `c` 32 × 32
    /// floats; `kq` is a multiple of 16; all three 64-byte aligned (for speed).
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_32x32(
        kq: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        split: bool,
    ) {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack)
        );
        let a_at = |s: usize, q: usize| a.add(super::tile_offset(0, s * kq + q)).cast::<u8>();
        let b_at = |t: usize, q: usize| b.add((t * kq + q) * NR).cast::<u8>();
        if split {
            // The five small products first, all in one sweep of k: per
            // k-step the operands walk (2,0) → (1,0) → (1,1) → (0,1) → (0,2),
            // each move reloading only A or only B, so 12 tile loads feed 20
            // products (the loads, not the products, bound this loop when
            // the tiles come from L2).
            let mut q = 0;
            while q < kq {
                std::arch::asm!(
                    "tileloadd tmm4, [{a2} + {lda}*1]",
                    "tileloadd tmm6, [{b0} + {ldb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{b0} + {ldb}*1 + 64]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{a2} + {lda}*1 + 1024]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    "tileloadd tmm4, [{a1} + {lda}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{a1} + {lda}*1 + 1024]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    "tileloadd tmm6, [{b1} + {ldb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tileloadd tmm7, [{b1} + {ldb}*1 + 64]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    "tileloadd tmm4, [{a0} + {lda}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{a0} + {lda}*1 + 1024]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    "tileloadd tmm6, [{b2} + {ldb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tileloadd tmm7, [{b2} + {ldb}*1 + 64]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a_at(0, q),
                    a1 = in(reg) a_at(1, q),
                    a2 = in(reg) a_at(2, q),
                    b0 = in(reg) b_at(0, q),
                    b1 = in(reg) b_at(1, q),
                    b2 = in(reg) b_at(2, q),
                    lda = in(reg) 64usize,
                    ldb = in(reg) 128usize,
                    options(nostack, readonly)
                );
                q += TILE_PAIRS;
            }
        }
        // hi·hi (or the single bf16 product) last.
        let mut q = 0;
        while q < kq {
            std::arch::asm!(
                "tileloadd tmm4, [{a0} + {lda}*1]",
                "tileloadd tmm6, [{b0} + {ldb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b0} + {ldb}*1 + 64]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a0} + {lda}*1 + 1024]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a_at(0, q),
                b0 = in(reg) b_at(0, q),
                lda = in(reg) 64usize,
                ldb = in(reg) 128usize,
                options(nostack, readonly)
            );
            q += TILE_PAIRS;
        }
        let c = c.cast::<u8>();
        std::arch::asm!(
            "tilestored [{c0} + {ldc}*1], tmm0",
            "tilestored [{c1} + {ldc}*1], tmm1",
            "tilestored [{c2} + {ldc}*1], tmm2",
            "tilestored [{c3} + {ldc}*1], tmm3",
            c0 = in(reg) c,
            c1 = in(reg) c.add(64),
            c2 = in(reg) c.add(16 * 128),
            c3 = in(reg) c.add(16 * 128 + 64),
            ldc = in(reg) 128usize,
            options(nostack)
        );
    }

    /// 32 × 32 f32 on a 64-byte boundary (where the C tiles are stored).
    #[repr(C, align(64))]
    struct CBlock([f32; BLOCK_ROWS * NR]);

    /// Rows `i0..i0+rows` (≤ [`super_rows`]) × panels `p0..p1` of `y` from
    /// the bf16 rows `xb` (`rows` rounded up to 32 rows of `w.parts·w.kq`
    /// pairs from row i0, zero-padded), by [`tile_32x32`]. Panels run outermost, so one panel's weights
    /// (the same B tiles) serve every 32-row block before the next panel is
    /// read: the weights cross from L3 once per superblock, not once per 32
    /// rows, and the superblock's rows stay in L2.
    ///
    /// # Safety
    /// As [`super::linear`]'s task: the block of `y` is this task's alone;
    /// `xb` addresses `rows.div_ceil(32)·32` rows of `w.parts·w.kq` pairs,
    /// 64-byte aligned; AMX is permitted.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn block(
        xb: *const u32,
        rows: usize,
        i0: usize,
        w: &PackedWeight,
        bias: Option<&[f32]>,
        y: *mut f32,
        n: usize,
        p0: usize,
        p1: usize,
        gelu: bool,
    ) {
        std::arch::asm!("ldtilecfg [{}]", in(reg) &CONFIG as *const TileConfig, options(nostack, readonly));
        let mut c = CBlock([0f32; BLOCK_ROWS * NR]);
        let row_pairs = w.parts * w.kq;
        let panel_pairs = row_pairs * NR;
        for panel in p0..p1 {
            let c0 = panel * NR;
            let cols = NR.min(n - c0);
            for r0 in (0..rows).step_by(BLOCK_ROWS) {
                // The block's rows of y, fetched now, are near by the time
                // the products are done: stored cold, their 64 lines stalled
                // each block by about half a microsecond. (Without the
                // unstable `prfchw` feature the ET0 hint compiles to
                // `prefetcht0`; an asm `prefetchw` measured the same.)
                for r in 0..BLOCK_ROWS.min(rows - r0) {
                    let row = y.add((i0 + r0 + r) * n + c0).cast::<i8>();
                    _mm_prefetch::<_MM_HINT_ET0>(row);
                    _mm_prefetch::<_MM_HINT_ET0>(row.add(4 * cols - 1));
                }
                tile_32x32(
                    w.kq,
                    xb.add(r0 * row_pairs),
                    w.data.as_ptr().add(panel * panel_pairs),
                    c.0.as_mut_ptr(),
                    w.parts == 3,
                );
                for r in 0..BLOCK_ROWS.min(rows - r0) {
                    let dst =
                        std::slice::from_raw_parts_mut(y.add((i0 + r0 + r) * n + c0), cols);
                    let src = &c.0[r * NR..][..cols];
                    match bias {
                        Some(b) => {
                            for ((d, s), b) in dst.iter_mut().zip(src).zip(&b[c0..]) {
                                *d = s + b;
                            }
                        }
                        None => dst.copy_from_slice(src),
                    }
                }
            }
        }
        std::arch::asm!("tilerelease", options(nostack, nomem));
        if gelu {
            let (c0, c1) = (p0 * NR, (p1 * NR).min(n));
            for r in 0..rows {
                let row = std::slice::from_raw_parts_mut(y.add((i0 + r) * n + c0), c1 - c0);
                super::super::vecmath::gelu_in_place(row);
            }
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod amx {
    use super::*;
    pub fn request_permission() -> bool {
        false
    }
    pub const BLOCK_ROWS: usize = 32;
    pub fn super_rows(_row_bytes: usize) -> usize {
        BLOCK_ROWS
    }
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn block(
        _xb: *const u32,
        _rows: usize,
        _i0: usize,
        _w: &PackedWeight,
        _bias: Option<&[f32]>,
        _y: *mut f32,
        _n: usize,
        _p0: usize,
        _p1: usize,
        _gelu: bool,
    ) {
        unreachable!("AMX is only used on x86-64 Linux")
    }
}

/// `src` rounded to bf16 pairs in `dst` (`src.len().div_ceil(2)` of them are
/// written): 32 values per `vcvtne2ps2bf16` (round to nearest even; like the
/// scalar [`to_bf16`] except that subnormal inputs become zero), the tail scalar.
fn round_row(src: &[f32], dst: &mut [u32]) {
    let k = src.len();
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if available() {
        done = k / 32 * 32;
        // SAFETY: AVX512-BF16 is available; reads src[..done] and writes
        // dst[..done / 2], both in bounds (dst holds at least k.div_ceil(2)).
        unsafe { round_row_avx512(src.as_ptr(), dst.as_mut_ptr(), done / 32) };
    }
    let mut pairs = src[done..].chunks_exact(2);
    for (d, p) in dst[done / 2..].iter_mut().zip(pairs.by_ref()) {
        *d = pair(p[0], p[1]);
    }
    if let [last] = pairs.remainder() {
        dst[k / 2] = pair(*last, 0.0);
    }
}

/// `blocks` × 32 floats → 32 bf16 each.
///
/// # Safety
/// `src` has `32·blocks` readable floats, `dst` `16·blocks` writable u32;
/// AVX512-BF16 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn round_row_avx512(src: *const f32, dst: *mut u32, blocks: usize) {
    for b in 0..blocks {
        let lo = _mm512_loadu_ps(src.add(32 * b));
        let hi = _mm512_loadu_ps(src.add(32 * b + 16));
        // Lanes 0-15 of the result come from the second operand.
        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(dst.add(16 * b) as *mut _, v);
    }
}

/// `src` split into its three bf16 parts ([`split3`]), part `s` as pairs from
/// `dst[s·kq]` (`kq` ≥ `src.len().div_ceil(2)`; the rest is left as it is):
/// 16 values per step with `vcvtneps2bf16` where AVX512-BF16 is present
/// (which, unlike the scalar path, takes subnormal remainders as zero), the
/// tail scalar.
fn split_row(src: &[f32], dst: &mut [u32], kq: usize) {
    let k = src.len();
    let half: &mut [u16] = bytemuck::cast_slice_mut(dst);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if available() {
        done = k / 16 * 16;
        // SAFETY: AVX512-BF16 is available; reads src[..done], writes
        // half[s·2kq..][..done] for s < 3, in bounds since 2kq ≥ k and
        // half holds 3·2kq values.
        unsafe { split_row_avx512(src.as_ptr(), half.as_mut_ptr(), 2 * kq, done / 16) };
    }
    for (p, &v) in src.iter().enumerate().skip(done) {
        for (s, part) in split3(v).into_iter().enumerate() {
            half[s * 2 * kq + p] = part;
        }
    }
}

/// `blocks` × 16 floats → their three bf16 parts, part `s` at `dst + s·stride`.
///
/// # Safety
/// `src` has `16·blocks` readable floats; `dst + s·stride` has `16·blocks`
/// writable u16 for s < 3; AVX512-BF16 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn split_row_avx512(src: *const f32, dst: *mut u16, stride: usize, blocks: usize) {
    // bf16 → f32: the 16 bits become the high half.
    let widen = |h: __m256bh| -> __m512 {
        _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(h)),
            16,
        ))
    };
    for b in 0..blocks {
        let v = _mm512_loadu_ps(src.add(16 * b));
        let hi = _mm512_cvtneps_pbh(v);
        let r1 = _mm512_sub_ps(v, widen(hi));
        let mid = _mm512_cvtneps_pbh(r1);
        let r2 = _mm512_sub_ps(r1, widen(mid));
        let lo = _mm512_cvtneps_pbh(r2);
        for (s, part) in [hi, mid, lo].into_iter().enumerate() {
            _mm256_storeu_si256(
                dst.add(s * stride + 16 * b).cast(),
                std::mem::transmute::<__m256bh, __m256i>(part),
            );
        }
    }
}

/// [`linear`] on AMX: `x` rounded (or split) to bf16 in tile order (rows
/// padded to 32, k to the packed depth), then superblocks of rows × runs of
/// panels ([`amx::block`]).
fn linear_amx(
    x: &[f32],
    m: usize,
    w: &PackedWeight,
    bias: Option<&[f32]>,
    y: &mut [f32],
    gelu: bool,
    parallel: bool,
) {
    let (n, k, kq) = (w.n, w.k, w.kq);
    let bm = amx::BLOCK_ROWS;
    let blocks = m.div_ceil(bm);
    let row_pairs = w.parts * kq;
    let panels = n.div_ceil(NR);
    let sb = amx::super_rows(row_pairs * 4);
    // On one thread (a lane, or a one-thread pool) each superblock's rows are
    // converted just before its products, into a buffer of one superblock
    // that stays in L2; shared among threads, all rows are converted first.
    let serial = !parallel || rayon::current_num_threads() == 1;
    // The rounded rows go to this thread's scratch buffer (no fresh zeroed
    // megabytes per call); a nested call on the same thread (a rayon worker
    // that steals another linear while waiting) gets its own.
    let mut scratch = XB.with(|cell| cell.take());
    let xb = scratch.get_or_insert_with(AlignedU32::default);
    let held_blocks = if serial { blocks.min(sb / bm) } else { blocks };
    xb.reuse(held_blocks * bm * row_pairs);
    let split = w.is_split();
    // The 32-row block from row `row0` is converted row by row into `line`,
    // then its 16-pair pieces are scattered to the tile order
    // ([`tile_offset`]). Rows past m are left as they are: their sums are
    // never stored.
    let convert = |line: &mut Vec<u32>, row0: usize, dst: &mut [u32]| {
        line.resize(row_pairs, 0);
        for r in 0..bm.min(m - row0) {
            // The pairs past k (and the odd k's last high half) must be zero:
            // the packed weight's are, but 0 · garbage can be NaN.
            for part in line.chunks_exact_mut(kq) {
                part[k / 2..].fill(0);
            }
            let src = &x[(row0 + r) * k..][..k];
            if split {
                split_row(src, line, kq);
            } else {
                round_row(src, line);
            }
            for (p, piece) in line.chunks_exact(TILE_PAIRS).enumerate() {
                let at = tile_offset(r, p * TILE_PAIRS);
                dst[at..at + TILE_PAIRS].copy_from_slice(piece);
            }
        }
    };
    let out = OutPtr(y.as_mut_ptr());
    if serial {
        let mut line = Vec::new();
        for i0 in (0..m).step_by(sb) {
            let rows = sb.min(m - i0);
            for (b, dst) in xb
                .as_mut_slice()
                .chunks_mut(bm * row_pairs)
                .take(rows.div_ceil(bm))
                .enumerate()
            {
                convert(&mut line, i0 + b * bm, dst);
            }
            // SAFETY: xb holds rows i0..i0+rows rounded up to 32 (just
            // converted); this call alone writes y; AMX permission was
            // granted (amx_available).
            unsafe { amx::block(xb.as_ptr(), rows, i0, w, bias, out.ptr(), n, 0, panels, gelu) };
        }
    } else {
        xb.as_mut_slice()
            .par_chunks_mut(bm * row_pairs)
            .enumerate()
            .for_each_init(Vec::new, |line, (b, dst)| convert(line, b * bm, dst));
        super::blocks::for_each_block(m.div_ceil(sb), panels, true, |_: &mut (), blk, p0, p1| {
            let i0 = blk * sb;
            // SAFETY: rows i0..i0+min(sb, m-i0) rounded up to 32 of xb exist
            // (padded); the task writes rows i0..min(i0+sb, m), columns
            // p0·NR..min(p1·NR, n) of y alone; AMX permission was granted
            // (amx_available).
            unsafe {
                amx::block(
                    xb.as_ptr().add(i0 * row_pairs),
                    sb.min(m - i0),
                    i0,
                    w,
                    bias,
                    out.ptr(),
                    n,
                    p0,
                    p1,
                    gelu,
                )
            };
        });
    }
    XB.with(|cell| cell.set(scratch));
}

/// Where pair `p` of row `r` (< 32) of a 32-row block sits in
/// [`linear_amx`]'s buffer: k-steps of 16 pairs one after another, each two
/// 1 KiB A tiles (rows 0-15, then 16-31) of 16 rows × 16 pairs, so every
/// tile load reads one contiguous KiB and a block's k-steps one stream.
#[inline(always)]
fn tile_offset(r: usize, p: usize) -> usize {
    (p / TILE_PAIRS) * 2 * 16 * TILE_PAIRS + (r / 16) * 16 * TILE_PAIRS + (r % 16) * TILE_PAIRS + p % TILE_PAIRS
}

thread_local! {
    /// [`linear_amx`]'s rounded activations, kept between calls on a thread.
    static XB: std::cell::Cell<Option<AlignedU32>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3F80);
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties to even (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3F80);
        // Just above halfway rounds up.
        assert_eq!(to_bf16(f32::from_bits(0x3F80_8001)), 0x3F81);
        // 1 + 3·2⁻⁸ is halfway between two odd/even neighbours: up to even.
        assert_eq!(to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(to_bf16(-2.5), 0xC020);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        for v in values(1000, 9) {
            let r = from_bf16(to_bf16(v));
            assert!((r - v).abs() <= v.abs() * (1.0 / 256.0), "{v} → {r}");
        }
    }

    /// Exactly the f64 sum of the bf16-rounded products (up to f32 summation
    /// error), on shapes that exercise every tail: rows not a multiple of MR
    /// or MC, columns not a multiple of 16 or 32, odd k and k past one slice,
    /// with and without bias, serial and parallel.
    #[test]
    fn matches_f64_sum_of_rounded_products() {
        if !available() {
            eprintln!("skipped: no AVX512-BF16 on this CPU");
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (5, 7, 3),
            (12, 32, 512),
            (13, 33, 513),
            (97, 50, 1100),
            (200, 130, 385),
            (31, 40, 0),
            (64, 16, 17),
        ] {
            for with_bias in [false, true] {
                for parallel in [false, true] {
                    let x = values(m * k, 1);
                    let w = values(n * k, 2);
                    let b = values(n, 3);
                    let packed = PackedWeight::pack(&w, n, k);
                    let bias = with_bias.then_some(&b[..]);
                    let mut runs = vec![];
                    let mut y = vec![f32::NAN; m * n];
                    linear_vdp(&x, m, &packed, bias, &mut y, false, parallel);
                    runs.push(("avx512-bf16", y));
                    if amx_available() && k > 0 {
                        let mut y = vec![f32::NAN; m * n];
                        linear_amx(&x, m, &packed, bias, &mut y, false, parallel);
                        runs.push(("amx-bf16", y));
                    }
                    let r = |v: f32| from_bf16(to_bf16(v)) as f64;
                    for (kernel, y) in &runs {
                    for i in 0..m {
                        for j in 0..n {
                            let mut want = if with_bias { b[j] as f64 } else { 0.0 };
                            let mut mag = want.abs();
                            for p in 0..k {
                                let t = r(x[i * k + p]) * r(w[j * k + p]);
                                want += t;
                                mag += t.abs();
                            }
                            let got = y[i * n + j] as f64;
                            let tol = 2.0 * f32::EPSILON as f64 * mag * (k as f64).sqrt() + 1e-30;
                            assert!(
                                (got - want).abs() <= tol,
                                "{kernel} ({m},{n},{k}) bias={with_bias} at ({i},{j}): {got} vs {want}"
                            );
                        }
                    }
                    }
                }
            }
        }
    }

    /// The vector rounding of activations equals the scalar one on normal
    /// values, ties included, and the tail past the last 32 is handled.
    #[test]
    fn row_rounding_matches_scalar() {
        let mut src = values(101, 7);
        src[3] = 1.0 + 1.0 / 256.0; // a tie, to even (down)
        src[4] = f32::from_bits(0x3F81_8000); // a tie, to even (up)
        src[5] = -0.0;
        let mut dst = vec![0u32; 51];
        round_row(&src, &mut dst);
        for (q, d) in dst.iter().enumerate() {
            let hi = src.get(2 * q + 1).copied().unwrap_or(0.0);
            assert_eq!(*d, pair(src[2 * q], hi), "pair {q}");
        }
    }

    /// `hi + mid + lo` is `v` exactly over the whole normal range, with the
    /// parts shrinking as documented.
    #[test]
    fn split3_is_exact() {
        let mut vals = values(4000, 21);
        for (i, v) in vals.iter_mut().enumerate() {
            *v *= 2f32.powi((i % 200) as i32 - 100);
        }
        // The largest values whose hi part stays finite, and small normals.
        let top = f32::from_bits(0x7F7F_7FFF);
        vals.extend([0.0, -0.0, 1.0, top, -top, f32::MIN_POSITIVE * 2f32.powi(40)]);
        for v in vals {
            let [hi, mid, lo] = split3(v).map(from_bf16);
            assert_eq!(hi as f64 + mid as f64 + lo as f64, v as f64, "{v:e}");
            assert!(mid.abs() <= v.abs() * 2f32.powi(-8), "{v:e}: mid {mid:e}");
            assert!(lo.abs() <= v.abs() * 2f32.powi(-16), "{v:e}: lo {lo:e}");
        }
    }

    /// The vector split of activations equals the scalar [`split3`], each
    /// part in its place, the tail included, the padding left alone.
    #[test]
    fn split_row_matches_scalar() {
        let mut src = values(75, 8);
        src[3] = 1.0 + 1.0 / 256.0;
        src[4] = f32::from_bits(0x3F81_8001);
        let kq = 48;
        let mut dst = vec![0xDEAD_BEEFu32; 3 * kq];
        split_row(&src, &mut dst, kq);
        let half: &[u16] = bytemuck::cast_slice(&dst);
        for (p, &v) in src.iter().enumerate() {
            for (s, part) in split3(v).into_iter().enumerate() {
                assert_eq!(half[s * 2 * kq + p], part, "value {p} part {s}");
            }
        }
        let untouched: &[u16] = bytemuck::cast_slice(&[0xDEAD_BEEFu32; 48]);
        for s in 0..3 {
            assert_eq!(half[s * 2 * kq + 75..][..21], untouched[75..], "padding of part {s}");
        }
    }

    /// The split product on AMX is within f32 rounding of the exact f64 one
    /// (the f32 kernels' tolerance, not bf16's), on shapes with every tail
    /// and over several superblocks (587 rows: three of 256 at k = 384, the
    /// last partial and not a multiple of 32); on one thread (each
    /// superblock converted just before its products) and shared among
    /// threads (all rows converted first) the results are the same bits.
    #[test]
    fn split_linear_matches_f64() {
        if !split_available() {
            eprintln!("skipped: no AMX-BF16 on this CPU");
            return;
        }
        assert!(587 > 2 * amx::super_rows(3 * 384 / 2 * 4));
        let shapes = [(1, 1, 1), (5, 7, 3), (33, 40, 17), (97, 50, 1100), (64, 70, 385), (587, 70, 384)];
        for &(m, n, k) in &shapes {
            let x = values(m * k, 1);
            let w = values(n * k, 2);
            let b = values(n, 3);
            let packed = PackedWeight::pack_split(&w, n, k);
            assert!(packed.is_split());
            let mut y = vec![f32::NAN; m * n];
            linear(&x, m, &packed, Some(&b), &mut y, false, true);
            let mut serial = vec![f32::NAN; m * n];
            linear(&x, m, &packed, Some(&b), &mut serial, false, false);
            assert_eq!(y, serial, "({m},{n},{k}): serial and shared differ");
            for i in 0..m {
                for j in 0..n {
                    let mut want = b[j] as f64;
                    let mut mag = want.abs();
                    for p in 0..k {
                        let t = x[i * k + p] as f64 * w[j * k + p] as f64;
                        want += t;
                        mag += t.abs();
                    }
                    let got = y[i * n + j] as f64;
                    let tol = 2.0 * f32::EPSILON as f64 * mag * (k as f64).sqrt() + 1e-30;
                    assert!((got - want).abs() <= tol, "({m},{n},{k}) at ({i},{j}): {got} vs {want}");
                }
            }
        }
    }

    /// The AMX path reuses its activation buffer between calls: padding left
    /// from an earlier call (here NaN, from NaN inputs) must not reach a later
    /// call's sums through its own padding (odd k, k not a multiple of 32).
    #[test]
    fn reused_activation_buffer_is_clean() {
        if !amx_available() {
            eprintln!("skipped: no AMX-BF16 on this CPU");
            return;
        }
        for split in [false, true] {
            let pack = |w: &[f32], n, k| {
                if split {
                    PackedWeight::pack_split(w, n, k)
                } else {
                    PackedWeight::pack(w, n, k)
                }
            };
            let (m, n, k) = (40, 33, 64);
            let poison = vec![f32::NAN; m * k];
            let mut y = vec![0.0; m * n];
            linear_amx(&poison, m, &pack(&values(n * k, 1), n, k), None, &mut y, false, false);
            let (m, n, k) = (40, 33, 37);
            let x = values(m * k, 2);
            let w = values(n * k, 3);
            let mut y = vec![0.0; m * n];
            linear_amx(&x, m, &pack(&w, n, k), None, &mut y, false, false);
            for (i, row) in y.chunks(n).enumerate() {
                for (j, v) in row.iter().enumerate() {
                    let want: f32 = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum();
                    assert!((v - want).abs() < 0.05, "split={split} ({i},{j}): {v} vs {want}");
                }
            }
        }
    }

    #[test]
    fn gelu_epilogue_matches_separate_pass() {
        if !available() {
            return;
        }
        let (m, n, k) = (40, 70, 50);
        let x = values(m * k, 4);
        let w = values(n * k, 5);
        let b = values(n, 6);
        let packed = PackedWeight::pack(&w, n, k);
        let mut plain = vec![0.0; m * n];
        linear(&x, m, &packed, Some(&b), &mut plain, false, true);
        crate::backend::vecmath::gelu_in_place(&mut plain);
        let mut fused = vec![0.0; m * n];
        linear(&x, m, &packed, Some(&b), &mut fused, true, true);
        assert_eq!(plain, fused);
    }
}
