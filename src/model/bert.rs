//! The BERT encoder, written once against [`Backend`]:
//! embed → N × {fused QKV projection, attention, output projection, add & norm,
//! FFN with GELU, add & norm}.

use crate::backend::{Activation, Backend, EmbeddingTables, HostMatrix, TokenBatch};
use crate::error::{Error, Result};
use crate::model::config::BertConfig;
use crate::model::weights::TensorFile;

/// One transformer layer's parameters (linear weights in `[out, in]` layout).
pub struct LayerWeights<W> {
    /// Q, K and V stacked: `[3·hidden, hidden]`, so one matmul produces all three.
    pub qkv_w: W,
    pub qkv_b: W,
    pub attn_out_w: W,
    pub attn_out_b: W,
    pub attn_ln_g: W,
    pub attn_ln_b: W,
    pub ffn_in_w: W,
    pub ffn_in_b: W,
    pub ffn_out_w: W,
    pub ffn_out_b: W,
    pub ffn_ln_g: W,
    pub ffn_ln_b: W,
}

/// All BERT parameters, on the host (`W = HostMatrix`) or resident on a backend.
pub struct BertWeights<W> {
    pub embeddings: EmbeddingTables<W>,
    pub layers: Vec<LayerWeights<W>>,
}

/// The tensor-name prefix of the BERT weights in `file` ("", "bert.", "0.auto_model.", …).
pub fn find_prefix(file: &TensorFile) -> Result<String> {
    const KEY: &str = "embeddings.word_embeddings.weight";
    let names = file.names()?;
    names
        .iter()
        .filter_map(|n| n.strip_suffix(KEY))
        .min_by_key(|p| p.len())
        .map(|p| p.to_string())
        .ok_or_else(|| Error::Safetensors {
            path: file.path().to_path_buf(),
            message: format!("no BERT weights found (no tensor named '*{KEY}')"),
        })
}

impl BertWeights<HostMatrix> {
    /// Reads every BERT tensor under `prefix`, checking shapes against `cfg`.
    pub fn load(file: &TensorFile, prefix: &str, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let f = cfg.intermediate_size;
        let get = |name: &str, shape: &[usize]| file.matrix(&format!("{prefix}{name}"), shape);
        let embeddings = EmbeddingTables {
            word: get("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?,
            position: get(
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, h],
            )?,
            token_type: get(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab_size, h],
            )?,
            gamma: get("embeddings.LayerNorm.weight", &[h])?,
            beta: get("embeddings.LayerNorm.bias", &[h])?,
        };
        // Not `with_capacity(num_hidden_layers)`: the count comes from the
        // user's config.json (validated, but the weights are the truth).
        let mut layers = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let l = |name: &str, shape: &[usize]| get(&format!("encoder.layer.{i}.{name}"), shape);
            let q = l("attention.self.query.weight", &[h, h])?;
            let k = l("attention.self.key.weight", &[h, h])?;
            let v = l("attention.self.value.weight", &[h, h])?;
            let qb = l("attention.self.query.bias", &[h])?;
            let kb = l("attention.self.key.bias", &[h])?;
            let vb = l("attention.self.value.bias", &[h])?;
            layers.push(LayerWeights {
                qkv_w: HostMatrix::vstack(&[&q, &k, &v])?,
                qkv_b: HostMatrix::hconcat_vectors(&[&qb, &kb, &vb]),
                attn_out_w: l("attention.output.dense.weight", &[h, h])?,
                attn_out_b: l("attention.output.dense.bias", &[h])?,
                attn_ln_g: l("attention.output.LayerNorm.weight", &[h])?,
                attn_ln_b: l("attention.output.LayerNorm.bias", &[h])?,
                ffn_in_w: l("intermediate.dense.weight", &[f, h])?,
                ffn_in_b: l("intermediate.dense.bias", &[f])?,
                ffn_out_w: l("output.dense.weight", &[h, f])?,
                ffn_out_b: l("output.dense.bias", &[h])?,
                ffn_ln_g: l("output.LayerNorm.weight", &[h])?,
                ffn_ln_b: l("output.LayerNorm.bias", &[h])?,
            });
        }
        Ok(Self { embeddings, layers })
    }

    /// Uploads every parameter to `backend`.
    pub fn upload<B: Backend>(&self, backend: &B) -> Result<BertWeights<B::Weight>> {
        let e = &self.embeddings;
        let embeddings = EmbeddingTables {
            word: backend.weight("word embeddings", &e.word)?,
            position: backend.weight("position embeddings", &e.position)?,
            token_type: backend.weight("token type embeddings", &e.token_type)?,
            gamma: backend.weight("embeddings LayerNorm weight", &e.gamma)?,
            beta: backend.weight("embeddings LayerNorm bias", &e.beta)?,
        };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LayerWeights {
                    qkv_w: backend.linear_weight("qkv weight", &l.qkv_w)?,
                    qkv_b: backend.weight("qkv bias", &l.qkv_b)?,
                    attn_out_w: backend.linear_weight("attention output weight", &l.attn_out_w)?,
                    attn_out_b: backend.weight("attention output bias", &l.attn_out_b)?,
                    attn_ln_g: backend.weight("attention LayerNorm weight", &l.attn_ln_g)?,
                    attn_ln_b: backend.weight("attention LayerNorm bias", &l.attn_ln_b)?,
                    ffn_in_w: backend.linear_weight("ffn input weight", &l.ffn_in_w)?,
                    ffn_in_b: backend.weight("ffn input bias", &l.ffn_in_b)?,
                    ffn_out_w: backend.linear_weight("ffn output weight", &l.ffn_out_w)?,
                    ffn_out_b: backend.weight("ffn output bias", &l.ffn_out_b)?,
                    ffn_ln_g: backend.weight("ffn LayerNorm weight", &l.ffn_ln_g)?,
                    ffn_ln_b: backend.weight("ffn LayerNorm bias", &l.ffn_ln_b)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BertWeights { embeddings, layers })
    }
}

