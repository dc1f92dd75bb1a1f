//! PaliGemma (SigLIP vision tower + projector + Gemma), written once against
//! [`Backend`]: the encoder of ColPali ([`super::colpali`]).
//!
//! Vision (SigLIP): `[channel, p, p]` patch rows → linear with bias (the Conv2d
//! p/p patch embedding) + learned position embedding → N × {x += out(attn(qkv(LN₁ x)));
//! x += fc2(gelu_tanh(fc1(LN₂ x)))} (pre-LayerNorm with bias, biased q/k/v/out,
//! bidirectional attention per image) → post-LayerNorm → projector linear (bias).
//! Language model (Gemma): token embeddings gathered on the host (the 257,216 × 2048
//! table is never bound whole) and scaled by √hidden, image-token rows replaced by
//! the (unscaled) projector output, positions `1 + index` in the padded row,
//! N × {x += o(attn(RoPE(qkv(RMSNorm x)))) with multi-query attention;
//! x += down(gelu_tanh(gate x') · up x') with x' = RMSNorm x}, final RMSNorm; RMSNorm is
//! `x · rsqrt(mean x² + eps) · (1 + w)`, run as the backend's RMSNorm with
//! `1 + w` formed in f32 at load. Checked against transformers 5.24's
//! `modeling_paligemma.py`, `modeling_siglip.py`, `modeling_gemma.py` (see
//! `scripts/reference/make_colpali_fixtures.py` for the details verified).

use std::path::Path;

use serde_json::Value;

use crate::backend::{Activation, Backend, HostMatrix, KeySpans, Unary};
use crate::error::{Error, Result};
use crate::model::qwen2_vl::{inv_freq, rope_table, LoraDelta, TensorSet};

/// SigLIP's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub layer_norm_eps: f32,
}

impl SiglipConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    /// Patches per image side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Patches (= image tokens) per image.
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }
    pub fn patch_dim(&self) -> usize {
        self.num_channels * self.patch_size * self.patch_size
    }
}

/// Gemma's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
}

/// `config.json` of a PaliGemma / ColPali checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct PaliGemmaConfig {
    pub vision: SiglipConfig,
    pub text: GemmaConfig,
    /// The projector's output width (= the text hidden size).
    pub projection_dim: usize,
    pub image_token_id: u32,
}

/// Activations PaliGemma's checkpoints name for the tanh-approximated GELU.
const TANH_GELU: &[&str] = &["gelu_pytorch_tanh", "gelu_tanh", "gelu_new", "gelu_fast"];

impl PaliGemmaConfig {
    /// Whether a parsed `config.json` describes PaliGemma (colpali-engine's
    /// `ColPali`, or transformers' `ColPaliForRetrieval` with its `vlm_config`).
    pub fn is_paligemma(json: &Value) -> bool {
        let json = json.get("vlm_config").unwrap_or(json);
        json.get("model_type").and_then(Value::as_str) == Some("paligemma")
    }

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

