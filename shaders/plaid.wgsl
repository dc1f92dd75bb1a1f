// PLAID candidate stages for a batch of Q queries of L tokens over an index of
// N documents and K centroids. S is the centroid-score matrix from matmul.wgsl:
//   S[c, q·L + i] = centroid_c · q_{q,i}            ([K, Q·L], centroid-major)
// Entries (all bindings group 0, in this order; unused ones are still bound):
//   0 scores       storage read   array<f32>  [K, Q·L]
//   1 codes        storage read   array<u32>  [total vectors] centroid id per vector
//   2 doc_offsets  storage read   array<u32>  [N + 1] into codes
//   3 ivf          storage read   array<u32>  document ids per centroid, back to back
//   4 ivf_offsets  storage read   array<u32>  [K + 1] into ivf
//   5 doc_list     storage read   array<u32>  [Q, list_len] documents to score (approx_list)
//   6 cells        storage rw     array<atomic<u32>> [Q, K]  1 = probed cell
//   7 keep         storage rw     array<u32>  [Q, K]  1 = centroid survives pruning
//   8 candidates   storage rw     array<atomic<u32>> [Q, N]  1 = candidate document
//   9 approx       storage rw     array<f32>  [Q, N] or [Q, list_len]
//  10 params       uniform        Params
//
// select_cells  (one invocation per (q, i)): the NCELLS best centroids of token i
//               (ties to the lower id) get cells[q, c] = 1.
// keep_centroids (per (q, c)): keep[q, c] = max_i S[c, q·L + i] ≥ threshold.
// mark_candidates (one workgroup per (q, c)): for a probed cell, every document
//               of its inverted list gets candidates[q, d] = 1.
// approx_all    (per (q, d)): for candidates, Σ_i max_{codes c of d with keep[q, c]} S[c, q·L + i]
//               (pruned centroid interaction); −3.4e38 for candidates with no
//               surviving code, −inf for non-candidates (topk.wgsl's
//               NEG_INF_IS_EMPTY then pads them out of a selection).
// approx_list   (per (q, r)): for d = doc_list[q, r], the same sum over all of d's codes
//               (full centroid interaction). params.scatter = 0: into approx[q, r]
//               ([Q, list_len]; −3.4e38 for d ≥ N); 1: into approx[q·N + d]
//               ([Q, N], entries d ≥ N skipped), so a following top-k over the
//               rows ranks by document id on ties, as the CPU twin does.
// Cells and candidates must be zeroed before select_cells / mark_candidates.

override WG_SIZE: u32 = 64u;
override NCELLS: u32 = 1u;
const MAX_NCELLS: u32 = 16u;
const MAX_QLEN: u32 = 128u;
const LOWEST: f32 = -3.4e38;
const NEG_INF_BITS: u32 = 0xff800000u;

struct Params {
    num_queries: u32,
    qlen: u32,
    num_centroids: u32,
    num_docs: u32,
    list_len: u32,
    threshold: f32,
    scatter: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> scores: array<f32>;
@group(0) @binding(1) var<storage, read> codes: array<u32>;
@group(0) @binding(2) var<storage, read> doc_offsets: array<u32>;
@group(0) @binding(3) var<storage, read> ivf: array<u32>;
@group(0) @binding(4) var<storage, read> ivf_offsets: array<u32>;
@group(0) @binding(5) var<storage, read> doc_list: array<u32>;
@group(0) @binding(6) var<storage, read_write> cells: array<atomic<u32>>;
@group(0) @binding(7) var<storage, read_write> keep: array<u32>;
@group(0) @binding(8) var<storage, read_write> candidates: array<atomic<u32>>;
@group(0) @binding(9) var<storage, read_write> approx: array<f32>;
@group(0) @binding(10) var<uniform> params: Params;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG_SIZE + lid;
}

fn score(c: u32, q: u32, i: u32) -> f32 {
    return scores[c * params.num_queries * params.qlen + q * params.qlen + i];
}

