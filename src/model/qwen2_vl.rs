//! Qwen2-VL (vision tower + language model), written once against [`Backend`]:
//! the encoder of ColQwen2 ([`super::colqwen2`]).
//!
//! Vision: patch rows → linear (the Conv3d patch embedding) → N × {x += attn(LN x)
//! with fused qkv, 2-D RoPE and block-diagonal attention per image; x += fc2(quick_gelu(fc1(LN x)))}
//! → merger (LN, 4 rows concatenated, Linear → GELU → Linear).
//! Language model: token embeddings gathered on the host (the 151,936 × 1536
//! table is never bound whole), image-token rows replaced by the vision output,
//! M-RoPE positions, N × {x += o(attn(RoPE(qkv(RMSNorm x)))) with grouped-query
//! causal attention over left-padded sequences; x += down(SwiGLU(gate|up(RMSNorm x)))},
//! final RMSNorm. Checked against transformers 5.24's `modeling_qwen2_vl.py`
//! (see `scripts/reference/make_colqwen2_fixtures.py` for the details verified).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::backend::{Activation, Backend, HostMatrix, KeySpans, Unary};
use crate::error::{Error, Result};
use crate::model::weights::TensorFile;

/// The language model's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    /// Frequency slots per M-RoPE axis (t, h, w); they sum to head_dim / 2.
    pub mrope_section: [usize; 3],
}

impl TextConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// The vision tower's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub embed_dim: usize,
    pub num_heads: usize,
    pub mlp_hidden: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub in_channels: usize,
    /// The merger's output width (the language model's hidden size).
    pub out_hidden: usize,
    pub rope_theta: f64,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// `config.json` of a Qwen2-VL / ColQwen2 checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen2VlConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: u32,
}

impl Qwen2VlConfig {
    /// Reads `config.json`: transformers 5.x nests the text settings under
    /// `text_config` (with `rope_parameters`), 4.x keeps them at the top level
    /// (with `rope_theta` and `rope_scaling.mrope_section`); `vision_config` in both.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_json(&json).map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    fn from_json(json: &Value) -> std::result::Result<Self, String> {
        // transformers' ColQwen2ForRetrieval nests the Qwen2-VL config in `vlm_config`.
        let json = json.get("vlm_config").unwrap_or(json);
        let t = json.get("text_config").unwrap_or(json);
        let v = json
            .get("vision_config")
            .ok_or("no vision_config: not a Qwen2-VL checkpoint")?;
        let int = |o: &Value, k: &str| -> std::result::Result<usize, String> {
            o.get(k)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| format!("missing integer '{k}'"))
        };
        let rope = t
            .get("rope_parameters")
            .or_else(|| t.get("rope_scaling"))
            .or_else(|| json.get("rope_scaling"));
        let theta = rope
            .and_then(|r| r.get("rope_theta"))
            .or_else(|| t.get("rope_theta"))
            .or_else(|| json.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(1_000_000.0);
        let sections: Vec<usize> = rope
            .and_then(|r| r.get("mrope_section"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64().map(|x| x as usize))
                    .collect()
            })
            .unwrap_or_else(|| vec![16, 24, 24]);
        let heads = int(t, "num_attention_heads")?;
        let hidden = int(t, "hidden_size")?;
        let text = TextConfig {
            vocab_size: int(t, "vocab_size")?,
            hidden_size: hidden,
            intermediate_size: int(t, "intermediate_size")?,
            num_hidden_layers: int(t, "num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: int(t, "num_key_value_heads").unwrap_or(heads),
            rms_norm_eps: t
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6) as f32,
            rope_theta: theta,
            mrope_section: match sections[..] {
                [a, b, c] => [a, b, c],
                _ => return Err(format!("mrope_section {sections:?} must have 3 entries")),
            },
        };
        if heads == 0
            || hidden % heads != 0
            || text.num_key_value_heads == 0
            || heads % text.num_key_value_heads != 0
            || text.mrope_section.iter().sum::<usize>() * 2 != text.head_dim()
        {
            return Err(format!(
                "inconsistent text settings: hidden {hidden}, {heads} heads, {} kv heads, \
                 mrope_section {:?} (must sum to head_dim / 2)",
                text.num_key_value_heads, text.mrope_section
            ));
        }
        let embed_dim = int(v, "embed_dim")?;
        let mlp_ratio = v.get("mlp_ratio").and_then(Value::as_f64).unwrap_or(4.0);
        let vision = VisionConfig {
            depth: int(v, "depth")?,
            embed_dim,
            num_heads: int(v, "num_heads")?,
            mlp_hidden: (embed_dim as f64 * mlp_ratio) as usize,
            patch_size: int(v, "patch_size").unwrap_or(14),
            temporal_patch_size: int(v, "temporal_patch_size").unwrap_or(2),
            spatial_merge_size: int(v, "spatial_merge_size").unwrap_or(2),
            in_channels: int(v, "in_channels")
                .or_else(|_| int(v, "in_chans"))
                .unwrap_or(3),
            out_hidden: int(v, "hidden_size").unwrap_or(hidden),
            rope_theta: v
                .get("rope_parameters")
                .and_then(|r| r.get("rope_theta"))
                .and_then(Value::as_f64)
                .unwrap_or(10_000.0),
        };
        if vision.num_heads == 0
            || embed_dim % vision.num_heads != 0
            || !vision.head_dim().is_multiple_of(4)
            || vision.out_hidden != hidden
        {
            return Err(format!(
                "inconsistent vision settings: embed_dim {embed_dim}, {} heads (head_dim a \
                 multiple of 4), merger output {} vs text hidden {hidden}",
                vision.num_heads, vision.out_hidden
            ));
        }
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "quick_gelu" {
                return Err(format!(
                    "vision hidden_act '{act}' is not supported (Qwen2-VL uses quick_gelu)"
                ));
            }
        }
        let image_token_id = json
            .get("image_token_id")
            .and_then(Value::as_u64)
            .unwrap_or(151_655) as u32;
        Ok(Self {
            text,
            vision,
            image_token_id,
        })
    }
}

