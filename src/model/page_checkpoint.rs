//! What the page models (ColQwen2 over Qwen2-VL, ColPali over PaliGemma)
//! share: their last step ([`retrieval_head`]), and what their checkpoints
//! load alike: a checkpoint directory, or a PEFT LoRA adapter
//! directory merged into its base model; the tokenizer and processor files
//! taken from the adapter when it has them, else from the base; the token
//! embedding table; and the retrieval head (`custom_text_proj` in
//! colpali-engine's layout, `embedding_proj_layer` in transformers'), a
//! `[dim, hidden]` weight and a `[dim]` bias. The towers themselves are each
//! family's own (`qwen2_vl.rs`, `paligemma.rs`).

use std::path::{Path, PathBuf};

use crate::backend::{Activation, Backend, HostMatrix};
use crate::model::colbert::TokenVectors;
use crate::error::{Error, Result};
use crate::model::lora::LoraAdapter;
use crate::model::qwen2_vl::TensorSet;

/// A page-model checkpoint's files: where its weights are, and the adapter
/// merged into them (if `dir` is an adapter directory).
pub(crate) struct PageFiles {
    pub dir: PathBuf,
    pub weights_dir: PathBuf,
    adapter: Option<LoraAdapter>,
}

impl PageFiles {
    /// `dir` itself, or, for an adapter directory, the adapter and its base
    /// (`base`, else as [`LoraAdapter::base_dir`] finds it).
    pub fn resolve(dir: &Path, base: Option<&Path>) -> Result<Self> {
        let adapter = if LoraAdapter::is_adapter(dir) {
            Some(LoraAdapter::load(dir)?)
        } else {
            None
        };
        let weights_dir = match &adapter {
            Some(a) => a.base_dir(base)?,
            None => dir.to_path_buf(),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            weights_dir,
            adapter,
        })
    }

    /// The file `name` from `dir` when it has one, else from the base model.
    pub fn pick(&self, name: &str) -> PathBuf {
        let own = self.dir.join(name);
        if own.is_file() {
            own
        } else {
            self.weights_dir.join(name)
        }
    }

    /// Where the image processor's settings are (the adapter's when it has
    /// `preprocessor_config.json` or `processor_config.json`, else the base's).
    pub fn image_dir(&self) -> &Path {
        if self.dir.join("preprocessor_config.json").is_file()
            || self.dir.join("processor_config.json").is_file()
        {
            &self.dir
        } else {
            &self.weights_dir
        }
    }

    /// Whether the config is transformers' layout (`vlm_config`) rather than
    /// colpali-engine's; the two differ in their processors' prompts.
    pub fn transformers_layout(config_path: &Path) -> bool {
        std::fs::read_to_string(config_path)
            .map(|t| t.contains("\"vlm_config\""))
            .unwrap_or(false)
    }

    /// Adds the adapter's update to the weight `name` (nothing without one).
    pub fn merge(&self, name: &str, m: &mut HostMatrix) -> Result<()> {
        match &self.adapter {
            Some(a) => a.apply(name, m),
            None => Ok(()),
        }
    }

    /// The weight `name` of `shape`, with the adapter's update merged in.
    pub fn matrix(&self, set: &TensorSet, name: &str, shape: &[usize]) -> Result<HostMatrix> {
        let mut m = set.matrix(name, shape)?;
        self.merge(name, &mut m)?;
        Ok(m)
    }

    /// The retrieval head: `(weight [dim, hidden], bias [dim])`. `family`
    /// names the model in the error when the checkpoint has none.
    pub fn head(
        &self,
        set: &TensorSet,
        hidden: usize,
        family: &str,
    ) -> Result<(HostMatrix, HostMatrix)> {
        let head = ["custom_text_proj.weight", "embedding_proj_layer.weight"]
            .iter()
            .find_map(|k| {
                set.prefix_of(k)
                    .map(|p| format!("{p}{}", &k[..k.len() - ".weight".len()]))
            })
            .ok_or_else(|| Error::Safetensors {
                path: set.first_path(),
                message: format!(
                    "checkpoint has no {family} head (custom_text_proj or embedding_proj_layer)"
                ),
            })?;
        let name = format!("{head}.weight");
        let shape = set.shape(&name)?;
        if shape.len() != 2 || shape[1] != hidden || shape[0] == 0 {
            return Err(Error::Safetensors {
                path: set.first_path(),
                message: format!("{name} has shape {shape:?}, expected [dim, {hidden}]"),
            });
        }
        let w = self.matrix(set, &name, &shape)?;
        let b = self.matrix(set, &format!("{head}.bias"), &[w.rows])?;
        Ok((w, b))
    }

    /// Errors unless every tensor of the adapter was merged into some weight
    /// (call once every weight is loaded).
    pub fn check_adapter_used(&self) -> Result<()> {
        match &self.adapter {
            Some(a) => a.check_all_used(),
            None => Ok(()),
        }
    }

    /// `tokenizer.json` (the adapter's or the base's), with truncation and
    /// padding off, refusing one without every token of `required`. Returns
    /// the tokenizer and its path (for the caller's own checks).
    pub fn tokenizer(
        &self,
        required: &[&str],
        family: &str,
    ) -> Result<(tokenizers::Tokenizer, PathBuf)> {
        let path = self.pick("tokenizer.json");
        let err = |message: String| Error::Tokenizer {
            path: path.clone(),
            message,
        };
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(&path).map_err(|e| err(e.to_string()))?;
        tokenizer
            .with_truncation(None)
            .map_err(|e| err(e.to_string()))?;
        tokenizer.with_padding(None);
        if let Some(tok) = required.iter().find(|t| tokenizer.token_to_id(t).is_none()) {
            return Err(err(format!("no '{tok}' token: not a {family} tokenizer")));
        }
        Ok((tokenizer, path))
    }

    /// `(adapter dir, base dir)` when an adapter was merged in.
    pub fn adapter_dirs(&self) -> Option<(PathBuf, PathBuf)> {
        self.adapter
            .as_ref()
            .map(|_| (self.dir.clone(), self.weights_dir.clone()))
    }
}

