// MaxSim (ColBERT late interaction) of variable-length documents, no padding:
//   score[r] = Σ_{i < qlen} max_{j ∈ doc r} q_{owner[r], i} · d_j
// where doc r owns rows doc_offsets[r] .. doc_offsets[r+1] of `docs` and is
// scored against query owner[r]. Non-finite maxima (an empty document) add 0.
// One workgroup per document (rows past 65,535 continue on workgroup id y);
// invocations take query tokens i = lid, lid + WG_SIZE, …; every invocation reads
// the same document row at each step, and a workgroup sum adds the maxima.
// Bindings (group 0):
//   0 queries     storage read  array<f32> [num_queries, qlen, dim]
//   1 docs        storage read  array<f32> [total rows, dim]
//   2 doc_offsets storage read  array<u32> [num_docs + 1]
//   3 owner       storage read  array<u32> [num_docs] query of each document
//   4 scores      storage rw    array<f32> [num_docs]
//   5 params      uniform       Params
//!include common/reduce.wgsl

override WG_SIZE: u32 = 32u;

struct Params {
    num_docs: u32,
    qlen: u32,
    dim: u32,
    num_queries: u32,
}

@group(0) @binding(0) var<storage, read> queries: array<f32>;
@group(0) @binding(1) var<storage, read> docs: array<f32>;
@group(0) @binding(2) var<storage, read> doc_offsets: array<u32>;
@group(0) @binding(3) var<storage, read> owner: array<u32>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = wid.x + wid.y * nwg.x;
    // Whole workgroups leave together: the reduction below stays uniform.
    if (r >= params.num_docs) {
        return;
    }
    let dim = params.dim;
    let start = doc_offsets[r];
    let end = doc_offsets[r + 1u];
    let q_base = min(owner[r], params.num_queries - 1u) * params.qlen * dim;
    var partial = 0.0;
    for (var i = lid; i < params.qlen; i += WG_SIZE) {
        let qi = q_base + i * dim;
        var best = -3.4e38;
        for (var j = start; j < end; j++) {
            let dj = j * dim;
            var s = 0.0;
            for (var c = 0u; c < dim; c++) {
                s += queries[qi + c] * docs[dj + c];
            }
            best = max(best, s);
        }
        if (end > start && best == best && abs(best) < 3.0e38) {
            partial += best;
        }
    }
    let total = workgroup_sum(partial, lid, WG_SIZE);
    if (lid == 0u) {
        scores[r] = total;
    }
}
