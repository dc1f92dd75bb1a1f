//! PDFs in (`colwgpu::io::pdf`, `Model::index_pages`, `index --pdf`), why a page
//! matched (`Index::explain`, `search --explain --explain-dir`): on the committed
//! 3-page PDF cut from pdf-docs (`tests/fixtures/pdf`, made by
//! `scripts/data/make_pdf_fixtures.sh`) and the tiny ColQwen2 fixture model.

use std::path::{Path, PathBuf};

use colwgpu::io::pdf::PdfDocument;
use colwgpu::{Device, Error, IndexOptions, Model, SearchOptions};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn three_pages() -> PathBuf {
    fixtures().join("pdf/mime-spec-p7-9.pdf")
}

fn tiny_model() -> PathBuf {
    fixtures().join("colqwen2/model")
}

/// A well-formed PDF whose page tree has no pages.
fn zero_page_pdf() -> Vec<u8> {
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [] /Count 0 >>",
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for off in offsets {
        out.extend(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

fn pdf_error(e: Error) -> (Option<usize>, String) {
    match e {
        Error::Pdf { page, .. } => (page, e.to_string()),
        other => panic!("expected a PDF error, got: {other}"),
    }
}

#[test]
fn opens_counts_and_renders_pages_at_a_resolution() {
    let doc = PdfDocument::open(three_pages()).unwrap();
    assert_eq!(doc.page_count(), 3);
    let (w, h) = doc.page_size_points(1).unwrap();
    let img = doc.render(1, 50.0).unwrap();
    assert_eq!(img.width(), (w * 50.0 / 72.0).floor() as u32);
    assert_eq!(img.height(), (h * 50.0 / 72.0).floor() as u32);
    // A text page: mostly white, with dark glyph pixels.
    let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 96)).count();
    let white = img
        .pixels()
        .filter(|p| p.0.iter().all(|&c| c > 240))
        .count();
    let n = (img.width() * img.height()) as usize;
    assert!(dark > n / 1000, "only {dark} dark pixels of {n}");
    assert!(white > n / 2, "only {white} white pixels of {n}");
    // Pages differ.
    assert_ne!(doc.render(2, 50.0).unwrap(), img);
    let (page, msg) = pdf_error(doc.render(4, 50.0).unwrap_err());
    assert_eq!(page, Some(4));
    assert!(msg.contains("pages 1 to 3"), "{msg}");
    let (_, msg) = pdf_error(doc.render(1, 0.0).unwrap_err());
    assert!(msg.contains("not a positive number"), "{msg}");
    let (_, msg) = pdf_error(doc.render(1, 100_000.0).unwrap_err());
    assert!(msg.contains("lower the resolution"), "{msg}");
}

#[test]
fn truncated_encrypted_empty_and_non_pdfs_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let full = std::fs::read(three_pages()).unwrap();
    let cut = tmp.path().join("cut.pdf");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let (page, msg) = pdf_error(PdfDocument::open(&cut).unwrap_err());
    assert_eq!(page, None);
    assert!(
        msg.contains("cut.pdf") && msg.contains("truncated"),
        "{msg}"
    );

    let (_, msg) = pdf_error(PdfDocument::open(fixtures().join("pdf/encrypted.pdf")).unwrap_err());
    assert!(
        msg.contains("encrypted.pdf") && msg.contains("needs a password"),
        "{msg}"
    );

    let empty = tmp.path().join("empty.pdf");
    std::fs::write(&empty, zero_page_pdf()).unwrap();
    let (_, msg) = pdf_error(PdfDocument::open(&empty).unwrap_err());
    assert!(
        msg.contains("empty.pdf") && msg.contains("zero pages"),
        "{msg}"
    );

    let text = tmp.path().join("notes.pdf");
    std::fs::write(&text, "just some text\n%%EOF\n").unwrap();
    let (_, msg) = pdf_error(PdfDocument::open(&text).unwrap_err());
    assert!(msg.contains("not a PDF"), "{msg}");
    let nothing = tmp.path().join("nothing.pdf");
    std::fs::write(&nothing, "").unwrap();
    let (_, msg) = pdf_error(PdfDocument::open(&nothing).unwrap_err());
    assert!(msg.contains("empty file"), "{msg}");
}

