// k-means assignment (spherical k-means, residual-codec compression):
//   codes[i]  = argmax_c  x[i, :] · centroids[c, :]     (ties → the lower c)
//   scores[i] = max_c     x[i, :] · centroids[c, :]
// Register blocking, no shared-memory tiling (cheap on lavapipe): a workgroup is
// WG_V × WG_C invocations and owns 4·WG_V consecutive vectors; invocation
// (tv, tc) computes 4 vectors × 4 centroids dot products per step, walking the
// centroid blocks tc, tc + WG_C, tc + 2·WG_C, … and keeping a running argmax for
// its 4 vectors. The WG_C partial maxima of each vector are then combined
// through workgroup memory (written before the barrier, read after it).
// A vector with non-finite dot products keeps code 0 and score -inf-ish
// (f32::MIN); callers reject non-finite inputs before they get here.
// Workgroups are split over x and y (linear id = wid.x + wid.y · nwg.x).
// Bindings (group 0):
//   0 x          storage read  array<f32> [n, dim]
//   1 centroids  storage read  array<f32> [k, dim]
//   2 codes      storage rw    array<u32> [n]
//   3 scores     storage rw    array<f32> [n]
//   4 params     uniform       Params

override WG_V: u32 = 16u;
override WG_C: u32 = 4u;

const LOWEST: f32 = -3.40282347e38; // f32::MIN
// Workgroup scratch, sized for WG_V · WG_C ≤ 256 invocations × 4 vectors.
const SCRATCH: u32 = 1024u;

struct Params {
    n: u32,
    k: u32,
    dim: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> centroids: array<f32>;
@group(0) @binding(2) var<storage, read_write> codes: array<u32>;
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> best_score: array<f32, SCRATCH>;
var<workgroup> best_code: array<u32, SCRATCH>;

// (s, c) beats (bs, bc): higher score, or equal score and lower centroid.
fn better(s: f32, c: u32, bs: f32, bc: u32) -> bool {
    return s > bs || (s == bs && c < bc);
}

@compute @workgroup_size(WG_V * WG_C)
fn assign(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tv = lid / WG_C;
    let tc = lid % WG_C;
    let group = wid.x + wid.y * nwg.x;
    let v0 = (group * WG_V + tv) * 4u;
    let dim = params.dim;
    let k = params.k;
    let last = max(params.n, 1u) - 1u;
    // Rows past the end read the last row (in bounds) and are never written.
    let r0 = min(v0, last) * dim;
    let r1 = min(v0 + 1u, last) * dim;
    let r2 = min(v0 + 2u, last) * dim;
    let r3 = min(v0 + 3u, last) * dim;

    var bs = vec4<f32>(LOWEST);
    var bc = vec4<u32>(0u);
    let kmax = max(k, 1u) - 1u;
    for (var c0 = tc * 4u; c0 < k; c0 += WG_C * 4u) {
        let q0 = min(c0, kmax) * dim;
        let q1 = min(c0 + 1u, kmax) * dim;
        let q2 = min(c0 + 2u, kmax) * dim;
        let q3 = min(c0 + 3u, kmax) * dim;
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        for (var d = 0u; d < dim; d++) {
            let cv = vec4<f32>(centroids[q0 + d], centroids[q1 + d], centroids[q2 + d], centroids[q3 + d]);
            a0 += x[r0 + d] * cv;
            a1 += x[r1 + d] * cv;
            a2 += x[r2 + d] * cv;
            a3 += x[r3 + d] * cv;
        }
        // Centroids in increasing order: strict '>' keeps the lower one on ties.
        for (var j = 0u; j < 4u; j++) {
            let c = c0 + j;
            if (c < k) {
                if (a0[j] > bs.x) { bs.x = a0[j]; bc.x = c; }
                if (a1[j] > bs.y) { bs.y = a1[j]; bc.y = c; }
                if (a2[j] > bs.z) { bs.z = a2[j]; bc.z = c; }
                if (a3[j] > bs.w) { bs.w = a3[j]; bc.w = c; }
            }
        }
    }
    let slot = (tv * 4u) * WG_C + tc;
    best_score[slot] = bs.x;
    best_code[slot] = bc.x;
    best_score[slot + WG_C] = bs.y;
    best_code[slot + WG_C] = bc.y;
    best_score[slot + 2u * WG_C] = bs.z;
    best_code[slot + 2u * WG_C] = bc.z;
    best_score[slot + 3u * WG_C] = bs.w;
    best_code[slot + 3u * WG_C] = bc.w;
    workgroupBarrier();
    // Invocations finish the workgroup's 4·WG_V vectors, one vector at a time each.
    for (var t0 = lid; t0 < 4u * WG_V; t0 += WG_V * WG_C) {
        let v = group * WG_V * 4u + t0;
        if (v < params.n) {
            let base = t0 * WG_C;
            var s = best_score[base];
            var c = best_code[base];
            for (var t = 1u; t < WG_C; t++) {
                let s2 = best_score[base + t];
                let c2 = best_code[base + t];
                if (better(s2, c2, s, c)) {
                    s = s2;
                    c = c2;
                }
            }
            codes[v] = c;
            scores[v] = s;
        }
    }
}
