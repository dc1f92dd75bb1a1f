//! Fuzzing of the three parsers that take a user's bytes: the corpus/queries
//! reader, the model loader (`config.json`, `modules.json`, the settings, the
//! safetensors headers and values) and `Index::open` (every file of an index,
//! `metadata.json` re-sealed so that mutations reach the structural checks).
//!
//! A seeded byte-mutation generator (bit flips, interesting bytes and numbers,
//! dictionary tokens, deletions, duplications, truncation) runs on valid seed
//! inputs; every outcome must be `Ok` or a typed `Err`, never a panic, and an
//! index that opens must also be searchable. A panicking input is saved under
//! `target/fuzz-crashes/` and named in the failure; add it to the regression
//! cases below.
//!
//! In the test suite each target runs a few hundred cases (seconds).
//! `scripts/fuzz.sh` runs them for longer: `COLWGPU_FUZZ_SECONDS=600` per target,
//! `COLWGPU_FUZZ_SEED` to vary the stream.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use colwgpu::backend::Compute;
use colwgpu::index::{
    build_index_with, InMemorySource, Index, IndexOptions, ModelInfo, OpenOptions,
};
use colwgpu::search::{SearchOptions, Searcher};
use common::Rng;

/// How long a target runs: `COLWGPU_FUZZ_SECONDS`, else `cases` cases.
struct Budget {
    deadline: Option<Instant>,
    cases: u64,
}

impl Budget {
    fn new(cases: u64) -> Self {
        let secs = std::env::var("COLWGPU_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        Self {
            deadline: secs.map(|s| Instant::now() + Duration::from_secs(s)),
            cases,
        }
    }
    fn more(&self, done: u64) -> bool {
        match self.deadline {
            Some(d) => Instant::now() < d,
            None => done < self.cases,
        }
    }
}

fn seed() -> u64 {
    std::env::var("COLWGPU_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed)
}

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "3",
    "4",
    "7",
    "255",
    "65536",
    "65537",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "1e309",
    "-1e309",
    "NaN",
    "1.5",
    "9999999999999",
    "null",
    "true",
    "\"\"",
    "[]",
    "{}",
];

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\n",
    b"\r\n",
    b"\xEF\xBB\xBF",
    b"\xFF",
    b"\xC3",
    b"\x00",
    b"\"_id\"",
    b"\"text\"",
    b"\"title\"",
    b"{\"_id\": \"x\", \"text\": \"y\"}\n",
    b"\"dtype\":\"F16\"",
    b"\"dtype\":\"I64\"",
    b"\"shape\":[]",
    b"\"shape\":[0]",
    b"\"data_offsets\":[0,0]",
    b"\"__metadata__\":{}",
];

/// One to four random edits of `input`.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    let edits = 1 + rng.below(4);
    for _ in 0..edits {
        let len = b.len() as u64;
        let at = rng.below(len + 1) as usize;
        match rng.below(9) {
            0 if !b.is_empty() => {
                let i = rng.below(len) as usize;
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                const BYTES: &[u8] = b"\x00\xFF\x7F\x80\"{}[]\n\r09-., :\\e";
                let i = rng.below(len) as usize;
                b[i] = BYTES[rng.below(BYTES.len() as u64) as usize];
            }
            2 if !b.is_empty() => {
                let n = 1 + rng.below(16.min(len)) as usize;
                let i = rng.below(len) as usize;
                b.drain(i..(i + n).min(b.len()));
            }
            3 => {
                let t = TOKENS[rng.below(TOKENS.len() as u64) as usize];
                b.splice(at..at, t.iter().copied());
            }
            4 if !b.is_empty() => {
                let i = rng.below(len) as usize;
                let n = 1 + rng.below(64.min(len - i as u64)) as usize;
                let chunk = b[i..i + n].to_vec();
                b.splice(at..at, chunk);
            }
            5 => b.truncate(at),
            6 => {
                // Replace the run of ASCII digits at or after `at` by a number.
                if let Some(s) = (at..b.len()).find(|&i| b[i].is_ascii_digit()) {
                    let e = (s..b.len())
                        .find(|&i| !b[i].is_ascii_digit())
                        .unwrap_or(b.len());
                    let n = NUMBERS[rng.below(NUMBERS.len() as u64) as usize];
                    b.splice(s..e, n.bytes());
                }
            }
            7 => {
                let n = 1 + rng.below(8) as usize;
                let r: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                b.splice(at..at, r);
            }
            _ => {}
        }
    }
    b
}

