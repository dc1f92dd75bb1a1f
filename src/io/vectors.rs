//! Token vectors people bring from elsewhere: the safetensors `colwgpu encode`
//! writes (PyLate, numpy or torch users can write the same layout), or NumPy
//! `.npy` arrays. One [`VectorSet`] in memory either way.
//!
//! Safetensors layout: `vectors` `[total, dim]` (F32, F16 or BF16) with
//! `offsets` `[n + 1]` (I64, I32, U64 or U32; text *i* owns rows
//! `offsets[i]..offsets[i+1]`), or `vectors` `[n, len, dim]` alone (every text
//! `len` vectors, e.g. fixed-length queries). Metadata (all optional): `ids`
//! (JSON list of strings), `kind`, `model_path`, `model_fingerprint`.
//!
//! NumPy: a 2-D `[total, dim]` array with a 1-D offsets array (`[n + 1]`), or a
//! 3-D `[n, len, dim]` array; float32, float64 or float16.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// Token vectors of `n` texts, back to back.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSet {
    /// One id per text.
    pub ids: Vec<String>,
    pub dim: usize,
    /// `offsets[n] × dim` values, row-major.
    pub vectors: Vec<f32>,
    /// `n + 1` row offsets, from 0, non-decreasing.
    pub offsets: Vec<usize>,
    /// `kind` metadata (`queries` / `documents`), when recorded.
    pub kind: Option<String>,
    /// The model directory that produced the vectors, when recorded.
    pub model_path: Option<PathBuf>,
    /// That model's fingerprint (`index::ModelInfo`), when recorded.
    pub model_fingerprint: Option<String>,
}

impl VectorSet {
    /// A set from one row-major `len × dim` block per text; ids default to
    /// `0..n` when `ids` is `None`.
    pub fn from_blocks<B: AsRef<[f32]>>(
        ids: Option<Vec<String>>,
        dim: usize,
        blocks: &[B],
    ) -> Result<Self> {
        if dim == 0 {
            return Err(Error::Input("vector dimension must be positive".into()));
        }
        let mut offsets = Vec::with_capacity(blocks.len() + 1);
        offsets.push(0);
        let mut vectors = Vec::with_capacity(blocks.iter().map(|b| b.as_ref().len()).sum());
        for (i, b) in blocks.iter().enumerate() {
            let b = b.as_ref();
            if !b.len().is_multiple_of(dim) {
                return Err(Error::Input(format!(
                    "text {i}: {} values is not a whole number of {dim}-d vectors",
                    b.len()
                )));
            }
            vectors.extend_from_slice(b);
            offsets.push(vectors.len() / dim);
        }
        let set = Self {
            ids: ids.unwrap_or_else(|| (0..blocks.len()).map(|i| i.to_string()).collect()),
            dim,
            vectors,
            offsets,
            kind: None,
            model_path: None,
            model_fingerprint: None,
        };
        set.validate("vectors")?;
        Ok(set)
    }

    /// Number of texts.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `len × dim` vectors of text `i`.
    pub fn get(&self, i: usize) -> &[f32] {
        &self.vectors[self.offsets[i] * self.dim..self.offsets[i + 1] * self.dim]
    }

    /// One owned block per text.
    pub fn blocks(&self) -> Vec<Vec<f32>> {
        (0..self.len()).map(|i| self.get(i).to_vec()).collect()
    }

    /// Checks the shapes and values (`what` names the source in messages).
    fn validate(&self, what: &str) -> Result<()> {
        let n = self.ids.len();
        let bad = |m: String| Err(Error::Input(format!("{what}: {m}")));
        if self.offsets.len() != n + 1 {
            return bad(format!(
                "{} ids for {} texts",
                n,
                self.offsets.len().saturating_sub(1)
            ));
        }
        if self.offsets[0] != 0 || self.offsets.windows(2).any(|w| w[1] < w[0]) {
            return bad("offsets must start at 0 and never decrease".into());
        }
        if self.offsets[n].checked_mul(self.dim) != Some(self.vectors.len()) {
            return bad(format!(
                "offsets end at row {} but there are {} rows of dimension {}",
                self.offsets[n],
                self.vectors.len() / self.dim.max(1),
                self.dim
            ));
        }
        if let Some(i) = self.vectors.iter().position(|x| !x.is_finite()) {
            return bad(format!(
                "vector {} has a non-finite value at dimension {}",
                i / self.dim,
                i % self.dim
            ));
        }
        Ok(())
    }
}