@compute @workgroup_size(WG_SIZE)
fn select_cells(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    if (t >= params.num_queries * params.qlen) {
        return;
    }
    let q = t / params.qlen;
    let i = t % params.qlen;
    let n = min(NCELLS, min(MAX_NCELLS, params.num_centroids));
    // best[0..n] sorted descending (ties: lower id first, as scanned in order).
    var best_s: array<f32, MAX_NCELLS>;
    var best_c: array<u32, MAX_NCELLS>;
    for (var r = 0u; r < n; r++) {
        best_s[r] = LOWEST;
        best_c[r] = 0xffffffffu;
    }
    for (var c = 0u; c < params.num_centroids; c++) {
        let s = score(c, q, i);
        if (s > best_s[n - 1u] || best_c[n - 1u] == 0xffffffffu) {
            var r = n - 1u;
            while (r > 0u && (s > best_s[r - 1u] || best_c[r - 1u] == 0xffffffffu)) {
                best_s[r] = best_s[r - 1u];
                best_c[r] = best_c[r - 1u];
                r -= 1u;
            }
            best_s[r] = s;
            best_c[r] = c;
        }
    }
    for (var r = 0u; r < n; r++) {
        atomicOr(&cells[q * params.num_centroids + best_c[r]], 1u);
    }
}

@compute @workgroup_size(WG_SIZE)
fn keep_centroids(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    if (t >= params.num_queries * params.num_centroids) {
        return;
    }
    let q = t / params.num_centroids;
    let c = t % params.num_centroids;
    var m = LOWEST;
    for (var i = 0u; i < params.qlen; i++) {
        m = max(m, score(c, q, i));
    }
    keep[t] = select(0u, 1u, m >= params.threshold);
}

// One workgroup per (q, c): workgroup id → (q, c); invocations stride the list.
@compute @workgroup_size(WG_SIZE)
fn mark_candidates(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let t = wid.x + wid.y * nwg.x;
    if (t >= params.num_queries * params.num_centroids) {
        return;
    }
    let q = t / params.num_centroids;
    let c = t % params.num_centroids;
    if (atomicLoad(&cells[t]) == 0u) {
        return;
    }
    for (var e = ivf_offsets[c] + lid; e < ivf_offsets[c + 1u]; e += WG_SIZE) {
        atomicOr(&candidates[q * params.num_docs + ivf[e]], 1u);
    }
}

fn interaction(q: u32, d: u32, pruned: bool) -> f32 {
    var best: array<f32, MAX_QLEN>;
    let qlen = min(params.qlen, MAX_QLEN);
    for (var i = 0u; i < qlen; i++) {
        best[i] = LOWEST;
    }
    var found = false;
    for (var j = doc_offsets[d]; j < doc_offsets[d + 1u]; j++) {
        let c = codes[j];
        if (pruned && keep[q * params.num_centroids + c] == 0u) {
            continue;
        }
        found = true;
        let base = c * params.num_queries * params.qlen + q * params.qlen;
        for (var i = 0u; i < qlen; i++) {
            best[i] = max(best[i], scores[base + i]);
        }
    }
    if (!found) {
        return LOWEST;
    }
    var total = 0.0;
    for (var i = 0u; i < qlen; i++) {
        total += best[i];
    }
    return total;
}

@compute @workgroup_size(WG_SIZE)
fn approx_all(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    if (t >= params.num_queries * params.num_docs) {
        return;
    }
    let q = t / params.num_docs;
    let d = t % params.num_docs;
    if (atomicLoad(&candidates[t]) == 0u) {
        approx[t] = bitcast<f32>(NEG_INF_BITS);
        return;
    }
    approx[t] = interaction(q, d, true);
}

@compute @workgroup_size(WG_SIZE)
fn approx_list(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    if (t >= params.num_queries * params.list_len) {
        return;
    }
    let q = t / params.list_len;
    let d = doc_list[t];
    if (params.scatter != 0u) {
        if (d < params.num_docs) {
            approx[q * params.num_docs + d] = interaction(q, d, false);
        }
        return;
    }
    if (d >= params.num_docs) {
        approx[t] = LOWEST;
        return;
    }
    approx[t] = interaction(q, d, false);
}
