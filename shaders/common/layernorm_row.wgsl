// The second half of a LayerNorm over one row of `out`, shared by embed.wgsl and
// layernorm.wgsl. The includer declares `out` (read_write, [rows, hidden]),
// `gamma`, `beta` ([hidden]), `params.hidden`, `params.eps` and WG_SIZE, has
// written the row's pre-norm values to `out[base .. base + hidden]` (each
// invocation the columns lid, lid + WG_SIZE, …) and passes their sum.
//   out[c] = (out[c] - μ) / √(σ² + eps) · gamma[c] + beta[c]
// σ² is computed in a second pass over the row (numerically safer than E[x²] - μ²).
//!include common/reduce.wgsl

fn layernorm_row_in_place(base: u32, lid: u32, sum: f32) {
    let hidden = params.hidden;
    let mean = workgroup_sum(sum, lid, WG_SIZE) / f32(hidden);
    var sq = 0.0;
    for (var c = lid; c < hidden; c += WG_SIZE) {
        let d = out[base + c] - mean;
        sq += d * d;
    }
    let variance = workgroup_sum(sq, lid, WG_SIZE) / f32(hidden);
    let inv = inverseSqrt(variance + params.eps);
    for (var c = lid; c < hidden; c += WG_SIZE) {
        out[base + c] = (out[base + c] - mean) * inv * gamma[c] + beta[c];
    }
}
