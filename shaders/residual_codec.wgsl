// ColBERTv2 residual codec, nbits ∈ {1, 2, 4} bits per dimension.
//
// Packed layout: vector v owns W = ceil(dim·nbits / 32) u32 words starting at
// packed[v·W]; the bucket of dimension d sits at bit (d·nbits) of that vector's
// little-endian bit string, i.e. in word (d·nbits) / 32 at shift (d·nbits) % 32
// (on disk: byte (d·nbits) / 8, from its least significant bit). Bits past
// dim·nbits are zero. No bucket straddles a word because nbits divides 32.
//
// compress   (one invocation per output word (v, w)):
//   r_d       = x[v, d] − centroids[codes[v], d]
//   bucket_d  = #{ i : cutoffs[i] ≤ r_d }       (cutoffs ascending, 2^nbits − 1 of them)
//   packed[v·W + w] = Σ_{d in word w} bucket_d << ((d·nbits) % 32)
// decompress (one invocation per output row v < n), of stored vector
//   src = params.first + v (params.gather = 0) or rows[v] (gather = 1: search
//   decompresses PLAID's survivors straight from the whole index's codes and
//   residuals, no host gather; rows[v] = 0xffffffff leaves row v untouched):
//   y_d       = centroids[codes[src], d] + weights[bucket_d of packed[src·W ..]]
//   out[v, :] = y / max(‖y‖₂, 1e-12)
// Workgroups are split over x and y (linear id = wid.x + wid.y · nwg.x).
//
// Bindings (group 0), compress:
//   0 x          storage read  array<f32> [n, dim]
//   1 centroids  storage read  array<f32> [k, dim]
//   2 codes      storage read  array<u32> [n]
//   3 cutoffs    storage read  array<f32> [2^nbits − 1]
//   4 packed     storage rw    array<u32> [n, W]
//   5 params     uniform       Params
// Bindings (group 0), decompress:
//   0 dcodes     storage read  array<u32> [n]
//   1 dpacked    storage read  array<u32> [n, W]
//   2 dcentroids storage read  array<f32> [k, dim]
//   3 weights    storage read  array<f32> [2^nbits]
//   4 out        storage rw    array<f32> [n, dim]
//   5 params     uniform       Params
//   6 rows       storage read  array<u32> [n] source vector per output row
//                (gather = 1; compress and gather = 0 bind any buffer there)

override WG_SIZE: u32 = 64u;

struct Params {
    n: u32,
    dim: u32,
    nbits: u32,
    words: u32,
    // decompress only.
    first: u32,
    gather: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> centroids: array<f32>;
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(3) var<storage, read> cutoffs: array<f32>;
@group(0) @binding(4) var<storage, read_write> packed: array<u32>;
@group(0) @binding(5) var<uniform> params: Params;

@group(0) @binding(0) var<storage, read> dcodes: array<u32>;
@group(0) @binding(1) var<storage, read> dpacked: array<u32>;
@group(0) @binding(2) var<storage, read> dcentroids: array<f32>;
@group(0) @binding(3) var<storage, read> weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read> rows: array<u32>;

@compute @workgroup_size(WG_SIZE)
fn compress(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let item = (wid.x + wid.y * nwg.x) * WG_SIZE + lid;
    if (item >= params.n * params.words) {
        return;
    }
    let v = item / params.words;
    let w = item % params.words;
    let nbits = params.nbits;
    let per_word = 32u / nbits;
    let ncut = (1u << nbits) - 1u;
    let dim = params.dim;
    let xb = v * dim;
    let cb = codes[v] * dim;
    let d0 = w * per_word;
    let d1 = min(d0 + per_word, dim);
    var word = 0u;
    for (var d = d0; d < d1; d++) {
        let r = x[xb + d] - centroids[cb + d];
        var b = 0u;
        for (var i = 0u; i < ncut; i++) {
            b += select(0u, 1u, cutoffs[i] <= r);
        }
        word |= b << ((d - d0) * nbits);
    }
    packed[item] = word;
}

@compute @workgroup_size(WG_SIZE)
fn decompress(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let v = (wid.x + wid.y * nwg.x) * WG_SIZE + lid;
    if (v >= params.n) {
        return;
    }
    var src = params.first + v;
    if (params.gather != 0u) {
        src = rows[v];
    }
    if (src == 0xffffffffu) {
        return;
    }
    let nbits = params.nbits;
    let per_word = 32u / nbits;
    let mask = (1u << nbits) - 1u;
    let dim = params.dim;
    let ob = v * dim;
    let cb = dcodes[src] * dim;
    let pb = src * params.words;
    var sq = 0.0;
    for (var w = 0u; w < params.words; w++) {
        let word = dpacked[pb + w];
        let d0 = w * per_word;
        let d1 = min(d0 + per_word, dim);
        for (var d = d0; d < d1; d++) {
            let b = (word >> ((d - d0) * nbits)) & mask;
            let y = dcentroids[cb + d] + weights[b];
            out[ob + d] = y;
            sq += y * y;
        }
    }
    let inv = 1.0 / max(sqrt(sq), 1e-12);
    for (var d = 0u; d < dim; d++) {
        out[ob + d] = out[ob + d] * inv;
    }
}
