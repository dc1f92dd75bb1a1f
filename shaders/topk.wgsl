// Top-k of each row of a score matrix, best first:
//   for row r of scores [rows, n] (row stride in_stride), the k = min(k, n)
//   columns with the largest scores, ordered by score descending, ties to the
//   lower column; out_idx[r · k + t] is the column, out_scores[r · k + t] its score.
// Order key: key(x) = bits(x) | 0x80000000 for x ≥ +0, !bits(x) for x ≤ -0,
// and 0 for NaN, so unsigned key order is score order (-0 below +0) and NaN
// ranks last; the CPU twin (src/search/topk.rs) uses the same key.
//
// One workgroup per row (grids past 65,535 rows use y).
// 1. Radix select, 4 passes of 8 bits from the top: a 256-bin histogram
//    (workgroup atomics) of the next digit among the elements whose higher
//    digits equal the prefix chosen so far; one invocation walks the bins from
//    the top to the bin holding the k-th largest key. Result: T, the k-th largest
//    key, and `need`, how many elements equal to T belong to the top k.
// 2. Collect into workgroup memory: every element with key > T, and the `need`
//    lowest-column elements with key == T. When all elements equal to T are
//    needed (the usual case) this is one pass; otherwise each invocation counts
//    ties in its contiguous segment, an exclusive scan orders the segments, and
//    each takes ties in column order.
// 3. Bitonic sort of the k collected (padded to sort_size = next power of two
//    ≥ k) by (key descending, column ascending), then write out.
// Work per row: 5–7 passes over n elements (n / WG_SIZE each per invocation)
// plus O(P log² P / WG_SIZE) for the sort of P = sort_size ≤ SORT_CAP.
//
// params.flags (bits):
//   1 UNSORTED: skip step 3; the k selected are written in no particular order
//     straight from step 2 (any k ≤ n, not bounded by SORT_CAP; sort_size unused).
//     For selecting a set, e.g. PLAID's survivors.
//   2 NEG_INF_IS_EMPTY: an entry whose score is −inf is padding (PLAID's kernels
//     write −inf for documents that are not candidates): its out_idx is written
//     as 0xffffffff (its out_scores stays −inf), so later kernels skip it.
//
// Bindings (group 0):
//   0 scores      storage read  array<f32> [rows, in_stride]
//   1 out_idx     storage rw    array<u32> [rows, k]
//   2 out_scores  storage rw    array<f32> [rows, k]
//   3 params      uniform       Params

// Invocations per row: a power of two, at most 256.
override WG_SIZE: u32 = 256u;

const SORT_CAP: u32 = 1024u;
const BINS: u32 = 256u;
const MAX_WG: u32 = 256u;
const PAD_IDX: u32 = 0xffffffffu;
const UNSORTED: u32 = 1u;
const NEG_INF_IS_EMPTY: u32 = 2u;

struct Params {
    rows: u32,
    n: u32,
    k: u32,
    in_stride: u32,
    sort_size: u32,
    flags: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> scores: array<f32>;
@group(0) @binding(1) var<storage, read_write> out_idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> out_scores: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> hist: array<atomic<u32>, BINS>;
var<workgroup> slots: atomic<u32>;
var<workgroup> chosen: vec3<u32>;
var<workgroup> seg_ties: array<u32, MAX_WG>;
var<workgroup> s_key: array<u32, SORT_CAP>;
var<workgroup> s_idx: array<u32, SORT_CAP>;

fn order_key(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return 0u;
    }
    if ((b & 0x80000000u) != 0u) {
        return ~b;
    }
    return b | 0x80000000u;
}

// Writes result t of `row` (k per row): column c and its score.
fn emit(row: u32, k: u32, base: u32, t: u32, c: u32) {
    let s = scores[base + c];
    var idx = c;
    // order_key(−inf) = !0xff800000 = 0x007fffff.
    if ((params.flags & NEG_INF_IS_EMPTY) != 0u && order_key(s) == 0x007fffffu) {
        idx = PAD_IDX;
    }
    out_idx[row * k + t] = idx;
    out_scores[row * k + t] = s;
}

// Stores selected element e (key `key`) in slot t: workgroup memory for the
// sort, or straight to the output when UNSORTED.
fn collect(row: u32, k: u32, base: u32, t: u32, key: u32, e: u32) {
    if ((params.flags & UNSORTED) != 0u) {
        emit(row, k, base, t, e);
    } else {
        s_key[t] = key;
        s_idx[t] = e;
    }
}

