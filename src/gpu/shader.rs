//! WGSL sources, compiled into the binary, with a tiny include step:
//! a line `//!include common/NAME.wgsl` is replaced by that file's text, once.

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

/// The expanded source of `name` (includes resolved, each file at most once).
pub fn source(name: &str) -> Result<String> {
    let mut out = String::new();
    let mut seen = Vec::new();
    expand(name, &mut out, &mut seen)?;
    Ok(out)
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
