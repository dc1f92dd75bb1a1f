//! Image pre-processing equal to transformers' `Qwen2VLImageProcessor` (5.x,
//! torchvision backend, as colpali-engine 0.3.18 runs it):
//!
//! 1. RGB, 8 bits per channel (alpha dropped, grey replicated).
//! 2. `smart_resize`: height and width rounded to multiples of `factor` =
//!    patch · merge (28) keeping the pixel count within `[min_pixels, max_pixels]`.
//! 3. Bicubic resize with antialiasing on the uint8 image, as torch's native
//!    uint8 path (`torch.nn.functional.interpolate(..., mode="bicubic",
//!    antialias=True)` on a uint8 tensor, which torchvision uses on the CPU):
//!    Pillow's filter (Keys cubic, a = −0.5, support 2·scale when shrinking),
//!    weights quantised to int16 with the largest precision that keeps the
//!    biggest weight below 2¹⁵, a horizontal pass then a vertical one, each
//!    rounded and clamped to uint8. Measured bit-exact against torch 2.13
//!    on random and real images (PIL's own resize differs by ±1 on ~1 % of pixels).
//! 4. `(x − 255·mean) / (255·std)` in f32 (CLIP mean / std).
//! 5. Patches: rows ordered by 2×2 merge window (`[h/2, w/2, 2, 2]`), each row
//!    `[channel, temporal (the image twice), 14, 14]` = 1176 values.

use std::path::Path;

use crate::backend::HostMatrix;
use crate::error::{Error, Result};

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// The processor settings (`preprocessor_config.json` / `processor_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

impl Default for ImageProcessorConfig {
    /// Qwen2-VL's defaults (max_pixels 28·28·1280).
    fn default() -> Self {
        Self {
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            image_std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
        }
    }
}