// Whether (ka, ia) ranks before (kb, ib).
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    let n = params.n;
    let k = min(params.k, n);
    let size = params.sort_size;
    let unsorted = (params.flags & UNSORTED) != 0u;
    if (row >= params.rows || k == 0u || (!unsorted && (size < k || size > SORT_CAP))) {
        return;
    }
    let base = row * params.in_stride;

    // 1. Radix select of the k-th largest key.
    var prefix = 0u;
    var mask = 0u;
    var remaining = k;
    var ties = 0u;
    for (var round = 0u; round < 4u; round++) {
        let shift = 24u - 8u * round;
        for (var b = lid; b < BINS; b += WG_SIZE) {
            atomicStore(&hist[b], 0u);
        }
        workgroupBarrier();
        for (var e = lid; e < n; e += WG_SIZE) {
            let key = order_key(scores[base + e]);
            if ((key & mask) == prefix) {
                atomicAdd(&hist[(key >> shift) & 0xffu], 1u);
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            // Walk from the top bin; the elements matching the prefix number at
            // least `remaining`, so the walk stops at a bin.
            var cum = 0u;
            var b = BINS - 1u;
            loop {
                let h = atomicLoad(&hist[b]);
                if (cum + h >= remaining || b == 0u) {
                    chosen = vec3<u32>(b, remaining - cum, h);
                    break;
                }
                cum += h;
                b -= 1u;
            }
        }
        let pick = workgroupUniformLoad(&chosen);
        prefix = prefix | (pick.x << shift);
        mask = mask | (0xffu << shift);
        remaining = pick.y;
        ties = pick.z;
    }
    // prefix = T; `remaining` of the `ties` elements equal to T are taken.
    let threshold = prefix;
    let need = remaining;
    let first_tie = k - need;

    // 2. Collect.
    if (lid == 0u) {
        atomicStore(&slots, 0u);
    }
    workgroupBarrier();
    if (need == ties) {
        for (var e = lid; e < n; e += WG_SIZE) {
            let key = order_key(scores[base + e]);
            if (key >= threshold) {
                collect(row, k, base, atomicAdd(&slots, 1u), key, e);
            }
        }
    } else {
        let seg = (n + WG_SIZE - 1u) / WG_SIZE;
        let lo = min(lid * seg, n);
        let hi = min(lo + seg, n);
        var count = 0u;
        for (var e = lo; e < hi; e++) {
            if (order_key(scores[base + e]) == threshold) {
                count += 1u;
            }
        }
        seg_ties[lid] = count;
        workgroupBarrier();
        if (lid == 0u) {
            var acc = 0u;
            for (var t = 0u; t < WG_SIZE; t++) {
                let c = seg_ties[t];
                seg_ties[t] = acc;
                acc += c;
            }
        }
        workgroupBarrier();
        var rank = seg_ties[lid];
        for (var e = lo; e < hi; e++) {
            let key = order_key(scores[base + e]);
            if (key > threshold) {
                collect(row, k, base, atomicAdd(&slots, 1u), key, e);
            } else if (key == threshold) {
                if (rank < need) {
                    collect(row, k, base, first_tie + rank, key, e);
                }
                rank += 1u;
            }
        }
    }
    if (unsorted) {
        return;
    }
    // Padding ranks after every real element.
    for (var t = k + lid; t < size; t += WG_SIZE) {
        s_key[t] = 0u;
        s_idx[t] = PAD_IDX;
    }
    workgroupBarrier();

    // 3. Bitonic sort, best first.
    for (var span = 2u; span <= size; span <<= 1u) {
        for (var stride = span >> 1u; stride > 0u; stride >>= 1u) {
            for (var t = lid; t < size / 2u; t += WG_SIZE) {
                let i = 2u * stride * (t / stride) + (t % stride);
                let j = i + stride;
                let ki = s_key[i];
                let ii = s_idx[i];
                let kj = s_key[j];
                let ij = s_idx[j];
                // Blocks with (i & span) == 0 sort best-first, the others worst-first.
                let best_first = (i & span) == 0u;
                if (before(kj, ij, ki, ii) == best_first) {
                    s_key[i] = kj;
                    s_idx[i] = ij;
                    s_key[j] = ki;
                    s_idx[j] = ii;
                }
            }
            workgroupBarrier();
        }
    }

    for (var t = lid; t < k; t += WG_SIZE) {
        emit(row, k, base, t, s_idx[t]);
    }
}
