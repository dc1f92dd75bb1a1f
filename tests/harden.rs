//! Issue 8's fifteen failures of a hostile-input run, each as a test of the
//! library (the CLI's side is `tests/hostile.rs`). Each failed before the fix.

mod common;

use std::path::{Path, PathBuf};

use colwgpu::backend::Compute;
use colwgpu::index::{self, build_index_with, InMemorySource, Index, IndexOptions, ModelInfo};
use colwgpu::io::output;
use colwgpu::search::{PlaidParams, SearchOptions, Searcher};
use colwgpu::Error;
use common::Rng;

fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn model_info(dim: usize) -> ModelInfo {
    ModelInfo {
        name: "synthetic".into(),
        fingerprint: "crc32:00000000".into(),
        dim,
        path: None,
    }
}

const DIM: usize = 16;

/// A small index of random unit vectors (30 documents).
fn small_index(dir: &Path) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(808);
    let docs: Vec<Vec<f32>> = (0..30)
        .map(|i| {
            let len = 2 + (i % 7);
            let mut v = Vec::with_capacity(len * DIM);
            for _ in 0..len {
                let mut x = rng.vec(DIM, 1.0);
                let n = x.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-6);
                x.iter_mut().for_each(|a| *a /= n);
                v.extend(x);
            }
            v
        })
        .collect();
    let ids: Vec<String> = (0..docs.len()).map(|i| format!("d{i}")).collect();
    let mut src = InMemorySource {
        dim: DIM,
        docs: &docs,
    };
    let opts = IndexOptions {
        num_centroids: Some(8),
        ..Default::default()
    };
    build_index_with(&mut src, &ids, &model_info(DIM), dir, &opts, &mut |_| {}).expect("build");
    docs
}

fn both_computes() -> Vec<Compute> {
    vec![Compute::Cpu, Compute::Gpu(common::gpu())]
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::write(path, bytes).expect("write");
    path.to_path_buf()
}

// 1. An output onto a device, FIFO or directory is refused, never replaced.
#[test]
fn output_refuses_devices_fifos_and_directories() {
    for dev in ["/dev/null", "/dev/full"] {
        let e = output::write_file(Path::new(dev), &[], b"x")
            .unwrap_err()
            .to_string();
        assert!(e.contains(dev) && e.contains("character device"), "{e}");
        let m = std::fs::metadata(dev).expect("device");
        assert!(!m.is_file(), "{dev} was replaced by a regular file");
    }
    let tmp = tmpdir();
    let fifo = tmp.path().join("pipe");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success();
    assert!(ok, "mkfifo failed");
    let e = output::write_file(&fifo, &[], b"x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("FIFO"), "{e}");
    // 13. An existing directory: refused, and no temporary file is left behind.
    let d = tmp.path().join("adir");
    std::fs::create_dir(&d).expect("mkdir");
    let before = listing(tmp.path());
    let e = output::write_file(&d, &[], b"x").unwrap_err().to_string();
    assert!(e.contains("directory"), "{e}");
    assert_eq!(
        listing(tmp.path()),
        before,
        "leftovers after a refused write"
    );
    // A symbolic link is followed: the file it names is replaced, the link kept.
    let real = write(&tmp.path().join("real.bin"), b"old");
    let link = tmp.path().join("link.bin");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    output::write_file(&link, &[], b"new").expect("write through link");
    assert!(std::fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&real).expect("read"), b"new");
}

// 2. An output equal to an input (same file by any name, or a file inside the
// model directory) is refused and the input is untouched.
#[test]
fn output_never_overwrites_an_input() {
    let tmp = tmpdir();
    let corpus = write(
        &tmp.path().join("corpus.jsonl"),
        b"{\"_id\":\"1\",\"text\":\"a\"}\n",
    );
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).expect("mkdir");
    let weights = write(&model.join("model.safetensors"), b"weights");
    let hard = tmp.path().join("hardlink.jsonl");
    std::fs::hard_link(&corpus, &hard).expect("hard link");
    let dotted = tmp.path().join(".").join("corpus.jsonl");
    for target in [&corpus, &hard, &dotted, &weights] {
        let e = output::write_file(target, &[&corpus, &model], b"x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("input"), "{}: {e}", target.display());
    }
    assert_eq!(
        std::fs::read(&corpus).expect("read"),
        b"{\"_id\":\"1\",\"text\":\"a\"}\n"
    );
    assert_eq!(std::fs::read(&weights).expect("read"), b"weights");
    // A new file inside the model directory overwrites nothing: allowed.
    output::write_file(&model.join("new.safetensors"), &[&corpus, &model], b"x").expect("new");
    // A directory to be replaced (an index) may not contain an input.
    let e = output::check_not_input(tmp.path(), &[&corpus])
        .unwrap_err()
        .to_string();
    assert!(e.contains("contains the input"), "{e}");
}

