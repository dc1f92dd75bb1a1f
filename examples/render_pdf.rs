//! Renders every page of a PDF to PNG files with colwgpu's renderer
//! (`colwgpu::io::pdf`, hayro): `cargo run --release --example render_pdf --
//! FILE.pdf DPI OUT_DIR` writes `OUT_DIR/page-N.png` (N from 1). Used by
//! `scripts/pdf_fidelity.sh` to compare with poppler's `pdftoppm`.

use colwgpu::io::pdf::PdfDocument;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        anyhow::bail!("usage: render_pdf FILE.pdf DPI OUT_DIR");
    }
    let dpi: f32 = args[2].parse()?;
    let out = std::path::Path::new(&args[3]);
    std::fs::create_dir_all(out)?;
    let doc = PdfDocument::open(&args[1])?;
    for page in 1..=doc.page_count() {
        let img = doc.render(page, dpi)?;
        img.save(out.join(format!("page-{page}.png")))?;
    }
    println!("{} pages", doc.page_count());
    Ok(())
}
