//! Reference fixtures of the page models (`tests/fixtures/colqwen2`,
//! `tests/fixtures/colpali`, made by the scripts in `scripts/reference/`):
//! reading their tensors, rewriting their checkpoints in other layouts, and
//! an f64 MaxSim to rank against.

use std::path::Path;

/// The reference tensors of one fixture file.
pub struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    pub fn load(path: &Path) -> Self {
        Self {
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }
    pub fn tensor(&self, name: &str) -> (Vec<usize>, Vec<u8>) {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture has no {name}"));
        (t.shape().to_vec(), t.data().to_vec())
    }
    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (shape, bytes) = self.tensor(name);
        let v = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (shape, v)
    }
    pub fn i64(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let (shape, bytes) = self.tensor(name);
        let v = bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        (shape, v)
    }
    pub fn ids(&self, name: &str) -> Vec<u32> {
        self.i64(name).1.into_iter().map(|x| x as u32).collect()
    }
    /// Rows `b` of a `[B, L]` id tensor where the mask is 1.
    pub fn unpadded_ids(&self, ids: &str, mask: &str) -> Vec<Vec<u32>> {
        let (shape, ids) = self.i64(ids);
        let (_, mask) = self.i64(mask);
        (0..shape[0])
            .map(|b| {
                (0..shape[1])
                    .filter(|&i| mask[b * shape[1] + i] == 1)
                    .map(|i| ids[b * shape[1] + i] as u32)
                    .collect()
            })
            .collect()
    }
    /// Rows of `[B, L, D]` vectors where the mask is 1, per sequence.
    pub fn unpadded_vectors(&self, vectors: &str, mask: &str) -> Vec<Vec<f32>> {
        let (shape, v) = self.f32(vectors);
        let (_, mask) = self.i64(mask);
        let (l, d) = (shape[1], shape[2]);
        (0..shape[0])
            .map(|b| {
                (0..l)
                    .filter(|&i| mask[b * l + i] == 1)
                    .flat_map(|i| v[(b * l + i) * d..(b * l + i + 1) * d].to_vec())
                    .collect()
            })
            .collect()
    }
}

/// MaxSim of one query against one document (f64 products and sums).
pub fn maxsim(q: &[f32], d: &[f32], dim: usize) -> f64 {
    q.chunks_exact(dim)
        .map(|qv| {
            d.chunks_exact(dim)
                .map(|dv| {
                    qv.iter()
                        .zip(dv)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                })
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .sum()
}

/// Every tensor of a bf16 safetensors checkpoint as f32, sorted by name.
pub fn bf16_tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::BF16);
            let data = v
                .data()
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect();
            (name, v.shape().to_vec(), data)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Writes `tensors` as an f32 safetensors file.
pub fn write_f32_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Copies the files `names` from `from` into `to` (created).
pub fn copy_files(from: &Path, to: &Path, names: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for f in names {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}
