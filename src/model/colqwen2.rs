//! ColQwen2: Qwen2-VL's last hidden state → `custom_text_proj` (hidden → 128, bias)
//! → L2-normalise, one vector per real (non-padding) token, as colpali-engine
//! 0.3.18's `ColQwen2`. Pages are `<|im_start|>user\n<|vision_start|>` + one
//! `<|image_pad|>` per merged patch + `<|vision_end|>Describe the image.<|im_end|><|endoftext|>`;
//! queries are the text + `<|endoftext|>` × 10 (colpali-engine adds no `Query: `
//! prefix). Batches are left-padded.

use std::path::{Path, PathBuf};

use crate::backend::{Backend, HostMatrix};
use crate::error::{Error, Result};
use crate::model::colbert::TokenVectors;
use crate::model::page_checkpoint::{left_padded, no_vectors, retrieval_head, PageFiles};
use crate::model::qwen2_vl::{
    mrope_positions, text_forward, vision_forward, Prefixes, Qwen2VlConfig, Qwen2VlWeights,
    TensorSet,
};
use crate::vision::{pixel_patches, smart_resize, ImageProcessorConfig, Patches, RgbImage};

/// The page prompt around the image tokens.
pub const DOC_PREFIX: &str = "<|im_start|>user\n<|vision_start|>";
pub const DOC_SUFFIX: &str = "<|vision_end|>Describe the image.<|im_end|><|endoftext|>";
pub const IMAGE_TOKEN: &str = "<|image_pad|>";
/// Appended 10 times to every query (colpali-engine's query augmentation).
pub const QUERY_AUGMENTATION: &str = "<|endoftext|>";
pub const QUERY_AUGMENTATION_COUNT: usize = 10;

/// A ColQwen2 checkpoint on the host.
pub struct ColQwen2Checkpoint {
    pub dir: PathBuf,
    pub config: Qwen2VlConfig,
    pub image: ImageProcessorConfig,
    pub tokenizer: tokenizers::Tokenizer,
    /// `[vocab, hidden]`, kept on the host: rows are gathered per batch.
    pub embed_tokens: HostMatrix,
    pub weights: Qwen2VlWeights<HostMatrix>,
    pub proj_w: HostMatrix,
    pub proj_b: HostMatrix,
    /// Put before every query (transformers' ColQwen2 processor: `Query: `;
    /// colpali-engine: nothing).
    pub query_prefix: String,
    /// Put after the `<|endoftext|>` × 10 of every query (transformers: `\n`).
    pub query_suffix: String,
    /// The adapter merged in, if `dir` held one: (adapter dir, base dir).
    pub adapter: Option<(PathBuf, PathBuf)>,
}

impl ColQwen2Checkpoint {
    /// Loads a checkpoint directory (`config.json`, `model.safetensors` or shards,
    /// `tokenizer.json`, the image processor's settings), or a PEFT LoRA adapter
    /// directory (`adapter_config.json`, `adapter_model.safetensors`) merged
    /// into its base model (found as [`LoraAdapter::base_dir`] says).
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with_base(dir, None)
    }

    /// [`ColQwen2Checkpoint::load`] with the base model of an adapter given.
    pub fn load_with_base(dir: &Path, base: Option<&Path>) -> Result<Self> {
        let files = PageFiles::resolve(dir, base)?;
        let config_path = files.pick("config.json");
        let config = Qwen2VlConfig::load(&config_path)?;
        let transformers_layout = PageFiles::transformers_layout(&config_path);
        let image = ImageProcessorConfig::load(files.image_dir())?;
        let set = TensorSet::open(&files.weights_dir)?;
        let prefixes = Prefixes::find(&set)?;
        let weights =
            Qwen2VlWeights::load(&set, &prefixes, &config, Some(&|n, m| files.merge(n, m)))?;
        let t = &config.text;
        let embed_tokens = files.matrix(
            &set,
            &format!("{}embed_tokens.weight", prefixes.text),
            &[t.vocab_size, t.hidden_size],
        )?;
        let (proj_w, proj_b) = files.head(&set, t.hidden_size, "ColQwen2")?;
        files.check_adapter_used()?;
        let (tokenizer, _) = files.tokenizer(
            &[
                IMAGE_TOKEN,
                QUERY_AUGMENTATION,
                "<|im_start|>",
                "<|vision_start|>",
            ],
            "Qwen2",
        )?;
        let (query_prefix, query_suffix) = if transformers_layout {
            ("Query: ".to_string(), "\n".to_string())
        } else {
            (String::new(), String::new())
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            image,
            tokenizer,
            embed_tokens,
            weights,
            proj_w,
            proj_b,
            query_prefix,
            query_suffix,
            adapter: files.adapter_dirs(),
        })
    }
}

