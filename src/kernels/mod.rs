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
pub mod pairwise;
pub mod plaid;
pub mod residual_codec;
pub mod rotary;
pub mod survivors;
pub mod topk;

use crate::gpu::KernelSpec;

/// Every kernel, for pipeline warm-up and the shader tests (`matmul::SPEC_F16`
/// builds only on a device with SHADER_F16).
pub const ALL: &[KernelSpec] = &[
    embed::SPEC,
    matmul::SPEC,
    matmul::SPEC_F16,
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
    // Token pooling.
    pairwise::SPEC,
];

/// One kernel's storage bindings as the Rust side names them (the WGSL
/// globals' names, in binding order, the uniform left out): checked against
/// naga's reflection of the shader in `tests/shaders.rs`.
#[derive(Debug, Clone, Copy)]
pub struct BindingNames {
    pub spec: KernelSpec,
    pub names: &'static [&'static str],
}

/// Every kernel's binding names (one entry per [`ALL`] spec).
pub const BINDING_NAMES: &[BindingNames] = &[
    BindingNames {
        spec: pairwise::SPEC,
        names: pairwise::Buffers::NAMES,
    },
    BindingNames {
        spec: embed::SPEC,
        names: embed::Buffers::NAMES,
    },
    BindingNames {
        spec: matmul::SPEC,
        names: matmul::Buffers::NAMES,
    },
    BindingNames {
        spec: matmul::SPEC_F16,
        names: matmul::Buffers::NAMES,
    },
    BindingNames {
        spec: attention::SPEC,
        names: attention::Buffers::NAMES,
    },
    BindingNames {
        spec: layernorm::SPEC,
        names: layernorm::Buffers::NAMES,
    },
    BindingNames {
        spec: l2norm::SPEC,
        names: l2norm::Buffers::NAMES,
    },
    BindingNames {
        spec: kmeans::ASSIGN,
        names: kmeans::Buffers::NAMES,
    },
    BindingNames {
        spec: residual_codec::COMPRESS,
        names: residual_codec::CompressBuffers::NAMES,
    },
    BindingNames {
        spec: residual_codec::DECOMPRESS,
        names: residual_codec::DecompressBuffers::NAMES,
    },
    BindingNames {
        spec: maxsim::SPEC,
        names: maxsim::Buffers::NAMES,
    },
    BindingNames {
        spec: plaid::SELECT_CELLS,
        names: plaid::Buffers::NAMES,
    },
    BindingNames {
        spec: plaid::KEEP_CENTROIDS,
        names: plaid::Buffers::NAMES,
    },
    BindingNames {
        spec: plaid::MARK_CANDIDATES,
        names: plaid::Buffers::NAMES,
    },
    BindingNames {
        spec: plaid::APPROX_ALL,
        names: plaid::Buffers::NAMES,
    },
    BindingNames {
        spec: plaid::APPROX_LIST,
        names: plaid::Buffers::NAMES,
    },
    BindingNames {
        spec: topk::SPEC,
        names: topk::Buffers::NAMES,
    },
    BindingNames {
        spec: survivors::FILL,
        names: survivors::Buffers::NAMES,
    },
    BindingNames {
        spec: survivors::OFFSETS,
        names: survivors::Buffers::NAMES,
    },
    BindingNames {
        spec: survivors::MAP_ROWS,
        names: survivors::Buffers::NAMES,
    },
    BindingNames {
        spec: survivors::SCATTER,
        names: survivors::Buffers::NAMES,
    },
    BindingNames {
        spec: norm::LAYER_NORM,
        names: norm::Buffers::NAMES,
    },
    BindingNames {
        spec: norm::RMS_NORM,
        names: norm::Buffers::NAMES,
    },
    BindingNames {
        spec: elementwise::ADD,
        names: elementwise::Buffers::NAMES,
    },
    BindingNames {
        spec: elementwise::QUICK_GELU,
        names: elementwise::Buffers::NAMES,
    },
    BindingNames {
        spec: elementwise::GELU,
        names: elementwise::Buffers::NAMES,
    },
    BindingNames {
        spec: elementwise::SWIGLU,
        names: elementwise::Buffers::NAMES,
    },
    BindingNames {
        spec: rotary::SPEC,
        names: rotary::Buffers::NAMES,
    },
    BindingNames {
        spec: attention_gqa::SPEC,
        names: attention_gqa::Buffers::NAMES,
    },
];

/// The layout of one shader's `Params` as Rust lays it out: its size and, per
/// field in declaration order, (name, byte offset, WGSL scalar type). Checked
/// against the WGSL struct naga computes in `tests/shaders.rs`.
#[derive(Debug, Clone)]
pub struct ParamsLayout {
    pub shader: &'static str,
    pub size: usize,
    pub fields: Vec<(&'static str, usize, &'static str)>,
}

/// The WGSL scalar type a `Params` field maps to.
pub trait WgslScalar {
    const WGSL: &'static str;
}
impl WgslScalar for u32 {
    const WGSL: &'static str = "u32";
}
impl WgslScalar for i32 {
    const WGSL: &'static str = "i32";
}
impl WgslScalar for f32 {
    const WGSL: &'static str = "f32";
}

#[doc(hidden)]
pub fn wgsl_type_of<P, T: WgslScalar>(_field: fn(&P) -> &T) -> &'static str {
    T::WGSL
}

