//! Page documents for page-image models: image files and PDF pages, listed,
//! rendered and streamed to the encoder.
//!
//! A page is an image file (id: the file name without extension, as BEIR-style
//! qrels name page images) or one page of a PDF (id: `FILE#PAGE`, the PDF's
//! file name with its extension and the page number from 1, as the qrels of
//! `pdf-docs` name them). Rendering runs on its own thread and hands pages to
//! the encoder through a bounded channel, so at most a few rendered pages are
//! in memory whatever the length of the PDF.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::pdf::{dpi_for_pixels, is_pdf_path, PdfDocument};

/// Where one page comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageSource {
    /// The image file or the PDF (absolute when it could be resolved).
    pub path: PathBuf,
    /// The page of a PDF, from 1; `None` for an image file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<usize>,
}

/// One page to encode: its document id and its source.
#[derive(Debug, Clone, PartialEq)]
pub struct PageInput {
    pub id: String,
    pub source: PageSource,
}

/// What an index records of a page, so a search can explain a match on it:
/// the source, the size of the image the model saw (before its own resize),
/// the resolution a PDF page was rendered at, and where the page's patch
/// vectors are among its vectors (`first` row, `rows × cols` merged-patch
/// grid, row-major).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageRecord {
    pub source: PageSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpi: Option<f32>,
    pub width: u32,
    pub height: u32,
    pub first: usize,
    pub rows: usize,
    pub cols: usize,
}

fn is_image_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn absolute(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// A file that could not be listed, when bad files are skipped.
pub type Skipped = Vec<String>;

/// The pages of `path`: a PDF (every page), an image file, or a directory of
/// PDFs and PNG/JPEG images (file name order; other files ignored). A PDF that
/// cannot be opened is an error, or, with `skip_bad`, a warning in the
/// returned list and its pages left out.
pub fn list_pages(path: &Path, skip_bad: bool) -> Result<(Vec<PageInput>, Skipped)> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && (is_pdf_path(p) || is_image_path(p)))
            .collect();
        v.sort();
        v
    } else if path.is_file() {
        vec![path.to_path_buf()]
    } else {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    };
    let mut pages = Vec::new();
    let mut skipped = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if is_pdf_path(&f) {
            match PdfDocument::open(&f) {
                Ok(doc) => {
                    let abs = absolute(&f);
                    for page in 1..=doc.page_count() {
                        pages.push(PageInput {
                            id: format!("{name}#{page}"),
                            source: PageSource {
                                path: abs.clone(),
                                page: Some(page),
                            },
                        });
                    }
                }
                Err(e) if skip_bad => skipped.push(e.to_string()),
                Err(e) => return Err(e),
            }
        } else {
            let stem = f
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            pages.push(PageInput {
                id: stem,
                source: PageSource {
                    path: absolute(&f),
                    page: None,
                },
            });
        }
    }
    Ok((pages, skipped))
}

/// A page ready for the encoder.
pub struct RenderedPage {
    /// Position in the input list.
    pub index: usize,
    pub image: crate::vision::RgbImage,
    pub dpi: Option<f32>,
}

/// How pages are rendered.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// PDF resolution; `None`: per page, the smallest whole DPI giving at least
    /// `target_pixels` pixels (the model's pre-processing resizes to that).
    pub dpi: Option<f32>,
    pub target_pixels: usize,
    /// Rendered pages waiting for the encoder, at most.
    pub queue: usize,
}

fn to_rgb(img: image::RgbImage) -> crate::vision::RgbImage {
    crate::vision::RgbImage {
        width: img.width() as usize,
        height: img.height() as usize,
        data: img.into_raw(),
    }
}

