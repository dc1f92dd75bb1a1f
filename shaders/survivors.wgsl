// Glue that keeps a PLAID search on the device between its selection stages
// (src/search/searcher.rs), so a query batch is one submit. CPU twins:
// src/search/survivors.rs.
//
// A survivor list L holds Q rows of list_len document ids (a top-k's out_idx;
// 0xffffffff = empty slot, topk.wgsl's NEG_INF_IS_EMPTY). Entries
// first .. first + count of it (flat) form one group whose document vectors are
// decompressed into consecutive rows (groups keep every binding under the
// adapter's limit). len(d) = doc_offsets[d + 1] − doc_offsets[d], 0 for an
// empty slot or d ≥ N.
//
// fill     (per t < Q·N):   dense[t] = −inf.
// offsets  (one workgroup): offsets[r] = Σ_{r' < r} len(L[first + r']) for
//                           r ≤ count: where each entry's rows start. Each
//                           invocation sums a contiguous segment, one scans the
//                           segment sums, each then writes its segment.
// map_rows (per v < rows):  rows[v] = doc_offsets[d] + v − offsets[r] for the
//                           r with offsets[r] ≤ v < offsets[r + 1] (binary
//                           search), d = L[first + r]: the stored vector that
//                           output row v decompresses; 0xffffffff for
//                           v ≥ offsets[count] (rows is sized by an upper bound).
// scatter  (per t < count): dense[q·N + d] = exact[first + t] for
//                           d = L[first + t] < N, q = (first + t) / list_len:
//                           exact MaxSim scores back into a [Q, N] matrix, so
//                           the final top-k breaks ties by document id.
//
// Bindings (group 0):
//   0 list         storage read  array<u32> [Q, list_len]
//   1 doc_offsets  storage read  array<u32> [N + 1] into the index's vectors
//   2 exact        storage read  array<f32> [Q, list_len] (scatter)
//   3 offsets      storage rw    array<u32> [count + 1] (offsets, map_rows)
//   4 rows         storage rw    array<u32> [rows] (map_rows)
//   5 dense        storage rw    array<f32> [Q, N] (fill, scatter)
//   6 params       uniform       Params

override WG_SIZE: u32 = 64u;
const MAX_WG: u32 = 256u;
const EMPTY: u32 = 0xffffffffu;
const NEG_INF_BITS: u32 = 0xff800000u;

struct Params {
    num_queries: u32,
    num_docs: u32,
    list_len: u32,
    first: u32,
    count: u32,
    rows: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> list: array<u32>;
@group(0) @binding(1) var<storage, read> doc_offsets: array<u32>;
@group(0) @binding(2) var<storage, read> exact: array<f32>;
@group(0) @binding(3) var<storage, read_write> offsets: array<u32>;
@group(0) @binding(4) var<storage, read_write> rows: array<u32>;
@group(0) @binding(5) var<storage, read_write> dense: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

var<workgroup> seg_sum: array<u32, MAX_WG>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG_SIZE + lid;
}

fn doc_len(d: u32) -> u32 {
    if (d >= params.num_docs) {
        return 0u;
    }
    return doc_offsets[d + 1u] - doc_offsets[d];
}

@compute @workgroup_size(WG_SIZE)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    if (t < params.num_queries * params.num_docs) {
        dense[t] = bitcast<f32>(NEG_INF_BITS);
    }
}

// Dispatched as exactly one workgroup.
@compute @workgroup_size(WG_SIZE)
fn offsets_scan(@builtin(local_invocation_index) lid: u32) {
    let n = params.count;
    let seg = (n + WG_SIZE - 1u) / WG_SIZE;
    let lo = min(lid * seg, n);
    let hi = min(lo + seg, n);
    var sum = 0u;
    for (var r = lo; r < hi; r++) {
        sum += doc_len(list[params.first + r]);
    }
    seg_sum[lid] = sum;
    workgroupBarrier();
    if (lid == 0u) {
        var acc = 0u;
        for (var t = 0u; t < WG_SIZE; t++) {
            let c = seg_sum[t];
            seg_sum[t] = acc;
            acc += c;
        }
        offsets[0] = 0u;
    }
    workgroupBarrier();
    var at = seg_sum[lid];
    for (var r = lo; r < hi; r++) {
        at += doc_len(list[params.first + r]);
        offsets[r + 1u] = at;
    }
}

@compute @workgroup_size(WG_SIZE)
fn map_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let v = linear_id(wid, nwg, lid);
    if (v >= params.rows) {
        return;
    }
    let n = params.count;
    if (v >= offsets[n]) {
        rows[v] = EMPTY;
        return;
    }
    // Largest r ≤ n with offsets[r] ≤ v; then r < n and entry r is not empty.
    var lo = 0u;
    var hi = n;
    while (lo < hi) {
        let mid = (lo + hi + 1u) / 2u;
        if (offsets[mid] <= v) {
            lo = mid;
        } else {
            hi = mid - 1u;
        }
    }
    rows[v] = doc_offsets[list[params.first + lo]] + v - offsets[lo];
}

@compute @workgroup_size(WG_SIZE)
fn scatter(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    if (t >= params.count) {
        return;
    }
    let e = params.first + t;
    let d = list[e];
    if (d < params.num_docs) {
        dense[(e / params.list_len) * params.num_docs + d] = exact[e];
    }
}
