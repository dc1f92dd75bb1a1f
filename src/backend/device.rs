//! Which backend runs: the `--device` choice and its resolution to a GPU
//! context or the native CPU backend. Lives here (not in `model`) so that
//! `backend` depends on nothing above it.

use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptions};

/// Which backend runs the model, the index build and search.
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
