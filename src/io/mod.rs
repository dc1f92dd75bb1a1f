//! Reading and writing the files people hand colwgpu: BEIR jsonl, plain text,
//! and encoded token vectors (safetensors, readable from Python).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::error::{Error, Result};
use crate::model::TokenVectors;

pub mod vectors;
pub use vectors::{read_vectors, VectorSet};

/// One text with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub text: String,
}

impl Record {
    pub fn new(id: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            text: text.into(),
        }
    }
}

#[derive(serde::Deserialize)]
struct JsonRecord {
    #[serde(rename = "_id")]
    id: serde_json::Value,
    #[serde(default)]
    title: Option<String>,
    text: String,
}

/// Reads BEIR-style jsonl (`{"_id", "title"?, "text"}`; the text of a record with
/// a title is `title + " " + text`) or, for any other extension, one text per
/// line (ids are line numbers from 0). Errors name the file and line.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let jsonl = path
        .extension()
        .map(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("json"))
        .unwrap_or(false);
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if jsonl {
            if line.trim().is_empty() {
                continue;
            }
            let r: JsonRecord = serde_json::from_str(&line)
                .map_err(|e| Error::Input(format!("{} line {}: {e}", path.display(), n + 1)))?;
            let id = match r.id {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(x) => x.to_string(),
                other => {
                    return Err(Error::Input(format!(
                        "{} line {}: \"_id\" must be a string or number, found {other}",
                        path.display(),
                        n + 1
                    )))
                }
            };
            let text = match r.title.as_deref().map(str::trim) {
                Some(t) if !t.is_empty() => format!("{t} {}", r.text),
                _ => r.text,
            };
            out.push(Record { id, text });
        } else {
            out.push(Record {
                id: n.to_string(),
                text: line,
            });
        }
    }
    if out.is_empty() {
        return Err(Error::Input(format!("{}: no texts found", path.display())));
    }
    Ok(out)
}

/// Writes encoded texts as safetensors (via a temporary file renamed into place):
/// `vectors` F32 `[total_tokens, dim]`, `offsets` I64 `[n + 1]` (text i owns rows
/// `offsets[i]..offsets[i+1]`), `token_ids` U32 `[total_tokens]`; metadata `ids`
/// (JSON list of the text ids), `dim`, `kind`, `model`.
pub fn write_vectors(
    path: &Path,
    ids: &[String],
    encoded: &[TokenVectors],
    dim: usize,
    metadata: &[(&str, String)],
) -> Result<()> {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    if ids.len() != encoded.len() {
        return Err(Error::shape(
            "write_vectors",
            format!("{} ids for {} texts", ids.len(), encoded.len()),
        ));
    }
    let total: usize = encoded.iter().map(|e| e.ids.len()).sum();
    let mut vectors: Vec<u8> = Vec::with_capacity(total * dim * 4);
    let mut token_ids: Vec<u8> = Vec::with_capacity(total * 4);
    let mut offsets: Vec<u8> = Vec::with_capacity((encoded.len() + 1) * 8);
    let mut off = 0i64;
    offsets.extend_from_slice(&off.to_le_bytes());
    for e in encoded {
        for v in &e.vectors {
            vectors.extend_from_slice(&v.to_le_bytes());
        }
        for t in &e.ids {
            token_ids.extend_from_slice(&t.to_le_bytes());
        }
        off += e.ids.len() as i64;
        offsets.extend_from_slice(&off.to_le_bytes());
    }
    let st_err = |e: safetensors::SafeTensorError| Error::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let tensors = vec![
        (
            "vectors",
            TensorView::new(Dtype::F32, vec![total, dim], &vectors).map_err(st_err)?,
        ),
        (
            "offsets",
            TensorView::new(Dtype::I64, vec![encoded.len() + 1], &offsets).map_err(st_err)?,
        ),
        (
            "token_ids",
            TensorView::new(Dtype::U32, vec![total], &token_ids).map_err(st_err)?,
        ),
    ];
    let mut meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    meta.insert("ids".into(), serde_json::to_string(ids).unwrap_or_default());
    meta.insert("dim".into(), dim.to_string());
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(tensors, Some(meta), &tmp).map_err(st_err)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