    /// Reads the settings; transformers 4.x configs store only what differs from
    /// the defaults, so PaliGemma-3B's defaults fill the gaps (head_dim 256,
    /// eps 1e-6, θ 10000, patch 14, image token 257152).
    pub fn from_json(json: &Value) -> std::result::Result<Self, String> {
        let json = json.get("vlm_config").unwrap_or(json);
        if json.get("model_type").and_then(Value::as_str) != Some("paligemma") {
            return Err("model_type is not 'paligemma': not a PaliGemma / ColPali checkpoint".into());
        }
        let t = json
            .get("text_config")
            .ok_or("no text_config in a PaliGemma config")?;
        let v = json
            .get("vision_config")
            .ok_or("no vision_config in a PaliGemma config")?;
        let int = |o: &Value, k: &str, default: Option<usize>| -> std::result::Result<usize, String> {
            o.get(k)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .or(default)
                .ok_or_else(|| format!("missing integer '{k}'"))
        };
        let float = |o: &Value, k: &str, default: f64| o.get(k).and_then(Value::as_f64).unwrap_or(default);
        let hidden = int(t, "hidden_size", Some(2048))?;
        let heads = int(t, "num_attention_heads", Some(8))?;
        let theta = t
            .get("rope_parameters")
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or_else(|| float(t, "rope_theta", 10_000.0));
        let text = GemmaConfig {
            vocab_size: int(t, "vocab_size", Some(257_216))?,
            hidden_size: hidden,
            intermediate_size: int(t, "intermediate_size", Some(16_384))?,
            num_hidden_layers: int(t, "num_hidden_layers", Some(18))?,
            num_attention_heads: heads,
            num_key_value_heads: int(t, "num_key_value_heads", Some(1))?,
            head_dim: int(t, "head_dim", Some(256))?,
            rms_norm_eps: float(t, "rms_norm_eps", 1e-6) as f32,
            rope_theta: theta,
        };
        for key in ["hidden_activation", "hidden_act"] {
            if let Some(act) = t.get(key).and_then(Value::as_str) {
                if !TANH_GELU.contains(&act) {
                    return Err(format!(
                        "text {key} '{act}' is not supported (Gemma uses gelu_pytorch_tanh)"
                    ));
                }
            }
        }
        if heads == 0
            || text.num_key_value_heads == 0
            || !heads.is_multiple_of(text.num_key_value_heads)
            || text.head_dim == 0
            || !text.head_dim.is_multiple_of(2)
        {
            return Err(format!(
                "inconsistent text settings: {heads} heads, {} kv heads, head_dim {}",
                text.num_key_value_heads, text.head_dim
            ));
        }
        let vh = int(v, "hidden_size", Some(1152))?;
        let vision = SiglipConfig {
            hidden_size: vh,
            intermediate_size: int(v, "intermediate_size", Some(4304))?,
            num_hidden_layers: int(v, "num_hidden_layers", Some(27))?,
            num_attention_heads: int(v, "num_attention_heads", Some(16))?,
            image_size: int(v, "image_size", Some(448))?,
            patch_size: int(v, "patch_size", Some(14))?,
            num_channels: int(v, "num_channels", Some(3))?,
            layer_norm_eps: float(v, "layer_norm_eps", 1e-6) as f32,
        };
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if !TANH_GELU.contains(&act) {
                return Err(format!(
                    "vision hidden_act '{act}' is not supported (SigLIP uses gelu_pytorch_tanh)"
                ));
            }
        }
        if v.get("vision_use_head").and_then(Value::as_bool) == Some(true) {
            return Err("vision_use_head = true: PaliGemma's SigLIP has no pooling head".into());
        }
        if vision.num_attention_heads == 0
            || !vh.is_multiple_of(vision.num_attention_heads)
            || vision.patch_size == 0
            || vision.image_size < vision.patch_size
            || vision.num_channels != 3
        {
            return Err(format!(
                "inconsistent vision settings: hidden {vh}, {} heads, image {} px, patch {} px, \
                 {} channels",
                vision.num_attention_heads,
                vision.image_size,
                vision.patch_size,
                vision.num_channels
            ));
        }
        let projection_dim = int(json, "projection_dim", None)
            .or_else(|_| int(v, "projection_dim", None))
            .unwrap_or(hidden);
        if projection_dim != hidden {
            return Err(format!(
                "projection_dim {projection_dim} differs from the text hidden size {hidden}"
            ));
        }
        let image_token_id = json
            .get("image_token_index")
            .or_else(|| json.get("image_token_id"))
            .and_then(Value::as_u64)
            .unwrap_or(257_152) as u32;
        Ok(Self {
            vision,
            text,
            projection_dim,
            image_token_id,
        })
    }
}

/// One SigLIP encoder layer (linear weights `[out, in]`; Q|K|V stacked).
pub struct SiglipLayer<W> {
    pub ln1_g: W,
    pub ln1_b: W,
    pub qkv_w: W,
    pub qkv_b: W,
    pub out_w: W,
    pub out_b: W,
    pub ln2_g: W,
    pub ln2_b: W,
    pub fc1_w: W,
    pub fc1_b: W,
    pub fc2_w: W,
    pub fc2_b: W,
}

/// One Gemma decoder layer; Q|K|V stacked (gate and up apart: Gemma-2B's
/// fused gate|up would be 256 MiB, over a 128 MiB storage binding); norms hold `1 + w`.
pub struct GemmaLayer<W> {
    pub input_norm: W,
    pub qkv_w: W,
    pub o_w: W,
    pub post_norm: W,
    pub gate_w: W,
    pub up_w: W,
    pub down_w: W,
}