impl ImageProcessorConfig {
    /// Reads the image processor settings of a checkpoint directory:
    /// `preprocessor_config.json` (transformers 4.x: `min_pixels`, `max_pixels`)
    /// or the `image_processor` section of `processor_config.json` (5.x:
    /// `size.shortest_edge` / `size.longest_edge`); defaults when neither exists.
    pub fn load(dir: &Path) -> Result<Self> {
        let mut cfg = Self::default();
        for name in ["preprocessor_config.json", "processor_config.json"] {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::Config {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            let v = json.get("image_processor").unwrap_or(&json);
            let int = |key: &str| v.get(key).and_then(|x| x.as_u64()).map(|x| x as usize);
            let size = |key: &str| {
                v.get("size")
                    .and_then(|s| s.get(key))
                    .and_then(|x| x.as_u64())
                    .map(|x| x as usize)
            };
            let triple = |key: &str| -> Option<[f32; 3]> {
                let a = v.get(key)?.as_array()?;
                if a.len() != 3 {
                    return None;
                }
                Some([
                    a[0].as_f64()? as f32,
                    a[1].as_f64()? as f32,
                    a[2].as_f64()? as f32,
                ])
            };
            cfg.patch_size = int("patch_size").unwrap_or(cfg.patch_size);
            cfg.temporal_patch_size = int("temporal_patch_size").unwrap_or(cfg.temporal_patch_size);
            cfg.merge_size = int("merge_size").unwrap_or(cfg.merge_size);
            cfg.min_pixels = size("shortest_edge")
                .or_else(|| int("min_pixels"))
                .unwrap_or(cfg.min_pixels);
            cfg.max_pixels = size("longest_edge")
                .or_else(|| int("max_pixels"))
                .unwrap_or(cfg.max_pixels);
            cfg.image_mean = triple("image_mean").unwrap_or(cfg.image_mean);
            cfg.image_std = triple("image_std").unwrap_or(cfg.image_std);
            if cfg.patch_size == 0
                || cfg.merge_size == 0
                || cfg.temporal_patch_size == 0
                || cfg.min_pixels > cfg.max_pixels
                || cfg.image_std.iter().any(|&s| s.is_nan() || s == 0.0)
            {
                return Err(Error::Config {
                    path,
                    message: format!("unusable image processor settings: {cfg:?}"),
                });
            }
            break;
        }
        Ok(cfg)
    }

    /// colpali-engine's `max_num_visual_tokens`: at most `n` merged tokens per image.
    pub fn with_max_visual_tokens(mut self, n: usize) -> Self {
        let f = self.patch_size * self.merge_size;
        self.max_pixels = n * f * f;
        self.min_pixels = self.min_pixels.min(self.max_pixels);
        self
    }

    /// Values per patch row: channels · temporal · patch².
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// Largest number of pixels decoded from one file (a 20,000 × 20,000 page is
/// 1.2 GB of RGB): beyond it, decoding fails with a clear error instead of
/// exhausting memory.
pub const MAX_DECODED_BYTES: u64 = 512 << 20;

/// Decodes an image file (PNG, JPEG, …) to 8-bit RGB, memory bounded by
/// [`MAX_DECODED_BYTES`].
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bad = |message: String| Error::Input(format!("image {}: {message}", path.display()));
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    decode_with_limits(reader, bad)
}

/// [`load_rgb`] for an encoded image (PNG or JPEG) in memory; errors name it
/// `label`.
pub fn decode_rgb(bytes: &[u8], label: &str) -> Result<RgbImage> {
    let bad = |message: String| Error::Input(format!("image {label}: {message}"));
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    decode_with_limits(reader, bad)
}

fn decode_with_limits<R: std::io::BufRead + std::io::Seek>(
    mut reader: image::ImageReader<R>,
    bad: impl Fn(String) -> Error,
) -> Result<RgbImage> {
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| bad(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(bad("zero-size image".into()));
    }
    let rgb = img.to_rgb8();
    Ok(RgbImage {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        data: rgb.into_raw(),
    })
}

/// transformers' `smart_resize`: `(height, width)` multiples of `factor` with the
/// aspect ratio kept and `min_pixels ≤ h·w ≤ max_pixels`.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    if height == 0 || width == 0 {
        return Err(Error::Input("zero-size image".into()));
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if h.max(w) / h.min(w) > 200.0 {
        return Err(Error::Input(format!(
            "image of {width}×{height}: aspect ratio above 200"
        )));
    }
    // Python's round() is round-half-to-even.
    let mut h_bar = (h / f).round_ties_even() * f;
    let mut w_bar = (w / f).round_ties_even() * f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = (h * w / max_pixels as f64).sqrt();
        h_bar = f.max((h / beta / f).floor() * f);
        w_bar = f.max((w / beta / f).floor() * f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    Ok((h_bar as usize, w_bar as usize))
}

/// Keys' cubic convolution with a = −0.5 (Pillow's and torch's antialiased bicubic).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// One output sample of a 1-D resampling: its first source index and int16 weights.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// The int16 taps of resampling `input` samples to `output`, and their precision
/// in bits (torch's `_compute_index_ranges_int16_weights`).
fn taps(input: usize, output: usize) -> (Vec<Taps>, u32) {
    let scale = input as f64 / output as f64;
    let (support, inv_scale) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    let mut float_taps = Vec::with_capacity(output);
    let mut max_weight = 0.0f64;
    for i in 0..output {
        let center = scale * (i as f64 + 0.5);
        let start = ((center - support + 0.5) as i64).max(0) as usize;
        let end = ((center + support + 0.5) as i64).clamp(0, input as i64) as usize;
        let mut w: Vec<f64> = (start..end)
            .map(|j| cubic((j as f64 - center + 0.5) * inv_scale))
            .collect();
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        }
        max_weight = w.iter().copied().fold(max_weight, f64::max);
        float_taps.push((start, w));
    }
    let mut precision = 0u32;
    while precision < 22 {
        let next = (0.5 + max_weight * (1u64 << (precision + 1)) as f64) as i64;
        if next >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let unit = (1u64 << precision) as f64;
    let taps = float_taps
        .into_iter()
        .map(|(start, w)| Taps {
            start,
            weights: w
                .into_iter()
                .map(|v| {
                    let v = v * unit;
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
                })
                .collect(),
        })
        .collect();
    (taps, precision)
}

/// Resamples `n` lines of `len` RGB pixels (`stride` bytes apart, pixels
/// `step` bytes apart) to `taps.len()` pixels each.
fn resample_lines(
    src: &[u8],
    (lines, line_stride, pixel_step): (usize, usize, usize),
    taps: &[Taps],
    precision: u32,
    dst: &mut [u8],
    (dst_line_stride, dst_pixel_step): (usize, usize),
) {
    let round = if precision > 0 {
        1i64 << (precision - 1)
    } else {
        0
    };
    for line in 0..lines {
        for (o, t) in taps.iter().enumerate() {
            for c in 0..3 {
                let mut acc = round;
                for (j, &w) in t.weights.iter().enumerate() {
                    let v = src[line * line_stride + (t.start + j) * pixel_step + c];
                    acc += v as i64 * w as i64;
                }
                dst[line * dst_line_stride + o * dst_pixel_step + c] =
                    (acc >> precision).clamp(0, 255) as u8;
            }
        }
    }
}

/// Antialiased bicubic resize of an 8-bit RGB image, bit-exact with torch's
/// native uint8 path (horizontal pass, then vertical; each pass rounds to uint8).
pub fn resize_bicubic_aa(img: &RgbImage, out_h: usize, out_w: usize) -> Result<RgbImage> {
    if img.width == 0 || img.height == 0 || out_h == 0 || out_w == 0 {
        return Err(Error::Input(format!(
            "cannot resize a {}×{} image to {out_w}×{out_h}",
            img.width, img.height
        )));
    }
    if img.data.len() != img.width * img.height * 3 {
        return Err(Error::shape(
            "resize",
            format!(
                "{} bytes for a {}×{} RGB image",
                img.data.len(),
                img.width,
                img.height
            ),
        ));
    }
    let mut cur = img.clone();
    if out_w != cur.width {
        let (t, p) = taps(cur.width, out_w);
        let mut dst = vec![0u8; cur.height * out_w * 3];
        resample_lines(
            &cur.data,
            (cur.height, cur.width * 3, 3),
            &t,
            p,
            &mut dst,
            (out_w * 3, 3),
        );
        cur = RgbImage {
            width: out_w,
            height: cur.height,
            data: dst,
        };
    }
    if out_h != cur.height {
        let (t, p) = taps(cur.height, out_h);
        let mut dst = vec![0u8; out_h * cur.width * 3];
        // Lines are columns here: one "line" per x (3 bytes apart), pixels a row apart.
        resample_lines(
            &cur.data,
            (cur.width, 3, cur.width * 3),
            &t,
            p,
            &mut dst,
            (3, cur.width * 3),
        );
        cur = RgbImage {
            width: cur.width,
            height: out_h,
            data: dst,
        };
    }
    Ok(cur)
}

/// One image as vision-tower input.
#[derive(Debug, Clone)]
pub struct Patches {
    /// `[grid_t · grid_h · grid_w, 3 · temporal · patch²]`.
    pub pixels: HostMatrix,
    /// (t, h, w) in patches.
    pub grid: [usize; 3],
}

impl Patches {
    /// Merged tokens this image becomes in the language model.
    pub fn tokens(&self, merge: usize) -> usize {
        self.grid[0] * self.grid[1] * self.grid[2] / (merge * merge)
    }
}

/// Resizes, normalises and cuts `img` into patch rows.
pub fn pixel_patches(img: &RgbImage, cfg: &ImageProcessorConfig) -> Result<Patches> {
    let factor = cfg.patch_size * cfg.merge_size;
    let (h, w) = smart_resize(
        img.height,
        img.width,
        factor,
        cfg.min_pixels,
        cfg.max_pixels,
    )?;
    let resized = resize_bicubic_aa(img, h, w)?;
    let (p, m, t) = (cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size);
    let (gh, gw) = (h / p, w / p);
    // (x − 255·mean) / (255·std), in f32 like the fused torch normalisation.
    let mean: Vec<f32> = cfg.image_mean.iter().map(|m| m * 255.0).collect();
    let std: Vec<f32> = cfg.image_std.iter().map(|s| s * 255.0).collect();
    let dim = cfg.patch_dim();
    let mut data = Vec::with_capacity(gh * gw * dim);
    for bh in 0..gh / m {
        for bw in 0..gw / m {
            for mh in 0..m {
                for mw in 0..m {
                    let (py, px) = ((bh * m + mh) * p, (bw * m + mw) * p);
                    for c in 0..3 {
                        for _ in 0..t {
                            for y in 0..p {
                                for x in 0..p {
                                    let v = resized.data[((py + y) * w + px + x) * 3 + c] as f32;
                                    data.push((v - mean[c]) / std[c]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Patches {
        pixels: HostMatrix::new(gh * gw, dim, data)?,
        grid: [1, gh, gw],
    })
}