fn st_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Safetensors {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads token vectors from a `.safetensors` file or a `.npy` file (the latter
/// with `npy_offsets` for a 2-D array). The format is decided by the file's
/// first bytes, not its name.
pub fn read_vectors(path: &Path, npy_offsets: Option<&Path>) -> Result<VectorSet> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only map; the file is parsed and copied out before return.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    if map.starts_with(b"\x93NUMPY") {
        read_npy(path, &map, npy_offsets)
    } else {
        if npy_offsets.is_some() {
            return Err(Error::Input(format!(
                "{}: offsets are given separately only for a .npy vectors file",
                path.display()
            )));
        }
        read_safetensors(path, &map)
    }
}

fn read_safetensors(path: &Path, bytes: &[u8]) -> Result<VectorSet> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| st_error(path, e.to_string()))?;
    let meta: HashMap<String, String> = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(bytes).map_err(|e| st_error(path, e.to_string()))?;
    let vectors = st
        .tensor("vectors")
        .map_err(|_| st_error(path, "no `vectors` tensor"))?;
    let shape = vectors.shape().to_vec();
    let values = floats(path, "vectors", vectors.dtype(), vectors.data())?;
    let (dim, offsets) = match shape.as_slice() {
        [n, len, dim] => (*dim, (0..=*n).map(|i| i * len).collect()),
        [_, dim] => {
            let t = st.tensor("offsets").map_err(|_| {
                st_error(
                    path,
                    "a 2-D `vectors` tensor needs an `offsets` tensor [n + 1]",
                )
            })?;
            if t.shape().len() != 1 {
                return Err(st_error(
                    path,
                    format!("`offsets` has shape {:?}, expected [n + 1]", t.shape()),
                ));
            }
            (*dim, integers(path, "offsets", t.dtype(), t.data())?)
        }
        other => {
            return Err(st_error(
                path,
                format!("`vectors` has shape {other:?}, expected [rows, dim] or [texts, len, dim]"),
            ))
        }
    };
    if dim == 0 {
        return Err(st_error(path, "`vectors` has dimension 0"));
    }
    let n = offsets.len().saturating_sub(1);
    let ids = match meta.get("ids") {
        Some(s) => serde_json::from_str::<Vec<String>>(s).map_err(|e| {
            st_error(
                path,
                format!("metadata `ids` is not a JSON list of strings: {e}"),
            )
        })?,
        None => (0..n).map(|i| i.to_string()).collect(),
    };
    let set = VectorSet {
        ids,
        dim,
        vectors: values,
        offsets,
        kind: meta.get("kind").cloned(),
        model_path: meta.get("model_path").map(PathBuf::from),
        model_fingerprint: meta.get("model_fingerprint").cloned(),
    };
    set.validate(&path.display().to_string())?;
    Ok(set)
}

/// Little-endian floats of a tensor, widened to f32.
fn floats(path: &Path, name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    crate::model::weights::floats_le(dtype, data).ok_or_else(|| {
        st_error(
            path,
            format!("`{name}` is {dtype:?}; expected F32, F16 or BF16"),
        )
    })
}

/// Little-endian integers of a tensor as row offsets (negative values refused).
fn integers(path: &Path, name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<usize>> {
    let neg = || st_error(path, format!("`{name}` has a negative value"));
    let v: Vec<i128> = match dtype {
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i128)
            .collect(),
        Dtype::U64 => data
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i128)
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i128)
            .collect(),
        Dtype::U32 => data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i128)
            .collect(),
        other => {
            return Err(st_error(
                path,
                format!("`{name}` is {other:?}; expected I64, I32, U64 or U32"),
            ))
        }
    };
    v.into_iter()
        .map(|x| usize::try_from(x).map_err(|_| neg()))
        .collect()
}

fn npy_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Input(format!("{}: {message}", path.display()))
}

