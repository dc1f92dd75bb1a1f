//! Model loading and the encoders. [`Encoder`] picks a backend at run time;
//! [`ColbertEncoder`] is the one model code path, generic over it.

pub mod bert;
pub mod colbert;
pub mod config;
pub mod weights;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

pub use colbert::{Checkpoint, ColbertEncoder, HeadLayout, TokenVectors};

use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::GpuBackend;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptions};

/// Which backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// A hardware GPU through wgpu if there is one, else the native CPU backend
    /// (a software adapter is 10–30× slower than native code).
    #[default]
    Auto,
    /// The native CPU backend.
    Cpu,
    /// wgpu + WGSL on whatever adapter is found, software ones included.
    Gpu,
}

impl FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "gpu" | "wgpu" => Ok(Self::Gpu),
            other => Err(Error::Input(format!(
                "unknown device '{other}' (expected auto, cpu or gpu)"
            ))),
        }
    }
}

fn adapter_requested(options: &GpuOptions) -> bool {
    options.adapter_name.is_some() || std::env::var_os("COLWGPU_ADAPTER").is_some()
}

/// Resolves `choice` to a GPU context (for `gpu`, for `auto` with a hardware GPU,
/// and for `auto` with an adapter named in `options` or `COLWGPU_ADAPTER`) or
/// `None` (the CPU backend).
pub fn resolve_device(
    choice: DeviceChoice,
    options: &GpuOptions,
) -> Result<Option<Arc<GpuContext>>> {
    match choice {
        DeviceChoice::Cpu => Ok(None),
        DeviceChoice::Gpu => Ok(Some(Arc::new(GpuContext::new(options)?))),
        // An adapter named explicitly is used (or its absence reported), even
        // a software one: `auto` only decides when nothing was asked for.
        DeviceChoice::Auto if adapter_requested(options) => {
            Ok(Some(Arc::new(GpuContext::new(options)?)))
        }
        DeviceChoice::Auto => match GpuContext::new(options) {
            Ok(ctx) if !ctx.is_software() => Ok(Some(Arc::new(ctx))),
            _ => Ok(None),
        },
    }
}

/// A ColBERT encoder on the backend chosen at run time.
pub enum Encoder {
    Cpu(ColbertEncoder<CpuBackend>),
    Gpu(ColbertEncoder<GpuBackend>),
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
        let checkpoint = Checkpoint::load(dir)?;
        Self::from_checkpoint(checkpoint, device, options)
    }

    pub fn from_checkpoint(
        checkpoint: Checkpoint,
        device: DeviceChoice,
        options: &GpuOptions,
    ) -> Result<Self> {
        Ok(match resolve_device(device, options)? {
            Some(ctx) => Encoder::Gpu(ColbertEncoder::new(checkpoint, GpuBackend::new(ctx))?),
            None => Encoder::Cpu(ColbertEncoder::new(checkpoint, CpuBackend::new())?),
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

    pub fn head(&self) -> HeadLayout {
        each!(self, e => e.head())
    }

    pub fn describe_backend(&self) -> String {
        each!(self, e => e.describe_backend())
    }

    /// Texts per forward pass (at least 1).
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

    /// Runs one tiny batch so shaders are compiled before anything is timed
    /// (drivers compile at the first dispatch, not at pipeline creation).
    pub fn warm_up(&mut self) -> Result<()> {
        self.encode_queries(&["warm up"])?;
        self.encode_documents(&["warm up"])?;
        Ok(())
    }
}
