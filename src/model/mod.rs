//! Model loading and the encoders. [`Encoder`] picks a backend at run time;
//! [`ColbertEncoder`] is the one model code path, generic over it.

pub mod bert;
pub mod colbert;
pub mod colpali;
pub mod colqwen2;
pub mod config;
pub mod lora;
mod page_checkpoint;
pub mod paligemma;
pub mod qwen2_vl;
pub mod weights;

use std::path::Path;

/// Kept here for code that imports it from `model` (it lives in `backend`).
pub use crate::backend::{resolve_device, DeviceChoice};
pub use colbert::{Checkpoint, ColbertEncoder, HeadLayout, TokenVectors};

use crate::backend::cpu::CpuBackend;
pub use crate::backend::Precision;
use crate::backend::gpu::GpuBackend;
use crate::error::{Error, Result};
use crate::gpu::GpuOptions;

/// A ColBERT encoder on the backend chosen at run time (boxed: a few KB of
/// weight handles each).
pub enum Encoder {
    Cpu(Box<ColbertEncoder<CpuBackend>>),
    Gpu(Box<ColbertEncoder<GpuBackend>>),
}

macro_rules! each {
    ($self:expr, $e:ident => $body:expr) => {
        match $self {
            Encoder::Cpu($e) => $body,
            Encoder::Gpu($e) => $body,
        }
    };
}

impl Encoder {
    /// Loads the checkpoint in `dir` onto the chosen device.
    pub fn open(dir: &Path, device: DeviceChoice, options: &GpuOptions) -> Result<Self> {
        Self::open_with_precision(dir, device, options, Precision::F32)
    }

    /// [`Encoder::open`] with the linear layers at `precision`: bf16 on the
    /// cpu backend, f16 weight storage on the gpu backend (each refused, with
    /// an error naming the other, on the other backend).
    pub fn open_with_precision(
        dir: &Path,
        device: DeviceChoice,
        options: &GpuOptions,
        precision: Precision,
    ) -> Result<Self> {
        let checkpoint = Checkpoint::load(dir)?;
        Ok(match resolve_device(device, options)? {
            Some(ctx) => Encoder::Gpu(Box::new(ColbertEncoder::new(
                checkpoint,
                GpuBackend::with_precision(ctx, precision)?,
            )?)),
            None => Encoder::Cpu(Box::new(ColbertEncoder::new(
                checkpoint,
                CpuBackend::with_precision(precision)?,
            )?)),
        })
    }

    pub fn from_checkpoint(
        checkpoint: Checkpoint,
        device: DeviceChoice,
        options: &GpuOptions,
    ) -> Result<Self> {
        Ok(match resolve_device(device, options)? {
            Some(ctx) => {
                Encoder::Gpu(Box::new(ColbertEncoder::new(checkpoint, GpuBackend::new(ctx))?))
            }
            None => Encoder::Cpu(Box::new(ColbertEncoder::new(checkpoint, CpuBackend::new())?)),
        })
    }

    /// Encodes queries (an empty one gives its markers and `[MASK]`s; the
    /// front door, [`crate::Model`], refuses empty queries for search).
    pub fn encode_queries(&mut self, texts: &[&str]) -> Result<Vec<TokenVectors>> {
        each!(self, e => e.encode_queries(texts))
    }

    pub fn encode_documents(&mut self, texts: &[&str]) -> Result<Vec<TokenVectors>> {
        each!(self, e => e.encode_documents(texts))
    }

    /// Queries (`queries`) or documents, with the token counts of the same
    /// tokenization.
    pub fn encode_counted(
        &mut self,
        texts: &[&str],
        queries: bool,
    ) -> Result<(Vec<TokenVectors>, crate::text::TokenCounts)> {
        each!(self, e => e.encode_counted(texts, queries))
    }

    pub fn dim(&self) -> usize {
        each!(self, e => e.dim())
    }

    /// Where index and search kernels should run to share this encoder's device.
    pub fn compute(&self) -> crate::backend::Compute {
        match self {
            Encoder::Gpu(e) => crate::backend::Compute::Gpu(e.backend().context().clone()),
            Encoder::Cpu(_) => crate::backend::Compute::Cpu,
        }
    }

    /// Bytes of weights resident on the GPU, `(all, linear weights)`; `None`
    /// on the cpu backend.
    pub fn gpu_weight_bytes(&self) -> Option<(u64, u64)> {
        match self {
            Encoder::Gpu(e) => Some(e.backend().weight_bytes()),
            Encoder::Cpu(_) => None,
        }
    }

    pub fn head(&self) -> HeadLayout {
        each!(self, e => e.head())
    }