/// The tensors of a checkpoint, in one `model.safetensors` or sharded
/// (`model.safetensors.index.json`).
pub struct TensorSet {
    files: Vec<TensorFile>,
    names: Vec<Vec<String>>,
}

impl TensorSet {
    /// Opens `dir/model.safetensors` or every shard named by the index.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let paths: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else {
            let index = dir.join("model.safetensors.index.json");
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let json: Value = serde_json::from_str(&text).map_err(|e| Error::Config {
                path: index.clone(),
                message: e.to_string(),
            })?;
            let mut shards: Vec<String> = json
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| Error::Config {
                    path: index.clone(),
                    message: "no weight_map".into(),
                })?
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            shards.sort();
            shards.dedup();
            shards.iter().map(|s| dir.join(s)).collect()
        };
        Self::from_files(&paths)
    }

    pub fn from_files(paths: &[PathBuf]) -> Result<Self> {
        let files = paths
            .iter()
            .map(|p| TensorFile::open(p))
            .collect::<Result<Vec<_>>>()?;
        let names = files.iter().map(|f| f.names()).collect::<Result<_>>()?;
        Ok(Self { files, names })
    }

    fn file_of(&self, name: &str) -> Result<&TensorFile> {
        self.names
            .iter()
            .position(|n| n.iter().any(|x| x == name))
            .map(|i| &self.files[i])
            .ok_or_else(|| Error::Safetensors {
                path: self
                    .files
                    .first()
                    .map(|f| f.path().to_path_buf())
                    .unwrap_or_default(),
                message: format!("tensor '{name}' is missing"),
            })
    }

    /// Every tensor name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().flatten().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names().any(|n| n == name)
    }

    pub fn matrix(&self, name: &str, shape: &[usize]) -> Result<HostMatrix> {
        self.file_of(name)?.matrix(name, shape)
    }

    pub fn matrix_flat(&self, name: &str, rows: usize, cols: usize) -> Result<HostMatrix> {
        self.file_of(name)?.matrix_flat(name, rows, cols)
    }

    /// The shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let f = self.file_of(name)?;
        f.shape(name)?.ok_or_else(|| Error::Safetensors {
            path: f.path().to_path_buf(),
            message: format!("tensor '{name}' is missing"),
        })
    }

    /// The prefix before `suffix` of the shortest tensor name ending with it.
    pub fn prefix_of(&self, suffix: &str) -> Option<String> {
        self.names()
            .filter_map(|n| n.strip_suffix(suffix))
            .min_by_key(|p| p.len())
            .map(str::to_string)
    }

    pub fn first_path(&self) -> PathBuf {
        self.files
            .first()
            .map(|f| f.path().to_path_buf())
            .unwrap_or_default()
    }
}

