//! PEFT LoRA adapters merged at load: for every adapted linear weight,
//! `W += (α / r) · B · A` (`α / √r` with `use_rslora`), A = `lora_A` `[r, in]`,
//! B = `lora_B` `[out, r]`; full tensors an adapter saves (e.g. a retrained
//! head) replace the base's. Names are matched after dropping the wrappers
//! (`base_model.model.`, `vlm.`, `model.`, `language_model.`), so an adapter
//! saved against colpali-engine's `model.layers.*` applies to a base in
//! transformers 5's `language_model.layers.*` layout and vice versa.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::backend::HostMatrix;
use crate::error::{Error, Result};
use crate::model::weights::TensorFile;

/// A tensor or module name without its wrappers: `layers.0.mlp.up_proj`,
/// `visual.blocks.3.attn.qkv`, `custom_text_proj`, `embed_tokens`. The leading
/// wrappers (`base_model.model.`, `vlm.`, `model.`, `language_model.`, in any
/// number and order: colpali-engine's ColPali is `model.model.language_model.*` in
/// memory and `model.language_model.model.*` on disk) are dropped, SigLIP's
/// `vision_tower.vision_model.` (transformers 4.x) is read as `vision_tower.` (5.x),
/// and transformers' `embedding_proj_layer` as colpali-engine's `custom_text_proj`.
pub fn canonical(name: &str) -> String {
    let mut s = name;
    loop {
        let before = s.len();
        for p in ["base_model.model.", "vlm.", "model.", "language_model."] {
            if let Some(rest) = s.strip_prefix(p) {
                s = rest;
            }
        }
        if s.len() == before {
            break;
        }
    }
    let s = s.replacen("vision_tower.vision_model.", "vision_tower.", 1);
    match s.strip_prefix("embedding_proj_layer") {
        Some(rest) => format!("custom_text_proj{rest}"),
        None => s,
    }
}

/// One adapted module: `B·A` scaled.
struct Pair {
    a: Option<HostMatrix>,
    b: Option<HostMatrix>,
}

/// A loaded adapter.
pub struct LoraAdapter {
    pub dir: PathBuf,
    /// `base_model_name_or_path` of `adapter_config.json`.
    pub base_name: String,
    pub scale: f32,
    pairs: BTreeMap<String, Pair>,
    /// Full tensors saved by the adapter, by canonical tensor name.
    full: BTreeMap<String, HostMatrix>,
    used: RefCell<BTreeSet<String>>,
}

impl LoraAdapter {
    /// Whether `dir` holds a PEFT adapter.
    pub fn is_adapter(dir: &Path) -> bool {
        dir.join("adapter_config.json").is_file()
    }