/// Runs `case` on mutated inputs until the budget is spent; a panic saves the
/// input and fails naming it.
/// `case` returns whether the input was accepted (parsed / opened).
fn run(target: &str, cases: u64, mut case: impl FnMut(&mut Rng) -> bool) -> u64 {
    let budget = Budget::new(cases);
    let mut rng = Rng::new(seed() ^ target.len() as u64);
    let mut done = 0u64;
    let mut accepted = 0u64;
    let start = Instant::now();
    while budget.more(done) {
        // Each case records its input (`remember`) before using it, so a
        // panic can save it.
        let result = catch_unwind(AssertUnwindSafe(|| case(&mut rng)));
        if let Ok(true) = result {
            accepted += 1;
        }
        if let Err(p) = result {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{target}-seed{}-case{done}.bin", seed()));
            if let Some(bytes) = LAST_INPUT.with(|l| l.borrow().clone()) {
                let _ = std::fs::write(&path, bytes);
            }
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "fuzz target {target} panicked at case {done} (seed {}): {msg}; input saved to {}",
                seed(),
                path.display()
            );
        }
        done += 1;
    }
    eprintln!(
        "fuzz {target}: {done} cases in {:.1} s, no panic ({accepted} accepted, {} refused \
         with an error)",
        start.elapsed().as_secs_f64(),
        done - accepted
    );
    done
}

thread_local! {
    static LAST_INPUT: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

fn remember(bytes: &[u8]) {
    LAST_INPUT.with(|l| *l.borrow_mut() = Some(bytes.to_vec()));
    // An abort (allocation failure) cannot be caught: in long runs the input
    // of the running case is also on disk.
    if std::env::var_os("COLWGPU_FUZZ_SECONDS").is_some() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("last-input.bin"), bytes);
    }
}

// ------------------------------------------------------------- the reader ---

const READER_SEEDS: &[&[u8]] = &[
    b"{\"_id\": \"d1\", \"title\": \"A title\", \"text\": \"Some text.\"}\n{\"_id\": 2, \"text\": \"More\"}\n",
    b"\xEF\xBB\xBF{\"_id\": \"q1\", \"text\": \"a query\"}\r\n\r\n{\"_id\": \"q2\", \"text\": \"b\", \"title\": null}\r\n",
    b"first line of text\nsecond line\n\n   \nthird \xC3\xA9t\xC3\xA9\n",
    b"\xEF\xBB\xBFplain\r\ntext\r\n",
];

fn reader_case(dir: &Path, rng: &mut Rng) -> bool {
    let seed = READER_SEEDS[rng.below(READER_SEEDS.len() as u64) as usize];
    let bytes = mutate(rng, seed);
    remember(&bytes);
    let ext = ["txt", "jsonl", "tsv"][rng.below(3) as usize];
    let path = dir.join(format!("input.{ext}"));
    std::fs::write(&path, &bytes).expect("write");
    let docs = colwgpu::io::read_records(&path);
    if let Ok(r) = &docs {
        assert!(!r.is_empty());
    }
    if let Ok(r) = colwgpu::io::read_queries(&path) {
        assert!(r.iter().all(|q| !q.text.trim().is_empty()));
    }
    docs.is_ok()
}

#[test]
fn fuzz_reader() {
    let tmp = tempfile::tempdir().expect("tmp");
    run("reader", 3000, |rng| reader_case(tmp.path(), rng));
}

// ------------------------------------------------------- the model loader ---

/// A tiny PyLate-layout checkpoint (no tokenizer: loading ends with
/// "tokenizer.json not found" once everything else parsed): the real model's
/// tensor names for one layer, at hidden size 8.
struct TinyModel {
    config: Vec<u8>,
    weights: Vec<u8>,
    dense: Vec<u8>,
    modules: Vec<u8>,
    settings: Vec<u8>,
}