/// Every PaliGemma parameter but the token embeddings (kept on the host).
pub struct PaliGemmaWeights<W> {
    pub patch_w: W,
    pub patch_b: W,
    /// `[patches, hidden]`, the learned position embedding (on the host: it is
    /// tiled per batch and uploaded as activations).
    pub position: HostMatrix,
    pub vision_layers: Vec<SiglipLayer<W>>,
    pub post_ln_g: W,
    pub post_ln_b: W,
    pub proj_w: W,
    pub proj_b: W,
    pub layers: Vec<GemmaLayer<W>>,
    pub final_norm: W,
}

/// Where a checkpoint keeps each part: colpali-engine (transformers 5.x save:
/// `model.vision_tower.`; the Hub's 4.x layout: `model.vision_tower.vision_model.`),
/// `model.multi_modal_projector.`, `model.language_model.model.`; transformers'
/// ColPaliForRetrieval: `vlm.vision_tower.`, `vlm.multi_modal_projector.`,
/// `vlm.language_model.model.` (or `vlm.model.*` / `vlm.language_model.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefixes {
    pub vision: String,
    pub projector: String,
    pub text: String,
}

impl Prefixes {
    pub fn find(set: &TensorSet) -> Result<Self> {
        let missing = |what: &str, key: &str| Error::Safetensors {
            path: set.first_path(),
            message: format!("checkpoint has no {what} (no tensor named '*{key}')"),
        };
        let vision = set
            .prefix_of("embeddings.patch_embedding.weight")
            .ok_or_else(|| missing("SigLIP vision tower", "embeddings.patch_embedding.weight"))?;
        let projector = set
            .prefix_of("multi_modal_projector.linear.weight")
            .map(|p| format!("{p}multi_modal_projector.linear."))
            .ok_or_else(|| missing("projector", "multi_modal_projector.linear.weight"))?;
        let text = set
            .prefix_of("embed_tokens.weight")
            .ok_or_else(|| missing("language model", "embed_tokens.weight"))?;
        Ok(Self {
            vision,
            projector,
            text,
        })
    }
}

/// `1 + w`, in f32 (Gemma's RMSNorm gain).
fn one_plus(mut m: HostMatrix) -> HostMatrix {
    m.data.iter_mut().for_each(|w| *w += 1.0);
    m
}

