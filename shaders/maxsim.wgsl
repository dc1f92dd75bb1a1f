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
// In a workgroup, invocation l takes query tokens l, l + WG_SIZE, … of the
// current query tile. The tile (up to WG_SIZE tokens, all `dim` components)
// sits transposed in workgroup memory, q_tile[c · tile + l], so neighbouring
// invocations read neighbouring words; every invocation reads the same
// document row at each step (a broadcast). Each step scores 4 document rows
// against the invocation's token (rows past the end repeat the last row, which
// leaves the maximum unchanged). A workgroup tree sum adds the per-token maxima.
// dim ≤ Q_TILE (4,096) is required; the tile then holds ⌊4096 / dim⌋ tokens.
//
// Bindings (group 0):
//   0 queries     storage read  array<f32> [num_queries, qlen, dim]
//   1 docs        storage read  array<f32> [rows, dim]
//   2 doc_offsets storage read  array<u32> [num_docs + 1]
//   3 owner       storage read  array<u32> [num_docs] (mode 1; any buffer in mode 0)
//   4 scores      storage rw    array<f32> see modes
//   5 params      uniform       Params

// Invocations per (query, document) pair: a power of two, at most 256.
override WG_SIZE: u32 = 32u;

const Q_TILE: u32 = 4096u;
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

@group(0) @binding(0) var<storage, read> queries: array<f32>;
@group(0) @binding(1) var<storage, read> docs: array<f32>;
@group(0) @binding(2) var<storage, read> doc_offsets: array<u32>;
@group(0) @binding(3) var<storage, read> owner: array<u32>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> q_tile: array<f32, Q_TILE>;

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = wid.x + wid.y * nwg.x;
    let dim = params.dim;
    let qlen = params.qlen;
    var pairs = params.num_docs * params.num_queries;
    if (params.mode == 1u) {
        pairs = params.num_docs;
    }
    // Whole workgroups leave together: the barriers below stay uniform.
    if (r >= pairs || dim == 0u || dim > Q_TILE) {
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
    let q_base = query * qlen * dim;
    let tile = min(WG_SIZE, Q_TILE / dim);

    var partial = 0.0;
    for (var t0 = 0u; t0 < qlen; t0 += tile) {
        let n_tok = min(tile, qlen - t0);
        // Stage the tile transposed: q_tile[c · tile + t] = q_{t0 + t}[c].
        for (var e = lid; e < n_tok * dim; e += WG_SIZE) {
            let t = e / dim;
            let c = e - t * dim;
            q_tile[c * tile + t] = queries[q_base + (t0 + t) * dim + c];
        }
        workgroupBarrier();
        if (lid < n_tok) {
            var best = LOWEST;
            for (var j = start; j < end; j += 4u) {
                let d0 = j * dim;
                let d1 = min(j + 1u, last) * dim;
                let d2 = min(j + 2u, last) * dim;
                let d3 = min(j + 3u, last) * dim;
                var s0 = 0.0;
                var s1 = 0.0;
                var s2 = 0.0;
                var s3 = 0.0;
                for (var c = 0u; c < dim; c++) {
                    let qc = q_tile[c * tile + lid];
                    s0 = fma(qc, docs[d0 + c], s0);
                    s1 = fma(qc, docs[d1 + c], s1);
                    s2 = fma(qc, docs[d2 + c], s2);
                    s3 = fma(qc, docs[d3 + c], s3);
                }
                best = max(best, max(max(s0, s1), max(s2, s3)));
            }
            if (end > start && best == best && abs(best) < 3.0e38) {
                partial += best;
            }
        }
        // Everyone is done with the tile before it is overwritten.
        workgroupBarrier();
    }
    // Workgroup sum of the per-token maxima, in the (now free) tile memory:
    // 16 KiB of workgroup memory in all, the WebGPU default limit.
    q_tile[lid] = partial;
    workgroupBarrier();
    for (var stride = WG_SIZE / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            q_tile[lid] = q_tile[lid] + q_tile[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        scores[out] = q_tile[0];
    }
}
