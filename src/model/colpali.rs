//! ColPali: PaliGemma's last hidden state → `custom_text_proj` (hidden → 128, bias)
//! → L2-normalise, one vector per real (non-padding) token, as colpali-engine
//! 0.3.18's `ColPali` (and transformers' `ColPaliForRetrieval`).
//!
//! Prompts, as the processors really tokenize them (`add_bos_token` off):
//! - colpali-engine (`ColPaliProcessor`): pages `<image>` × patches + `<bos><bos>Describe
//!   the image.\n` (PaliGemmaProcessor puts a `<bos>` after the prompt's own); queries
//!   `<bos>` + text + `<pad>` × 10.
//! - transformers' ColPaliProcessor: pages `<image>` × patches + `<bos>Describe the
//!   image.\n`; queries `<bos>Question: ` + text + `<pad>` × 10 + `\n`.
//!
//! Pages: resized to the processor's size (448 × 448 for the real model) with the
//! reference's antialiased bicubic filter on the uint8 image, then `(x − mean/r) /
//! (std/r)` with r the rescale factor (1/255; SigLIP's mean = std = 0.5), cut into
//! row-major `[channel, p, p]` patches.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::backend::{Backend, HostMatrix};
use crate::error::{Error, Result};
use crate::model::colbert::TokenVectors;
use crate::model::page_checkpoint::{left_padded, no_vectors, retrieval_head, PageFiles};
use crate::model::paligemma::{
    text_forward, vision_forward, PaliGemmaConfig, PaliGemmaWeights, Prefixes, TextMask,
};
use crate::model::qwen2_vl::TensorSet;
use crate::vision::{resize_bicubic_aa, RgbImage};

pub const IMAGE_TOKEN: &str = "<image>";
pub const BOS: &str = "<bos>";
/// colpali-engine's query augmentation token (the tokenizer's pad token).
pub const QUERY_AUGMENTATION: &str = "<pad>";
pub const QUERY_AUGMENTATION_COUNT: usize = 10;
pub const DOC_PROMPT: &str = "Describe the image.";

/// SigLIP's image processor settings (`preprocessor_config.json` or the
/// `image_processor` section of `processor_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipImageConfig {
    pub height: usize,
    pub width: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub rescale_factor: f64,
    /// Image tokens per page in the prompt (`image_seq_length`), if given.
    pub image_seq_length: Option<usize>,
}

impl Default for SiglipImageConfig {
    /// PaliGemma-448's settings.
    fn default() -> Self {
        Self {
            height: 448,
            width: 448,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            rescale_factor: 1.0 / 255.0,
            image_seq_length: None,
        }
    }
}

impl SiglipImageConfig {
    pub fn load(dir: &Path) -> Result<Self> {
        let mut cfg = Self::default();
        for name in ["preprocessor_config.json", "processor_config.json"] {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let json: Value = serde_json::from_str(&text).map_err(|e| Error::Config {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let v = json.get("image_processor").unwrap_or(&json);
            let size = |k: &str| {
                v.get("size")
                    .and_then(|s| s.get(k))
                    .and_then(Value::as_u64)
                    .map(|x| x as usize)
            };
            let triple = |key: &str| -> Option<[f32; 3]> {
                match v.get(key)? {
                    Value::Array(a) if a.len() == 3 => Some([
                        a[0].as_f64()? as f32,
                        a[1].as_f64()? as f32,
                        a[2].as_f64()? as f32,
                    ]),
                    x => x.as_f64().map(|s| [s as f32; 3]),
                }
            };
            cfg.height = size("height").unwrap_or(cfg.height);
            cfg.width = size("width").unwrap_or(cfg.width);
            cfg.image_mean = triple("image_mean").unwrap_or(cfg.image_mean);
            cfg.image_std = triple("image_std").unwrap_or(cfg.image_std);
            cfg.rescale_factor = v
                .get("rescale_factor")
                .and_then(Value::as_f64)
                .unwrap_or(cfg.rescale_factor);
            cfg.image_seq_length = v
                .get("image_seq_length")
                .or_else(|| json.get("image_seq_length"))
                .and_then(Value::as_u64)
                .map(|x| x as usize);
            if cfg.height == 0
                || cfg.width == 0
                || cfg.rescale_factor <= 0.0
                || !cfg.rescale_factor.is_finite()
                || cfg.image_std.iter().any(|&s| s.is_nan() || s == 0.0)
            {
                return Err(Error::Config {
                    path,
                    message: format!("unusable image processor settings: {cfg:?}"),
                });
            }
            break;
        }
        Ok(cfg)
    }
}

/// `img` resized to the processor's size and normalised: `[3, height, width]`, as
/// the reference's `pixel_values`.
pub fn pixel_values(img: &RgbImage, cfg: &SiglipImageConfig) -> Result<Vec<f32>> {
    let resized = resize_bicubic_aa(img, cfg.height, cfg.width)?;
    // Rescale and normalise fused as the torchvision backend does:
    // (x − mean / r) / (std / r), in f32.
    let mean: Vec<f32> = cfg
        .image_mean
        .iter()
        .map(|m| (*m as f64 / cfg.rescale_factor) as f32)
        .collect();
    let std: Vec<f32> = cfg
        .image_std
        .iter()
        .map(|s| (*s as f64 / cfg.rescale_factor) as f32)
        .collect();
    let plane = cfg.height * cfg.width;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, px) in resized.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (px[c] as f32 - mean[c]) / std[c];
        }
    }
    Ok(out)
}

