//! Typed dispatches of the WGSL kernels in `shaders/`: one file per shader with
//! its `Params` (`#[repr(C)]`, same field order as the WGSL struct) and a
//! function that records the dispatch into a command encoder. Models call
//! kernels; kernels never call models.

pub mod attention;
pub mod attention_gqa;
pub mod elementwise;
pub mod embed;
pub mod kmeans;
pub mod l2norm;
pub mod layernorm;
pub mod matmul;
pub mod maxsim;
pub mod norm;
pub mod plaid;
pub mod residual_codec;
pub mod rotary;
pub mod survivors;
pub mod topk;

use crate::gpu::KernelSpec;

/// Every kernel, for pipeline warm-up and the shader tests.
pub const ALL: &[KernelSpec] = &[
    embed::SPEC,
    matmul::SPEC,
    attention::SPEC,
    layernorm::SPEC,
    l2norm::SPEC,
    kmeans::ASSIGN,
    residual_codec::COMPRESS,
    residual_codec::DECOMPRESS,
    maxsim::SPEC,
    plaid::SELECT_CELLS,
    plaid::KEEP_CENTROIDS,
    plaid::MARK_CANDIDATES,
    plaid::APPROX_ALL,
    plaid::APPROX_LIST,
    topk::SPEC,
    survivors::FILL,
    survivors::OFFSETS,
    survivors::MAP_ROWS,
    survivors::SCATTER,
    // Vision-language ops (Qwen2-VL).
    norm::LAYER_NORM,
    norm::RMS_NORM,
    elementwise::ADD,
    elementwise::QUICK_GELU,
    elementwise::GELU,
    elementwise::SWIGLU,
    rotary::SPEC,
    attention_gqa::SPEC,
];

/// Size in bytes of each kernel's `Params` struct, by shader file: checked
/// against the WGSL struct layout naga computes.
pub const PARAMS_SIZES: &[(&str, usize)] = &[
    ("embed.wgsl", std::mem::size_of::<embed::Params>()),
    ("matmul.wgsl", std::mem::size_of::<matmul::Params>()),
    ("attention.wgsl", std::mem::size_of::<attention::Params>()),
    ("layernorm.wgsl", std::mem::size_of::<layernorm::Params>()),
    ("l2norm.wgsl", std::mem::size_of::<l2norm::Params>()),
    ("kmeans.wgsl", std::mem::size_of::<kmeans::Params>()),
    (
        "residual_codec.wgsl",
        std::mem::size_of::<residual_codec::Params>(),
    ),
    ("maxsim.wgsl", std::mem::size_of::<maxsim::Params>()),
    ("plaid.wgsl", std::mem::size_of::<plaid::Params>()),
    ("topk.wgsl", std::mem::size_of::<topk::Params>()),
    ("survivors.wgsl", std::mem::size_of::<survivors::Params>()),
    ("norm.wgsl", std::mem::size_of::<norm::Params>()),
    (
        "elementwise.wgsl",
        std::mem::size_of::<elementwise::Params>(),
    ),
    ("rotary.wgsl", std::mem::size_of::<rotary::Params>()),
    (
        "attention_gqa.wgsl",
        std::mem::size_of::<attention_gqa::Params>(),
    ),
];

/// Workgroup size of the row-wise kernels.
pub(crate) const ROW_WG: u32 = 64;
