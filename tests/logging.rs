//! The CLI's log sink: the library's `log::warn!` reaches the user on stderr at
//! the default level, and `RUST_LOG` overrides it.

mod common;

use std::process::Command;

fn index_with_too_many_centroids(dir: &std::path::Path, rust_log: Option<&str>) -> String {
    let docs = std::fs::read_to_string(common::data_dir().join("scifact-1k/corpus.jsonl")).unwrap();
    let corpus = dir.join("corpus.jsonl");
    std::fs::write(&corpus, docs.lines().take(3).collect::<Vec<_>>().join("\n")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_colwgpu"));
    cmd.arg("index")
        .arg("--model")
        .arg(common::model_dir())
        .arg("--corpus")
        .arg(&corpus)
        .arg("--index")
        .arg(dir.join(format!("i-{}.index", rust_log.unwrap_or("default"))))
        .args(["--device", "cpu", "--centroids", "100000"])
        .env_remove("RUST_LOG");
    if let Some(level) = rust_log {
        cmd.env("RUST_LOG", level);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "colwgpu index failed: {stderr}");
    stderr
}

#[test]
fn library_warnings_reach_the_user() {
    let tmp = tempfile::tempdir().unwrap();
    // 3 documents give a few hundred vectors: k-means warns that it uses fewer centroids.
    let stderr = index_with_too_many_centroids(tmp.path(), None);
    assert!(
        stderr.contains("WARN") && stderr.contains("100000 centroids asked for"),
        "default level shows warnings: {stderr}"
    );
    let stderr = index_with_too_many_centroids(tmp.path(), Some("error"));
    assert!(
        !stderr.contains("centroids asked for"),
        "RUST_LOG=error hides them: {stderr}"
    );
}
