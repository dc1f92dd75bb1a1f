//! WGSL sources, compiled into the binary, with a tiny include step:
//! a line `//!include common/NAME.wgsl` is replaced by that file's text, once;
//! and variants: `NAME.wgsl#VARIANT` is `NAME.wgsl` with every line carrying a
//! `//!variant VARIANT: TEXT` marker replaced by `TEXT` (the same source for
//! both, e.g. `matmul.wgsl#f16`, whose weights are `f16`; without the variant
//! the marker is an ordinary comment and the line keeps its code).

use crate::error::{Error, Result};

/// Every shader file under `shaders/`, by relative path.
pub const FILES: &[(&str, &str)] = &[
    (
        "common/gelu.wgsl",
        include_str!("../../shaders/common/gelu.wgsl"),
    ),
    (
        "common/reduce.wgsl",
        include_str!("../../shaders/common/reduce.wgsl"),
    ),
    (
        "common/layernorm_row.wgsl",
        include_str!("../../shaders/common/layernorm_row.wgsl"),
    ),
    ("embed.wgsl", include_str!("../../shaders/embed.wgsl")),
    ("matmul.wgsl", include_str!("../../shaders/matmul.wgsl")),
    (
        "attention.wgsl",
        include_str!("../../shaders/attention.wgsl"),
    ),
    (
        "layernorm.wgsl",
        include_str!("../../shaders/layernorm.wgsl"),
    ),
    ("l2norm.wgsl", include_str!("../../shaders/l2norm.wgsl")),
    ("maxsim.wgsl", include_str!("../../shaders/maxsim.wgsl")),
    ("plaid.wgsl", include_str!("../../shaders/plaid.wgsl")),
    ("topk.wgsl", include_str!("../../shaders/topk.wgsl")),
    (
        "survivors.wgsl",
        include_str!("../../shaders/survivors.wgsl"),
    ),
    ("kmeans.wgsl", include_str!("../../shaders/kmeans.wgsl")),
    (
        "pairwise.wgsl",
        include_str!("../../shaders/pairwise.wgsl"),
    ),
    (
        "residual_codec.wgsl",
        include_str!("../../shaders/residual_codec.wgsl"),
    ),
    ("norm.wgsl", include_str!("../../shaders/norm.wgsl")),
    (
        "elementwise.wgsl",
        include_str!("../../shaders/elementwise.wgsl"),
    ),
    ("rotary.wgsl", include_str!("../../shaders/rotary.wgsl")),
    (
        "attention_gqa.wgsl",
        include_str!("../../shaders/attention_gqa.wgsl"),
    ),
];

fn raw(name: &str) -> Result<&'static str> {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| Error::Shader {
            label: name.to_string(),
            message: "no such shader file".into(),
        })
}

const VARIANT: &str = "//!variant ";

/// The expanded source of `name` (includes resolved, each file at most once),
/// or of the variant `file#variant` (see the module documentation; a variant
/// the file does not declare is an error).
pub fn source(name: &str) -> Result<String> {
    let (file, variant) = match name.split_once('#') {
        Some((f, v)) => (f, Some(v)),
        None => (name, None),
    };
    let mut out = String::new();
    let mut seen = Vec::new();
    expand(file, &mut out, &mut seen)?;
    let Some(variant) = variant else {
        return Ok(out);
    };
    let marker = format!("{VARIANT}{variant}:");
    let mut found = false;
    let mut text = String::with_capacity(out.len());
    for line in out.lines() {
        match line.find(&marker) {
            Some(at) => {
                found = true;
                let indent = &line[..line.len() - line.trim_start().len()];
                text.push_str(indent);
                text.push_str(line[at + marker.len()..].trim());
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    if !found {
        return Err(Error::Shader {
            label: name.to_string(),
            message: format!("{file} declares no variant '{variant}'"),
        });
    }
    Ok(text)
}

/// Every declared variant, as `file#variant` (kernel files only).
pub fn variants() -> Vec<String> {
    let mut out = Vec::new();
    for file in kernel_files() {
        for line in raw(file).unwrap_or_default().lines() {
            if let Some(at) = line.find(VARIANT) {
                let rest = &line[at + VARIANT.len()..];
                if let Some((v, _)) = rest.split_once(':') {
                    let name = format!("{file}#{}", v.trim());
                    if !out.contains(&name) {
                        out.push(name);
                    }
                }
            }
        }
    }
    out
}

fn expand(name: &str, out: &mut String, seen: &mut Vec<String>) -> Result<()> {
    if seen.iter().any(|s| s == name) {
        return Ok(());
    }
    seen.push(name.to_string());
    for line in raw(name)?.lines() {
        match line.trim().strip_prefix("//!include ") {
            Some(inc) => expand(inc.trim(), out, seen)?,
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(())
}

/// Shader files that are entry-point modules (not `common/` helpers).
pub fn kernel_files() -> impl Iterator<Item = &'static str> {
    FILES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !n.starts_with("common/"))
}
