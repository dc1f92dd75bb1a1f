//! colwgpu: late-interaction (ColBERT) retrieval whose heavy math runs as WGSL
//! compute shaders through wgpu, with a native CPU backend for machines whose
//! only adapter is a software one.
//!
//! The data flow is the layout:
//! `text` (tokenize, markers, [MASK] augmentation, skiplist) →
//! `model` (embed → transformer layers → projection → L2 normalise, generic over a
//! [`backend::Backend`]) → token vectors.
//! `gpu` is plumbing only (device, pipelines, buffers); `kernels` are the typed
//! dispatches of the WGSL files in `shaders/`; `backend` holds the two
//! implementations (`cpu`, `gpu`) of the operations the models need.

pub mod backend;
pub mod error;
pub mod eval;
pub mod gpu;
pub mod index;
pub mod io;
pub mod kernels;
pub mod model;
pub mod search;
pub mod text;
pub mod vision;

pub use error::{Error, Result};