fn tiny_model() -> TinyModel {
    let real = std::fs::read(common::model_dir().join("model.safetensors")).expect("model");
    let st = safetensors::SafeTensors::deserialize(&real).expect("safetensors");
    let map = |d: usize| match d {
        384 => 8,
        1536 => 16,
        30522 => 16,
        512 => 40,
        other => other,
    };
    let mut rng = Rng::new(9);
    let owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.contains("encoder.layer.") || n.contains("encoder.layer.0."))
        .map(|(n, t)| {
            let shape: Vec<usize> = t.shape().iter().map(|&d| map(d)).collect();
            let count: usize = shape.iter().product();
            let bytes = if t.dtype() == safetensors::Dtype::F32 {
                rng.vec(count, 0.1)
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            } else {
                vec![0u8; count * t.dtype().bitsize() / 8]
            };
            (n, t.dtype(), shape, bytes)
        })
        .collect();
    let ser = |owned: &[(String, safetensors::Dtype, Vec<usize>, Vec<u8>)]| {
        let views: Vec<(String, safetensors::tensor::TensorView)> = owned
            .iter()
            .map(|(n, d, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view"),
                )
            })
            .collect();
        safetensors::serialize(views, None).expect("serialize")
    };
    let dense_w: Vec<u8> = rng
        .vec(4 * 8, 0.3)
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    TinyModel {
        config: br#"{"model_type": "bert", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 1,
 "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
 "max_position_embeddings": 40, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
 "position_embedding_type": "absolute"}"#
            .to_vec(),
        weights: ser(&owned),
        dense: ser(&[(
            "linear.weight".into(),
            safetensors::Dtype::F32,
            vec![4, 8],
            dense_w,
        )]),
        modules: br#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
 {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}]"#
            .to_vec(),
        settings: br#"{"query_prefix": "[unused0]", "document_prefix": "[unused1]", "query_length": 32,
 "document_length": 180, "attend_to_expansion_tokens": false, "skiplist_words": ["!", "."]}"#
            .to_vec(),
    }
}

/// Mutates the header of a safetensors file (length prefix and JSON), or
/// rarely anything in it.
fn mutate_safetensors(rng: &mut Rng, file: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) as usize;
    if rng.below(8) == 0 {
        return mutate(rng, file);
    }
    let head = mutate(rng, &file[..8 + n]);
    let mut out = head;
    out.extend_from_slice(&file[8 + n..]);
    out
}

/// Found by fuzzing: `"num_hidden_layers": 4294967295` made the loader
/// reserve 2 TB for the layers and abort (allocation failure).
#[test]
fn regression_huge_layer_count() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("model");
    std::fs::create_dir_all(dir.join("1_Dense")).expect("mkdir");
    let m = tiny_model();
    for (name, bytes) in [
        ("model.safetensors", &m.weights),
        ("1_Dense/model.safetensors", &m.dense),
        ("modules.json", &m.modules),
    ] {
        std::fs::write(dir.join(name), bytes).expect("write");
    }
    let config = String::from_utf8(m.config).expect("utf-8");
    for (from, to, field) in [
        (
            "\"num_hidden_layers\": 1",
            "\"num_hidden_layers\": 4294967295",
            "num_hidden_layers",
        ),
        ("\"vocab_size\": 16", "\"vocab_size\": 0", "vocab_size"),
        (
            "\"layer_norm_eps\": 1e-12",
            "\"layer_norm_eps\": -1",
            "layer_norm_eps",
        ),
    ] {
        std::fs::write(dir.join("config.json"), config.replace(from, to)).expect("write");
        let e = colwgpu::model::Checkpoint::load(&dir)
            .err()
            .expect("loaded")
            .to_string();
        assert!(e.contains(field) && e.contains("expected"), "{e}");
    }
}

#[test]
fn fuzz_model_loader() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("model");
    std::fs::create_dir_all(dir.join("1_Dense")).expect("mkdir");
    let m = tiny_model();
    let files: [(&str, &Vec<u8>); 5] = [
        ("config.json", &m.config),
        ("model.safetensors", &m.weights),
        ("1_Dense/model.safetensors", &m.dense),
        ("modules.json", &m.modules),
        ("config_sentence_transformers.json", &m.settings),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).expect("write");
    }
    // The unmutated tiny model parses to the end (the tokenizer is missing).
    let e = colwgpu::model::Checkpoint::load(&dir)
        .err()
        .expect("no tokenizer")
        .to_string();
    assert!(e.contains("tokenizer.json"), "seed model invalid: {e}");
    run("model", 1500, |rng| {
        let (name, pristine) = files[rng.below(files.len() as u64) as usize];
        let bytes = if name.ends_with(".safetensors") {
            mutate_safetensors(rng, pristine)
        } else {
            mutate(rng, pristine)
        };
        remember(&bytes);
        std::fs::write(dir.join(name), &bytes).expect("write");
        // Loading ends at the missing tokenizer when everything else parsed.
        let reached_end = match colwgpu::model::Checkpoint::load(&dir) {
            Ok(_) => true,
            Err(e) => e.to_string().contains("tokenizer.json not found"),
        };
        std::fs::write(dir.join(name), pristine).expect("restore");
        reached_end
    });
}

