//! Reading tensors from `.safetensors` files (memory-mapped), converting f16 and
//! bf16 to f32, with errors that name the file, the tensor and what was expected.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::backend::HostMatrix;
use crate::error::{Error, Result};

/// A memory-mapped safetensors file.
pub struct TensorFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
}

impl TensorFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a file truncated underneath us is the one
        // hazard, as with every memory-mapped reader.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        // Validate the header once, up front.
        SafeTensors::deserialize(&mmap).map_err(|e| Error::Safetensors {
            path: path.to_path_buf(),
            message: format!("not a valid safetensors file: {e}"),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn tensors(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.mmap).map_err(|e| Error::Safetensors {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// Every tensor name in the file.
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self
            .tensors()?
            .names()
            .into_iter()
            .map(|s| s.to_string())
            .collect())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors()
            .map(|t| t.tensor(name).is_ok())
            .unwrap_or(false)
    }

    /// Tensor `name` as f32 with exactly `shape` (1-D and 2-D).
    pub fn matrix(&self, name: &str, shape: &[usize]) -> Result<HostMatrix> {
        let st = self.tensors()?;
        let err = |message: String| Error::Safetensors {
            path: self.path.clone(),
            message,
        };
        let view = st
            .tensor(name)
            .map_err(|_| err(format!("tensor '{name}' is missing")))?;
        if view.shape() != shape {
            return Err(err(format!(
                "tensor '{name}' has shape {:?}, expected {:?}",
                view.shape(),
                shape
            )));
        }
        let bytes = view.data();
        let data = floats_le(view.dtype(), bytes).ok_or_else(|| {
            err(format!(
                "tensor '{name}' has dtype {:?}; expected F32, F16 or BF16",
                view.dtype()
            ))
        })?;
        if let Some((i, v)) = first_non_finite(&data) {
            let count = data.iter().filter(|x| !x.is_finite()).count();
            return Err(err(format!(
                "tensor '{name}' holds {count} non-finite value(s) (the first, {v}, at flat \
                 index {i}): the checkpoint is corrupt or was saved after a diverged training step"
            )));
        }
        let (rows, cols) = match shape {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            _ => {
                return Err(err(format!(
                    "tensor '{name}': only 1-D and 2-D tensors are read"
                )))
            }
        };
        HostMatrix::new(rows, cols, data)
    }
}

/// The first NaN or ±inf in `data` and its index, if any. Vectorised: each
/// block is reduced without branches (an f32 is non-finite iff its exponent
/// bits are all ones) and only a block that has one is searched.
pub fn first_non_finite(data: &[f32]) -> Option<(usize, f32)> {
    const BLOCK: usize = 4096;
    const EXP: u32 = 0x7f80_0000;
    for (b, block) in data.chunks(BLOCK).enumerate() {
        let any = block
            .iter()
            .fold(0u32, |acc, x| acc | u32::from(x.to_bits() & EXP == EXP));
        if any != 0 {
            let i = block.iter().position(|x| !x.is_finite()).unwrap_or(0);
            return Some((b * BLOCK + i, block[i]));
        }
    }
    None
}

impl TensorFile {
    /// The shape of tensor `name`, if present.
    pub fn shape(&self, name: &str) -> Result<Option<Vec<usize>>> {
        Ok(self
            .tensors()?
            .tensor(name)
            .ok()
            .map(|v| v.shape().to_vec()))
    }
}

impl TensorFile {
    /// Tensor `name` (any rank) as a `[rows, cols]` f32 matrix: its first
    /// dimension must be `rows` and its element count `rows · cols` (a Conv3d
    /// patch-embedding kernel `[out, c, t, p, p]` read as `[out, c·t·p·p]`).
    pub fn matrix_flat(&self, name: &str, rows: usize, cols: usize) -> Result<HostMatrix> {
        let st = self.tensors()?;
        let err = |message: String| Error::Safetensors {
            path: self.path.clone(),
            message,
        };
        let view = st
            .tensor(name)
            .map_err(|_| err(format!("tensor '{name}' is missing")))?;
        let shape = view.shape();
        if shape.first() != Some(&rows) || shape.iter().product::<usize>() != rows * cols {
            return Err(err(format!(
                "tensor '{name}' has shape {shape:?}, expected {rows} × {cols} values"
            )));
        }
        let bytes = view.data();
        let data = floats_le(view.dtype(), bytes).ok_or_else(|| {
            err(format!(
                "tensor '{name}' has dtype {:?}; expected F32, F16 or BF16",
                view.dtype()
            ))
        })?;
        HostMatrix::new(rows, cols, data)
    }
}

/// Little-endian F32, F16 or BF16 values widened to f32 (`None` for any other
/// dtype): how every float tensor colwgpu reads is decoded.
pub(crate) fn floats_le(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}
