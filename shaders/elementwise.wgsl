// Element-wise ops of the vision-language models, over out [rows, cols]:
//   add:        out[i] = a[i] + b[i]                                  (residuals)
//   quick_gelu: out[i] = a[i] · σ(1.702 · a[i])                       (Qwen2-VL vision MLP)
//   gelu:       out[i] = 0.5 · a[i] · (1 + erf(a[i] / √2))            (merger; erf as gelu.wgsl)
//   swiglu:     out[r, c] = silu(a[r, c]) · a[r, cols + c],  silu(x) = x · σ(x)
//               (a is the fused [rows, 2·cols] gate|up projection of a SwiGLU MLP)
//   gelu_tanh:  out[i] = gelu_t(a[i])                                  (SigLIP MLP)
//   geglu:      out[i] = gelu_t(a[i]) · b[i]                          (Gemma MLP:
//               a = gate projection, b = up projection, each [rows, cols]; kept
//               apart because Gemma-2B's fused gate|up exceeds a 128 MiB binding)
//               gelu_t(x) = 0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))),
//               tanh(u) = 1 − 2 / (e^(2u) + 1) (finite for any u: ±1 at the ends)
// with σ(x) = 1 / (1 + e⁻ˣ). One invocation per output element; the linear
// index i = global x + global y · (x extent) (grids past 65,535 workgroups use y).
// Bindings (group 0):
//   0 a      storage read  array<f32> [rows, cols] ([rows, 2·cols] for swiglu)
//   1 b      storage read  array<f32> [rows, cols] (add and geglu; bound but unused otherwise)
//   2 out    storage rw    array<f32> [rows, cols]
//   3 params uniform       Params

override WG_SIZE: u32 = 64u;

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

//!include common/gelu.wgsl

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG_SIZE;
}

@compute @workgroup_size(WG_SIZE)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= params.rows * params.cols) {
        return;
    }
    out[i] = a[i] + b[i];
}

@compute @workgroup_size(WG_SIZE)
fn quick_gelu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= params.rows * params.cols) {
        return;
    }
    let v = a[i];
    out[i] = v * sigmoid(1.702 * v);
}

@compute @workgroup_size(WG_SIZE)
fn gelu_exact(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= params.rows * params.cols) {
        return;
    }
    out[i] = gelu(a[i]);
}

@compute @workgroup_size(WG_SIZE)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    let cols = params.cols;
    if (i >= params.rows * cols) {
        return;
    }
    let r = i / cols;
    let c = i % cols;
    let g = a[r * 2u * cols + c];
    let u = a[r * 2u * cols + cols + c];
    out[i] = g * sigmoid(g) * u;
}

fn gelu_tanh_of(x: f32) -> f32 {
    let u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
    let t = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
    return 0.5 * x * (1.0 + t);
}

@compute @workgroup_size(WG_SIZE)
fn gelu_tanh(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= params.rows * params.cols) {
        return;
    }
    out[i] = gelu_tanh_of(a[i]);
}

@compute @workgroup_size(WG_SIZE)
fn geglu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= params.rows * params.cols) {
        return;
    }
    out[i] = gelu_tanh_of(a[i]) * b[i];
}