/// Loads or renders one page (`doc` caches the PDF the previous page came from).
pub fn load_page(
    source: &PageSource,
    options: &RenderOptions,
    doc: &mut Option<PdfDocument>,
) -> Result<(crate::vision::RgbImage, Option<f32>)> {
    match source.page {
        None => Ok((crate::vision::load_rgb(&source.path)?, None)),
        Some(page) => {
            if doc.as_ref().map(|d| d.path()) != Some(source.path.as_path()) {
                *doc = None;
                *doc = Some(PdfDocument::open(&source.path)?);
            }
            let Some(d) = doc.as_ref() else {
                return Err(Error::Input("PDF not open".into()));
            };
            let dpi = match options.dpi {
                Some(dpi) => dpi,
                None => dpi_for_pixels(d, page, options.target_pixels)?,
            };
            Ok((to_rgb(d.render(page, dpi)?), Some(dpi)))
        }
    }
}

/// Renders `pages` on a separate thread, handing each (or its error) to
/// `consume` in order, with at most `options.queue` rendered pages waiting.
/// `consume` returning an error stops the rendering.
pub fn stream_pages(
    pages: &[PageInput],
    options: &RenderOptions,
    consume: &mut dyn FnMut(usize, Result<RenderedPage>) -> Result<()>,
) -> Result<()> {
    let (tx, rx) = mpsc::sync_channel::<(usize, Result<RenderedPage>)>(options.queue.max(1));
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let mut doc = None;
            for (i, p) in pages.iter().enumerate() {
                let item =
                    load_page(&p.source, options, &mut doc).map(|(image, dpi)| RenderedPage {
                        index: i,
                        image,
                        dpi,
                    });
                if tx.send((i, item)).is_err() {
                    return; // the consumer stopped
                }
            }
        });
        let mut result = Ok(());
        for (i, item) in rx.iter() {
            if let Err(e) = consume(i, item) {
                result = Err(e);
                break;
            }
        }
        drop(rx);
        if producer.join().is_err() {
            return Err(Error::Input("the page renderer thread failed".into()));
        }
        result
    })
}

/// A "hot" colour map (black → red → yellow → white) of `v` in [0, 1]; its
/// luminance rises monotonically with `v`.
pub fn hot(v: f32) -> [u8; 3] {
    let v = if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let r = (v * 3.0).min(1.0);
    let g = (v * 3.0 - 1.0).clamp(0.0, 1.0);
    let b = (v * 3.0 - 2.0).clamp(0.0, 1.0);
    [
        (r * 255.0).round() as u8,
        (g * 255.0).round() as u8,
        (b * 255.0).round() as u8,
    ]
}

/// Draws `map` (`rows × cols`, row-major; the model's patch grid, which covers
/// the whole page) over `page`: each pixel is 45 % the page (grey) and 55 % the
/// colour of its cell's value, min–max scaled to [0, 1]. The image has the
/// page's size.
pub fn heat_map(
    page: &image::RgbImage,
    map: &[f32],
    rows: usize,
    cols: usize,
) -> Result<image::RgbImage> {
    if rows == 0 || cols == 0 || map.len() != rows * cols {
        return Err(Error::shape(
            "heat map",
            format!("{} values for a {rows}×{cols} grid", map.len()),
        ));
    }
    let (lo, hi) = map
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let (w, h) = page.dimensions();
    let mut out = image::RgbImage::new(w, h);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let r = ((y as usize * rows) / h.max(1) as usize).min(rows - 1);
        let c = ((x as usize * cols) / w.max(1) as usize).min(cols - 1);
        let v = (map[r * cols + c] - lo) / span;
        let colour = hot(v);
        let p = page.get_pixel(x, y).0;
        let grey = (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) * 0.45;
        for (out, c) in px.0.iter_mut().zip(colour) {
            *out = (grey + 0.55 * c as f32).round().min(255.0) as u8;
        }
    }
    Ok(out)
}

/// The page `record` describes, as the model saw it (a PDF page rendered again
/// at its recorded resolution).
pub fn load_record_image(record: &PageRecord) -> Result<image::RgbImage> {
    let options = RenderOptions {
        dpi: record.dpi,
        target_pixels: (record.width as usize) * (record.height as usize),
        queue: 1,
    };
    let (img, _) = load_page(&record.source, &options, &mut None)?;
    image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data)
        .ok_or_else(|| Error::Input("page image of the wrong size".into()))
}