/// `[3, height, width]` pixel values cut into row-major patches of `[3, p, p]`:
/// `[(height/p)·(width/p), 3·p·p]` (the Conv2d's im2col).
pub fn patch_rows(pixels: &[f32], height: usize, width: usize, p: usize) -> Result<HostMatrix> {
    if p == 0 || pixels.len() != 3 * height * width || !height.is_multiple_of(p) || !width.is_multiple_of(p) {
        return Err(Error::shape(
            "siglip patches",
            format!(
                "{} values for a 3×{height}×{width} image in {p}-pixel patches",
                pixels.len()
            ),
        ));
    }
    let (gh, gw) = (height / p, width / p);
    let plane = height * width;
    let mut data = Vec::with_capacity(pixels.len());
    for gy in 0..gh {
        for gx in 0..gw {
            for c in 0..3 {
                for y in 0..p {
                    let row = c * plane + (gy * p + y) * width + gx * p;
                    data.extend_from_slice(&pixels[row..row + p]);
                }
            }
        }
    }
    HostMatrix::new(gh * gw, 3 * p * p, data)
}

/// A ColPali checkpoint on the host.
pub struct ColPaliCheckpoint {
    pub dir: PathBuf,
    pub config: PaliGemmaConfig,
    pub image: SiglipImageConfig,
    pub tokenizer: tokenizers::Tokenizer,
    /// `[vocab, hidden]`, kept on the host: rows are gathered per batch.
    pub embed_tokens: HostMatrix,
    pub weights: PaliGemmaWeights<HostMatrix>,
    pub proj_w: HostMatrix,
    pub proj_b: HostMatrix,
    /// transformers' `ColPaliForRetrieval` layout (its processor's prompts)
    /// rather than colpali-engine's.
    pub transformers_layout: bool,
    /// The adapter merged in, if `dir` held one: (adapter dir, base dir).
    pub adapter: Option<(PathBuf, PathBuf)>,
}

/// Whether `config.json` in `dir` describes a PaliGemma / ColPali model.
pub fn is_colpali_dir(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|j| PaliGemmaConfig::is_paligemma(&j))
}

impl ColPaliCheckpoint {
    /// Loads a checkpoint directory (`config.json`, `model.safetensors` or shards,
    /// `tokenizer.json`, the image processor's settings), or a PEFT LoRA adapter
    /// directory merged into its base model.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with_base(dir, None)
    }

    /// [`ColPaliCheckpoint::load`] with the base model of an adapter given.
    pub fn load_with_base(dir: &Path, base: Option<&Path>) -> Result<Self> {
        let files = PageFiles::resolve(dir, base)?;
        let config_path = files.pick("config.json");
        let config = PaliGemmaConfig::load(&config_path)?;
        let transformers_layout = PageFiles::transformers_layout(&config_path);
        let image_dir = files.image_dir();
        let image = SiglipImageConfig::load(image_dir)?;
        let v = &config.vision;
        if image.height != v.image_size || image.width != v.image_size {
            return Err(Error::Config {
                path: image_dir.to_path_buf(),
                message: format!(
                    "the processor resizes to {}×{} but the vision tower takes {}×{}",
                    image.height, image.width, v.image_size, v.image_size
                ),
            });
        }
        if let Some(n) = image.image_seq_length.filter(|&n| n != v.num_patches()) {
            return Err(Error::Config {
                path: image_dir.to_path_buf(),
                message: format!(
                    "image_seq_length {n} differs from the vision tower's {} patches",
                    v.num_patches()
                ),
            });
        }
        let set = TensorSet::open(&files.weights_dir)?;
        let prefixes = Prefixes::find(&set)?;
        let weights =
            PaliGemmaWeights::load(&set, &prefixes, &config, Some(&|n, m| files.merge(n, m)))?;
        let t = &config.text;
        let embed_tokens = files.matrix(
            &set,
            &format!("{}embed_tokens.weight", prefixes.text),
            &[t.vocab_size, t.hidden_size],
        )?;
        let (proj_w, proj_b) = files.head(&set, t.hidden_size, "ColPali")?;
        files.check_adapter_used()?;
        let (tokenizer, tok_path) =
            files.tokenizer(&[IMAGE_TOKEN, BOS, QUERY_AUGMENTATION], "PaliGemma")?;
        let terr = |message: String| Error::Tokenizer {
            path: tok_path.clone(),
            message,
        };
        if tokenizer.token_to_id(IMAGE_TOKEN) != Some(config.image_token_id) {
            return Err(terr(format!(
                "'{IMAGE_TOKEN}' is id {:?} in the tokenizer but {} in config.json",
                tokenizer.token_to_id(IMAGE_TOKEN),
                config.image_token_id
            )));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            image,
            tokenizer,
            embed_tokens,
            weights,
            proj_w,
            proj_b,
            transformers_layout,
            adapter: files.adapter_dirs(),
        })
    }
}

