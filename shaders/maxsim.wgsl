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
// Invocation l of a workgroup takes query token i = t0 + l for t0 = 0,
// WG_SIZE, … (lanes past qlen repeat the last token and are not counted, so
// control flow stays uniform). It keeps its token in registers (a private
// array of Q_REG vec4, i.e. dims up to 4·Q_REG in one piece; wider vectors are
// streamed through it in chunks) and walks the document 4 rows at a time
// (rows past the end repeat the last row, which leaves the maximum unchanged).
// Every invocation reads the same document words at each step (uniform loads,
// broadcast), the one access pattern that is cheap on CPU drivers such as
// lavapipe as well as on GPUs. A workgroup tree sum adds the per-token maxima.
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
    for (var t0 = 0u; t0 < qlen; t0 += WG_SIZE) {
        let q_row = (query * qlen + min(t0 + lid, qlen - 1u)) * d4;
        var qv: array<vec4<f32>, Q_REG>;
        for (var c = 0u; c < chunk; c++) {
            qv[c] = queries[q_row + c];
        }
        var best = LOWEST;
        for (var j = start; j < end; j += 4u) {
            let b0 = j * d4;
            let b1 = min(j + 1u, last) * d4;
            let b2 = min(j + 2u, last) * d4;
            let b3 = min(j + 3u, last) * d4;
            var s0 = vec4<f32>(0.0);
            var s1 = vec4<f32>(0.0);
            var s2 = vec4<f32>(0.0);
            var s3 = vec4<f32>(0.0);
            for (var c0 = 0u; c0 < d4; c0 += Q_REG) {
                let n = min(Q_REG, d4 - c0);
                if (wide) {
                    for (var c = 0u; c < n; c++) {
                        qv[c] = queries[q_row + c0 + c];
                    }
                }
                for (var c = 0u; c < n; c++) {
                    let qc = qv[c];
                    s0 = fma(qc, docs[b0 + c0 + c], s0);
                    s1 = fma(qc, docs[b1 + c0 + c], s1);
                    s2 = fma(qc, docs[b2 + c0 + c], s2);
                    s3 = fma(qc, docs[b3 + c0 + c], s3);
                }
            }
            best = max(best, max(max(hsum(s0), hsum(s1)), max(hsum(s2), hsum(s3))));
        }
        if (t0 + lid < qlen && end > start && best == best && abs(best) < 3.0e38) {
            partial += best;
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