    /// Reads `adapter_config.json` and `adapter_model.safetensors`.
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let cfg: Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: cfg_path.clone(),
            message: e.to_string(),
        })?;
        let bad = |message: String| Error::Config {
            path: cfg_path.clone(),
            message,
        };
        let r = cfg
            .get("r")
            .and_then(Value::as_f64)
            .filter(|r| *r > 0.0)
            .ok_or_else(|| bad("no positive 'r'".into()))?;
        let alpha = cfg.get("lora_alpha").and_then(Value::as_f64).unwrap_or(r);
        let rslora = cfg
            .get("use_rslora")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let scale = (if rslora { alpha / r.sqrt() } else { alpha / r }) as f32;
        let base_name = cfg
            .get("base_model_name_or_path")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let file = TensorFile::open(&dir.join("adapter_model.safetensors"))?;
        let mut pairs: BTreeMap<String, Pair> = BTreeMap::new();
        let mut full = BTreeMap::new();
        for name in file.names()? {
            let shape = file.shape(&name)?.unwrap_or_default();
            let m = match shape[..] {
                [n] => file.matrix(&name, &[n])?,
                [a, b] => file.matrix(&name, &[a, b])?,
                _ => {
                    return Err(bad(format!(
                        "adapter tensor '{name}' has shape {shape:?}: only 1-D and 2-D are merged"
                    )))
                }
            };
            // PEFT names: `<module>.lora_A.weight` or `<module>.lora_A.<adapter>.weight`.
            let lora = ["lora_A", "lora_B"].iter().find_map(|k| {
                let at = name.find(&format!(".{k}."))?;
                Some((&name[..at], *k))
            });
            match lora {
                Some((module, kind)) => {
                    let e = pairs
                        .entry(canonical(module))
                        .or_insert(Pair { a: None, b: None });
                    if kind == "lora_A" {
                        e.a = Some(m);
                    } else {
                        e.b = Some(m);
                    }
                }
                None => {
                    let n = name.replace(".modules_to_save.default", "");
                    full.insert(canonical(&n), m);
                }
            }
        }
        for (module, p) in &pairs {
            match (&p.a, &p.b) {
                (Some(a), Some(b)) if a.rows == b.cols => {}
                _ => {
                    return Err(bad(format!(
                        "adapter module '{module}' lacks lora_A or lora_B, or their ranks differ"
                    )))
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            base_name,
            scale,
            pairs,
            full,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    /// The base model's directory: `explicit` if given, else the adapter's
    /// `base_model_name_or_path` when it names a directory (absolute, or
    /// relative to the adapter), else a sibling of the adapter named like its
    /// last component (`vidore/colqwen2-base` → `../colqwen2-base`).
    pub fn base_dir(&self, explicit: Option<&Path>) -> Result<PathBuf> {
        if let Some(p) = explicit {
            return Ok(p.to_path_buf());
        }
        let name = Path::new(&self.base_name);
        let mut candidates = vec![name.to_path_buf(), self.dir.join(name)];
        if let (Some(parent), Some(last)) = (self.dir.parent(), name.file_name()) {
            candidates.push(parent.join(last));
        }
        candidates
            .into_iter()
            .find(|c| !self.base_name.is_empty() && c.join("config.json").is_file())
            .ok_or_else(|| {
                Error::Input(format!(
                    "the adapter in {} needs its base model '{}', which was not found \
                     (looked for it as a directory, beside the adapter and inside it): \
                     pass its directory with --base",
                    self.dir.display(),
                    self.base_name
                ))
            })
    }

    /// Merges the adapter into weight `name` (full tensors replace it).
    pub fn apply(&self, name: &str, w: &mut HostMatrix) -> Result<()> {
        let tensor = canonical(name);
        let tensor = tensor.as_str();
        if let Some(f) = self.full.get(tensor) {
            if f.data.len() != w.data.len() {
                return Err(Error::Input(format!(
                    "adapter tensor '{tensor}' has {} values, the base's {}",
                    f.data.len(),
                    w.data.len()
                )));
            }
            w.data.copy_from_slice(&f.data);
            self.used.borrow_mut().insert(tensor.to_string());
        }
        let Some(module) = tensor.strip_suffix(".weight") else {
            return Ok(());
        };
        let Some(Pair {
            a: Some(a),
            b: Some(b),
        }) = self.pairs.get(module)
        else {
            return Ok(());
        };
        if b.rows != w.rows || a.cols != w.cols {
            return Err(Error::Input(format!(
                "LoRA '{module}': B·A is {}×{}, the weight {}×{}",
                b.rows, a.cols, w.rows, w.cols
            )));
        }
        // W += scale · B·A, as B [out, r] times (Aᵀ [in, r])ᵀ.
        let r = a.rows;
        let mut at = vec![0.0f32; a.cols * r];
        for i in 0..r {
            for j in 0..a.cols {
                at[j * r + i] = a.data[i * a.cols + j];
            }
        }
        let mut ba = vec![0.0f32; w.rows * w.cols];
        crate::backend::cpu::matmul_transposed(&b.data, &at, &mut ba, w.rows, w.cols, r);
        for (x, d) in w.data.iter_mut().zip(&ba) {
            *x += self.scale * d;
        }
        self.used.borrow_mut().insert(module.to_string());
        Ok(())
    }

    /// Errors if some adapter module or tensor matched no base weight.
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        let unused: Vec<&String> = self
            .pairs
            .keys()
            .chain(self.full.keys())
            .filter(|k| !used.contains(*k))
            .collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(Error::Input(format!(
                "adapter {}: {} modules match no weight of the base model: {:?}",
                self.dir.display(),
                unused.len(),
                unused.iter().take(5).collect::<Vec<_>>()
            )))
        }
    }
}
