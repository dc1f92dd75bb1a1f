// Rotary position embeddings (rotate-half form, as Qwen2 / Qwen2-VL), for every
// row r of x [rows, cols] and every head h < heads (columns h·d .. h·d + d):
//   with half = d/2, c < half, cos = table[r, c], sin = table[r, half + c]:
//   out[r, h·d + c]        = x[h·d + c] · cos − x[h·d + half + c] · sin
//   out[r, h·d + half + c] = x[h·d + half + c] · cos + x[h·d + c] · sin
// Columns from heads·d on (e.g. V in a fused QKV tensor) are copied unchanged.
// The table holds cos and sin of each row's angles θ[r, c], computed on the host:
// this one kernel serves 1-D RoPE (θ = pos · f_c), M-RoPE (θ = pos_axis(c) · f_c, the
// axis (t, h, w) chosen by c's mrope section) and 2-D vision RoPE (θ = row · f_c for
// c < half/2, col · f_{c−half/2} after).
// One invocation per element of out; i = global x + global y · (x extent).
// Bindings (group 0):
//   0 x      storage read  array<f32> [rows, cols]
//   1 table  storage read  array<f32> [rows, d]  (cos | sin)
//   2 out    storage rw    array<f32> [rows, cols]
//   3 params uniform       Params

override WG_SIZE: u32 = 64u;

struct Params {
    rows: u32,
    cols: u32,
    heads: u32,
    head_dim: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG_SIZE;
    let cols = params.cols;
    if (i >= params.rows * cols) {
        return;
    }
    let r = i / cols;
    let col = i % cols;
    let d = params.head_dim;
    if (col >= params.heads * d) {
        out[i] = x[i];
        return;
    }
    let half = d / 2u;
    let c = col % d;
    let head_base = i - c;
    let t = r * d;
    if (c < half) {
        out[i] = x[i] * table[t + c] - x[head_base + half + c] * table[t + half + c];
    } else {
        let k = c - half;
        out[i] = x[i] * table[t + k] + x[head_base + k] * table[t + half + k];
    }
}
