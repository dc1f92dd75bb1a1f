// MaxSim (ColBERT late interaction) of variable-length documents, no padding:
//   score(q, d) = Σ_{i < qlen} max_{j ∈ rows(d)} q_i · d_j
// where document d owns rows doc_offsets[d] .. doc_offsets[d+1] of `docs`
// (offsets need not start at 0). A maximum that is not finite (an empty
// document, overflow, NaN) adds 0, so an empty document scores 0.
//
// Two modes (params.mode), one workgroup per scored (query, document) pair
// (linear workgroup id r = wid.x + wid.y · nwg.x; grids past 65,535 use y):
//   0 all pairs: r = q · num_docs + d, every query against every document;
//                scores[q · out_stride + out_offset + d] (so several dispatches
//                over slices of a large corpus fill one [num_queries, N] matrix).
//   1 owner:     r = d, document d against query owner[d];
//                scores[out_offset + d] (reranking per-query candidate lists
//                in one dispatch; out_offset again for slices of a large set).
//
// Vectors are read as vec4, so dim must be a multiple of 4 (d4 = dim / 4).
// Invocation l of a workgroup takes TOKENS query tokens, i = t0 + s·WG_SIZE + l
// for s < TOKENS and t0 = 0, TOKENS·WG_SIZE, … (lanes past qlen repeat the
// last token and are not counted, so control flow stays uniform). It keeps
// its tokens in registers (private arrays of Q_REG vec4 each, i.e. dims up to
// 4·Q_REG in one piece; wider vectors are streamed through them in chunks) and
// walks the document 4 rows at a time (rows past the end repeat the last row,
// which leaves the maximum unchanged), so each document word loaded feeds
// 4·TOKENS multiply-adds. Every invocation reads the same document words at
// each step (uniform loads, broadcast), the one access pattern that is cheap
// on CPU drivers such as lavapipe as well as on GPUs. A workgroup tree sum
// adds the per-token maxima. Tuning (src/kernels/maxsim.rs): WG_SIZE 32,
// TOKENS 1 on GPUs; WG_SIZE 8 (lavapipe's SIMD width), TOKENS 4 on software
// adapters (2.2× faster there).
//
// Bindings (group 0):
//   0 queries     storage read  array<vec4<f32>> [num_queries, qlen, d4]
//   1 docs        storage read  array<vec4<f32>> [rows, d4]
//   2 doc_offsets storage read  array<u32> [num_docs + 1]
//   3 owner       storage read  array<u32> [num_docs] (mode 1; any buffer in mode 0)
//   4 scores      storage rw    array<f32> see modes
//   5 params      uniform       Params

// Invocations per (query, document) pair: a power of two, at most 256.
override WG_SIZE: u32 = 32u;
// Query tokens per invocation: 1, 2 or 4.
override TOKENS: u32 = 1u;

const Q_REG: u32 = 32u;
const LOWEST: f32 = -3.4e38;

