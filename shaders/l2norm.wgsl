// Row-wise L2 normalisation (ColBERT token vectors):
//   out[r, :] = x[r, :] / max(‖x[r, :]‖₂, 1e-12)
// One invocation per row; rows split over workgroup ids x and y.
// Bindings (group 0):
//   0 x      storage read  array<f32> [rows, cols]
//   1 out    storage rw    array<f32> [rows, cols]
//   2 params uniform       Params

override WG_SIZE: u32 = 64u;

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = (wid.x + wid.y * nwg.x) * WG_SIZE + lid;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.cols;
    var sq = 0.0;
    for (var c = 0u; c < params.cols; c++) {
        let v = x[base + c];
        sq += v * v;
    }
    let inv = 1.0 / max(sqrt(sq), 1e-12);
    for (var c = 0u; c < params.cols; c++) {
        out[base + c] = x[base + c] * inv;
    }
}
