// Workgroup-wide sum. Every invocation of the workgroup must call it (uniform
// control flow) with its partial value; every one gets the total.
// `n` is the workgroup size: a power of two, at most REDUCE_MAX.

const REDUCE_MAX: u32 = 256u;
var<workgroup> reduce_scratch: array<f32, REDUCE_MAX>;

fn workgroup_sum(value: f32, lid: u32, n: u32) -> f32 {
    reduce_scratch[lid] = value;
    workgroupBarrier();
    var stride = n / 2u;
    while (stride > 0u) {
        if (lid < stride) {
            reduce_scratch[lid] = reduce_scratch[lid] + reduce_scratch[lid + stride];
        }
        workgroupBarrier();
        stride = stride / 2u;
    }
    let total = reduce_scratch[0];
    // Everyone has read the total before the scratch is written again.
    workgroupBarrier();
    return total;
}