struct Params {
    num_docs: u32,
    qlen: u32,
    dim: u32,
    num_queries: u32,
    mode: u32,
    out_stride: u32,
    out_offset: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> queries: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> docs: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> doc_offsets: array<u32>;
@group(0) @binding(3) var<storage, read> owner: array<u32>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> partials: array<f32, 256>;

fn hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// The best of four row scores, each a vec4 of partial dot products.
fn max4(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> f32 {
    return max(max(hsum(a), hsum(b)), max(hsum(c), hsum(d)));
}

// A token's maximum if it counts (a real token, finite maximum), else 0.
fn counted(best: f32, real: bool) -> f32 {
    if (real && best == best && abs(best) < 3.0e38) {
        return best;
    }
    return 0.0;
}

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = wid.x + wid.y * nwg.x;
    let d4 = params.dim / 4u;
    let qlen = params.qlen;
    var pairs = params.num_docs * params.num_queries;
    if (params.mode == 1u) {
        pairs = params.num_docs;
    }
    // Whole workgroups leave together: the barriers below stay uniform.
    if (r >= pairs || d4 == 0u || qlen == 0u) {
        return;
    }
    var doc = r;
    var query = 0u;
    var out = params.out_offset + r;
    if (params.mode == 1u) {
        query = min(owner[r], params.num_queries - 1u);
    } else {
        query = r / params.num_docs;
        doc = r % params.num_docs;
        out = query * params.out_stride + params.out_offset + doc;
    }
    let start = doc_offsets[doc];
    let end = doc_offsets[doc + 1u];
    let last = max(end, start + 1u) - 1u;
    let wide = d4 > Q_REG;
    let chunk = min(d4, Q_REG);

    var partial = 0.0;
    for (var t0 = 0u; t0 < qlen; t0 += TOKENS * WG_SIZE) {
        let k0 = t0 + lid;
        let k1 = k0 + WG_SIZE;
        let k2 = k1 + WG_SIZE;
        let k3 = k2 + WG_SIZE;
        let q_base = query * qlen;
        let row0 = (q_base + min(k0, qlen - 1u)) * d4;
        let row1 = (q_base + min(k1, qlen - 1u)) * d4;
        let row2 = (q_base + min(k2, qlen - 1u)) * d4;
        let row3 = (q_base + min(k3, qlen - 1u)) * d4;
        var qv0: array<vec4<f32>, Q_REG>;
        var qv1: array<vec4<f32>, Q_REG>;
        var qv2: array<vec4<f32>, Q_REG>;
        var qv3: array<vec4<f32>, Q_REG>;
        for (var c = 0u; c < chunk; c++) {
            qv0[c] = queries[row0 + c];
            if (TOKENS >= 2u) {
                qv1[c] = queries[row1 + c];
            }
            if (TOKENS >= 4u) {
                qv2[c] = queries[row2 + c];
                qv3[c] = queries[row3 + c];
            }
        }
        var best = vec4<f32>(LOWEST);
        for (var j = start; j < end; j += 4u) {
            let b0 = j * d4;
            let b1 = min(j + 1u, last) * d4;
            let b2 = min(j + 2u, last) * d4;
            let b3 = min(j + 3u, last) * d4;
            // acc_s_r: token slot s against row r.
            var a00 = vec4<f32>(0.0);
            var a01 = vec4<f32>(0.0);
            var a02 = vec4<f32>(0.0);
            var a03 = vec4<f32>(0.0);
            var a10 = vec4<f32>(0.0);
            var a11 = vec4<f32>(0.0);
            var a12 = vec4<f32>(0.0);
            var a13 = vec4<f32>(0.0);
            var a20 = vec4<f32>(0.0);
            var a21 = vec4<f32>(0.0);
            var a22 = vec4<f32>(0.0);
            var a23 = vec4<f32>(0.0);
            var a30 = vec4<f32>(0.0);
            var a31 = vec4<f32>(0.0);
            var a32 = vec4<f32>(0.0);
            var a33 = vec4<f32>(0.0);
            for (var c0 = 0u; c0 < d4; c0 += Q_REG) {
                let n = min(Q_REG, d4 - c0);
                if (wide) {
                    for (var c = 0u; c < n; c++) {
                        qv0[c] = queries[row0 + c0 + c];
                        if (TOKENS >= 2u) {
                            qv1[c] = queries[row1 + c0 + c];
                        }
                        if (TOKENS >= 4u) {
                            qv2[c] = queries[row2 + c0 + c];
                            qv3[c] = queries[row3 + c0 + c];
                        }
                    }
                }
                for (var c = 0u; c < n; c++) {
                    let x0 = docs[b0 + c0 + c];
                    let x1 = docs[b1 + c0 + c];
                    let x2 = docs[b2 + c0 + c];
                    let x3 = docs[b3 + c0 + c];
                    let y0 = qv0[c];
                    a00 = fma(y0, x0, a00);
                    a01 = fma(y0, x1, a01);
                    a02 = fma(y0, x2, a02);
                    a03 = fma(y0, x3, a03);
                    if (TOKENS >= 2u) {
                        let y1 = qv1[c];
                        a10 = fma(y1, x0, a10);
                        a11 = fma(y1, x1, a11);
                        a12 = fma(y1, x2, a12);
                        a13 = fma(y1, x3, a13);
                    }
                    if (TOKENS >= 4u) {
                        let y2 = qv2[c];
                        a20 = fma(y2, x0, a20);
                        a21 = fma(y2, x1, a21);
                        a22 = fma(y2, x2, a22);
                        a23 = fma(y2, x3, a23);
                        let y3 = qv3[c];
                        a30 = fma(y3, x0, a30);
                        a31 = fma(y3, x1, a31);
                        a32 = fma(y3, x2, a32);
                        a33 = fma(y3, x3, a33);
                    }
                }
            }
            best = max(best, vec4<f32>(max4(a00, a01, a02, a03), max4(a10, a11, a12, a13),
                                       max4(a20, a21, a22, a23), max4(a30, a31, a32, a33)));
        }
        if (end > start) {
            partial += counted(best.x, k0 < qlen);
            if (TOKENS >= 2u) {
                partial += counted(best.y, k1 < qlen);
            }
            if (TOKENS >= 4u) {
                partial += counted(best.z, k2 < qlen);
                partial += counted(best.w, k3 < qlen);
            }
        }
    }

    partials[lid] = partial;
    workgroupBarrier();
    for (var stride = WG_SIZE / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partials[lid] = partials[lid] + partials[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        scores[out] = partials[0];
    }
}
