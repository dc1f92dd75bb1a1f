//! Hostile and careless input against the `colwgpu` binary: every case asserts
//! the exit code, that nothing panicked (no exit 101, no "panicked"), that the
//! message names the problem, and that no existing file changed (contents hashed
//! before and after; a refused command creates no file either).
//! Backend-dependent cases run on `--device cpu` and `--device gpu` (lavapipe).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_colwgpu");

/// Size and CRC-32 of every regular file under `dir` (FIFOs, devices and
/// links are not read).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let t = e.file_type().expect("type");
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let b = std::fs::read(e.path()).expect("read");
                out.insert(e.path(), (b.len() as u64, crc32fast::hash(&b)));
            } else {
                out.insert(e.path(), (u64::MAX, 0));
            }
        }
    }
    out
}

/// The real model's files, by size and modification time (not re-read: 90 MB).
fn model_stamp(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut v = Vec::new();
    for sub in ["", "1_Dense"] {
        for e in std::fs::read_dir(dir.join(sub)).expect("model").flatten() {
            let m = e.metadata().expect("meta");
            if m.is_file() {
                v.push((e.path(), m.len(), m.modified().expect("mtime")));
            }
        }
    }
    v.sort();
    v
}

fn symlink_model(dst: &Path, skip_dense: bool) {
    let src = common::model_dir();
    for sub in ["", "1_Dense"] {
        if sub == "1_Dense" && skip_dense {
            continue;
        }
        std::fs::create_dir_all(dst.join(sub)).expect("mkdir");
        for e in std::fs::read_dir(src.join(sub)).expect("model").flatten() {
            if e.file_type().expect("type").is_file() {
                std::os::unix::fs::symlink(e.path(), dst.join(sub).join(e.file_name()))
                    .expect("symlink");
            }
        }
    }
}

