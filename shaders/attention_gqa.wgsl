// Attention with grouped key/value heads and an explicit key span per query row
// (causal, bidirectional, block-diagonal and left-padding masks are all spans).
// qkv [rows, (QH + 2·KVH)·d] holds Q (QH heads), then K and V (KVH heads each);
// query head h reads key/value head h / (QH / KVH) (as repeat_kv). Row r attends
// the rows j ∈ [span[r].start, span[r].end) of the same tensor:
//   out[r, h·d .. h·d + d] = Σ_j softmax_j(q_{r,h} · k_{j,g} · scale) · v_{j,g}
// An empty span gives zeros (never NaN). Online softmax in one pass over the keys.
// The value columns are tiled: one invocation per (query row, query head, tile of
// VALUE_TILE output columns): workgroup x = tile of rows, y = head · tiles + tile.
// Each invocation holds its whole query head (≤ MAX_HEAD_DIM = 256, Gemma's size)
// for the scores and accumulates only its tile, so the private arrays stay bounded
// (256 + 128 floats) and head_dim 256 runs as two tiles that share the scores' math.
// Bindings (group 0):
//   0 qkv    storage read  array<f32> [rows, (QH + 2·KVH)·d]
//   1 spans  storage read  array<u32> [rows, 2]  (start, end)
//   2 out    storage rw    array<f32> [rows, QH·d]
//   3 params uniform       Params

override WG_SIZE: u32 = 64u;
override HEAD_DIM: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
const VALUE_TILE: u32 = 128u;

struct Params {
    rows: u32,
    q_heads: u32,
    kv_heads: u32,
    head_dim: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> spans: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tiles = (HEAD_DIM + VALUE_TILE - 1u) / VALUE_TILE;
    let h = wid.y / tiles;
    let c0 = (wid.y % tiles) * VALUE_TILE;
    let r = wid.x * WG_SIZE + lid;
    if (h >= params.q_heads || r >= params.rows) {
        return;
    }
    let d = HEAD_DIM;
    let qh = params.q_heads;
    let kvh = params.kv_heads;
    let stride = (qh + 2u * kvh) * d;
    let g = h / (qh / kvh);
    let k_off = qh * d + g * d;
    let v_off = (qh + kvh) * d + g * d;
    var q: array<f32, MAX_HEAD_DIM>;
    var acc: array<f32, VALUE_TILE>;
    let q_base = r * stride + h * d;
    for (var c = 0u; c < d; c++) {
        q[c] = qkv[q_base + c] * params.scale;
    }
    let width = min(VALUE_TILE, d - c0);
    for (var c = 0u; c < width; c++) {
        acc[c] = 0.0;
    }
    let start = spans[2u * r];
    let end = min(spans[2u * r + 1u], params.rows);
    var running_max = -3.0e38;
    var denom = 0.0;
    for (var j = start; j < end; j++) {
        let k_base = j * stride + k_off;
        var s = 0.0;
        for (var c = 0u; c < d; c++) {
            s += q[c] * qkv[k_base + c];
        }
        let new_max = max(running_max, s);
        let correction = exp(running_max - new_max);
        let p = exp(s - new_max);
        denom = denom * correction + p;
        let v_base = j * stride + v_off + c0;
        for (var c = 0u; c < width; c++) {
            acc[c] = acc[c] * correction + p * qkv[v_base + c];
        }
        running_max = new_max;
    }
    let inv = select(0.0, 1.0 / denom, denom > 0.0);
    let out_base = r * qh * d + h * d + c0;
    for (var c = 0u; c < width; c++) {
        out[out_base + c] = acc[c] * inv;
    }
}