#[test]
fn a_folder_of_pdfs_and_images_lists_pages_as_file_hash_page() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(three_pages(), tmp.path().join("spec.pdf")).unwrap();
    std::fs::copy(
        fixtures().join("colqwen2/images/3.png"),
        tmp.path().join("3.png"),
    )
    .unwrap();
    std::fs::write(tmp.path().join("README.txt"), "ignored").unwrap();
    let (pages, skipped) = colwgpu::api::list_pages(tmp.path(), false).unwrap();
    let ids: Vec<&str> = pages.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["3", "spec.pdf#1", "spec.pdf#2", "spec.pdf#3"]);
    assert!(skipped.is_empty());
    assert_eq!(pages[1].source.page, Some(1));
    assert_eq!(pages[0].source.page, None);

    // A broken PDF in the folder: an error naming it, or with skip a warning.
    let full = std::fs::read(three_pages()).unwrap();
    std::fs::write(tmp.path().join("broken.pdf"), &full[..4000]).unwrap();
    let e = colwgpu::api::list_pages(tmp.path(), false).unwrap_err();
    assert!(e.to_string().contains("broken.pdf"), "{e}");
    let (pages, skipped) = colwgpu::api::list_pages(tmp.path(), true).unwrap();
    assert_eq!(pages.len(), 4);
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].contains("broken.pdf"), "{skipped:?}");
}

#[test]
fn explanations_sum_to_the_exact_maxsim_and_heat_maps_mark_the_best_patch() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Model::open(tiny_model(), Device::Cpu).unwrap();
    let (pages, _) = colwgpu::api::list_pages(&three_pages(), false).unwrap();
    let options = colwgpu::api::PageOptions {
        dpi: Some(30.0),
        ..Default::default()
    };
    let mut calls = Vec::new();
    let (index, warnings) = model
        .index_pages(
            &pages,
            tmp.path().join("pdf.index"),
            &IndexOptions {
                nbits: 4,
                ..IndexOptions::default()
            },
            &options,
            &mut |done, total| calls.push((done, total)),
        )
        .unwrap();
    assert!(warnings.is_empty());
    assert_eq!(calls.last(), Some(&(3, 3)));
    assert_eq!(
        index.doc_ids(),
        [
            "mime-spec-p7-9.pdf#1",
            "mime-spec-p7-9.pdf#2",
            "mime-spec-p7-9.pdf#3"
        ]
    );
    let records = index.metadata().pages.clone().unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].dpi, Some(30.0));

    let query = "glob patterns weighted";
    let hits = index
        .search_batch(
            &model,
            &[query],
            &SearchOptions {
                exhaustive: true,
                ..SearchOptions::new(3)
            },
        )
        .unwrap()
        .remove(0);
    let why = index.explain(&model, query, &hits).unwrap();
    assert_eq!(why.len(), 3);
    for (h, e) in hits.iter().zip(&why) {
        assert_eq!(h.id, e.id);
        let sum: f32 = e.matches.iter().map(|m| m.score).sum();
        assert!(
            (sum - h.score).abs() <= 1e-4 * h.score.abs().max(1.0),
            "{}: maxima sum {sum} vs search score {}",
            h.id,
            h.score
        );
        assert!((e.score - h.score).abs() <= 1e-4 * h.score.abs().max(1.0));
        // Each match is its row's maximum.
        for m in &e.matches {
            let row = &e.similarity[m.query_token * e.doc_len..][..e.doc_len];
            assert!(row.iter().all(|&v| v <= m.score), "{}", h.id);
            assert_eq!(row[m.doc_token], m.score);
        }
    }

    // Heat maps: the page's size; the hottest cell is the argmax patch.
    let e = &why[0];
    let p = e.page.as_ref().unwrap();
    let dir = tmp.path().join("why");
    let files = e.write_heat_maps(&dir, "top").unwrap();
    assert_eq!(files.len(), e.matches.len() + 1);
    for q in [None, Some(0usize), Some(e.matches.len() - 1)] {
        let map = e.patch_map(q).unwrap();
        let best = (0..map.len())
            .max_by(|&a, &b| map[a].total_cmp(&map[b]))
            .unwrap();
        let name = match q {
            None => "top-sum.png".to_string(),
            Some(q) => format!("top-q{q}.png"),
        };
        let img = image::open(dir.join(&name)).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (p.width, p.height), "{name}");
        // The heat map over a white page has the map's ordering in luminance,
        // so compare it on the page as drawn over white.
        let white = image::RgbImage::from_pixel(p.width, p.height, image::Rgb([255, 255, 255]));
        let over_white = colwgpu::pages::heat_map(&white, &map, p.rows, p.cols).unwrap();
        let lum = |x: u32, y: u32| {
            let c = over_white.get_pixel(x, y).0;
            c[0] as u32 * 299 + c[1] as u32 * 587 + c[2] as u32 * 114
        };
        let centre = |cell: usize| {
            let (r, c) = (cell / p.cols, cell % p.cols);
            (
                ((2 * c + 1) as u32 * p.width) / (2 * p.cols as u32),
                ((2 * r + 1) as u32 * p.height) / (2 * p.rows as u32),
            )
        };
        let hottest = (0..map.len())
            .max_by_key(|&cell| {
                let (x, y) = centre(cell);
                (lum(x, y), std::cmp::Reverse(cell))
            })
            .unwrap();
        assert_eq!(
            map[hottest], map[best],
            "{name}: hottest cell {hottest}, argmax {best}"
        );
        // The written file is that map drawn over the page itself.
        let page = colwgpu::pages::load_record_image(p).unwrap();
        let drawn = colwgpu::pages::heat_map(&page, &map, p.rows, p.cols).unwrap();
        assert!(
            drawn == img,
            "{name} differs from the map drawn over its page"
        );
    }
}