impl PaliGemmaWeights<HostMatrix> {
    /// Reads every tensor (the embedding table apart), checking shapes against
    /// `cfg`; `lora` may add an adapter's update to each weight as it is read.
    pub fn load(
        set: &TensorSet,
        p: &Prefixes,
        cfg: &PaliGemmaConfig,
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
        let (e, f) = (v.hidden_size, v.intermediate_size);
        let vp = &p.vision;
        let patch_name = format!("{vp}embeddings.patch_embedding.weight");
        let mut patch_w = set.matrix_flat(&patch_name, e, v.patch_dim())?;
        if let Some(l) = lora {
            l(&patch_name, &mut patch_w)?;
        }
        let mut vision_layers = Vec::with_capacity(v.num_hidden_layers);
        for i in 0..v.num_hidden_layers {
            let b = |n: &str| format!("{vp}encoder.layers.{i}.{n}");
            let lin = |n: &str, out: usize, inp: usize| -> Result<(HostMatrix, HostMatrix)> {
                Ok((
                    get(b(&format!("{n}.weight")), &[out, inp])?,
                    get(b(&format!("{n}.bias")), &[out])?,
                ))
            };
            let (qw, qb) = lin("self_attn.q_proj", e, e)?;
            let (kw, kb) = lin("self_attn.k_proj", e, e)?;
            let (vw, vb) = lin("self_attn.v_proj", e, e)?;
            let (out_w, out_b) = lin("self_attn.out_proj", e, e)?;
            let (fc1_w, fc1_b) = lin("mlp.fc1", f, e)?;
            let (fc2_w, fc2_b) = lin("mlp.fc2", e, f)?;
            vision_layers.push(SiglipLayer {
                ln1_g: get(b("layer_norm1.weight"), &[e])?,
                ln1_b: get(b("layer_norm1.bias"), &[e])?,
                qkv_w: HostMatrix::vstack(&[&qw, &kw, &vw])?,
                qkv_b: HostMatrix::hconcat_vectors(&[&qb, &kb, &vb]),
                out_w,
                out_b,
                ln2_g: get(b("layer_norm2.weight"), &[e])?,
                ln2_b: get(b("layer_norm2.bias"), &[e])?,
                fc1_w,
                fc1_b,
                fc2_w,
                fc2_b,
            });
        }
        let t = &cfg.text;
        let (h, d) = (t.hidden_size, t.head_dim);
        let (qh, kvh, ff) = (t.num_attention_heads, t.num_key_value_heads, t.intermediate_size);
        let tp = &p.text;
        let mut layers = Vec::with_capacity(t.num_hidden_layers);
        for i in 0..t.num_hidden_layers {
            let l = |n: &str| format!("{tp}layers.{i}.{n}");
            let q = get(l("self_attn.q_proj.weight"), &[qh * d, h])?;
            let k = get(l("self_attn.k_proj.weight"), &[kvh * d, h])?;
            let vv = get(l("self_attn.v_proj.weight"), &[kvh * d, h])?;
            layers.push(GemmaLayer {
                input_norm: one_plus(get(l("input_layernorm.weight"), &[h])?),
                qkv_w: HostMatrix::vstack(&[&q, &k, &vv])?,
                o_w: get(l("self_attn.o_proj.weight"), &[h, qh * d])?,
                post_norm: one_plus(get(l("post_attention_layernorm.weight"), &[h])?),
                gate_w: get(l("mlp.gate_proj.weight"), &[ff, h])?,
                up_w: get(l("mlp.up_proj.weight"), &[ff, h])?,
                down_w: get(l("mlp.down_proj.weight"), &[h, ff])?,
            });
        }
        let pp = &p.projector;
        Ok(Self {
            patch_w,
            patch_b: get(format!("{vp}embeddings.patch_embedding.bias"), &[e])?,
            position: get(
                format!("{vp}embeddings.position_embedding.weight"),
                &[v.num_patches(), e],
            )?,
            vision_layers,
            post_ln_g: get(format!("{vp}post_layernorm.weight"), &[e])?,
            post_ln_b: get(format!("{vp}post_layernorm.bias"), &[e])?,
            proj_w: get(format!("{pp}weight"), &[cfg.projection_dim, e])?,
            proj_b: get(format!("{pp}bias"), &[cfg.projection_dim])?,
            layers,
            final_norm: one_plus(get(format!("{tp}norm.weight"), &[h])?),
        })
    }