/// One vision block (linear weights `[out, in]`).
pub struct VisionBlock<W> {
    pub norm1_g: W,
    pub norm1_b: W,
    pub qkv_w: W,
    pub qkv_b: W,
    pub proj_w: W,
    pub proj_b: W,
    pub norm2_g: W,
    pub norm2_b: W,
    pub fc1_w: W,
    pub fc1_b: W,
    pub fc2_w: W,
    pub fc2_b: W,
}

/// One decoder layer; Q|K|V and gate|up stacked so each is one matmul.
pub struct TextLayer<W> {
    pub input_norm: W,
    pub qkv_w: W,
    pub qkv_b: W,
    pub o_w: W,
    pub post_norm: W,
    pub gate_up_w: W,
    pub down_w: W,
}

/// Every Qwen2-VL parameter but the token embeddings (kept on the host).
pub struct Qwen2VlWeights<W> {
    pub patch_embed: W,
    pub blocks: Vec<VisionBlock<W>>,
    pub merger_ln_g: W,
    pub merger_ln_b: W,
    pub merger_fc1_w: W,
    pub merger_fc1_b: W,
    pub merger_fc2_w: W,
    pub merger_fc2_b: W,
    pub layers: Vec<TextLayer<W>>,
    pub final_norm: W,
}

/// Where a checkpoint keeps the vision tower, the language model and the head
/// (colpali-engine: `visual.`, `model.` or `language_model.`, `custom_text_proj`;
/// transformers' ColQwen2ForRetrieval: `vlm.model.visual.`, `vlm.model.language_model.`,
/// `embedding_proj_layer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefixes {
    pub vision: String,
    pub text: String,
}

impl Prefixes {
    pub fn find(set: &TensorSet) -> Result<Self> {
        let missing = |what: &str, key: &str| Error::Safetensors {
            path: set.first_path(),
            message: format!("checkpoint has no {what} (no tensor named '*{key}')"),
        };
        let vision = set
            .prefix_of("patch_embed.proj.weight")
            .ok_or_else(|| missing("vision tower", "patch_embed.proj.weight"))?;
        let text = set
            .prefix_of("embed_tokens.weight")
            .ok_or_else(|| missing("language model", "embed_tokens.weight"))?;
        Ok(Self { vision, text })
    }
}

/// A LoRA update to merge into the weight of the same name: `W += scale · B·A`.
pub type LoraDelta<'a> = &'a dyn Fn(&str, &mut HostMatrix) -> Result<()>;

