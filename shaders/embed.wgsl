// BERT embeddings: for row r = b·L + t of the padded batch,
//   h[r, :] = LayerNorm(word[ids[r]] + pos[t] + token_type[type_ids[r]]) · gamma + beta
// One workgroup per row; rows past 65,535 continue on workgroup id y.
// Bindings (group 0):
//   0 ids        storage read   array<u32> [rows]
//   1 type_ids   storage read   array<u32> [rows]
//   2 word       storage read   array<f32> [vocab, hidden]
//   3 pos        storage read   array<f32> [max_positions, hidden]
//   4 token_type storage read   array<f32> [type_vocab, hidden]
//   5 gamma      storage read   array<f32> [hidden]
//   6 beta       storage read   array<f32> [hidden]
//   7 out        storage rw     array<f32> [rows, hidden]
//   8 params     uniform        Params

override WG_SIZE: u32 = 64u;

struct Params {
    rows: u32,
    seq_len: u32,
    hidden: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read> ids: array<u32>;
@group(0) @binding(1) var<storage, read> type_ids: array<u32>;
@group(0) @binding(2) var<storage, read> word: array<f32>;
@group(0) @binding(3) var<storage, read> pos: array<f32>;
@group(0) @binding(4) var<storage, read> token_type: array<f32>;
@group(0) @binding(5) var<storage, read> gamma: array<f32>;
@group(0) @binding(6) var<storage, read> beta: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<uniform> params: Params;

//!include common/layernorm_row.wgsl

@compute @workgroup_size(WG_SIZE)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    // Whole workgroups leave together, so barriers below stay in uniform control flow.
    if (row >= params.rows) {
        return;
    }
    let hidden = params.hidden;
    let t = row % params.seq_len;
    let w_base = ids[row] * hidden;
    let p_base = t * hidden;
    let y_base = type_ids[row] * hidden;
    let base = row * hidden;
    var sum = 0.0;
    for (var c = lid; c < hidden; c += WG_SIZE) {
        let v = word[w_base + c] + pos[p_base + c] + token_type[y_base + c];
        out[base + c] = v;
        sum += v;
    }
    layernorm_row_in_place(base, lid, sum);
}
