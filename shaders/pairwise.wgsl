// Pairwise distances within each of a batch of blocks of row vectors (token
// pooling: Ward clustering of a document's vectors needs all its pairs).
// Block b holds rows[b] vectors of cols[b] values at x[in_off[b]..]; its
// output is the rows[b] × rows[b] matrix at out[out_off[b]..], row-major:
//   mode 0 (cosine distance):      out[i, j] = 1 − Σ_c x[i, c] · x[j, c]
//   mode 1 (squared Euclidean):    out[i, j] = Σ_c (x[i, c] − x[j, c])²
// One invocation per output element (t = global index over all blocks; its
// block is found by binary search of spans.out_off); accumulation in f32.
// Bindings (group 0):
//   0 x      storage read  array<f32>   all blocks back to back
//   1 spans  storage read  array<u32>   [blocks, 4]: in_off, rows, cols, out_off
//   2 out    storage rw    array<f32>   [Σ rows[b]²]
//   3 params uniform       Params

override WG_SIZE: u32 = 64u;

struct Params {
    blocks: u32,
    total: u32,
    mode: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> spans: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = (wid.x + wid.y * nwg.x) * WG_SIZE + lid;
    if (t >= params.total) {
        return;
    }
    // Last block whose out_off ≤ t.
    var lo = 0u;
    var hi = params.blocks;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (spans[mid * 4u + 3u] <= t) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let in_off = spans[lo * 4u];
    let rows = spans[lo * 4u + 1u];
    let cols = spans[lo * 4u + 2u];
    let local = t - spans[lo * 4u + 3u];
    let i = local / rows;
    let j = local % rows;
    let a = in_off + i * cols;
    let b = in_off + j * cols;
    var acc = 0.0;
    if (params.mode == 0u) {
        for (var c = 0u; c < cols; c++) {
            acc += x[a + c] * x[b + c];
        }
        out[t] = 1.0 - acc;
    } else {
        for (var c = 0u; c < cols; c++) {
            let d = x[a + c] - x[b + c];
            acc += d * d;
        }
        out[t] = acc;
    }
}