impl Qwen2VlWeights<HostMatrix> {
    /// Reads every tensor (the embedding table apart), checking shapes against
    /// `cfg`; `lora` may add an adapter's update to each weight as it is read.
    pub fn load(
        set: &TensorSet,
        p: &Prefixes,
        cfg: &Qwen2VlConfig,
        lora: Option<LoraDelta>,
    ) -> Result<Self> {
        let get = |name: String, shape: &[usize]| -> Result<HostMatrix> {
            let mut m = set.matrix(&name, shape)?;
            if let Some(f) = lora {
                f(&name, &mut m)?;
            }
            Ok(m)
        };
        let v = &cfg.vision;
        let (e, f) = (v.embed_dim, v.mlp_hidden);
        let vp = &p.vision;
        let mut blocks = Vec::with_capacity(v.depth);
        for i in 0..v.depth {
            let b = |n: &str| format!("{vp}blocks.{i}.{n}");
            blocks.push(VisionBlock {
                norm1_g: get(b("norm1.weight"), &[e])?,
                norm1_b: get(b("norm1.bias"), &[e])?,
                qkv_w: get(b("attn.qkv.weight"), &[3 * e, e])?,
                qkv_b: get(b("attn.qkv.bias"), &[3 * e])?,
                proj_w: get(b("attn.proj.weight"), &[e, e])?,
                proj_b: get(b("attn.proj.bias"), &[e])?,
                norm2_g: get(b("norm2.weight"), &[e])?,
                norm2_b: get(b("norm2.bias"), &[e])?,
                fc1_w: get(b("mlp.fc1.weight"), &[f, e])?,
                fc1_b: get(b("mlp.fc1.bias"), &[f])?,
                fc2_w: get(b("mlp.fc2.weight"), &[e, f])?,
                fc2_b: get(b("mlp.fc2.bias"), &[e])?,
            });
        }
        let m2 = e * v.spatial_merge_size * v.spatial_merge_size;
        let t = &cfg.text;
        let (h, ff, d) = (t.hidden_size, t.intermediate_size, t.head_dim());
        let (qh, kvh) = (t.num_attention_heads, t.num_key_value_heads);
        let tp = &p.text;
        let mut layers = Vec::with_capacity(t.num_hidden_layers);
        for i in 0..t.num_hidden_layers {
            let l = |n: &str| format!("{tp}layers.{i}.{n}");
            let q = get(l("self_attn.q_proj.weight"), &[qh * d, h])?;
            let k = get(l("self_attn.k_proj.weight"), &[kvh * d, h])?;
            let vv = get(l("self_attn.v_proj.weight"), &[kvh * d, h])?;
            let qb = get(l("self_attn.q_proj.bias"), &[qh * d])?;
            let kb = get(l("self_attn.k_proj.bias"), &[kvh * d])?;
            let vb = get(l("self_attn.v_proj.bias"), &[kvh * d])?;
            let gate = get(l("mlp.gate_proj.weight"), &[ff, h])?;
            let up = get(l("mlp.up_proj.weight"), &[ff, h])?;
            layers.push(TextLayer {
                input_norm: get(l("input_layernorm.weight"), &[h])?,
                qkv_w: HostMatrix::vstack(&[&q, &k, &vv])?,
                qkv_b: HostMatrix::hconcat_vectors(&[&qb, &kb, &vb]),
                o_w: get(l("self_attn.o_proj.weight"), &[h, qh * d])?,
                post_norm: get(l("post_attention_layernorm.weight"), &[h])?,
                gate_up_w: HostMatrix::vstack(&[&gate, &up])?,
                down_w: get(l("mlp.down_proj.weight"), &[h, ff])?,
            });
        }
        let mut patch_embed =
            set.matrix_flat(&format!("{vp}patch_embed.proj.weight"), e, v.patch_dim())?;
        if let Some(f) = lora {
            f(&format!("{vp}patch_embed.proj.weight"), &mut patch_embed)?;
        }
        Ok(Self {
            patch_embed,
            blocks,
            merger_ln_g: get(format!("{vp}merger.ln_q.weight"), &[e])?,
            merger_ln_b: get(format!("{vp}merger.ln_q.bias"), &[e])?,
            merger_fc1_w: get(format!("{vp}merger.mlp.0.weight"), &[m2, m2])?,
            merger_fc1_b: get(format!("{vp}merger.mlp.0.bias"), &[m2])?,
            merger_fc2_w: get(format!("{vp}merger.mlp.2.weight"), &[v.out_hidden, m2])?,
            merger_fc2_b: get(format!("{vp}merger.mlp.2.bias"), &[v.out_hidden])?,
            layers,
            final_norm: get(format!("{tp}norm.weight"), &[h])?,
        })
    }