    /// Moves every parameter to `backend` (no host copy kept on the CPU backend).
    pub fn into_backend<B: Backend>(self, b: &B) -> Result<PaliGemmaWeights<B::Weight>> {
        let vision_layers = self
            .vision_layers
            .into_iter()
            .map(|x| {
                Ok(SiglipLayer {
                    ln1_g: b.weight_owned("siglip layer_norm1 weight", x.ln1_g)?,
                    ln1_b: b.weight_owned("siglip layer_norm1 bias", x.ln1_b)?,
                    qkv_w: b.linear_weight_owned("siglip qkv weight", x.qkv_w)?,
                    qkv_b: b.weight_owned("siglip qkv bias", x.qkv_b)?,
                    out_w: b.linear_weight_owned("siglip out_proj weight", x.out_w)?,
                    out_b: b.weight_owned("siglip out_proj bias", x.out_b)?,
                    ln2_g: b.weight_owned("siglip layer_norm2 weight", x.ln2_g)?,
                    ln2_b: b.weight_owned("siglip layer_norm2 bias", x.ln2_b)?,
                    fc1_w: b.linear_weight_owned("siglip fc1 weight", x.fc1_w)?,
                    fc1_b: b.weight_owned("siglip fc1 bias", x.fc1_b)?,
                    fc2_w: b.linear_weight_owned("siglip fc2 weight", x.fc2_w)?,
                    fc2_b: b.weight_owned("siglip fc2 bias", x.fc2_b)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let layers = self
            .layers
            .into_iter()
            .map(|l| {
                Ok(GemmaLayer {
                    input_norm: b.weight_owned("gemma input norm", l.input_norm)?,
                    qkv_w: b.linear_weight_owned("gemma qkv weight", l.qkv_w)?,
                    o_w: b.linear_weight_owned("gemma o_proj weight", l.o_w)?,
                    post_norm: b.weight_owned("gemma post-attention norm", l.post_norm)?,
                    gate_w: b.linear_weight_owned("gemma gate_proj weight", l.gate_w)?,
                    up_w: b.linear_weight_owned("gemma up_proj weight", l.up_w)?,
                    down_w: b.linear_weight_owned("gemma down weight", l.down_w)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PaliGemmaWeights {
            patch_w: b.linear_weight_owned("siglip patch embedding", self.patch_w)?,
            patch_b: b.weight_owned("siglip patch embedding bias", self.patch_b)?,
            position: self.position,
            vision_layers,
            post_ln_g: b.weight_owned("siglip post_layernorm weight", self.post_ln_g)?,
            post_ln_b: b.weight_owned("siglip post_layernorm bias", self.post_ln_b)?,
            proj_w: b.linear_weight_owned("projector weight", self.proj_w)?,
            proj_b: b.weight_owned("projector bias", self.proj_b)?,
            layers,
            final_norm: b.weight_owned("gemma final norm", self.final_norm)?,
        })
    }
}

/// Which keys the language model's rows attend to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextMask {
    /// Every real (non-padding) token of the sequence: PaliGemma's prefix-LM
    /// mask when the whole prompt is prefix (`token_type_ids` all 0, as for
    /// documents), and what transformers 5.24 builds for an unpadded batch
    /// (and 4.x for every batch) at inference.
    Bidirectional,
    /// Causal over the real tokens: what transformers 5.24 builds for a padded
    /// batch without `token_type_ids` (colpali-engine's queries).
    Causal,
}

/// Key spans of a left-padded batch (`pads[b]` padding rows each) under `mask`;
/// padding rows attend nothing.
pub fn text_spans(seq: usize, pads: &[usize], mask: TextMask) -> KeySpans {
    match mask {
        TextMask::Causal => KeySpans::causal_left_padded(seq, pads),
        TextMask::Bidirectional => {
            let mut spans = Vec::with_capacity(seq * pads.len());
            for (b, &pad) in pads.iter().enumerate() {
                let base = (b * seq) as u32;
                for i in 0..seq {
                    let r = base + i as u32;
                    spans.push(if i < pad {
                        [r, r]
                    } else {
                        [base + pad as u32, base + seq as u32]
                    });
                }
            }
            KeySpans { spans }
        }
    }
}

/// The RoPE table of `rows` rows of padded sequences of `seq`: row `i` of a
/// sequence is at position `i + 1` (PaliGemma's 1-indexed positions, padding counted).
pub fn gemma_rope_table(rows: usize, seq: usize, cfg: &GemmaConfig) -> Result<HostMatrix> {
    let freqs = inv_freq(cfg.head_dim, cfg.rope_theta);
    rope_table(
        (0..rows).map(|r| {
            let p = ((r % seq.max(1)) + 1) as f32;
            freqs.iter().map(|f| p * f).collect()
        }),
        cfg.head_dim,
    )
}

/// The vision tower and projector over `pixels` (`[images · patches, 3·p·p]`,
/// image after image, patches row-major): returns `[images · patches, hidden]`.
pub fn vision_forward<B: Backend>(
    b: &mut B,
    cfg: &SiglipConfig,
    w: &PaliGemmaWeights<B::Weight>,
    pixels: &HostMatrix,
) -> Result<B::Tensor> {
    let n = cfg.num_patches();
    if pixels.cols != cfg.patch_dim() || pixels.rows == 0 || !pixels.rows.is_multiple_of(n) {
        return Err(Error::shape(
            "siglip",
            format!(
                "{}×{} patch rows: expected a multiple of {n} rows of {} values",
                pixels.rows,
                pixels.cols,
                cfg.patch_dim()
            ),
        ));
    }
    let images = pixels.rows / n;
    let eps = cfg.layer_norm_eps;
    let (heads, d) = (cfg.num_attention_heads, cfg.head_dim());
    let spans = KeySpans::blocks(&vec![n; images]);
    let x0 = b.upload_tensor(pixels)?;
    let patches = b.linear(&x0, &w.patch_w, Some(&w.patch_b), Activation::Identity)?;
    b.recycle(x0);
    let mut pos = Vec::with_capacity(images * w.position.data.len());
    for _ in 0..images {
        pos.extend_from_slice(&w.position.data);
    }
    let pos = b.upload_tensor(&HostMatrix::new(pixels.rows, cfg.hidden_size, pos)?)?;
    let mut x = b.add(&patches, &pos)?;
    b.recycle(patches);
    b.recycle(pos);
    for l in &w.vision_layers {
        let h = b.layer_norm(&x, &l.ln1_g, &l.ln1_b, eps)?;
        let qkv = b.linear(&h, &l.qkv_w, Some(&l.qkv_b), Activation::Identity)?;
        b.recycle(h);
        let a = b.attention_gqa(&qkv, &spans, heads, heads, d)?;
        b.recycle(qkv);
        let o = b.linear(&a, &l.out_w, Some(&l.out_b), Activation::Identity)?;
        b.recycle(a);
        let x1 = b.add(&x, &o)?;
        b.recycle(o);
        b.recycle(std::mem::replace(&mut x, x1));
        let h = b.layer_norm(&x, &l.ln2_g, &l.ln2_b, eps)?;
        let f1 = b.linear(&h, &l.fc1_w, Some(&l.fc1_b), Activation::Identity)?;
        b.recycle(h);
        let g = b.unary(&f1, Unary::GeluTanh)?;
        b.recycle(f1);
        let f2 = b.linear(&g, &l.fc2_w, Some(&l.fc2_b), Activation::Identity)?;
        b.recycle(g);
        let x2 = b.add(&x, &f2)?;
        b.recycle(f2);
        b.recycle(std::mem::replace(&mut x, x2));
    }
    let h = b.layer_norm(&x, &w.post_ln_g, &w.post_ln_b, eps)?;
    b.recycle(x);
    let out = b.linear(&h, &w.proj_w, Some(&w.proj_b), Activation::Identity)?;
    b.recycle(h);
    Ok(out)
}

/// Gemma over input embeddings `[batch·seq, hidden]` (already scaled; left-padded
/// sequences, `pads[b]` padding rows each) under `mask`: the final RMSNorm's output.
pub fn text_forward<B: Backend>(
    b: &mut B,
    cfg: &GemmaConfig,
    w: &PaliGemmaWeights<B::Weight>,
    embeddings: &HostMatrix,
    seq: usize,
    pads: &[usize],
    mask: TextMask,
) -> Result<B::Tensor> {
    let rows = embeddings.rows;
    if rows != seq * pads.len() || embeddings.cols != cfg.hidden_size {
        return Err(Error::shape(
            "gemma",
            format!(
                "{}×{} embeddings for {} sequences of {seq} × {}",
                embeddings.rows,
                embeddings.cols,
                pads.len(),
                cfg.hidden_size
            ),
        ));
    }
    let eps = cfg.rms_norm_eps;
    let (qh, kvh, d) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
    let table = b.upload_tensor(&gemma_rope_table(rows, seq, cfg)?)?;
    let spans = text_spans(seq, pads, mask);
    let mut x = b.upload_tensor(embeddings)?;
    for l in &w.layers {
        let h = b.rms_norm(&x, &l.input_norm, eps)?;
        let qkv = b.linear(&h, &l.qkv_w, None, Activation::Identity)?;
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
        let gate = b.linear(&h, &l.gate_w, None, Activation::Identity)?;
        let up = b.linear(&h, &l.up_w, None, Activation::Identity)?;
        b.recycle(h);
        let g = b.geglu(&gate, &up)?;
        b.recycle(gate);
        b.recycle(up);
        let dn = b.linear(&g, &l.down_w, None, Activation::Identity)?;
        b.recycle(g);
        let x2 = b.add(&x, &dn)?;
        b.recycle(dn);
        b.recycle(std::mem::replace(&mut x, x2));
    }
    let out = b.rms_norm(&x, &w.final_norm, eps)?;
    b.recycle(x);
    Ok(out)
}
