// Multi-head self-attention with a key-length mask, for a padded batch of B
// sequences of length L, H = heads · d:
//   ctx[b, i, h, :] = Σ_{j < key_len[b]} softmax_j(q_i · k_j · scale) · v_j
// where q, k, v are the three H-wide column blocks of the fused QKV projection:
//   qkv [B·L, 3H]: q = cols [h·d, (h+1)·d), k = H + that, v = 2H + that.
// Keys at j ≥ key_len[b] (padding, or [MASK] expansion tokens a query does not
// attend to) get weight exactly 0. A row with key_len 0 yields zeros, not NaN.
// Softmax is computed online in one pass over the keys (running max and sum).
// One invocation per (b, h, query row i); workgroup x = tile of rows, y = b·heads + h.
// Bindings (group 0):
//   0 qkv      storage read  array<f32> [B·L, 3H]
//   1 key_lens storage read  array<u32> [B]
//   2 ctx      storage rw    array<f32> [B·L, H]
//   3 params   uniform       Params

override WG_SIZE: u32 = 64u;
// The model's head dimension, fixed per pipeline so the per-key loops have a
// constant trip count (compilers unroll them and keep q and acc in registers).
override HEAD_DIM: u32 = 64u;
const MAX_HEAD_DIM: u32 = 128u;

struct Params {
    batch: u32,
    seq_len: u32,
    heads: u32,
    head_dim: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> key_lens: array<u32>;
@group(0) @binding(2) var<storage, read_write> ctx: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Workgroup (x, y) = (tile of WG_SIZE query rows, sequence·heads + head): b and h
    // are uniform across the workgroup, so every key and value read below is the
    // same address for all invocations (a broadcast, not a gather).
    let heads = params.heads;
    let seq = params.seq_len;
    let bh = wid.y;
    let i = wid.x * WG_SIZE + lid;
    if (bh >= params.batch * heads || i >= seq) {
        return;
    }
    let d = HEAD_DIM;
    let hidden = heads * d;
    let stride = 3u * hidden;
    let h = bh % heads;
    let b = bh / heads;
    let row = b * seq + i;
    let n_keys = min(key_lens[b], seq);

    var q: array<f32, MAX_HEAD_DIM>;
    var acc: array<f32, MAX_HEAD_DIM>;
    let q_base = row * stride + h * d;
    for (var c = 0u; c < d; c++) {
        q[c] = qkv[q_base + c] * params.scale;
        acc[c] = 0.0;
    }
    var running_max = -3.0e38;
    var denom = 0.0;
    let first_key = b * seq;
    for (var j = 0u; j < n_keys; j++) {
        let k_base = (first_key + j) * stride + hidden + h * d;
        var s = 0.0;
        for (var c = 0u; c < d; c++) {
            s += q[c] * qkv[k_base + c];
        }
        let new_max = max(running_max, s);
        let correction = exp(running_max - new_max);
        let p = exp(s - new_max);
        denom = denom * correction + p;
        let v_base = k_base + hidden;
        for (var c = 0u; c < d; c++) {
            acc[c] = acc[c] * correction + p * qkv[v_base + c];
        }
        running_max = new_max;
    }
    let inv = select(0.0, 1.0 / denom, denom > 0.0);
    let out_base = row * hidden + h * d;
    for (var c = 0u; c < d; c++) {
        ctx[out_base + c] = acc[c] * inv;
    }
}