    pub fn describe_backend(&self) -> String {
        each!(self, e => e.describe_backend())
    }

    /// Texts per forward pass, at most (at least 1). The CPU backend also
    /// keeps a pass within [`crate::backend::Backend::max_pass_rows`] token
    /// rows (about 1,024: five 180-token documents, 32 queries).
    pub fn set_batch_size(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::Input(
                "batch size must be at least 1 (texts per forward pass)".into(),
            ));
        }
        each!(self, e => e.batch_size = n);
        Ok(())
    }

    pub fn tokenizer(&self) -> &crate::text::ColbertTokenizer {
        each!(self, e => e.tokenizer())
    }

    /// Times every op separately from now on (on the GPU each op then runs in
    /// its own submit; on the CPU ops are synchronous anyway). Returns true.
    pub fn enable_profiling(&mut self) -> bool {
        each!(self, e => e.backend_mut().enable_profiling());
        true
    }

    /// Per-op (calls, seconds) when profiling is on.
    pub fn profile(&self) -> Vec<(&'static str, usize, f64)> {
        match self {
            Encoder::Gpu(e) => e
                .backend()
                .profile()
                .map(|p| p.iter().map(|(k, (n, s))| (*k, *n, *s)).collect())
                .unwrap_or_default(),
            Encoder::Cpu(e) => e
                .backend()
                .profile()
                .map(|p| p.iter().map(|(k, (n, s))| (*k, *n, *s)).collect())
                .unwrap_or_default(),
        }
    }

    /// Runs a few short batches of each kind so that nothing timed later
    /// pays for first use: shaders compiled (drivers compile at the first
    /// dispatch, not at pipeline creation), and on the CPU the weights in the
    /// forms batches past `sgemm::PACKED_MAX_ROWS` rows read, the lane
    /// threads and their backends made (a batch of 4 queries or 16 of these
    /// documents per lane is 128 rows).
    pub fn warm_up(&mut self) -> Result<()> {
        let lanes = each!(self, e => crate::backend::Backend::lanes(e.backend()));
        self.encode_queries(&vec!["warm up"; 4 * lanes])?;
        self.encode_documents(&vec!["warm up"; 16 * lanes])?;
        Ok(())
    }
}

/// Whether `dir` holds a page-image model (ColQwen2: a Qwen2-VL config, a
/// transformers `ColQwen2ForRetrieval` config; ColPali: a PaliGemma config or a
/// transformers `ColPaliForRetrieval` config; or a PEFT adapter on either)
/// rather than a text ColBERT.
pub fn is_page_model(dir: &Path) -> bool {
    if lora::LoraAdapter::is_adapter(dir) {
        return true;
    }
    std::fs::read_to_string(dir.join("config.json"))
        .map(|t| {
            let t = t.to_ascii_lowercase();
            t.contains("\"qwen2_vl\"")
                || t.contains("colqwen2")
                || t.contains("\"vlm_config\"")
                || t.contains("\"paligemma\"")
        })
        .unwrap_or(false)
}

/// The page-image model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageFamily {
    ColQwen2,
    ColPali,
}

impl PageFamily {
    pub fn name(self) -> &'static str {
        match self {
            PageFamily::ColQwen2 => "ColQwen2",
            PageFamily::ColPali => "ColPali",
        }
    }
}

/// The directory whose `config.json` describes the page model in `dir`: `dir`
/// itself, or an adapter's base (`base` if given).
pub fn page_config_dir(dir: &Path, base: Option<&Path>) -> Result<std::path::PathBuf> {
    if dir.join("config.json").is_file() || !lora::LoraAdapter::is_adapter(dir) {
        Ok(dir.to_path_buf())
    } else {
        lora::LoraAdapter::load(dir)?.base_dir(base)
    }
}

/// Which family the page model in `dir` (or the base of the adapter in `dir`) is.
pub fn page_family(dir: &Path, base: Option<&Path>) -> Result<PageFamily> {
    let config_dir = page_config_dir(dir, base)?;
    Ok(if colpali::is_colpali_dir(&config_dir) {
        PageFamily::ColPali
    } else {
        PageFamily::ColQwen2
    })
}

/// A page encoder (ColQwen2 or ColPali) on the backend chosen at run time.
pub enum PageEncoder {
    Cpu(colqwen2::ColQwen2Encoder<CpuBackend>),
    Gpu(colqwen2::ColQwen2Encoder<GpuBackend>),
    ColPaliCpu(colpali::ColPaliEncoder<CpuBackend>),
    ColPaliGpu(colpali::ColPaliEncoder<GpuBackend>),
}