    /// Moves every parameter to `backend` (no host copy kept on the CPU backend).
    pub fn into_backend<B: Backend>(self, b: &B) -> Result<Qwen2VlWeights<B::Weight>> {
        let blocks = self
            .blocks
            .into_iter()
            .map(|x| {
                Ok(VisionBlock {
                    norm1_g: b.weight_owned("vision norm1 weight", x.norm1_g)?,
                    norm1_b: b.weight_owned("vision norm1 bias", x.norm1_b)?,
                    qkv_w: b.linear_weight_owned("vision qkv weight", x.qkv_w)?,
                    qkv_b: b.weight_owned("vision qkv bias", x.qkv_b)?,
                    proj_w: b.linear_weight_owned("vision proj weight", x.proj_w)?,
                    proj_b: b.weight_owned("vision proj bias", x.proj_b)?,
                    norm2_g: b.weight_owned("vision norm2 weight", x.norm2_g)?,
                    norm2_b: b.weight_owned("vision norm2 bias", x.norm2_b)?,
                    fc1_w: b.linear_weight_owned("vision fc1 weight", x.fc1_w)?,
                    fc1_b: b.weight_owned("vision fc1 bias", x.fc1_b)?,
                    fc2_w: b.linear_weight_owned("vision fc2 weight", x.fc2_w)?,
                    fc2_b: b.weight_owned("vision fc2 bias", x.fc2_b)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let layers = self
            .layers
            .into_iter()
            .map(|l| {
                Ok(TextLayer {
                    input_norm: b.weight_owned("input norm", l.input_norm)?,
                    qkv_w: b.linear_weight_owned("qkv weight", l.qkv_w)?,
                    qkv_b: b.weight_owned("qkv bias", l.qkv_b)?,
                    o_w: b.linear_weight_owned("o_proj weight", l.o_w)?,
                    post_norm: b.weight_owned("post-attention norm", l.post_norm)?,
                    gate_up_w: b.linear_weight_owned("gate|up weight", l.gate_up_w)?,
                    down_w: b.linear_weight_owned("down weight", l.down_w)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Qwen2VlWeights {
            patch_embed: b.linear_weight_owned("patch embedding", self.patch_embed)?,
            blocks,
            merger_ln_g: b.weight_owned("merger norm weight", self.merger_ln_g)?,
            merger_ln_b: b.weight_owned("merger norm bias", self.merger_ln_b)?,
            merger_fc1_w: b.linear_weight_owned("merger fc1 weight", self.merger_fc1_w)?,
            merger_fc1_b: b.weight_owned("merger fc1 bias", self.merger_fc1_b)?,
            merger_fc2_w: b.linear_weight_owned("merger fc2 weight", self.merger_fc2_w)?,
            merger_fc2_b: b.weight_owned("merger fc2 bias", self.merger_fc2_b)?,
            layers,
            final_norm: b.weight_owned("final norm", self.final_norm)?,
        })
    }

    /// Uploads every parameter to `backend`.
    pub fn upload<B: Backend>(&self, b: &B) -> Result<Qwen2VlWeights<B::Weight>> {
        let blocks = self
            .blocks
            .iter()
            .map(|x| {
                Ok(VisionBlock {
                    norm1_g: b.weight("vision norm1 weight", &x.norm1_g)?,
                    norm1_b: b.weight("vision norm1 bias", &x.norm1_b)?,
                    qkv_w: b.linear_weight("vision qkv weight", &x.qkv_w)?,
                    qkv_b: b.weight("vision qkv bias", &x.qkv_b)?,
                    proj_w: b.linear_weight("vision proj weight", &x.proj_w)?,
                    proj_b: b.weight("vision proj bias", &x.proj_b)?,
                    norm2_g: b.weight("vision norm2 weight", &x.norm2_g)?,
                    norm2_b: b.weight("vision norm2 bias", &x.norm2_b)?,
                    fc1_w: b.linear_weight("vision fc1 weight", &x.fc1_w)?,
                    fc1_b: b.weight("vision fc1 bias", &x.fc1_b)?,
                    fc2_w: b.linear_weight("vision fc2 weight", &x.fc2_w)?,
                    fc2_b: b.weight("vision fc2 bias", &x.fc2_b)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(TextLayer {
                    input_norm: b.weight("input norm", &l.input_norm)?,
                    qkv_w: b.linear_weight("qkv weight", &l.qkv_w)?,
                    qkv_b: b.weight("qkv bias", &l.qkv_b)?,
                    o_w: b.linear_weight("o_proj weight", &l.o_w)?,
                    post_norm: b.weight("post-attention norm", &l.post_norm)?,
                    gate_up_w: b.linear_weight("gate|up weight", &l.gate_up_w)?,
                    down_w: b.linear_weight("down weight", &l.down_w)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Qwen2VlWeights {
            patch_embed: b.linear_weight("patch embedding", &self.patch_embed)?,
            blocks,
            merger_ln_g: b.weight("merger norm weight", &self.merger_ln_g)?,
            merger_ln_b: b.weight("merger norm bias", &self.merger_ln_b)?,
            merger_fc1_w: b.linear_weight("merger fc1 weight", &self.merger_fc1_w)?,
            merger_fc1_b: b.weight("merger fc1 bias", &self.merger_fc1_b)?,
            merger_fc2_w: b.linear_weight("merger fc2 weight", &self.merger_fc2_w)?,
            merger_fc2_b: b.weight("merger fc2 bias", &self.merger_fc2_b)?,
            layers,
            final_norm: b.weight("final norm", &self.final_norm)?,
        })
    }
}

/// `1 / θ^(2i/dim)` for i < dim/2, in f32 as torch computes it.
pub fn inv_freq(dim: usize, theta: f64) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / dim as f32))
        .collect()
}

/// The `[rows, head_dim]` cos | sin table of per-row angles `angles[r][c]`, c < head_dim/2.
pub(crate) fn rope_table(angles: impl Iterator<Item = Vec<f32>>, head_dim: usize) -> Result<HostMatrix> {
    let half = head_dim / 2;
    let mut data = Vec::new();
    let mut rows = 0;
    for a in angles {
        data.extend(a.iter().map(|x| x.cos()));
        data.extend(a.iter().map(|x| x.sin()));
        debug_assert_eq!(a.len(), half);
        rows += 1;
    }
    HostMatrix::new(rows, head_dim, data)
}

/// The vision tower's 2-D rotary table for images with patch grids `grids`
/// ((t, h, w), patches in merge-window order): angles `[h·f, w·f]` over
/// head_dim/4 frequencies each.
pub fn vision_rope_table(grids: &[[usize; 3]], cfg: &VisionConfig) -> Result<HostMatrix> {
    let d = cfg.head_dim();
    let freqs = inv_freq(d / 2, cfg.rope_theta);
    let m = cfg.spatial_merge_size;
    let mut pos = Vec::new();
    for &[t, h, w] in grids {
        for _ in 0..t {
            for bh in 0..h / m {
                for bw in 0..w / m {
                    for mh in 0..m {
                        for mw in 0..m {
                            pos.push((bh * m + mh, bw * m + mw));
                        }
                    }
                }
            }
        }
    }
    rope_table(
        pos.into_iter().map(|(r, c)| {
            freqs
                .iter()
                .map(|f| r as f32 * f)
                .chain(freqs.iter().map(|f| c as f32 * f))
                .collect()
        }),
        d,
    )
}

/// The M-RoPE table for `positions` ([t, h, w] per row).
pub fn mrope_table(positions: &[[u32; 3]], cfg: &TextConfig) -> Result<HostMatrix> {
    let d = cfg.head_dim();
    let freqs = inv_freq(d, cfg.rope_theta);
    let [s0, s1, _] = cfg.mrope_section;
    let axis = |c: usize| {
        if c < s0 {
            0
        } else if c < s0 + s1 {
            1
        } else {
            2
        }
    };
    rope_table(
        positions.iter().map(|p| {
            freqs
                .iter()
                .enumerate()
                .map(|(c, f)| p[axis(c)] as f32 * f)
                .collect()
        }),
        d,
    )
}

/// M-RoPE positions of a left-padded batch (`ids` `[batch, seq]`, `pads[b]`
/// leading padding rows), as transformers' `get_rope_index`: text tokens
/// advance by 1 on every axis; a run of image tokens takes the next grid of
/// `grids` (in patches) as (start + t, start + row, start + col) on the merged
/// grid, after which text continues at start + max(h, w)/merge. Padding rows
/// get 0. A batch without images gets `arange(seq)` on every row (padding
/// included), as the reference does for text-only input.
pub fn mrope_positions(
    ids: &[u32],
    seq: usize,
    pads: &[usize],
    image_token: u32,
    grids: &[[usize; 3]],
    merge: usize,
) -> Result<Vec<[u32; 3]>> {
    if grids.is_empty() {
        return Ok((0..ids.len()).map(|r| [(r % seq) as u32; 3]).collect());
    }
    let mut out = vec![[0u32; 3]; ids.len()];
    let mut next_grid = grids.iter();
    for (b, &pad) in pads.iter().enumerate() {
        let row = &ids[b * seq..(b + 1) * seq];
        let mut pos = 0u32;
        let mut i = pad;
        while i < seq {
            if row[i] != image_token {
                out[b * seq + i] = [pos; 3];
                pos += 1;
                i += 1;
                continue;
            }
            let [t, h, w] = *next_grid.next().ok_or_else(|| {
                Error::Input("more image-token runs than images in the batch".into())
            })?;
            let (lh, lw) = (h / merge, w / merge);
            let n = t * lh * lw;
            if i + n > seq || row[i..i + n].iter().any(|&x| x != image_token) {
                return Err(Error::Input(format!(
                    "an image of {n} merged patches needs as many consecutive image tokens"
                )));
            }
            let mut k = i;
            for ti in 0..t {
                for y in 0..lh {
                    for x in 0..lw {
                        out[b * seq + k] = [pos + ti as u32, pos + y as u32, pos + x as u32];
                        k += 1;
                    }
                }
            }
            pos += lh.max(lw) as u32;
            i += n;
        }
    }
    Ok(out)
}

/// The vision tower over the patch rows of all images (`[Σ patches, patch_dim]`,
/// image after image): returns `[Σ patches / merge², hidden]`.
pub fn vision_forward<B: Backend>(
    b: &mut B,
    cfg: &VisionConfig,
    w: &Qwen2VlWeights<B::Weight>,
    pixels: &HostMatrix,
    grids: &[[usize; 3]],
) -> Result<B::Tensor> {
    let n: usize = grids.iter().map(|g| g[0] * g[1] * g[2]).sum();
    let m2 = cfg.spatial_merge_size * cfg.spatial_merge_size;
    if pixels.rows != n || pixels.cols != cfg.patch_dim() || !n.is_multiple_of(m2) {
        return Err(Error::shape(
            "vision",
            format!(
                "{}×{} patch rows for grids {grids:?} of {}-value patches",
                pixels.rows,
                pixels.cols,
                cfg.patch_dim()
            ),
        ));
    }
    let eps = 1e-6;
    let (heads, d) = (cfg.num_heads, cfg.head_dim());
    let table = b.upload_tensor(&vision_rope_table(grids, cfg)?)?;
    // Block-diagonal: one segment per frame of each image.
    let segments: Vec<usize> = grids
        .iter()
        .flat_map(|g| std::iter::repeat_n(g[1] * g[2], g[0]))
        .collect();
    let spans = KeySpans::blocks(&segments);
    let x0 = b.upload_tensor(pixels)?;
    let mut x = b.linear(&x0, &w.patch_embed, None, Activation::Identity)?;
    b.recycle(x0);
    for blk in &w.blocks {
        let h = b.layer_norm(&x, &blk.norm1_g, &blk.norm1_b, eps)?;
        let qkv = b.linear(&h, &blk.qkv_w, Some(&blk.qkv_b), Activation::Identity)?;
        b.recycle(h);
        let qkv_r = b.rotary(&qkv, &table, 2 * heads, d)?;
        b.recycle(qkv);
        let a = b.attention_gqa(&qkv_r, &spans, heads, heads, d)?;
        b.recycle(qkv_r);
        let o = b.linear(&a, &blk.proj_w, Some(&blk.proj_b), Activation::Identity)?;
        b.recycle(a);
        let x1 = b.add(&x, &o)?;
        b.recycle(o);
        b.recycle(std::mem::replace(&mut x, x1));
        let h = b.layer_norm(&x, &blk.norm2_g, &blk.norm2_b, eps)?;
        let f1 = b.linear(&h, &blk.fc1_w, Some(&blk.fc1_b), Activation::Identity)?;
        b.recycle(h);
        let g = b.unary(&f1, Unary::QuickGelu)?;
        b.recycle(f1);
        let f2 = b.linear(&g, &blk.fc2_w, Some(&blk.fc2_b), Activation::Identity)?;
        b.recycle(g);
        let x2 = b.add(&x, &f2)?;
        b.recycle(f2);
        b.recycle(std::mem::replace(&mut x, x2));
    }
    let h = b.layer_norm(&x, &w.merger_ln_g, &w.merger_ln_b, eps)?;
    b.recycle(x);
    let h = b.reshape(h, n / m2, cfg.embed_dim * m2)?;
    let f1 = b.linear(&h, &w.merger_fc1_w, Some(&w.merger_fc1_b), Activation::Gelu)?;
    b.recycle(h);
    let out = b.linear(
        &f1,
        &w.merger_fc2_w,
        Some(&w.merger_fc2_b),
        Activation::Identity,
    )?;
    b.recycle(f1);
    Ok(out)
}

/// The language model over input embeddings `[batch·seq, hidden]` (left-padded
/// sequences, `pads[b]` padding rows each) at M-RoPE `positions`: returns the
/// final RMSNorm's output.
pub fn text_forward<B: Backend>(
    b: &mut B,
    cfg: &TextConfig,
    w: &Qwen2VlWeights<B::Weight>,
    embeddings: &HostMatrix,
    seq: usize,
    pads: &[usize],
    positions: &[[u32; 3]],
) -> Result<B::Tensor> {
    let rows = embeddings.rows;
    if rows != seq * pads.len() || positions.len() != rows || embeddings.cols != cfg.hidden_size {
        return Err(Error::shape(
            "language model",
            format!(
                "{}×{} embeddings, {} positions for {} sequences of {seq}",
                embeddings.rows,
                embeddings.cols,
                positions.len(),
                pads.len()
            ),
        ));
    }
    let eps = cfg.rms_norm_eps;
    let (qh, kvh, d) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim(),
    );
    let table = b.upload_tensor(&mrope_table(positions, cfg)?)?;
    let spans = KeySpans::causal_left_padded(seq, pads);
    let mut x = b.upload_tensor(embeddings)?;
    for l in &w.layers {
        let h = b.rms_norm(&x, &l.input_norm, eps)?;
        let qkv = b.linear(&h, &l.qkv_w, Some(&l.qkv_b), Activation::Identity)?;
        b.recycle(h);
        let qkv_r = b.rotary(&qkv, &table, qh + kvh, d)?;
        b.recycle(qkv);
        let a = b.attention_gqa(&qkv_r, &spans, qh, kvh, d)?;
        b.recycle(qkv_r);
        let o = b.linear(&a, &l.o_w, None, Activation::Identity)?;
        b.recycle(a);
        let x1 = b.add(&x, &o)?;
        b.recycle(o);
        b.recycle(std::mem::replace(&mut x, x1));
        let h = b.rms_norm(&x, &l.post_norm, eps)?;
        let gu = b.linear(&h, &l.gate_up_w, None, Activation::Identity)?;
        b.recycle(h);
        let s = b.swiglu(&gu)?;
        b.recycle(gu);
        let dn = b.linear(&s, &l.down_w, None, Activation::Identity)?;
        b.recycle(s);
        let x2 = b.add(&x, &dn)?;
        b.recycle(dn);
        b.recycle(std::mem::replace(&mut x, x2));
    }
    let out = b.rms_norm(&x, &w.final_norm, eps)?;
    b.recycle(x);
    Ok(out)
}
