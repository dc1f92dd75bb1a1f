// Row normalisations of the vision-language models, per row r of x [rows, hidden]:
//   layer_norm: out[r, c] = (x[r, c] - μ_r) / √(σ²_r + eps) · gamma[c] + beta[c]
//               (μ, σ² over the row; σ² as the mean squared deviation, two passes)
//   rms_norm:   out[r, c] = x[r, c] / √(mean_c(x[r, c]²) + eps) · gamma[c]
//               (Qwen2's RMSNorm; `beta` is bound but unused)
// One workgroup per row; rows past 65,535 continue on workgroup id y.
// Bindings (group 0):
//   0 x      storage read  array<f32> [rows, hidden]
//   1 gamma  storage read  array<f32> [hidden]
//   2 beta   storage read  array<f32> [hidden]
//   3 out    storage rw    array<f32> [rows, hidden]
//   4 params uniform       Params

override WG_SIZE: u32 = 64u;

struct Params {
    rows: u32,
    hidden: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

//!include common/layernorm_row.wgsl

@compute @workgroup_size(WG_SIZE)
fn layer_norm(
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
        let v = x[base + c];
        out[base + c] = v;
        sum += v;
    }
    layernorm_row_in_place(base, lid, sum);
}

@compute @workgroup_size(WG_SIZE)
fn rms_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.hidden;
    var sq = 0.0;
    for (var c = lid; c < params.hidden; c += WG_SIZE) {
        let v = x[base + c];
        sq += v * v;
    }
    let inv = inverseSqrt(workgroup_sum(sq, lid, WG_SIZE) / f32(params.hidden) + params.eps);
    for (var c = lid; c < params.hidden; c += WG_SIZE) {
        out[base + c] = x[base + c] * inv * gamma[c];
    }
}