/// The retrieval head on the language model's last hidden state `h`
/// (`batch · seq` rows, each sequence left-padded by `pads[b]`): projection
/// (`proj_w`, `proj_b`) → L2-normalise → one vector per real token of each
/// sequence, with its token ids `ids[b]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn retrieval_head<B: Backend>(
    backend: &mut B,
    h: B::Tensor,
    proj_w: &B::Weight,
    proj_b: &B::Weight,
    ids: &[Vec<u32>],
    seq: usize,
    pads: &[usize],
    dim: usize,
) -> Result<Vec<TokenVectors>> {
    let p = backend.linear(&h, proj_w, Some(proj_b), Activation::Identity)?;
    backend.recycle(h);
    let unit = backend.l2_normalize(&p)?;
    backend.recycle(p);
    let host = backend.read(&unit)?;
    backend.recycle(unit);
    Ok(ids
        .iter()
        .enumerate()
        .map(|(b, s)| {
            let first = b * seq + pads[b];
            TokenVectors {
                ids: s.clone(),
                vectors: host.data[first * dim..(b + 1) * seq * dim].to_vec(),
            }
        })
        .collect())
}

/// A batch of token id sequences laid out left-padded with `pad_id` (the
/// page models' layout): `(seq, pads, flat)`, `seq` the longest length,
/// `pads[b]` the padding before sequence `b`, `flat` the `batch · seq` ids.
/// `None` for a batch with no tokens at all.
pub(crate) fn left_padded(ids: &[Vec<u32>], pad_id: u32) -> Option<(usize, Vec<usize>, Vec<u32>)> {
    let seq = ids.iter().map(Vec::len).max().unwrap_or(0);
    if seq == 0 {
        return None;
    }
    let pads: Vec<usize> = ids.iter().map(|s| seq - s.len()).collect();
    let mut flat = Vec::with_capacity(ids.len() * seq);
    for (s, &pad) in ids.iter().zip(&pads) {
        flat.extend(std::iter::repeat_n(pad_id, pad));
        flat.extend_from_slice(s);
    }
    Some((seq, pads, flat))
}

/// What a batch without tokens encodes to: no ids, no vectors, per sequence.
pub(crate) fn no_vectors(n: usize) -> Vec<TokenVectors> {
    (0..n)
        .map(|_| TokenVectors {
            ids: Vec::new(),
            vectors: Vec::new(),
        })
        .collect()
}
