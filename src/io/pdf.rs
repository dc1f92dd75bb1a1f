//! PDF pages in: open a PDF, count its pages, render one page at a resolution
//! to an 8-bit RGB image, in-process and in pure Rust (`hayro`: no system
//! libraries). Every error names the file, and the page (from 1) when one
//! page fails.
//!
//! What is refused, and how:
//! - not a PDF (no `%PDF-` header), or a file whose cross-reference data
//!   cannot be read or rebuilt: "not a readable PDF";
//! - a truncated file (no `%%EOF` marker in its last kilobyte: the download or
//!   copy was cut short, and pages past the cut would be silently missing);
//! - an encrypted PDF that needs a password (one that opens with the empty
//!   user password, as many "protected" PDFs do, is read as any viewer reads it);
//! - a PDF with zero pages;
//! - a page whose rendering panics inside the renderer, or whose image would
//!   exceed [`MAX_PAGE_PIXELS`].

use std::path::{Path, PathBuf};

use hayro::hayro_interpret::InterpreterSettings;
use hayro::hayro_syntax::{DecryptionError, LoadPdfError, Pdf};

use crate::error::{Error, Result};

/// Largest rendered page, in pixels (≈ 48 MB of RGB; an A4 page at 600 DPI is
/// 35 Mpx): beyond it rendering fails with a clear error.
pub const MAX_PAGE_PIXELS: u64 = 16 << 20;

/// How far from the end the `%%EOF` marker is looked for (as pdf.js and poppler do).
const EOF_WINDOW: usize = 1024;

/// An open PDF file.
pub struct PdfDocument {
    path: PathBuf,
    pdf: Pdf,
}

impl std::fmt::Debug for PdfDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdfDocument")
            .field("path", &self.path)
            .field("pages", &self.page_count())
            .finish()
    }
}

fn pdf_error(path: &Path, page: Option<usize>, message: impl Into<String>) -> Error {
    Error::Pdf {
        path: path.to_path_buf(),
        page,
        message: message.into(),
    }
}

/// Whether `path` names a PDF by its extension (`.pdf`, any case).
pub fn is_pdf_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("pdf"))
}