/// Runs the embeddings and the first `layers` transformer layers (all of them
/// when `None`) over `batch`, returning hidden states `[batch·seq_len, hidden]`.
pub fn forward<B: Backend>(
    backend: &mut B,
    cfg: &BertConfig,
    w: &BertWeights<B::Weight>,
    batch: &TokenBatch,
    layers: Option<usize>,
) -> Result<B::Tensor> {
    let eps = cfg.layer_norm_eps;
    let mut h = backend.embed(batch, &w.embeddings, eps)?;
    let n = layers.unwrap_or(w.layers.len()).min(w.layers.len());
    // Every intermediate goes back to the backend as soon as it is consumed.
    for l in &w.layers[..n] {
        let qkv = backend.linear(&h, &l.qkv_w, Some(&l.qkv_b), Activation::Identity)?;
        let ctx = backend.attention(&qkv, batch, cfg.num_attention_heads)?;
        backend.recycle(qkv);
        let attn = backend.linear(
            &ctx,
            &l.attn_out_w,
            Some(&l.attn_out_b),
            Activation::Identity,
        )?;
        backend.recycle(ctx);
        let h1 = backend.add_layernorm(&attn, &h, &l.attn_ln_g, &l.attn_ln_b, eps)?;
        backend.recycle(attn);
        let ffn = backend.linear(&h1, &l.ffn_in_w, Some(&l.ffn_in_b), Activation::Gelu)?;
        let ffn_out =
            backend.linear(&ffn, &l.ffn_out_w, Some(&l.ffn_out_b), Activation::Identity)?;
        backend.recycle(ffn);
        let next = backend.add_layernorm(&ffn_out, &h1, &l.ffn_ln_g, &l.ffn_ln_b, eps)?;
        backend.recycle(ffn_out);
        backend.recycle(h1);
        backend.recycle(std::mem::replace(&mut h, next));
    }
    Ok(h)
}
