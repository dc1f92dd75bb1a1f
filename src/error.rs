//! The library's one error type. Every fallible public function returns
//! [`Result<T>`]; the CLI adds context with `anyhow`.

use std::path::PathBuf;

/// Errors of colwgpu, each naming what went wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no GPU adapter found{0}. On Debian/Ubuntu install a software Vulkan driver with \
         `sudo apt-get install mesa-vulkan-drivers` (or run `scripts/install-system.sh`), \
         or use `--device cpu`"
    )]
    NoAdapter(String),

    #[error("no GPU adapter's name contains '{wanted}'; the adapters found are: {available}")]
    AdapterNotFound { wanted: String, available: String },

    // The underlying errors below are shown in the message and not chained as
    // `source()` as well: chain printers (`anyhow`'s `{:#}`) would repeat them.
    #[error("requesting a device from adapter '{adapter}' failed: {error}")]
    RequestDevice {
        adapter: String,
        error: wgpu::RequestDeviceError,
    },

    #[error(
        "GPU adapter '{adapter}' does not offer the wgpu feature {feature}, needed for \
         {needed_for}; {hint}"
    )]
    MissingFeature {
        adapter: String,
        feature: &'static str,
        needed_for: String,
        hint: &'static str,
    },

    #[error("shader '{label}': {message}")]
    Shader { label: String, message: String },

    #[error("GPU error during '{label}': {message}")]
    Gpu { label: String, message: String },

    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },

    #[error("{what} needs {needed} bytes but the adapter allows at most {limit} bytes")]
    LimitExceeded {
        what: String,
        needed: u64,
        limit: u64,
    },

    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("{}: {message}", path.display())]
    Safetensors { path: PathBuf, message: String },

    #[error("tokenizer {}: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },

    #[error("model config {}: {message}", path.display())]
    Config { path: PathBuf, message: String },

    /// A PDF that cannot be read (`page` None) or one of its pages (from 1)
    /// that cannot be rendered.
    #[error("PDF {}{}: {message}", path.display(), page.map(|p| format!(", page {p}")).unwrap_or_default())]
    Pdf {
        path: PathBuf,
        page: Option<usize>,
        message: String,
    },

    #[error("invalid input: {0}")]
    Input(String),

    #[error("index {}: {message}", path.display())]
    IndexFormat { path: PathBuf, message: String },

    #[error(
        "index {} is being written by another process ({holder}); wait for it to finish \
         (or pass --wait)", path.display()
    )]
    Locked { path: PathBuf, holder: String },
}

/// `Result` with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    /// A shape error for operation `op`.
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }
}
