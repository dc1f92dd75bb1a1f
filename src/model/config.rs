//! `config.json` of a Hugging Face BERT directory, and the ColBERT settings from
//! `config_sentence_transformers.json` (PyLate) or `artifact.metadata` (stanford ColBERT).

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The BERT hyper-parameters colwgpu needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f32 {
    1e-12
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

impl BertConfig {
    /// Reads and validates `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg: BertConfig = read_json(path)?;
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        match cfg.model_type.as_deref() {
            Some("bert") | None => {}
            Some(other) => {
                return Err(bad(format!(
                    "unknown model type '{other}': colwgpu encodes text with BERT checkpoints \
                     (\"model_type\": \"bert\")"
                )))
            }
        }
        if !matches!(cfg.hidden_act.as_str(), "gelu" | "gelu_python") {
            return Err(bad(format!(
                "hidden_act '{}' is not supported (expected \"gelu\")",
                cfg.hidden_act
            )));
        }
        if let Some(p) = cfg.position_embedding_type.as_deref() {
            if p != "absolute" {
                return Err(bad(format!(
                    "position_embedding_type '{p}' is not supported (expected \"absolute\")"
                )));
            }
        }
        // Sizes within what any BERT uses (and far from allocation overflow):
        // every one is later checked against the weights' shapes, but some
        // size allocations first.
        for (name, value, max) in [
            ("vocab_size", cfg.vocab_size, 1 << 24),
            ("hidden_size", cfg.hidden_size, 1 << 16),
            ("num_hidden_layers", cfg.num_hidden_layers, 1 << 10),
            ("num_attention_heads", cfg.num_attention_heads, 1 << 10),
            ("intermediate_size", cfg.intermediate_size, 1 << 20),
            (
                "max_position_embeddings",
                cfg.max_position_embeddings,
                1 << 20,
            ),
            ("type_vocab_size", cfg.type_vocab_size, 1 << 16),
        ] {
            if value == 0 || value > max {
                return Err(bad(format!("{name} is {value}: expected 1 to {max}")));
            }
        }
        if !(cfg.layer_norm_eps.is_finite() && cfg.layer_norm_eps > 0.0) {
            return Err(bad(format!(
                "layer_norm_eps is {}: expected a small positive number",
                cfg.layer_norm_eps
            )));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        Ok(cfg)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// ColBERT settings as found on disk (all optional; defaults are ColBERTv2's).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ColbertSettings {
    pub query_prefix: Option<String>,
    pub document_prefix: Option<String>,
    pub query_length: Option<usize>,
    pub document_length: Option<usize>,
    pub attend_to_expansion_tokens: Option<bool>,
    pub skiplist_words: Option<Vec<String>>,
    pub do_query_expansion: Option<bool>,
}

/// Stanford ColBERT's `artifact.metadata` (the fields we use).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct StanfordMetadata {
    pub query_token_id: Option<String>,
    pub doc_token_id: Option<String>,
    pub query_maxlen: Option<usize>,
    pub doc_maxlen: Option<usize>,
    pub attend_to_mask_tokens: Option<bool>,
    pub mask_punctuation: Option<bool>,
}

impl From<StanfordMetadata> for ColbertSettings {
    fn from(m: StanfordMetadata) -> Self {
        ColbertSettings {
            query_prefix: m.query_token_id,
            document_prefix: m.doc_token_id,
            query_length: m.query_maxlen,
            document_length: m.doc_maxlen,
            attend_to_expansion_tokens: m.attend_to_mask_tokens,
            skiplist_words: match m.mask_punctuation {
                Some(false) => Some(Vec::new()),
                _ => None,
            },
            do_query_expansion: None,
        }
    }
}