fn run(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_colwgpu"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_indexes_a_pdf_folder_explains_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::copy(three_pages(), docs.join("shared-mime-info-spec.pdf")).unwrap();
    std::fs::copy(fixtures().join("colqwen2/images/3.png"), docs.join("3.png")).unwrap();
    let full = std::fs::read(three_pages()).unwrap();
    std::fs::write(docs.join("broken.pdf"), &full[..full.len() / 3]).unwrap();
    let index = tmp.path().join("docs.index");
    let os = |s: &str| std::ffi::OsString::from(s);
    let index_args = |extra: &[&str]| {
        let mut v: Vec<std::ffi::OsString> = [
            "index", "--device", "cpu", "--nbits", "4", "--dpi", "30", "--model",
        ]
        .iter()
        .map(|&s| os(s))
        .collect();
        v.push(tiny_model().into_os_string());
        v.push(os("--pdf"));
        v.push(docs.clone().into_os_string());
        v.push(os("--index"));
        v.push(index.clone().into_os_string());
        v.extend(extra.iter().map(|&s| os(s)));
        v
    };
    // The broken PDF stops the build, naming it; --skip-bad-pages lists it.
    let args = index_args(&[]);
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (ok, _, err) = run(&refs);
    assert!(!ok);
    assert!(
        err.contains("broken.pdf") && err.contains("truncated"),
        "{err}"
    );
    assert!(!index.exists());
    let args = index_args(&["--skip-bad-pages"]);
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (ok, _, err) = run(&refs);
    assert!(ok, "{err}");
    assert!(
        err.contains("skipped") && err.contains("broken.pdf"),
        "{err}"
    );
    let opened = colwgpu::Index::open(&index).unwrap();
    assert_eq!(
        opened.doc_ids(),
        [
            "3",
            "shared-mime-info-spec.pdf#1",
            "shared-mime-info-spec.pdf#2",
            "shared-mime-info-spec.pdf#3"
        ]
    );

    let why = tmp.path().join("why");
    let (ok, out, err) = run(&[
        &os("search"),
        &os("--device"),
        &os("cpu"),
        &os("--json"),
        &os("-k"),
        &os("2"),
        &os("--explain"),
        &os("--explain-dir"),
        why.as_os_str(),
        &os("--index"),
        index.as_os_str(),
        &os("--query"),
        &os("glob patterns"),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        let e = &r["explain"];
        let sum: f64 = e["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["score"].as_f64().unwrap())
            .sum();
        let score = r["score"].as_f64().unwrap();
        assert!((sum - score).abs() < 1e-3, "{sum} vs {score}");
        let maps = e["heat_maps"].as_array().unwrap();
        assert!(!maps.is_empty());
        for m in maps {
            assert!(Path::new(m.as_str().unwrap()).is_file());
        }
    }

    let queries = tmp.path().join("q.jsonl");
    std::fs::write(
        &queries,
        "{\"_id\": \"q1\", \"text\": \"How are glob patterns weighted?\"}\n",
    )
    .unwrap();
    let qrels = tmp.path().join("qrels.tsv");
    std::fs::write(
        &qrels,
        "query-id\tcorpus-id\tscore\nq1\tshared-mime-info-spec.pdf#1\t1\n",
    )
    .unwrap();
    let (ok, out, err) = run(&[
        &os("eval"),
        &os("--device"),
        &os("cpu"),
        &os("--json"),
        &os("--index"),
        index.as_os_str(),
        &os("--queries"),
        queries.as_os_str(),
        &os("--qrels"),
        qrels.as_os_str(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["queries"], 1);
    assert!(v["recall@10"].as_f64().unwrap() == 1.0, "{v}");
}