/// `ParamsLayout` of `$ty` listing every field (the destructuring pattern makes
/// the compiler refuse a list that misses one).
macro_rules! params_layout {
    ($shader:literal, $ty:path { $($field:ident),* $(,)? }) => {{
        #[allow(dead_code)]
        fn exhaustive(p: &$ty) {
            let $ty { $($field: _),* } = *p;
        }
        $crate::kernels::ParamsLayout {
            shader: $shader,
            size: std::mem::size_of::<$ty>(),
            fields: vec![$((
                stringify!($field),
                std::mem::offset_of!($ty, $field),
                $crate::kernels::wgsl_type_of(|p: &$ty| &p.$field),
            )),*],
        }
    }};
}

/// Every shader's `Params` layout, by shader file.
pub fn params_layouts() -> Vec<ParamsLayout> {
    vec![
        params_layout!(
            "embed.wgsl",
            embed::Params {
                rows,
                seq_len,
                hidden,
                eps
            }
        ),
        params_layout!("matmul.wgsl", matmul::Params { m, n, k, has_bias }),
        params_layout!("matmul.wgsl#f16", matmul::Params { m, n, k, has_bias }),
        params_layout!(
            "attention.wgsl",
            attention::Params {
                batch,
                seq_len,
                heads,
                head_dim,
                scale,
                _pad0,
                _pad1,
                _pad2
            }
        ),
        params_layout!(
            "layernorm.wgsl",
            layernorm::Params {
                rows,
                hidden,
                eps,
                _pad
            }
        ),
        params_layout!(
            "l2norm.wgsl",
            l2norm::Params {
                rows,
                cols,
                _pad0,
                _pad1
            }
        ),
        params_layout!("kmeans.wgsl", kmeans::Params { n, k, dim, _pad }),
        params_layout!(
            "pairwise.wgsl",
            pairwise::Params {
                blocks,
                total,
                mode,
                _pad
            }
        ),
        params_layout!(
            "residual_codec.wgsl",
            residual_codec::Params {
                n,
                dim,
                nbits,
                words,
                first,
                gather,
                _pad0,
                _pad1
            }
        ),
        params_layout!(
            "maxsim.wgsl",
            maxsim::Params {
                num_docs,
                qlen,
                dim,
                num_queries,
                mode,
                out_stride,
                out_offset,
                _pad
            }
        ),
        params_layout!(
            "plaid.wgsl",
            plaid::Params {
                num_queries,
                qlen,
                num_centroids,
                num_docs,
                list_len,
                threshold,
                scatter,
                _pad1
            }
        ),
        params_layout!(
            "topk.wgsl",
            topk::Params {
                rows,
                n,
                k,
                in_stride,
                sort_size,
                flags,
                _pad1,
                _pad2
            }
        ),
        params_layout!(
            "survivors.wgsl",
            survivors::Params {
                num_queries,
                num_docs,
                list_len,
                first,
                count,
                rows,
                _pad0,
                _pad1
            }
        ),
        params_layout!(
            "norm.wgsl",
            norm::Params {
                rows,
                hidden,
                eps,
                _pad
            }
        ),
        params_layout!(
            "elementwise.wgsl",
            elementwise::Params {
                rows,
                cols,
                _pad0,
                _pad1
            }
        ),
        params_layout!(
            "rotary.wgsl",
            rotary::Params {
                rows,
                cols,
                heads,
                head_dim
            }
        ),
        params_layout!(
            "attention_gqa.wgsl",
            attention_gqa::Params {
                rows,
                q_heads,
                kv_heads,
                head_dim,
                scale,
                _pad0,
                _pad1,
                _pad2
            }
        ),
    ]
}

/// A binding slot's buffer: always there, or optional (a kernel that does not
/// read it then gets another of its buffers bound in its place).
pub trait Bind<'a> {
    fn buffer(&self) -> Option<&'a wgpu::Buffer>;
}
impl<'a> Bind<'a> for &'a wgpu::Buffer {
    fn buffer(&self) -> Option<&'a wgpu::Buffer> {
        Some(*self)
    }
}
impl<'a> Bind<'a> for Option<&'a wgpu::Buffer> {
    fn buffer(&self) -> Option<&'a wgpu::Buffer> {
        *self
    }
}

/// Declares a kernel's buffers: one field per storage binding, **in binding
/// order**, named as the WGSL global (or `field as "wgsl_name"`). The struct's
/// `NAMES` and `in_order` come from the same list, so a launcher cannot bind
/// buffers in another order than the one `tests/shaders.rs` checks against
/// naga (names, binding numbers and access modes).
macro_rules! kernel_buffers {
    (
        $(#[$m:meta])*
        pub struct $name:ident<$lt:lifetime> {
            $($(#[$fm:meta])* $field:ident $(as $wgsl:literal)? : $ty:ty),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy)]
        pub struct $name<$lt> {
            $($(#[$fm])* pub $field: $ty,)*
        }
        impl<$lt> $name<$lt> {
            /// The WGSL globals these fields bind, in binding order.
            pub const NAMES: &'static [&'static str] =
                &[$($crate::kernels::kernel_buffers!(@name $field $($wgsl)?)),*];
            /// The buffers in binding order (an absent optional one replaced
            /// by the first present buffer).
            pub(crate) fn in_order(&self) -> Vec<&$lt wgpu::Buffer> {
                let all = [$($crate::kernels::Bind::buffer(&self.$field)),*];
                let fallback = all.iter().flatten().next().copied();
                all.iter().filter_map(|b| b.or(fallback)).collect()
            }
        }
    };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $wgsl:literal) => { $wgsl };
}
pub(crate) use kernel_buffers;

/// Workgroup size of the row-wise kernels.
pub(crate) const ROW_WG: u32 = 64;