// 15 (part). Output files get the umask's permissions, like any new file.
#[test]
fn output_permissions_follow_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tmpdir();
    let plain = tmp.path().join("plain");
    std::fs::File::create(&plain).expect("create");
    let ours = tmp.path().join("ours");
    output::write_file(&ours, &[], b"data").expect("write");
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(
        mode(&ours),
        mode(&plain),
        "mode differs from File::create's"
    );
    // Replacing keeps the umask's permissions too, and leaves nothing behind.
    output::write_file(&ours, &[], b"again").expect("rewrite");
    assert_eq!(listing(tmp.path()), vec!["ours", "plain"]);
}

// 5–8. The reader decides the format by content and reports lines.
#[test]
fn reader_decides_format_by_content_and_names_lines() {
    let tmp = tmpdir();
    // 5. BEIR jsonl named .txt.
    let p = write(
        &tmp.path().join("corpus.txt"),
        b"{\"_id\": \"a7\", \"title\": \"T\", \"text\": \"body\"}\n{\"_id\": 9, \"text\": \"two\"}\n",
    );
    let r = colwgpu::io::read_records(&p).expect("jsonl by content");
    assert_eq!(r[0].id, "a7");
    assert_eq!(r[0].text, "T body");
    assert_eq!(r[1].id, "9");
    // 6. A byte-order mark and CRLF line ends.
    let p = write(
        &tmp.path().join("bom.jsonl"),
        b"\xEF\xBB\xBF{\"_id\": \"1\", \"text\": \"one\"}\r\n{\"_id\": \"2\", \"text\": \"two\"}\r\n",
    );
    let r = colwgpu::io::read_records(&p).expect("BOM + CRLF");
    assert_eq!((r[0].id.as_str(), r[1].text.as_str()), ("1", "two"));
    let p = write(
        &tmp.path().join("bom.txt"),
        b"\xEF\xBB\xBFfirst\r\nsecond\r\n",
    );
    let r = colwgpu::io::read_records(&p).expect("BOM plain");
    assert_eq!(
        (r[0].text.as_str(), r[1].text.as_str()),
        ("first", "second")
    );
    // 7. Invalid UTF-8: the line is named, the message not doubled.
    let p = write(
        &tmp.path().join("bad.txt"),
        b"fine\nalso fine\nbad \xFF byte\n",
    );
    let e = colwgpu::io::read_records(&p).unwrap_err().to_string();
    assert!(e.contains("line 3") && e.contains("UTF-8"), "{e}");
    assert_eq!(e.matches("byte 5").count(), 1, "doubled: {e}");
    assert!(!e.contains("stream did not contain"), "{e}");
    // 8. Blank lines in plain text are skipped; ids stay line numbers.
    let p = write(&tmp.path().join("blank.txt"), b"one\n\n   \ntwo\n");
    let r = colwgpu::io::read_records(&p).expect("blank lines");
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].id.as_str(), r[1].id.as_str()), ("0", "3"));
    // A bad jsonl line is named, whatever the extension.
    let p = write(
        &tmp.path().join("broken.txt"),
        b"{\"_id\": \"1\", \"text\": \"one\"}\n{\"_id\": \"2\"}\n",
    );
    let e = colwgpu::io::read_records(&p).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("text"), "{e}");
    // Only whitespace: no texts.
    let p = write(&tmp.path().join("empty.txt"), b"\n \r\n\t\n");
    let e = colwgpu::io::read_records(&p).unwrap_err().to_string();
    assert!(e.contains("no texts"), "{e}");
}

