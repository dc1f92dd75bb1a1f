// Linear layer: Y = act(X · Wᵀ + b)
//   X [M, K] row-major, W [N, K] row-major (PyTorch nn.Linear layout: out × in),
//   b [N] (read only when params.has_bias == 1), Y [M, N] row-major.
//   act = identity (ACTIVATION = 0) or GELU, erf form (ACTIVATION = 1).
// Register blocking: each invocation computes a 4 × 4 block of Y, so every value it
// loads is used four times; a workgroup of WG_X × WG_Y invocations covers a
// (4·WG_Y) × (4·WG_X) tile. No workgroup memory: on CPU drivers (lavapipe) barriers
// cost more than they save, and on GPUs the 4 × 4 reuse hits in cache.
// Dispatch: (ceil(N / (4·WG_X)), ceil(M / (4·WG_Y)), 1).
// Variant `matmul.wgsl#f16` (needs the SHADER_F16 feature): W is stored as f16,
// i.e. the kernel computes Y = act(X · f16(W)ᵀ + b) where f16(·) rounds each
// weight to the nearest binary16 value (done once, at upload); every product
// f32(f16(w))·x and every sum is f32, as in the f32 kernel, so the result differs
// from the f32 kernel only by the weights' rounding (relative 2⁻¹¹ per weight),
// not by f16 arithmetic. X, b and Y stay f32.
// Bindings (group 0):
//   0 x      storage read  array<f32>
//   1 w      storage read  array<Weight>  (f32, or f16 in the f16 variant)
//   2 bias   storage read  array<f32>
//   3 y      storage rw    array<f32>
//   4 params uniform       Params
//!variant f16: enable f16;
//!include common/gelu.wgsl

alias Weight = f32; //!variant f16: alias Weight = f16;

override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;
override ACTIVATION: u32 = 0u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<Weight>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

fn store(m: u32, n: u32, value: f32) {
    if (m < params.m && n < params.n) {
        var v = value;
        if (params.has_bias == 1u) {
            v += bias[n];
        }
        if (ACTIVATION == 1u) {
            v = gelu(v);
        }
        y[m * params.n + n] = v;
    }
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n0 = gid.x * 4u;
    let m0 = gid.y * 4u;
    if (n0 >= params.n || m0 >= params.m) {
        return;
    }
    let k = params.k;
    // Rows past the edge are clamped (their results are not stored), so the
    // inner loop has no branches.
    let x0 = min(m0, params.m - 1u) * k;
    let x1 = min(m0 + 1u, params.m - 1u) * k;
    let x2 = min(m0 + 2u, params.m - 1u) * k;
    let x3 = min(m0 + 3u, params.m - 1u) * k;
    let w0 = min(n0, params.n - 1u) * k;
    let w1 = min(n0 + 1u, params.n - 1u) * k;
    let w2 = min(n0 + 2u, params.n - 1u) * k;
    let w3 = min(n0 + 3u, params.n - 1u) * k;
    // acc_i holds Y[m0 + i, n0 .. n0 + 4]
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = 0u; kk < k; kk++) {
        let wv = vec4<f32>(f32(w[w0 + kk]), f32(w[w1 + kk]), f32(w[w2 + kk]), f32(w[w3 + kk]));
        acc0 += x[x0 + kk] * wv;
        acc1 += x[x1 + kk] * wv;
        acc2 += x[x2 + kk] * wv;
        acc3 += x[x3 + kk] * wv;
    }
    store(m0, n0, acc0.x); store(m0, n0 + 1u, acc0.y); store(m0, n0 + 2u, acc0.z); store(m0, n0 + 3u, acc0.w);
    store(m0 + 1u, n0, acc1.x); store(m0 + 1u, n0 + 1u, acc1.y); store(m0 + 1u, n0 + 2u, acc1.z); store(m0 + 1u, n0 + 3u, acc1.w);
    store(m0 + 2u, n0, acc2.x); store(m0 + 2u, n0 + 1u, acc2.y); store(m0 + 2u, n0 + 2u, acc2.z); store(m0 + 2u, n0 + 3u, acc2.w);
    store(m0 + 3u, n0, acc3.x); store(m0 + 3u, n0 + 1u, acc3.y); store(m0 + 3u, n0 + 2u, acc3.z); store(m0 + 3u, n0 + 3u, acc3.w);
}