macro_rules! each_page {
    ($self:expr, $e:ident => $body:expr) => {
        match $self {
            PageEncoder::Cpu($e) => $body,
            PageEncoder::Gpu($e) => $body,
            PageEncoder::ColPaliCpu($e) => $body,
            PageEncoder::ColPaliGpu($e) => $body,
        }
    };
}

impl PageEncoder {
    /// Loads the checkpoint (or adapter + base) in `dir` onto the chosen device;
    /// the family (ColQwen2 or ColPali) comes from the checkpoint's config.
    pub fn open(
        dir: &Path,
        base: Option<&Path>,
        device: DeviceChoice,
        options: &GpuOptions,
        precision: Precision,
    ) -> Result<Self> {
        Ok(match page_family(dir, base)? {
            PageFamily::ColQwen2 => {
                let ckpt = colqwen2::ColQwen2Checkpoint::load_with_base(dir, base)?;
                match resolve_device(device, options)? {
                    Some(ctx) => PageEncoder::Gpu(colqwen2::ColQwen2Encoder::new(
                        ckpt,
                        GpuBackend::with_precision(ctx, precision)?,
                    )?),
                    None => PageEncoder::Cpu(colqwen2::ColQwen2Encoder::new(
                        ckpt,
                        CpuBackend::with_precision(precision)?,
                    )?),
                }
            }
            PageFamily::ColPali => {
                let ckpt = colpali::ColPaliCheckpoint::load_with_base(dir, base)?;
                match resolve_device(device, options)? {
                    Some(ctx) => PageEncoder::ColPaliGpu(colpali::ColPaliEncoder::new(
                        ckpt,
                        GpuBackend::with_precision(ctx, precision)?,
                    )?),
                    None => PageEncoder::ColPaliCpu(colpali::ColPaliEncoder::new(
                        ckpt,
                        CpuBackend::with_precision(precision)?,
                    )?),
                }
            }
        })
    }

    pub fn family(&self) -> PageFamily {
        match self {
            PageEncoder::Cpu(_) | PageEncoder::Gpu(_) => PageFamily::ColQwen2,
            PageEncoder::ColPaliCpu(_) | PageEncoder::ColPaliGpu(_) => PageFamily::ColPali,
        }
    }

    pub fn encode_queries(&mut self, texts: &[&str]) -> Result<Vec<TokenVectors>> {
        each_page!(self, e => e.encode_queries(texts))
    }

    pub fn encode_images(&mut self, images: &[crate::vision::RgbImage]) -> Result<Vec<TokenVectors>> {
        each_page!(self, e => e.encode_images(images))
    }

    /// Query tokens of each text (prompt and augmentation included).
    pub fn query_tokens(&self, texts: &[&str]) -> Result<usize> {
        let mut n = 0;
        for t in texts {
            n += each_page!(self, e => e.query_ids(t))?.len();
        }
        Ok(n)
    }

    pub fn dim(&self) -> usize {
        each_page!(self, e => e.dim())
    }

    /// Pixels a page image is resized to at most by the model's pre-processing.
    pub fn target_pixels(&self) -> usize {
        each_page!(self, e => e.target_pixels())
    }

    /// `(first row, grid rows, grid cols)` of the image-patch vectors in `tv`,
    /// the output for a `width × height` page image.
    pub fn patch_grid(
        &self,
        tv: &TokenVectors,
        width: usize,
        height: usize,
    ) -> Result<(usize, usize, usize)> {
        each_page!(self, e => e.patch_grid(tv, width, height))
    }

    pub fn describe_backend(&self) -> String {
        each_page!(self, e => e.describe_backend())
    }

    pub fn set_batch_size(&mut self, n: usize) {
        each_page!(self, e => e.batch_size = n.max(1))
    }

    /// Bytes of weights resident on the GPU, `(all, linear weights)`; `None`
    /// on the cpu backend.
    pub fn gpu_weight_bytes(&self) -> Option<(u64, u64)> {
        match self {
            PageEncoder::Gpu(e) => Some(e.backend().weight_bytes()),
            PageEncoder::ColPaliGpu(e) => Some(e.backend().weight_bytes()),
            PageEncoder::Cpu(_) | PageEncoder::ColPaliCpu(_) => None,
        }
    }

    pub fn compute(&self) -> crate::backend::Compute {
        match self {
            PageEncoder::Gpu(e) => crate::backend::Compute::Gpu(e.backend().context().clone()),
            PageEncoder::ColPaliGpu(e) => {
                crate::backend::Compute::Gpu(e.backend().context().clone())
            }
            PageEncoder::Cpu(_) | PageEncoder::ColPaliCpu(_) => crate::backend::Compute::Cpu,
        }
    }
}