// 7 (class). OS errors are not doubled by error chains.
#[test]
fn io_errors_are_not_doubled() {
    let e = colwgpu::io::read_records(Path::new("/nonexistent/corpus.jsonl")).unwrap_err();
    let chained = format!("{:#}", anyhow::Error::from(e));
    assert_eq!(chained.matches("os error 2").count(), 1, "{chained}");
    assert!(chained.contains("/nonexistent/corpus.jsonl"), "{chained}");
}

// 9. Empty or whitespace-only queries are refused, by the reader and the encoder.
#[test]
fn empty_queries_are_refused() {
    let tmp = tmpdir();
    let p = write(
        &tmp.path().join("q.jsonl"),
        b"{\"_id\": \"q1\", \"text\": \"fine\"}\n{\"_id\": \"q2\", \"text\": \"  \"}\n",
    );
    let e = colwgpu::io::read_queries(&p).unwrap_err().to_string();
    assert!(
        e.contains("line 2") && e.contains("q2") && e.contains("empty"),
        "{e}"
    );
    // Documents may be empty (they still give their marker tokens).
    assert_eq!(colwgpu::io::read_records(&p).expect("docs").len(), 2);
    assert!(colwgpu::io::check_query_text(" \t", "--query").is_err());
    for device in [colwgpu::Device::Cpu, colwgpu::Device::Gpu] {
        let model = colwgpu::Model::open(common::model_dir(), device).expect("model");
        let e = model.encode_queries(&["ok", ""]).unwrap_err().to_string();
        assert!(
            e.contains("query 1") && e.contains("empty"),
            "{device:?}: {e}"
        );
    }
    // Batch size 0 is refused, not turned into 1.
    let opts = colwgpu::ModelOptions {
        device: colwgpu::Device::Cpu,
        batch_size: 0,
        ..Default::default()
    };
    assert!(colwgpu::Model::open_with(common::model_dir(), &opts).is_err());
}

// 3, 11. Search knobs out of range are refused on both backends (ncells 0
// panicked; ndocs 0 returned nothing; a NaN threshold pruned everything).
#[test]
fn search_knobs_are_validated_on_both_backends() {
    let tmp = tmpdir();
    let dir = tmp.path().join("idx");
    let docs = small_index(&dir);
    let index = Index::open(&dir).expect("open");
    let qlen = 4;
    let queries: Vec<f32> = docs[3][..qlen * DIM].to_vec();
    let base = PlaidParams::for_k(10);
    let cases: Vec<(PlaidParams, usize, &str)> = vec![
        (PlaidParams { ncells: 0, ..base }, 10, "ncells"),
        (PlaidParams { ndocs: 0, ..base }, 10, "ndocs"),
        (PlaidParams { ndocs: 8, ..base }, 10, "ndocs"),
        (
            PlaidParams {
                centroid_score_threshold: f32::NAN,
                ..base
            },
            10,
            "threshold",
        ),
        (
            PlaidParams {
                centroid_score_threshold: 1.5,
                ..base
            },
            10,
            "threshold",
        ),
        (base, 0, "k must be"),
    ];
    for compute in both_computes() {
        let s = Searcher::new(&index, compute.clone()).expect("searcher");
        for (p, k, what) in &cases {
            let opts = SearchOptions {
                k: *k,
                plaid: Some(*p),
                exhaustive: false,
            };
            let e = s.search(&queries, qlen, &opts).unwrap_err();
            assert!(matches!(e, Error::Input(_)), "{p:?}: {e}");
            assert!(e.to_string().contains(what), "{p:?}: {e}");
        }
        // In range: k results (the index has 30 documents); -inf disables pruning.
        let ok = PlaidParams {
            centroid_score_threshold: f32::NEG_INFINITY,
            ..base
        };
        let hits = s
            .search(
                &queries,
                qlen,
                &SearchOptions {
                    k: 10,
                    plaid: Some(ok),
                    exhaustive: false,
                },
            )
            .expect("search");
        assert_eq!(hits[0].len(), 10, "{}", compute.describe());
    }
}

/// A copy of the real model in `dst` (weights symlinked unless replaced).
fn model_copy(dst: &Path, skip: &[&str]) {
    let src = common::model_dir();
    for sub in ["", "1_Dense"] {
        let (s, d) = (src.join(sub), dst.join(sub));
        if skip.contains(&sub) {
            continue;
        }
        std::fs::create_dir_all(&d).expect("mkdir");
        for e in std::fs::read_dir(&s).expect("read_dir").flatten() {
            if e.file_type().expect("type").is_file() {
                std::os::unix::fs::symlink(e.path(), d.join(e.file_name())).expect("symlink");
            }
        }
    }
}