// -------------------------------------------------------------- the index ---

const DIM: usize = 16;

fn seed_index(dir: &Path) {
    let mut rng = Rng::new(77);
    let docs: Vec<Vec<f32>> = (0..24)
        .map(|i| {
            let len = if i == 5 { 0 } else { 1 + i % 6 };
            let mut v = Vec::new();
            for _ in 0..len {
                let x = rng.vec(DIM, 1.0);
                let n = x.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-6);
                v.extend(x.iter().map(|a| a / n));
            }
            v
        })
        .collect();
    let ids: Vec<String> = (0..docs.len()).map(|i| format!("doc{i}")).collect();
    let mut src = InMemorySource {
        dim: DIM,
        docs: &docs,
    };
    let model = ModelInfo {
        name: "fuzz".into(),
        fingerprint: "crc32:00000000".into(),
        dim: DIM,
        path: None,
    };
    let opts = IndexOptions {
        num_centroids: Some(8),
        ..Default::default()
    };
    build_index_with(&mut src, &ids, &model, dir, &opts, &mut |_| {}).expect("seed index");
}

/// Uses every accessor of an index that opened: nothing may panic.
fn exercise(index: &Index) {
    for d in 0..index.num_docs() {
        let _ = index.doc_codes(d);
        let _ = index.doc_residuals(d);
    }
    for c in 0..index.num_centroids() {
        let _ = index.ivf_list(c);
    }
    let all: Vec<u32> = (0..index.num_docs() as u32).collect();
    let _ = index.decompress_docs(&Compute::Cpu, &all);
    if let Ok(s) = Searcher::new(index, Compute::Cpu) {
        let q: Vec<f32> = (0..3 * index.dim())
            .map(|i| ((i % 5) as f32) * 0.2)
            .collect();
        for exhaustive in [false, true] {
            let _ = s.search(
                &q,
                3,
                &SearchOptions {
                    k: 5,
                    plaid: None,
                    exhaustive,
                },
            );
        }
    }
}

#[test]
fn fuzz_index_open() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("idx");
    seed_index(&dir);
    let names: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let pristine: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(dir.join(n)).expect("read"))
        .collect();
    let meta_i = names
        .iter()
        .position(|n| n == "metadata.json")
        .expect("metadata");
    exercise(&Index::open(&dir).expect("seed index opens"));
    run("index", 1500, |rng| {
        let i = rng.below(names.len() as u64) as usize;
        let bytes = mutate(rng, &pristine[i]);
        remember(&bytes);
        std::fs::write(dir.join(&names[i]), &bytes).expect("write");
        let mut verify = true;
        if i == meta_i {
            // Re-seal most edits so that they reach the checks behind the checksum.
            if rng.below(4) != 0 {
                let mut b = bytes.clone();
                if colwgpu::index::store::seal_metadata(&mut b).is_ok() {
                    std::fs::write(dir.join(&names[i]), &b).expect("write");
                }
            }
        } else {
            match rng.below(3) {
                // Checksums off: the structural checks alone must hold.
                0 => verify = false,
                // Metadata updated to the mutated file (size, CRC) and re-sealed.
                1 => {
                    let mut meta: serde_json::Value =
                        serde_json::from_slice(&pristine[meta_i]).expect("json");
                    meta["files"][&names[i]] = serde_json::json!({
                        "bytes": bytes.len(),
                        "crc32": crc32fast::hash(&bytes),
                    });
                    let mut b = serde_json::to_vec_pretty(&meta).expect("json");
                    colwgpu::index::store::seal_metadata(&mut b).expect("seal");
                    std::fs::write(dir.join(&names[meta_i]), &b).expect("write");
                }
                _ => {}
            }
        }
        let opened = Index::open_with(
            &dir,
            &OpenOptions {
                verify_checksums: verify,
            },
        );
        let ok = opened.is_ok();
        if let Ok(index) = opened {
            exercise(&index);
        }
        std::fs::write(dir.join(&names[i]), &pristine[i]).expect("restore");
        std::fs::write(dir.join(&names[meta_i]), &pristine[meta_i]).expect("restore");
        ok
    });
}
