// Residual add + LayerNorm, per row r:
//   out[r, :] = LayerNorm(x[r, :] + residual[r, :]) · gamma + beta
// One workgroup per row; rows past 65,535 continue on workgroup id y.
// Bindings (group 0):
//   0 x        storage read  array<f32> [rows, hidden]
//   1 residual storage read  array<f32> [rows, hidden]
//   2 gamma    storage read  array<f32> [hidden]
//   3 beta     storage read  array<f32> [hidden]
//   4 out      storage rw    array<f32> [rows, hidden]
//   5 params   uniform       Params

override WG_SIZE: u32 = 64u;

struct Params {
    rows: u32,
    hidden: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> residual: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

//!include common/layernorm_row.wgsl

@compute @workgroup_size(WG_SIZE)
fn add_layernorm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.hidden;
    var sum = 0.0;
    for (var c = lid; c < params.hidden; c += WG_SIZE) {
        let v = x[base + c] + residual[base + c];
        out[base + c] = v;
        sum += v;
    }
    layernorm_row_in_place(base, lid, sum);
}