/// `1_Dense/model.safetensors` with one NaN, as a regular file.
fn poison_dense(model: &Path) {
    let p = model.join("1_Dense/model.safetensors");
    let bytes = std::fs::read(&p).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let t = st.tensor("linear.weight").expect("linear.weight");
    let mut data = t.data().to_vec();
    data[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
    let view =
        safetensors::tensor::TensorView::new(t.dtype(), t.shape().to_vec(), &data).expect("view");
    let out = safetensors::serialize([("linear.weight", view)], None).expect("serialize");
    std::fs::remove_file(&p).expect("unlink");
    std::fs::write(&p, out).expect("write");
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
}

impl Fixture {
    fn p(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }
}

fn run(args: &[String]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("MESA_SHADER_CACHE_DIR", {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/mesa-shader-cache")
        })
        .env_remove("COLWGPU_ADAPTER")
        .output()
        .expect("run colwgpu");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("f");
    std::fs::create_dir(&root).expect("mkdir");
    let w = |name: &str, bytes: &[u8]| std::fs::write(root.join(name), bytes).expect("write");
    let corpus = br#"{"_id": "d1", "title": "Cats", "text": "Cats sleep most of the day."}
{"_id": "d2", "text": "The stock market fell sharply on Monday."}
{"_id": "d3", "text": "Photosynthesis turns light into chemical energy."}
{"_id": "d4", "text": "A recipe for bread: flour, water, salt and yeast."}
{"_id": "d5", "text": "Glaciers are retreating as temperatures rise."}
{"_id": "d6", "text": "The violin has four strings tuned in fifths."}
"#;
    w("corpus.jsonl", corpus);
    w("corpus-named.txt", corpus);
    w(
        "queries.jsonl",
        b"{\"_id\": \"q1\", \"text\": \"how do plants make energy\"}\n",
    );
    w(
        "queries-bom-crlf.jsonl",
        b"\xEF\xBB\xBF{\"_id\": \"q1\", \"text\": \"sleeping cats\"}\r\n\r\n",
    );
    w(
        "queries-empty.jsonl",
        b"{\"_id\": \"q1\", \"text\": \"fine\"}\n{\"_id\": \"q2\", \"text\": \" \"}\n",
    );
    w("qrels.tsv", b"query-id\tcorpus-id\tscore\nq1\td3\t1\n");
    w("bad-utf8.txt", b"fine\nalso fine\nbad \xFF byte\n");
    w("blank.txt", b"\n  \r\n\t\n");
    w(
        "no-text.jsonl",
        b"{\"_id\": \"1\", \"text\": \"ok\"}\n{\"_id\": \"2\"}\n",
    );
    w(
        "object-id.jsonl",
        b"{\"_id\": {\"a\": 1}, \"text\": \"x\"}\n",
    );
    std::fs::hard_link(
        root.join("corpus.jsonl"),
        root.join("corpus-hardlink.jsonl"),
    )
    .expect("hard link");
    std::fs::create_dir(root.join("a-directory")).expect("mkdir");
    std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling.safetensors"))
        .expect("symlink");
    let ok = Command::new("mkfifo")
        .arg(root.join("fifo"))
        .status()
        .expect("mkfifo")
        .success();
    assert!(ok);
    // Models: the real one (read only), a copy with a NaN in its head, a copy
    // whose modules.json declares a head that is missing, a copy with a real
    // config.json (to try writing over).
    let model = common::model_dir();
    symlink_model(&root.join("m-nan"), false);
    poison_dense(&root.join("m-nan"));
    symlink_model(&root.join("m-nohead"), true);
    symlink_model(&root.join("m-copy"), false);
    std::fs::remove_file(root.join("m-copy/config.json")).expect("unlink");
    std::fs::copy(model.join("config.json"), root.join("m-copy/config.json")).expect("copy");
    let f = Fixture {
        _tmp: tmp,
        root,
        model,
    };
    // An index built by the CLI, and a copy with one byte of metadata changed.
    let (code, _, err) = run(&args(&[
        "index",
        "--model",
        &f.model.display().to_string(),
        "--corpus",
        &f.p("corpus.jsonl"),
        "--index",
        &f.p("idx"),
        "--device",
        "cpu",
    ]));
    assert_eq!(code, 0, "building the fixture index: {err}");
    let bad = f.root.join("idx-badmeta");
    std::fs::create_dir(&bad).expect("mkdir");
    for e in std::fs::read_dir(f.root.join("idx"))
        .expect("idx")
        .flatten()
    {
        std::fs::copy(e.path(), bad.join(e.file_name())).expect("copy");
    }
    let meta = std::fs::read_to_string(bad.join("metadata.json")).expect("meta");
    assert!(meta.contains("\"created_by\": \"colwgpu"));
    std::fs::write(
        bad.join("metadata.json"),
        meta.replacen("\"created_by\": \"colwgpu", "\"created_by\": \"colwgpX", 1),
    )
    .expect("write");
    f
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

struct Case {
    name: String,
    args: Vec<String>,
    code: i32,
    /// Substrings stderr must contain (all of them).
    expect: Vec<String>,
}

fn case(name: &str, args: Vec<String>, code: i32, expect: &[&str]) -> Case {
    Case {
        name: name.into(),
        args,
        code,
        expect: expect.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn hostile_input_table() {
    let f = fixture();
    let m = f.model.display().to_string();
    let root = f.root.display().to_string();
    let enc = |extra: &[&str]| {
        let mut a = args(&["encode", "--model", &m, "--device", "cpu"]);
        a.extend(args(extra));
        a
    };
    let search = |device: &str, extra: &[&str]| {
        let mut a = args(&[
            "search",
            "--index",
            &f.p("idx"),
            "--model",
            &m,
            "--device",
            device,
        ]);
        a.extend(args(extra));
        a
    };
    let index = |extra: &[&str]| {
        let mut a = args(&["index", "--model", &m, "--device", "cpu"]);
        a.extend(args(extra));
        a
    };
    let (docs, queries) = (f.p("corpus.jsonl"), f.p("queries.jsonl"));
    let eval = |extra: &[&str]| {
        let mut a = args(&[
            "eval",
            "--index",
            &f.p("idx"),
            "--model",
            &m,
            "--queries",
            &queries,
            "--qrels",
            &f.p("qrels.tsv"),
            "--device",
            "cpu",
        ]);
        a.extend(args(extra));
        a
    };
    let mut cases = vec![
        // -- precision: each reduced mode on its own backend, named when refused.
        case(
            "f16 on the cpu",
            enc(&[
                "--docs",
                &docs,
                "--out",
                &f.p("p.safetensors"),
                "--precision",
                "f16",
            ]),
            1,
            &["--precision f16", "gpu backend", "--device gpu"],
        ),
        case(
            "unknown precision",
            enc(&[
                "--docs",
                &docs,
                "--out",
                &f.p("p.safetensors"),
                "--precision",
                "f8",
            ]),
            1,
            &["unknown precision 'f8'", "f16"],
        ),
        // -- outputs: never a device, FIFO, directory or input; nothing left behind.
        case(
            "out /dev/full",
            enc(&["--docs", &docs, "--out", "/dev/full"]),
            1,
            &["/dev/full", "character device"],
        ),
        case(
            "out /dev/null",
            enc(&["--docs", &docs, "--out", "/dev/null"]),
            1,
            &["/dev/null", "character device"],
        ),
        case(
            "out FIFO",
            enc(&["--docs", &docs, "--out", &f.p("fifo")]),
            1,
            &["FIFO"],
        ),
        case(
            "out directory",
            enc(&["--docs", &docs, "--out", &f.p("a-directory")]),
            1,
            &["a-directory", "directory"],
        ),
        case(
            "out = --docs",
            enc(&["--docs", &docs, "--out", &docs]),
            1,
            &["corpus.jsonl", "input"],
        ),
        case(
            "out = hard link of --docs",
            enc(&["--docs", &docs, "--out", &f.p("corpus-hardlink.jsonl")]),
            1,
            &["input"],
        ),
        case(
            "out = --queries",
            enc(&["--queries", &queries, "--out", &queries]),
            1,
            &["queries.jsonl", "input"],
        ),
        case(
            "out inside --model",
            args(&[
                "encode",
                "--model",
                &f.p("m-copy"),
                "--device",
                "cpu",
                "--docs",
                &docs,
                "--out",
                &f.p("m-copy/config.json"),
            ]),
            1,
            &["config.json", "input"],
        ),
        case(
            "out dangling symlink",
            enc(&["--docs", &docs, "--out", &f.p("dangling.safetensors")]),
            1,
            &["symbolic link"],
        ),
        case(
            "out in missing dir",
            enc(&[
                "--docs",
                &docs,
                "--out",
                &f.p("no-such-dir/out.safetensors"),
            ]),
            1,
            &["no-such-dir", "No such file"],
        ),
        case(
            "eval --run /dev/full",
            eval(&["--run", "/dev/full"]),
            1,
            &["/dev/full", "character device"],
        ),
        case(
            "eval --run = --queries",
            eval(&["--run", &queries]),
            1,
            &["queries.jsonl", "input"],
        ),
        case(
            "eval --run directory",
            eval(&["--run", &f.p("a-directory")]),
            1,
            &["directory"],
        ),
        case(
            "index on /dev/null",
            index(&["--corpus", &docs, "--index", "/dev/null"]),
            1,
            &["/dev/null", "character device"],
        ),
        case(
            "index on a file",
            index(&["--corpus", &docs, "--index", &f.p("corpus-named.txt")]),
            1,
            &["not a colwgpu index"],
        ),
        case(
            "index on dir holding corpus",
            index(&["--corpus", &docs, "--index", &root]),
            1,
            &["contains the input"],
        ),
        case(
            "index on the model",
            index(&["--corpus", &docs, "--index", &f.p("m-copy")]),
            1,
            &["m-copy"],
        ),
        // -- inputs.
        case(
            "invalid UTF-8",
            enc(&[
                "--docs",
                &f.p("bad-utf8.txt"),
                "--out",
                &f.p("o.safetensors"),
            ]),
            1,
            &["bad-utf8.txt", "line 3", "UTF-8"],
        ),
        case(
            "blank-only file",
            enc(&["--docs", &f.p("blank.txt"), "--out", &f.p("o.safetensors")]),
            1,
            &["no texts"],
        ),
        case(
            "jsonl line without text",
            enc(&[
                "--docs",
                &f.p("no-text.jsonl"),
                "--out",
                &f.p("o.safetensors"),
            ]),
            1,
            &["line 2", "\"text\""],
        ),
        case(
            "_id an object",
            enc(&[
                "--docs",
                &f.p("object-id.jsonl"),
                "--out",
                &f.p("o.safetensors"),
            ]),
            1,
            &["line 1", "_id"],
        ),
        case(
            "missing input",
            enc(&["--docs", &f.p("nope.jsonl"), "--out", &f.p("o.safetensors")]),
            1,
            &["nope.jsonl", "No such file"],
        ),
        case(
            "input is a directory",
            enc(&[
                "--docs",
                &f.p("a-directory"),
                "--out",
                &f.p("o.safetensors"),
            ]),
            1,
            &["a-directory", "directory"],
        ),
        case(
            "empty query in file",
            enc(&[
                "--queries",
                &f.p("queries-empty.jsonl"),
                "--out",
                &f.p("o.safetensors"),
            ]),
            1,
            &["line 2", "q2", "empty"],
        ),
        case(
            "search --query empty",
            search("cpu", &["--query", ""]),
            1,
            &["--query", "empty"],
        ),
        case(
            "search --query blank",
            search("cpu", &["--query", "  \t "]),
            1,
            &["--query", "empty"],
        ),
        case(
            "search empty query file",
            search("cpu", &["--queries", &f.p("queries-empty.jsonl")]),
            1,
            &["q2", "empty"],
        ),
        // -- numbers, at parse time (exit 2) with their range.
        case(
            "--ncells 0",
            search("cpu", &["--query", "cats", "--ncells", "0"]),
            2,
            &["--ncells", "at least 1"],
        ),
        case(
            "--ncells huge",
            search(
                "cpu",
                &["--query", "cats", "--ncells", "18446744073709551616"],
            ),
            2,
            &["--ncells", "whole number"],
        ),
        case(
            "--ndocs 0",
            search("cpu", &["--query", "cats", "--ndocs", "0"]),
            2,
            &["--ndocs", "at least 1"],
        ),
        case(
            "-k 0",
            search("cpu", &["--query", "cats", "-k", "0"]),
            2,
            &["at least 1"],
        ),
        case(
            "threshold nan",
            search(
                "cpu",
                &["--query", "cats", "--centroid-score-threshold", "nan"],
            ),
            2,
            &["--centroid-score-threshold", "-inf to 1"],
        ),
        case(
            "threshold 2",
            search(
                "cpu",
                &["--query", "cats", "--centroid-score-threshold", "2"],
            ),
            2,
            &["-inf to 1"],
        ),
        case(
            "threshold text",
            search(
                "cpu",
                &["--query", "cats", "--centroid-score-threshold", "high"],
            ),
            2,
            &["not a number"],
        ),
        case(
            "search --batch-size 0",
            search("cpu", &["--query", "cats", "--batch-size", "0"]),
            2,
            &["--batch-size", "at least 1"],
        ),
        case(
            "encode --batch-size 0",
            enc(&[
                "--docs",
                &docs,
                "--out",
                &f.p("o.safetensors"),
                "--batch-size",
                "0",
            ]),
            2,
            &["--batch-size", "at least 1"],
        ),
        case(
            "encode --batch-size -1",
            enc(&[
                "--docs",
                &docs,
                "--out",
                &f.p("o.safetensors"),
                "--batch-size=-1",
            ]),
            2,
            &["--batch-size", "whole number"],
        ),
        case(
            "encode --limit 0",
            enc(&[
                "--docs",
                &docs,
                "--out",
                &f.p("o.safetensors"),
                "--limit",
                "0",
            ]),
            2,
            &["--limit", "at least 1"],
        ),
        case(
            "index --nbits 3",
            index(&[
                "--corpus",
                &docs,
                "--index",
                &f.p("new.index"),
                "--nbits",
                "3",
            ]),
            2,
            &["--nbits", "1, 2, 4"],
        ),
        case(
            "index --kmeans-iters 0",
            index(&[
                "--corpus",
                &docs,
                "--index",
                &f.p("new.index"),
                "--kmeans-iters",
                "0",
            ]),
            2,
            &["--kmeans-iters", "at least 1"],
        ),
        case(
            "index --centroids 0",
            index(&[
                "--corpus",
                &docs,
                "--index",
                &f.p("new.index"),
                "--centroids",
                "0",
            ]),
            2,
            &["--centroids", "at least 1"],
        ),
        case(
            "--device bogus",
            args(&[
                "encode",
                "--model",
                &m,
                "--docs",
                &docs,
                "--out",
                &f.p("o.safetensors"),
                "--device",
                "tpu",
            ]),
            1,
            &["tpu", "auto, cpu or gpu"],
        ),
        // -- the model.
        case(
            "model missing",
            args(&[
                "encode",
                "--model",
                &f.p("no-model"),
                "--docs",
                &docs,
                "--out",
                &f.p("o.safetensors"),
                "--device",
                "cpu",
            ]),
            1,
            &["no-model"],
        ),
        case(
            "declared head missing",
            args(&[
                "encode",
                "--model",
                &f.p("m-nohead"),
                "--docs",
                &docs,
                "--out",
                &f.p("o.safetensors"),
                "--device",
                "cpu",
            ]),
            1,
            &["modules.json", "1_Dense", "missing"],
        ),
        // -- the index.
        case(
            "metadata one byte changed",
            args(&[
                "search",
                "--index",
                &f.p("idx-badmeta"),
                "--model",
                &m,
                "--query",
                "cats",
                "--device",
                "cpu",
            ]),
            1,
            &["metadata.json", "checksum"],
        ),
        case(
            "index not there",
            args(&[
                "search",
                "--index",
                &f.p("no.index"),
                "--model",
                &m,
                "--query",
                "cats",
                "--device",
                "cpu",
            ]),
            1,
            &["no.index", "no index"],
        ),
    ];
    // Cases where a backend is involved, on both.
    for device in ["cpu", "gpu"] {
        cases.push(case(
            &format!("ndocs below 4k ({device})"),
            search(device, &["--query", "cats", "--ndocs", "8", "-k", "10"]),
            1,
            &["ndocs 8", "at least"],
        ));
        cases.push(case(
            &format!("NaN in the head ({device})"),
            args(&[
                "encode",
                "--model",
                &f.p("m-nan"),
                "--docs",
                &docs,
                "--out",
                &f.p("o.safetensors"),
                "--device",
                device,
            ]),
            1,
            &["linear.weight", "non-finite"],
        ));
        cases.push(case(
            &format!("out /dev/full ({device})"),
            args(&[
                "encode",
                "--model",
                &m,
                "--docs",
                &docs,
                "--out",
                "/dev/full",
                "--device",
                device,
            ]),
            1,
            &["character device"],
        ));
    }
    cases.push(case(
        "--adapter matching nothing",
        args(&[
            "encode",
            "--model",
            &m,
            "--docs",
            &docs,
            "--out",
            &f.p("o.safetensors"),
            "--device",
            "gpu",
            "--adapter",
            "no-such-gpu",
        ]),
        1,
        &["no-such-gpu", "adapters found"],
    ));
    cases.push(case(
        "auto with --adapter matching nothing",
        args(&[
            "encode",
            "--model",
            &m,
            "--docs",
            &docs,
            "--out",
            &f.p("o.safetensors"),
            "--adapter",
            "no-such-gpu",
        ]),
        1,
        &["no-such-gpu"],
    ));
    assert!(cases.len() >= 40, "{} cases", cases.len());

    let model_before = model_stamp(&f.model);
    let t0 = std::time::Instant::now();
    for c in &cases {
        let before = snapshot(&f.root);
        let (code, _out, err) = run(&c.args);
        assert!(
            code != 101 && !err.contains("panicked"),
            "{}: panicked:\n{err}",
            c.name
        );
        assert_eq!(code, c.code, "{}: exit code; stderr:\n{err}", c.name);
        for e in &c.expect {
            assert!(
                err.contains(e.as_str()),
                "{}: stderr lacks {e:?}:\n{err}",
                c.name
            );
        }
        assert!(
            err.matches("os error").count() <= 1,
            "{}: doubled OS error:\n{err}",
            c.name
        );
        assert_eq!(snapshot(&f.root), before, "{}: files changed", c.name);
        for dev in ["/dev/null", "/dev/full"] {
            assert!(
                !std::fs::metadata(dev).expect(dev).is_file(),
                "{}: {dev} replaced",
                c.name
            );
        }
    }
    assert_eq!(model_stamp(&f.model), model_before, "the model changed");
    eprintln!(
        "{} hostile cases in {:.1} s",
        cases.len(),
        t0.elapsed().as_secs_f64()
    );
}

/// What should work does: jsonl by content, BOM + CRLF, and a second writer
/// refused while the first holds the lock (cpu).
#[test]
fn accepted_inputs_and_the_writer_lock() {
    let f = fixture();
    let m = f.model.display().to_string();
    // jsonl named .txt: ids from the records, not line numbers.
    let out = f.p("named.safetensors");
    let out_path = out.clone();
    let (code, _, err) = run(&args(&[
        "encode",
        "--model",
        &m,
        "--docs",
        &f.p("corpus-named.txt"),
        "--out",
        &out,
        "--device",
        "cpu",
    ]));
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(&out).expect("output");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors");
    let ids = meta.metadata().as_ref().expect("metadata")["ids"].clone();
    assert_eq!(ids, r#"["d1","d2","d3","d4","d5","d6"]"#);
    // A BOM and CRLF.
    let (code, _, err) = run(&args(&[
        "search",
        "--index",
        &f.p("idx"),
        "--model",
        &m,
        "--queries",
        &f.p("queries-bom-crlf.jsonl"),
        "--device",
        "cpu",
        "--json",
    ]));
    assert_eq!(code, 0, "{err}");
    // One writer per index: a second fails at once, naming the path and holder.
    let before = snapshot(&f.root.join("idx"));
    let lock = colwgpu::index::lock::IndexLock::acquire(&f.root.join("idx"), false).expect("lock");
    let (code, _, err) = run(&args(&[
        "index",
        "--model",
        &m,
        "--corpus",
        &f.p("corpus.jsonl"),
        "--index",
        &f.p("idx"),
        "--device",
        "cpu",
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("being written") && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    // Readers keep working meanwhile.
    let (code, _, err) = run(&args(&[
        "search",
        "--index",
        &f.p("idx"),
        "--model",
        &m,
        "--query",
        "cats",
        "--device",
        "cpu",
    ]));
    assert_eq!(code, 0, "{err}");
    // With --wait, a second writer waits for the first, then replaces the index.
    let mut waiter = Command::new(BIN)
        .args(args(&[
            "index",
            "--model",
            &m,
            "--corpus",
            &f.p("corpus.jsonl"),
            "--index",
            &f.p("idx"),
            "--device",
            "cpu",
            "--wait",
            "--json",
        ]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(
        waiter.try_wait().expect("try_wait").is_none(),
        "--wait did not wait for the lock"
    );
    assert_eq!(snapshot(&f.root.join("idx")), before);
    drop(lock);
    let out = waiter.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        snapshot(&f.root.join("idx")),
        before,
        "the index was not rebuilt"
    );
    // Outputs get the umask's permissions (a file made by File::create here).
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    std::fs::File::create(f.root.join("plain")).expect("create");
    assert_eq!(mode(Path::new(&out_path)), mode(&f.root.join("plain")));
}