/// Rewrites tensor `name` of safetensors file `path` with one value set to `v`.
fn poison(path: &Path, name: &str, at: usize, v: f32) {
    let bytes = std::fs::read(path).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let mut data = t.data().to_vec();
            if n == name {
                assert_eq!(t.dtype(), safetensors::Dtype::F32);
                data[at * 4..at * 4 + 4].copy_from_slice(&v.to_le_bytes());
            }
            (n, t.dtype(), t.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view"),
            )
        })
        .collect();
    let out = safetensors::serialize(views, None).expect("serialize");
    std::fs::remove_file(path).expect("unlink symlink");
    std::fs::write(path, out).expect("write");
}

// 4. Non-finite weights are refused at load, naming the tensor (the encoder
// wrote NaN vectors before); the check's cost on MiniLM is reported.
#[test]
fn non_finite_weights_are_refused_with_the_tensor_name() {
    let tmp = tmpdir();
    let m = tmp.path().join("nan-head");
    model_copy(&m, &[]);
    poison(
        &m.join("1_Dense/model.safetensors"),
        "linear.weight",
        17,
        f32::NAN,
    );
    let m2 = tmp.path().join("inf-layer");
    model_copy(&m2, &[]);
    let st = std::fs::read(m2.join("model.safetensors")).expect("read");
    let names: Vec<String> = safetensors::SafeTensors::deserialize(&st)
        .expect("st")
        .names()
        .into_iter()
        .map(|s| s.to_string())
        .collect();
    let q = names
        .iter()
        .find(|n| n.ends_with("layer.2.attention.self.query.weight"))
        .expect("query weight")
        .clone();
    poison(&m2.join("model.safetensors"), &q, 1000, f32::INFINITY);
    for device in [
        colwgpu::backend::DeviceChoice::Cpu,
        colwgpu::backend::DeviceChoice::Gpu,
    ] {
        for (dir, tensor) in [(&m, "linear.weight"), (&m2, q.as_str())] {
            let e = colwgpu::model::Encoder::open(dir, device, &Default::default())
                .err()
                .expect("poisoned model loaded")
                .to_string();
            assert!(
                e.contains(tensor) && e.contains("non-finite"),
                "{device:?}: {e}"
            );
        }
    }
    // Cost of the check over every tensor of MiniLM (f32 values as loaded).
    let st = safetensors::SafeTensors::deserialize(&st).expect("st");
    let all: Vec<Vec<f32>> = st
        .tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F32)
        .map(|(_, t)| bytemuck::pod_collect_to_vec(t.data()))
        .collect();
    let n: usize = all.iter().map(|v| v.len()).sum();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let bad = all
            .iter()
            .filter(|v| colwgpu::model::weights::first_non_finite(v).is_some())
            .count();
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(bad, 0);
    }
    eprintln!(
        "non-finite check over MiniLM's {n} weights: {:.2} ms (best of 5)",
        best * 1e3
    );
    assert!(n > 20_000_000);
}

// 10. A head that modules.json declares but that is missing is an error.
#[test]
fn declared_but_missing_head_is_an_error() {
    let tmp = tmpdir();
    let m = tmp.path().join("no-dense");
    model_copy(&m, &["1_Dense"]);
    let e = colwgpu::model::Checkpoint::load(&m)
        .err()
        .expect("loaded without its head")
        .to_string();
    assert!(
        e.contains("modules.json") && e.contains("1_Dense") && e.contains("missing"),
        "{e}"
    );
}