/// The ColQwen2 encoder on one backend.
pub struct ColQwen2Encoder<B: Backend> {
    backend: B,
    config: Qwen2VlConfig,
    image: ImageProcessorConfig,
    tokenizer: tokenizers::Tokenizer,
    embed_tokens: HostMatrix,
    weights: Qwen2VlWeights<B::Weight>,
    proj_w: B::Weight,
    proj_b: B::Weight,
    dim: usize,
    pad_id: u32,
    image_token: u32,
    query_prefix: String,
    query_suffix: String,
    /// Most texts or images per forward pass.
    pub batch_size: usize,
}

impl<B: Backend> ColQwen2Encoder<B> {
    pub fn new(ckpt: ColQwen2Checkpoint, backend: B) -> Result<Self> {
        let weights = ckpt.weights.into_backend(&backend)?;
        let dim = ckpt.proj_w.rows;
        let proj_w = backend.linear_weight_owned("custom_text_proj weight", ckpt.proj_w)?;
        let proj_b = backend.weight_owned("custom_text_proj bias", ckpt.proj_b)?;
        let pad_id = ckpt
            .tokenizer
            .token_to_id(QUERY_AUGMENTATION)
            .unwrap_or_default();
        Ok(Self {
            dim,
            image_token: ckpt.config.image_token_id,
            backend,
            config: ckpt.config,
            image: ckpt.image,
            tokenizer: ckpt.tokenizer,
            embed_tokens: ckpt.embed_tokens,
            weights,
            proj_w,
            proj_b,
            pad_id,
            query_prefix: ckpt.query_prefix,
            query_suffix: ckpt.query_suffix,
            batch_size: 8,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn config(&self) -> &Qwen2VlConfig {
        &self.config
    }
    pub fn image_config(&self) -> &ImageProcessorConfig {
        &self.image
    }
    /// colpali-engine's `max_num_visual_tokens`.
    pub fn set_max_visual_tokens(&mut self, n: usize) {
        self.image = self.image.clone().with_max_visual_tokens(n);
    }
    pub fn backend(&self) -> &B {
        &self.backend
    }
    /// Pixels a page is resized to at most (what rendering a PDF page needs).
    pub fn target_pixels(&self) -> usize {
        self.image.max_pixels
    }
    /// Where a page's image-patch vectors are among its output rows: the first
    /// row, and the merged patch grid `(rows, cols)` (row-major), for an image
    /// of `width × height` pixels encoded to `tv`.
    pub fn patch_grid(
        &self,
        tv: &TokenVectors,
        width: usize,
        height: usize,
    ) -> Result<(usize, usize, usize)> {
        let factor = self.image.patch_size * self.image.merge_size;
        let (h, w) = smart_resize(
            height,
            width,
            factor,
            self.image.min_pixels,
            self.image.max_pixels,
        )?;
        let (rows, cols) = (h / factor, w / factor);
        let first = tv
            .ids
            .iter()
            .position(|&i| i == self.image_token)
            .ok_or_else(|| Error::Input("the page's tokens hold no image token".into()))?;
        let count = tv.ids[first..]
            .iter()
            .take_while(|&&i| i == self.image_token)
            .count();
        if count != rows * cols {
            return Err(Error::shape(
                "patch grid",
                format!("{count} image tokens for a {rows}×{cols} grid"),
            ));
        }
        Ok((first, rows, cols))
    }
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }
    pub fn describe_backend(&self) -> String {
        self.backend.describe()
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Input(format!("tokenizing {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// A query's token ids: the text + `<|endoftext|>` × 10 (with the
    /// checkpoint's query prefix and suffix around them).
    pub fn query_ids(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenize(&format!(
            "{}{text}{}{}",
            self.query_prefix,
            QUERY_AUGMENTATION.repeat(QUERY_AUGMENTATION_COUNT),
            self.query_suffix
        ))
    }

    /// A page's token ids for an image of `tokens` merged patches.
    pub fn document_ids(&self, tokens: usize) -> Result<Vec<u32>> {
        self.tokenize(&format!(
            "{DOC_PREFIX}{}{DOC_SUFFIX}",
            IMAGE_TOKEN.repeat(tokens)
        ))
    }

    /// Image pre-processing with this model's settings.
    pub fn patches(&self, img: &RgbImage) -> Result<Patches> {
        pixel_patches(img, &self.image)
    }

    /// Encodes queries (batches of `batch_size`, left-padded).
    pub fn encode_queries(&mut self, texts: &[&str]) -> Result<Vec<TokenVectors>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch_size.max(1)) {
            let ids = chunk
                .iter()
                .map(|t| self.query_ids(t))
                .collect::<Result<Vec<_>>>()?;
            out.extend(self.forward(&ids, &[])?);
        }
        Ok(out)
    }

    /// Encodes page images (batches of `batch_size`).
    pub fn encode_images(&mut self, images: &[RgbImage]) -> Result<Vec<TokenVectors>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch_size.max(1)) {
            let patches = chunk
                .iter()
                .map(|i| self.patches(i))
                .collect::<Result<Vec<_>>>()?;
            out.extend(self.encode_patches(&patches)?);
        }
        Ok(out)
    }

    /// Encodes pre-processed pages, one batch.
    pub fn encode_patches(&mut self, patches: &[Patches]) -> Result<Vec<TokenVectors>> {
        let merge = self.config.vision.spatial_merge_size;
        let ids = patches
            .iter()
            .map(|p| self.document_ids(p.tokens(merge)))
            .collect::<Result<Vec<_>>>()?;
        self.forward(&ids, patches)
    }

    /// One forward pass over `ids` (one sequence each) with `patches` for the
    /// image tokens, in order: per sequence, its real tokens' ids and vectors.
    pub fn forward(&mut self, ids: &[Vec<u32>], patches: &[Patches]) -> Result<Vec<TokenVectors>> {
        let Some((seq, pads, flat)) = left_padded(ids, self.pad_id) else {
            return Ok(no_vectors(ids.len()));
        };
        let hidden = self.config.text.hidden_size;
        let vocab = self.embed_tokens.rows;
        if let Some(bad) = flat.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::Input(format!(
                "token id {bad} outside the vocabulary of {vocab}"
            )));
        }
        // Vision tower first: its rows replace the image tokens' embeddings.
        let grids: Vec<[usize; 3]> = patches.iter().map(|p| p.grid).collect();
        let vision_rows = if patches.is_empty() {
            None
        } else {
            let cols = self.config.vision.patch_dim();
            let mut data = Vec::new();
            for p in patches {
                if p.pixels.cols != cols {
                    return Err(Error::shape(
                        "vision",
                        format!(
                            "patches of {} values, the model takes {cols}",
                            p.pixels.cols
                        ),
                    ));
                }
                data.extend_from_slice(&p.pixels.data);
            }
            let pixels = HostMatrix::new(data.len() / cols.max(1), cols, data)?;
            let v = vision_forward(
                &mut self.backend,
                &self.config.vision,
                &self.weights,
                &pixels,
                &grids,
            )?;
            let host = self.backend.read(&v)?;
            self.backend.recycle(v);
            Some(host)
        };
        let n_image_tokens = flat.iter().filter(|&&i| i == self.image_token).count();
        let n_vision = vision_rows.as_ref().map(|v| v.rows).unwrap_or(0);
        if n_image_tokens != n_vision {
            return Err(Error::Input(format!(
                "{n_image_tokens} image tokens in the prompts but {n_vision} image features"
            )));
        }
        let mut emb = Vec::with_capacity(flat.len() * hidden);
        let mut next_vision = 0;
        for &id in &flat {
            if id == self.image_token {
                if let Some(v) = &vision_rows {
                    emb.extend_from_slice(&v.data[next_vision * hidden..][..hidden]);
                    next_vision += 1;
                }
            } else {
                emb.extend_from_slice(&self.embed_tokens.data[id as usize * hidden..][..hidden]);
            }
        }
        let emb = HostMatrix::new(flat.len(), hidden, emb)?;
        let positions = mrope_positions(
            &flat,
            seq,
            &pads,
            self.image_token,
            &grids,
            self.config.vision.spatial_merge_size,
        )?;
        let h = text_forward(
            &mut self.backend,
            &self.config.text,
            &self.weights,
            &emb,
            seq,
            &pads,
            &positions,
        )?;
        retrieval_head(
            &mut self.backend,
            h,
            &self.proj_w,
            &self.proj_b,
            ids,
            seq,
            &pads,
            self.dim,
        )
    }
}