/// Reads a numeric `.npy` array as (shape, values widened to f64).
fn npy_array(path: &Path, bytes: &[u8]) -> Result<(Vec<u64>, Vec<f64>)> {
    use npyz::{DType, NpyFile, TypeChar};
    let npy = NpyFile::new(bytes).map_err(|e| npy_error(path, e))?;
    let shape = npy.shape().to_vec();
    if npy.order() != npyz::Order::C {
        return Err(npy_error(
            path,
            "Fortran-ordered arrays are not supported; save with np.ascontiguousarray",
        ));
    }
    let (kind, size) = match npy.dtype() {
        DType::Plain(t) => (t.type_char(), t.size_field()),
        other => {
            return Err(npy_error(
                path,
                format!("unsupported dtype {}", other.descr()),
            ))
        }
    };
    let values: Vec<f64> = match (kind, size) {
        (TypeChar::Float, 4) => npy
            .into_vec::<f32>()
            .map_err(|e| npy_error(path, e))?
            .into_iter()
            .map(f64::from)
            .collect(),
        (TypeChar::Float, 8) => npy.into_vec::<f64>().map_err(|e| npy_error(path, e))?,
        (TypeChar::Float, 2) => npy
            .into_vec::<half::f16>()
            .map_err(|e| npy_error(path, e))?
            .into_iter()
            .map(|x| x.to_f64())
            .collect(),
        (TypeChar::Int, 8) => npy
            .into_vec::<i64>()
            .map_err(|e| npy_error(path, e))?
            .into_iter()
            .map(|x| x as f64)
            .collect(),
        (TypeChar::Int, 4) => npy
            .into_vec::<i32>()
            .map_err(|e| npy_error(path, e))?
            .into_iter()
            .map(f64::from)
            .collect(),
        (TypeChar::Uint, 8) => npy
            .into_vec::<u64>()
            .map_err(|e| npy_error(path, e))?
            .into_iter()
            .map(|x| x as f64)
            .collect(),
        (TypeChar::Uint, 4) => npy
            .into_vec::<u32>()
            .map_err(|e| npy_error(path, e))?
            .into_iter()
            .map(f64::from)
            .collect(),
        (k, s) => return Err(npy_error(path, format!("unsupported dtype {k:?}{s}"))),
    };
    Ok((shape, values))
}

fn read_npy(path: &Path, bytes: &[u8], offsets_path: Option<&Path>) -> Result<VectorSet> {
    let (shape, values) = npy_array(path, bytes)?;
    let as_usize = |x: u64| usize::try_from(x).map_err(|_| npy_error(path, "array too large"));
    let (dim, offsets) = match (shape.as_slice(), offsets_path) {
        ([n, len, dim], None) => {
            let (n, len) = (as_usize(*n)?, as_usize(*len)?);
            (as_usize(*dim)?, (0..=n).map(|i| i * len).collect::<Vec<_>>())
        }
        ([_, _, _], Some(_)) => {
            return Err(npy_error(path, "a 3-D [texts, len, dim] array takes no offsets"))
        }
        ([_, dim], Some(op)) => {
            let bytes = std::fs::read(op).map_err(|e| Error::io(op, e))?;
            let (oshape, o) = npy_array(op, &bytes)?;
            if oshape.len() != 1 {
                return Err(npy_error(op, format!("offsets have shape {oshape:?}, expected [n + 1]")));
            }
            let offsets = o
                .into_iter()
                .map(|x| {
                    if x >= 0.0 && x.fract() == 0.0 && x < 9.0e15 {
                        Ok(x as usize)
                    } else {
                        Err(npy_error(op, format!("offset {x} is not a non-negative integer")))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            (as_usize(*dim)?, offsets)
        }
        ([_, _], None) => {
            return Err(npy_error(
                path,
                "a 2-D [rows, dim] array needs its offsets ([n + 1] .npy); or save a 3-D [texts, len, dim] array",
            ))
        }
        (other, _) => {
            return Err(npy_error(
                path,
                format!("array has shape {other:?}, expected [rows, dim] or [texts, len, dim]"),
            ))
        }
    };
    if dim == 0 {
        return Err(npy_error(path, "vector dimension is 0"));
    }
    let n = offsets.len().saturating_sub(1);
    let set = VectorSet {
        ids: (0..n).map(|i| i.to_string()).collect(),
        dim,
        vectors: values.into_iter().map(|x| x as f32).collect(),
        offsets,
        kind: None,
        model_path: None,
        model_fingerprint: None,
    };
    set.validate(&path.display().to_string())?;
    Ok(set)
}