// 12. metadata.json carries its own checksum: every one-byte change is caught.
#[test]
fn every_byte_of_metadata_is_covered() {
    let tmp = tmpdir();
    let dir = tmp.path().join("idx");
    small_index(&dir);
    let p = dir.join("metadata.json");
    let good = std::fs::read(&p).expect("read");
    let text = String::from_utf8_lossy(&good).into_owned();
    assert!(text.contains("\"metadata_crc32\""), "{text}");
    let mut caught = 0;
    for i in 0..good.len() {
        // Two kinds of change per byte: a bit flip, and a plausible digit/space edit.
        for new in [good[i] ^ 0x01, if good[i] == b' ' { b'\t' } else { b' ' }] {
            let mut b = good.clone();
            b[i] = new;
            std::fs::write(&p, &b).expect("write");
            let e = index::read_metadata(&dir);
            assert!(
                e.is_err(),
                "byte {i} ({:?} → {:?}) not caught",
                good[i] as char,
                new as char
            );
            caught += 1;
        }
    }
    std::fs::write(&p, &good).expect("restore");
    Index::open(&dir).expect("restored index opens");
    eprintln!("{caught} one-byte changes of metadata.json, all caught");
    // An index written without the checksum is refused with a clear message.
    let mut v: serde_json::Value = serde_json::from_slice(&good).expect("json");
    v.as_object_mut().expect("object").remove("metadata_crc32");
    std::fs::write(&p, serde_json::to_vec_pretty(&v).expect("json")).expect("write");
    let e = Index::open(&dir).unwrap_err().to_string();
    assert!(e.contains("metadata_crc32") && e.contains("rebuild"), "{e}");
    // seal_metadata re-seals an edited file (how tools and tests edit one).
    let mut b = good.clone();
    index::store::seal_metadata(&mut b).expect("seal");
    assert_eq!(b, good);
}

// 14. One writer per index path: a second fails at once naming the path and
// the holder, or waits; readers are not blocked.
#[test]
fn one_writer_per_index() {
    let tmp = tmpdir();
    let dir = tmp.path().join("idx");
    small_index(&dir);
    let held = index::lock::IndexLock::acquire(&dir, false).expect("lock");
    let e = index::lock::IndexLock::acquire(&dir, false).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&dir.display().to_string())
            && msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    // A build to the same path fails at once and leaves the index as it was.
    let before = std::fs::read(dir.join("metadata.json")).expect("read");
    let docs = vec![vec![0.25f32; DIM * 2]; 3];
    let ids: Vec<String> = (0..3).map(|i| i.to_string()).collect();
    let mut src = InMemorySource {
        dim: DIM,
        docs: &docs,
    };
    let e = build_index_with(
        &mut src,
        &ids,
        &model_info(DIM),
        &dir,
        &IndexOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    assert_eq!(
        std::fs::read(dir.join("metadata.json")).expect("read"),
        before
    );
    // Readers keep working while the lock is held.
    Index::open(&dir).expect("reader during a write");
    // With wait, the second writer proceeds once the first is done.
    let d2 = dir.clone();
    let waiter = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        let l = index::lock::IndexLock::acquire(&d2, true).expect("waited lock");
        drop(l);
        t.elapsed()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(held);
    let waited = waiter.join().expect("thread");
    assert!(waited.as_millis() >= 250, "did not wait: {waited:?}");
    index::lock::IndexLock::acquire(&dir, false).expect("free again");
}

// 15 (part). --adapter matching nothing lists the adapters; auto honours it.
#[test]
fn adapter_choice_is_honoured_and_explained() {
    use colwgpu::gpu::GpuOptions;
    let none = GpuOptions {
        adapter_name: Some("no-such-adapter".into()),
        ..Default::default()
    };
    let Err(e) = colwgpu::gpu::GpuContext::new(&none) else {
        panic!("an adapter matched 'no-such-adapter'");
    };
    let e = e.to_string();
    let first = colwgpu::gpu::list_adapters(&GpuOptions::default()).expect("adapters")[0]
        .name
        .clone();
    assert!(
        e.contains("no-such-adapter") && e.contains(&first) && !e.contains("apt-get"),
        "{e}"
    );
    // auto with an adapter named: that adapter (here the software one), not the CPU.
    let named = GpuOptions {
        adapter_name: Some(first.clone()),
        ..Default::default()
    };
    let ctx = colwgpu::backend::resolve_device(colwgpu::backend::DeviceChoice::Auto, &named)
        .expect("resolve")
        .expect("auto ignored --adapter");
    assert!(ctx.describe().contains(&first), "{}", ctx.describe());
    let Err(e) = colwgpu::backend::resolve_device(colwgpu::backend::DeviceChoice::Auto, &none)
    else {
        panic!("auto ignored a non-matching --adapter");
    };
    let e = e.to_string();
    assert!(e.contains("no-such-adapter"), "{e}");
}