/// The ColPali encoder on one backend.
pub struct ColPaliEncoder<B: Backend> {
    backend: B,
    config: PaliGemmaConfig,
    image: SiglipImageConfig,
    tokenizer: tokenizers::Tokenizer,
    embed_tokens: HostMatrix,
    weights: PaliGemmaWeights<B::Weight>,
    proj_w: B::Weight,
    proj_b: B::Weight,
    dim: usize,
    pad_id: u32,
    transformers_layout: bool,
    query_mask: TextMask,
    /// Most texts or images per forward pass.
    pub batch_size: usize,
}

impl<B: Backend> ColPaliEncoder<B> {
    pub fn new(ckpt: ColPaliCheckpoint, backend: B) -> Result<Self> {
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
            backend,
            config: ckpt.config,
            image: ckpt.image,
            tokenizer: ckpt.tokenizer,
            embed_tokens: ckpt.embed_tokens,
            weights,
            proj_w,
            proj_b,
            pad_id,
            transformers_layout: ckpt.transformers_layout,
            query_mask: TextMask::Bidirectional,
            batch_size: 8,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn config(&self) -> &PaliGemmaConfig {
        &self.config
    }
    pub fn image_config(&self) -> &SiglipImageConfig {
        &self.image
    }
    pub fn backend(&self) -> &B {
        &self.backend
    }
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }
    pub fn describe_backend(&self) -> String {
        self.backend.describe()
    }
    /// The mask of query batches: [`TextMask::Bidirectional`] by default (what
    /// the reference computes for a query alone, whatever its batch);
    /// [`TextMask::Causal`] reproduces transformers 5.24 on padded query batches.
    pub fn set_query_mask(&mut self, mask: TextMask) {
        self.query_mask = mask;
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Input(format!("tokenizing {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// A query's token ids (the processor's prompt around the text).
    pub fn query_ids(&self, text: &str) -> Result<Vec<u32>> {
        let pads = QUERY_AUGMENTATION.repeat(QUERY_AUGMENTATION_COUNT);
        self.tokenize(&if self.transformers_layout {
            format!("{BOS}Question: {text}{pads}\n")
        } else {
            format!("{BOS}{text}{pads}")
        })
    }

    /// A page's token ids.
    pub fn document_ids(&self) -> Result<Vec<u32>> {
        let images = IMAGE_TOKEN.repeat(self.config.vision.num_patches());
        self.tokenize(&if self.transformers_layout {
            format!("{images}{BOS}{DOC_PROMPT}\n")
        } else {
            format!("{images}{BOS}{BOS}{DOC_PROMPT}\n")
        })
    }

    /// Pixels a page is resized to (SigLIP's square input): what rendering a
    /// PDF page needs.
    pub fn target_pixels(&self) -> usize {
        let side = self.config.vision.image_size;
        side * side
    }

    /// Where a page's image-patch vectors are among its output rows: the
    /// first row and the patch grid `(rows, cols)`, row-major. Every page is
    /// resized to the square input, so the grid does not depend on the page's
    /// size; the image tokens come first in the document prompt.
    pub fn patch_grid(
        &self,
        tv: &TokenVectors,
        _width: usize,
        _height: usize,
    ) -> Result<(usize, usize, usize)> {
        let grid = self.config.vision.grid();
        let image_token = self.config.image_token_id;
        let first = tv
            .ids
            .iter()
            .position(|&i| i == image_token)
            .ok_or_else(|| Error::Input("the page's tokens hold no image token".into()))?;
        let count = tv.ids[first..]
            .iter()
            .take_while(|&&i| i == image_token)
            .count();
        if count != grid * grid {
            return Err(Error::shape(
                "patch grid",
                format!("{count} image tokens for a {grid}×{grid} grid"),
            ));
        }
        Ok((first, grid, grid))
    }

    /// Pre-processing with this model's settings: `[3, h, w]` pixel values.
    pub fn pixel_values(&self, img: &RgbImage) -> Result<Vec<f32>> {
        pixel_values(img, &self.image)
    }

    /// Encodes queries (batches of `batch_size`, left-padded).
    pub fn encode_queries(&mut self, texts: &[&str]) -> Result<Vec<TokenVectors>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch_size.max(1)) {
            let ids = chunk
                .iter()
                .map(|t| self.query_ids(t))
                .collect::<Result<Vec<_>>>()?;
            out.extend(self.forward(&ids, &[], self.query_mask)?);
        }
        Ok(out)
    }

    /// Encodes page images (batches of `batch_size`).
    pub fn encode_images(&mut self, images: &[RgbImage]) -> Result<Vec<TokenVectors>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.batch_size.max(1)) {
            let pixels = chunk
                .iter()
                .map(|i| self.pixel_values(i))
                .collect::<Result<Vec<_>>>()?;
            out.extend(self.encode_pixels(&pixels)?);
        }
        Ok(out)
    }

    /// Encodes pre-processed pages (`[3, h, w]` pixel values each), one batch.
    pub fn encode_pixels(&mut self, pixels: &[Vec<f32>]) -> Result<Vec<TokenVectors>> {
        let ids = self.document_ids()?;
        let ids = vec![ids; pixels.len()];
        let v = &self.config.vision;
        let mut rows = Vec::with_capacity(pixels.len() * v.num_patches() * v.patch_dim());
        for p in pixels {
            let m = patch_rows(p, v.image_size, v.image_size, v.patch_size)?;
            rows.extend_from_slice(&m.data);
        }
        let rows = HostMatrix::new(pixels.len() * v.num_patches(), v.patch_dim(), rows)?;
        self.forward_rows(&ids, Some(&rows), TextMask::Bidirectional)
    }

    /// One forward pass over `ids` (one sequence each) with `pixels` (`[3, h, w]`
    /// each) for the image tokens, in order, under `mask`.
    pub fn forward(
        &mut self,
        ids: &[Vec<u32>],
        pixels: &[Vec<f32>],
        mask: TextMask,
    ) -> Result<Vec<TokenVectors>> {
        if pixels.is_empty() {
            return self.forward_rows(ids, None, mask);
        }
        let v = &self.config.vision;
        let mut rows = Vec::new();
        for p in pixels {
            rows.extend(patch_rows(p, v.image_size, v.image_size, v.patch_size)?.data);
        }
        let rows = HostMatrix::new(pixels.len() * v.num_patches(), v.patch_dim(), rows)?;
        self.forward_rows(ids, Some(&rows), mask)
    }

    fn forward_rows(
        &mut self,
        ids: &[Vec<u32>],
        patches: Option<&HostMatrix>,
        mask: TextMask,
    ) -> Result<Vec<TokenVectors>> {
        let Some((seq, pads, flat)) = left_padded(ids, self.pad_id) else {
            return Ok(no_vectors(ids.len()));
        };
        let hidden = self.config.text.hidden_size;
        let vocab = self.embed_tokens.rows;
        let image_token = self.config.image_token_id;
        if let Some(bad) = flat
            .iter()
            .find(|&&i| i != image_token && i as usize >= vocab)
        {
            return Err(Error::Input(format!(
                "token id {bad} outside the vocabulary of {vocab}"
            )));
        }
        let vision_rows = match patches {
            None => None,
            Some(p) => {
                let v = vision_forward(&mut self.backend, &self.config.vision, &self.weights, p)?;
                let host = self.backend.read(&v)?;
                self.backend.recycle(v);
                Some(host)
            }
        };
        let n_image_tokens = flat.iter().filter(|&&i| i == image_token).count();
        let n_vision = vision_rows.as_ref().map(|v| v.rows).unwrap_or(0);
        if n_image_tokens != n_vision {
            return Err(Error::Input(format!(
                "{n_image_tokens} image tokens in the prompts but {n_vision} image features"
            )));
        }
        // Text rows × √hidden (Gemma's scaled embedding, a f32 scalar); image
        // rows are the projector's output, unscaled.
        let scale = (hidden as f64).sqrt() as f32;
        let mut emb = Vec::with_capacity(flat.len() * hidden);
        let mut next_vision = 0;
        for &id in &flat {
            if id == image_token {
                if let Some(v) = &vision_rows {
                    emb.extend_from_slice(&v.data[next_vision * hidden..][..hidden]);
                    next_vision += 1;
                }
            } else {
                let row = &self.embed_tokens.data[id as usize * hidden..][..hidden];
                emb.extend(row.iter().map(|x| x * scale));
            }
        }
        let emb = HostMatrix::new(flat.len(), hidden, emb)?;
        let h = text_forward(
            &mut self.backend,
            &self.config.text,
            &self.weights,
            &emb,
            seq,
            &pads,
            mask,
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
