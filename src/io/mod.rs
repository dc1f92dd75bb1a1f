//! Reading and writing the files people hand colwgpu: BEIR jsonl, plain text,
//! and encoded token vectors (safetensors, readable from Python).

pub mod output;
pub mod pdf;

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

/// What the texts of a file are for: documents may be empty (they still give
/// the marker tokens), queries may not (an empty query ranks arbitrarily).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Documents,
    Queries,
}

/// Reads documents: see [`read_texts`].
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    read_texts(path, TextKind::Documents)
}

/// Reads queries: see [`read_texts`]; an empty or whitespace-only query is an error.
pub fn read_queries(path: &Path) -> Result<Vec<Record>> {
    read_texts(path, TextKind::Queries)
}

/// Errors if `text` is empty or only whitespace (`what` names it in the message).
pub fn check_query_text(text: &str, what: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::Input(format!(
            "{what} is empty: a query needs at least one word"
        )));
    }
    Ok(())
}

/// Whether `line` is a JSON object (what makes a file BEIR jsonl).
fn is_json_object(line: &str) -> bool {
    line.trim_start().starts_with('{')
        && serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object())
}

/// The record of one jsonl line (`line` is 1-based, for messages).
fn parse_json_record(text: &str, at: &dyn Fn(String) -> Error) -> Result<Record> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| at(format!("not valid JSON: {e}")))?;
    let serde_json::Value::Object(mut obj) = value else {
        return Err(at(
            "expected a JSON object {\"_id\": …, \"text\": …}".to_string()
        ));
    };
    let id = match obj.remove("_id") {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(x)) => x.to_string(),
        Some(other) => {
            return Err(at(format!(
                "\"_id\" must be a string or number, found {other}"
            )))
        }
        None => return Err(at("no \"_id\" field".to_string())),
    };
    let body = match obj.remove("text") {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => return Err(at(format!("\"text\" must be a string, found {other}"))),
        None => return Err(at("no \"text\" field".to_string())),
    };
    let title = match obj.remove("title") {
        Some(serde_json::Value::String(s)) => Some(s),
        None | Some(serde_json::Value::Null) => None,
        Some(other) => return Err(at(format!("\"title\" must be a string, found {other}"))),
    };
    let text = match title.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => format!("{t} {body}"),
        _ => body,
    };
    Ok(Record { id, text })
}

/// Reads texts from `path`, deciding the format by content, not by name:
///
/// * **BEIR jsonl** when the file is named `*.jsonl` / `*.json` or its first
///   non-blank line is a JSON object: one `{"_id", "title"?, "text"}` object per
///   line (`_id` a string or number; the text of a record with a title is
///   `title + " " + text`); blank lines are skipped;
/// * otherwise **one text per line**, the id being the line number counted
///   from 0; blank lines are skipped.
///
/// A UTF-8 byte-order mark and CRLF line ends are accepted. Every error names
/// the file and the line (invalid UTF-8 included). For [`TextKind::Queries`]
/// an empty or whitespace-only text is an error; a file without texts is one.
pub fn read_texts(path: &Path, kind: TextKind) -> Result<Vec<Record>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    if let Ok(m) = file.metadata() {
        if m.is_dir() {
            return Err(Error::Input(format!(
                "{}: is a directory, not a file of texts",
                path.display()
            )));
        }
    }
    let named_jsonl = path
        .extension()
        .map(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("json"))
        .unwrap_or(false);
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut jsonl: Option<bool> = None;
    let mut out = Vec::new();
    let mut n = 0usize;
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io(path, e))?;
        if read == 0 {
            break;
        }
        n += 1;
        let at = |message: String| Error::Input(format!("{} line {n}: {message}", path.display()));
        let mut bytes: &[u8] = &buf;
        if n == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let line = std::str::from_utf8(bytes).map_err(|e| {
            at(format!(
                "not valid UTF-8 (byte {} of the line; texts must be UTF-8)",
                e.valid_up_to() + 1
            ))
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let is_jsonl = *jsonl.get_or_insert_with(|| named_jsonl || is_json_object(line));
        let record = if is_jsonl {
            parse_json_record(line, &at)?
        } else {
            Record {
                id: (n - 1).to_string(),
                text: line.to_string(),
            }
        };
        if kind == TextKind::Queries && record.text.trim().is_empty() {
            return Err(at(format!(
                "query '{}' is empty: a query needs at least one word",
                record.id
            )));
        }
        out.push(record);
    }
    if out.is_empty() {
        return Err(Error::Input(format!("{}: no texts found", path.display())));
    }
    Ok(out)
}

/// Writes encoded texts as safetensors through [`output::write_file`] (a
/// regular file or new path, never one of `inputs`, atomically replaced):
/// `vectors` F32 `[total_tokens, dim]`, `offsets` I64 `[n + 1]` (text i owns rows
/// `offsets[i]..offsets[i+1]`), `token_ids` U32 `[total_tokens]`; metadata `ids`
/// (JSON list of the text ids), `dim`, `kind`, `model`.
pub fn write_vectors(
    path: &Path,
    ids: &[String],
    encoded: &[TokenVectors],
    dim: usize,
    metadata: &[(&str, String)],
    inputs: &[&Path],
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
    let bytes = safetensors::serialize(tensors, Some(meta)).map_err(st_err)?;
    output::write_file(path, inputs, &bytes)
}