impl PdfDocument {
    /// Reads and parses the PDF at `path` (see the module docs for what is refused).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, data)
    }

    /// Parses PDF bytes; `path` only names the file in errors.
    pub fn from_bytes(path: impl AsRef<Path>, data: Vec<u8>) -> Result<Self> {
        let path = path.as_ref();
        if data.is_empty() {
            return Err(pdf_error(path, None, "empty file"));
        }
        let head = &data[..data.len().min(1024)];
        if !head.windows(5).any(|w| w == b"%PDF-") {
            return Err(pdf_error(path, None, "not a PDF (no %PDF- header)"));
        }
        let tail = &data[data.len().saturating_sub(EOF_WINDOW)..];
        if !tail.windows(5).any(|w| w == b"%%EOF") {
            return Err(pdf_error(
                path,
                None,
                format!(
                    "truncated: no %%EOF marker at the end of its {} bytes (the file was cut short \
                     or damaged; pages past the cut would be missing)",
                    data.len()
                ),
            ));
        }
        let pdf = Pdf::new(data).map_err(|e| {
            pdf_error(
                path,
                None,
                match e {
                    LoadPdfError::Decryption(DecryptionError::PasswordProtected) => {
                        "encrypted: it needs a password, and password-protected PDFs are not \
                         supported (remove the protection first, e.g. `qpdf --decrypt`)"
                            .to_string()
                    }
                    LoadPdfError::Decryption(d) => {
                        format!("encrypted, and its encryption cannot be read ({d:?})")
                    }
                    LoadPdfError::Invalid => {
                        "not a readable PDF (its structure is damaged)".to_string()
                    }
                },
            )
        })?;
        let doc = Self {
            path: path.to_path_buf(),
            pdf,
        };
        if doc.page_count() == 0 {
            return Err(pdf_error(path, None, "the PDF has zero pages"));
        }
        Ok(doc)
    }

    /// The file this document was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of pages.
    pub fn page_count(&self) -> usize {
        self.pdf.pages().len()
    }

    /// Page `page` (from 1) as rendered, in PDF points (1/72 inch): width, height
    /// (rotation applied).
    pub fn page_size_points(&self, page: usize) -> Result<(f32, f32)> {
        let p = self.page(page)?;
        Ok(p.render_dimensions())
    }

    fn page(&self, page: usize) -> Result<&hayro::hayro_syntax::page::Page<'_>> {
        let n = self.page_count();
        if page == 0 || page > n {
            return Err(pdf_error(
                &self.path,
                Some(page),
                format!("no such page: the PDF has pages 1 to {n}"),
            ));
        }
        Ok(&self.pdf.pages()[page - 1])
    }

    /// The pixel size page `page` (from 1) renders to at `dpi`.
    pub fn page_pixels(&self, page: usize, dpi: f32) -> Result<(u32, u32)> {
        if !(dpi.is_finite() && dpi > 0.0) {
            return Err(pdf_error(
                &self.path,
                Some(page),
                format!("resolution {dpi} DPI is not a positive number"),
            ));
        }
        let (w, h) = self.page_size_points(page)?;
        let scale = dpi / 72.0;
        let (pw, ph) = ((w * scale).floor(), (h * scale).floor());
        if pw < 1.0 || ph < 1.0 {
            return Err(pdf_error(
                &self.path,
                Some(page),
                format!("at {dpi} DPI the {w}×{h} pt page is less than one pixel"),
            ));
        }
        if pw > u16::MAX as f32
            || ph > u16::MAX as f32
            || (pw as u64) * (ph as u64) > MAX_PAGE_PIXELS
        {
            return Err(pdf_error(
                &self.path,
                Some(page),
                format!(
                    "at {dpi} DPI the page would be {pw}×{ph} pixels, more than the {} Mpx allowed; \
                     lower the resolution",
                    MAX_PAGE_PIXELS >> 20
                ),
            ));
        }
        Ok((pw as u32, ph as u32))
    }

    /// Renders page `page` (from 1) at `dpi` on a white background: an RGB image
    /// of `floor(points · dpi / 72)` pixels each way.
    pub fn render(&self, page: usize, dpi: f32) -> Result<image::RgbImage> {
        let (pw, ph) = self.page_pixels(page, dpi)?;
        let p = self.page(page)?;
        let scale = dpi / 72.0;
        let settings = hayro::RenderSettings {
            x_scale: scale,
            y_scale: scale,
            width: Some(pw as u16),
            height: Some(ph as u16),
            bg_color: hayro::vello_cpu::color::palette::css::WHITE,
        };
        // The renderer reports no errors; a malformed page can make it panic:
        // that becomes this page's error instead of ending the process.
        let pixmap = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let cache = hayro::RenderCache::new();
            hayro::render(p, &cache, &InterpreterSettings::default(), &settings)
        }))
        .map_err(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown failure".into());
            pdf_error(
                &self.path,
                Some(page),
                format!("the renderer failed: {what}"),
            )
        })?;
        let (w, h) = (pixmap.width() as u32, pixmap.height() as u32);
        let mut rgb = Vec::with_capacity(w as usize * h as usize * 3);
        // Premultiplied RGBA over an opaque white background: alpha is 255, so
        // the colour channels are the colour.
        for px in pixmap.data() {
            if px.a == 255 || px.a == 0 {
                rgb.extend_from_slice(&[px.r, px.g, px.b]);
            } else {
                // Composite what is left over white.
                let a = px.a as u32;
                let over = |c: u8| (c as u32 + (255 - a)).min(255) as u8;
                rgb.extend_from_slice(&[over(px.r), over(px.g), over(px.b)]);
            }
        }
        image::RgbImage::from_raw(w, h, rgb).ok_or_else(|| {
            pdf_error(
                &self.path,
                Some(page),
                "the renderer returned a buffer of the wrong size",
            )
        })
    }
}

/// The resolution at which page `page` of `doc` renders to at least
/// `target_pixels` pixels (what a page-image model's pre-processing resizes to),
/// rounded up to a whole DPI.
pub fn dpi_for_pixels(doc: &PdfDocument, page: usize, target_pixels: usize) -> Result<f32> {
    let (w, h) = doc.page_size_points(page)?;
    let area_in2 = (w as f64 / 72.0) * (h as f64 / 72.0);
    let dpi = (target_pixels as f64 / area_in2.max(1e-6)).sqrt().ceil();
    Ok(dpi.clamp(1.0, 1200.0) as f32)
}
