//! Random-kill test of the live index: a writer process (this test binary,
//! re-run as a child) applies a planned sequence of adds (with metadata),
//! deletes and updates, acknowledging each commit on stdout; the parent
//! SIGKILLs it at a random moment, reopens the index and checks it holds
//! exactly the state after the last acknowledged mutation or after the next
//! one — never anything in between — then plans the next round from there.
//!
//! Checked after every kill: the set of ids; for a sample of documents, that
//! their stored codes and residuals are what the codec makes of their vectors
//! and that exact MaxSim against them gives the expected score; that each
//! added document's metadata is its own and a filter sees exactly the live
//! documents that have metadata.
//!
//! `COLWGPU_KILLS` sets the number of kills (default 6, a few seconds);
//! `scripts/live_kill.sh` runs 60.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use colwgpu::api::NewDoc;
use colwgpu::{Device, Filter, Index, IndexOptions, IndexWriter, SearchOptions, VectorSet};
use common::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

const DIM: usize = 16;

/// The vectors of document `id` in version `seed` (unit rows, near 2 of 12 topics).
fn vectors(id: &str, seed: u64) -> Vec<f32> {
    let mut trng = Rng::new(5);
    let topics: Vec<Vec<f32>> = (0..12).map(|_| trng.vec(DIM, 1.0)).collect();
    let h = id.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |a, b| {
        (a ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = Rng::new(h);
    let len = 3 + rng.below(6) as usize;
    let (a, b) = (rng.below(12) as usize, rng.below(12) as usize);
    (0..len)
        .flat_map(|j| {
            let t = if j % 2 == 0 { &topics[a] } else { &topics[b] };
            let mut v: Vec<f32> = t.iter().map(|&x| x + 0.3 * rng.uniform()).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= n);
            v
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Op {
    /// New documents `(id, version seed)`, with metadata `{"op": n}`.
    Add(Vec<(String, u64)>, u64),
    Delete(Vec<String>),
    /// Replaced documents `(id, new version seed)`, metadata `{"op": n}`.
    Update(Vec<(String, u64)>, u64),
}

/// What the index must hold: live id → (version seed, metadata op or none).
type State = BTreeMap<String, (u64, Option<u64>)>;

fn apply(state: &State, op: &Op) -> State {
    let mut s = state.clone();
    match op {
        Op::Add(docs, n) | Op::Update(docs, n) => {
            for (id, seed) in docs {
                s.insert(id.clone(), (*seed, Some(*n)));
            }
        }
        Op::Delete(ids) => {
            for id in ids {
                s.remove(id);
            }
        }
    }
    s
}

fn plan(state: &State, rng: &mut Rng, next_id: &mut u64, len: usize, op_no: &mut u64) -> Vec<Op> {
    let mut s = state.clone();
    let mut ops = Vec::with_capacity(len);
    for _ in 0..len {
        *op_no += 1;
        let live: Vec<&String> = s.keys().collect();
        let kind = rng.below(4);
        let op = if kind == 2 && live.len() > 10 {
            let mut ids = BTreeSet::new();
            for _ in 0..1 + rng.below(3) {
                ids.insert(live[rng.below(live.len() as u64) as usize].clone());
            }
            Op::Delete(ids.into_iter().collect())
        } else if kind == 3 && !live.is_empty() {
            let id = live[rng.below(live.len() as u64) as usize].clone();
            *next_id += 1;
            Op::Update(vec![(id, *next_id)], *op_no)
        } else {
            let docs = (0..1 + rng.below(4))
                .map(|_| {
                    *next_id += 1;
                    (format!("a{next_id}"), *next_id)
                })
                .collect();
            Op::Add(docs, *op_no)
        };
        s = apply(&s, &op);
        ops.push(op);
    }
    ops
}

/// The child: applies the plan in `COLWGPU_KILL_PLAN` to the index in
/// `COLWGPU_KILL_INDEX`, printing `done <i>` after each commit.
#[test]
fn kill_child() {
    let (Ok(plan), Ok(index)) = (
        std::env::var("COLWGPU_KILL_PLAN"),
        std::env::var("COLWGPU_KILL_INDEX"),
    ) else {
        return; // Only meaningful as the child of `random_kills`.
    };
    let ops: Vec<Op> = serde_json::from_slice(&std::fs::read(plan).unwrap()).unwrap();
    let mut w = IndexWriter::open(&index, Duration::from_secs(30)).unwrap();
    // A tight outlier distance (the first cut's provisional default), which
    // these random vectors cross often: kills then also land in outlier
    // buffering and centroid appends.
    w.set_outlier_policy(0.66, colwgpu::index::live::DEFAULT_CLUSTER_AT)
        .unwrap();
    for (i, op) in ops.iter().enumerate() {
        let docs = |d: &[(String, u64)], n: u64| -> Vec<NewDoc> {
            d.iter()
                .map(|(id, seed)| NewDoc {
                    id: id.clone(),
                    vectors: vectors(id, *seed),
                    metadata: Some(json!({ "op": n })),
                })
                .collect()
        };
        match op {
            Op::Add(d, n) => {
                w.add_vectors(&docs(d, *n), false).unwrap();
            }
            Op::Update(d, n) => {
                w.add_vectors(&docs(d, *n), true).unwrap();
            }
            Op::Delete(ids) => {
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                w.delete(&refs).unwrap();
            }
        }
        println!("done {i}");
    }
}

fn build_base(path: &Path, n: usize) -> State {
    let ids: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
    let mut v = Vec::new();
    let mut offsets = vec![0usize];
    for id in &ids {
        let x = vectors(id, 0);
        offsets.push(offsets.last().unwrap() + x.len() / DIM);
        v.extend(x);
    }
    let set = VectorSet {
        ids: ids.clone(),
        dim: DIM,
        vectors: v,
        offsets,
        kind: None,
        model_path: None,
        model_fingerprint: None,
    };
    let opts = IndexOptions {
        num_centroids: Some(16),
        ..Default::default()
    };
    Index::build_from_vectors(path, &set, None, &opts, Device::Cpu).unwrap();
    ids.into_iter().map(|id| (id, (0, None))).collect()
}

/// Whether the index at `path` holds exactly `state` (ids, a sample's
/// stored vectors and scores, metadata); `Err` says what differs.
fn check(
    path: &Path,
    state: &State,
    generation: u64,
    focus: &[String],
    rng: &mut Rng,
) -> Result<(), String> {
    let index =
        Index::open_on(path, Device::Cpu, &Default::default()).map_err(|e| e.to_string())?;
    if index.generation() != generation {
        return Err(format!(
            "generation {}, expected {generation}",
            index.generation()
        ));
    }
    let got: BTreeSet<&str> = index.doc_ids().iter().map(String::as_str).collect();
    let want: BTreeSet<&str> = state.keys().map(String::as_str).collect();
    if got != want || index.num_docs() != state.len() {
        return Err(format!(
            "ids differ: {} in the index, {} expected; unexpected {:?}, missing {:?}",
            index.num_docs(),
            state.len(),
            got.difference(&want).take(5).collect::<Vec<_>>(),
            want.difference(&got).take(5).collect::<Vec<_>>(),
        ));
    }
    let raw = colwgpu::index::Index::open(path).map_err(|e| e.to_string())?;
    let ids: Vec<&String> = state.keys().collect();
    // The documents the interrupted mutation touched, and a random sample.
    let mut sample: Vec<&String> = focus.iter().filter(|id| state.contains_key(*id)).collect();
    for _ in 0..4 {
        sample.push(ids[rng.below(ids.len() as u64) as usize]);
    }
    for id in sample {
        let (seed, op) = state[id];
        let v = vectors(id, seed);
        let d = raw
            .doc_ids()
            .iter()
            .position(|x| x == id)
            .ok_or("id vanished")?;
        // Compressed against the codebook as it was when the document was
        // added (outlier clustering may have appended centroids since): some
        // prefix of today's centroids.
        let full = raw.codec();
        let c = (1..=full.num_centroids())
            .rev()
            .find_map(|k| {
                let codec = colwgpu::index::ResidualCodec::new(
                    DIM,
                    full.nbits,
                    full.centroids[..k * DIM].to_vec(),
                    full.bucket_cutoffs.clone(),
                    full.bucket_weights.clone(),
                )
                .ok()?;
                let c = codec.compress_cpu(&v);
                (raw.doc_codes(d) == c.codes && raw.doc_residuals(d) == c.packed).then_some(c)
            })
            .ok_or_else(|| format!("{id}: stored vectors are not version {seed}'s"))?;
        // Exact MaxSim of the document against its own vectors, from the codec.
        let dec = full.decompress_cpu(&c.codes, &c.packed);
        let expected: f64 = v
            .chunks(DIM)
            .map(|q| {
                dec.chunks(DIM)
                    .map(|r| {
                        q.iter()
                            .zip(r)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                    })
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .sum();
        let hit = index
            .rerank_vectors(&v, &[id.as_str()], None)
            .map_err(|e| e.to_string())?;
        if (hit[0].score as f64 - expected).abs() > 1e-4 {
            return Err(format!("{id}: score {} expected {expected}", hit[0].score));
        }
        let found = index
            .search_vectors(
                &[&v],
                &SearchOptions {
                    k: 3,
                    plaid: None,
                    exhaustive: true,
                },
            )
            .map_err(|e| e.to_string())?;
        if !found[0].iter().any(|h| &h.id == id) {
            return Err(format!("{id}: not in the top 3 for its own vectors"));
        }
        let md = index
            .document_metadata(&[id.as_str()])
            .map_err(|e| e.to_string())?;
        let want = op.map(|n| json!({ "op": n }));
        if md[0] != want {
            return Err(format!("{id}: metadata {:?}, expected {want:?}", md[0]));
        }
    }
    let with_meta: BTreeSet<String> = state
        .iter()
        .filter(|(_, (_, op))| op.is_some())
        .map(|(id, _)| id.clone())
        .collect();
    if !with_meta.is_empty() {
        let f = index
            .filter_ids(&Filter::new("op >= ?", vec![json!(0)]))
            .map_err(|e| e.to_string())?;
        let f: BTreeSet<String> = f.into_iter().collect();
        if f != with_meta {
            return Err(format!(
                "the metadata filter does not see exactly the live documents: unexpected \
                 {:?}, missing {:?} (journal present: {})",
                f.difference(&with_meta).take(5).collect::<Vec<_>>(),
                with_meta.difference(&f).take(5).collect::<Vec<_>>(),
                path.join("metadata.sqlite-journal").exists()
            ));
        }
    }
    Ok(())
}

#[test]
fn random_kills() {
    let kills: usize = std::env::var("COLWGPU_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("COLWGPU_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2026);
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("idx");
    let mut state = build_base(&path, 40);
    let mut rng = Rng::new(seed);
    let (mut next_id, mut op_no) = (0u64, 0u64);
    // Every planned mutation commits exactly one generation.
    let mut generation = 0u64;
    let exe = std::env::current_exe().unwrap();
    let (mut before, mut after, mut clean) = (0, 0, 0);
    let start = Instant::now();
    // Rounds until `kills` writers were killed mid-plan: a round whose writer
    // finished its plan before the kill does not count.
    let mut round = 0usize;
    // Mutations per writer's plan. A writer that finished its plan before its
    // kill means plans run faster here than the kill delays assume: double
    // the plan (up to 640), so a fast machine still sees mid-plan kills.
    let mut plan_len = 40usize;
    while round - clean < kills {
        assert!(
            round < 4 * kills,
            "only {} of {round} writers were killed before finishing their plan",
            round - clean
        );
        let ops = plan(&state, &mut rng, &mut next_id, plan_len, &mut op_no);
        let plan_path = dir.path().join("plan.json");
        std::fs::write(&plan_path, serde_json::to_vec(&ops).unwrap()).unwrap();
        let mut child = Command::new(&exe)
            .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
            .env("COLWGPU_KILL_PLAN", &plan_path)
            .env("COLWGPU_KILL_INDEX", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join(format!("child-{round}.log"))).unwrap(),
            ))
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        // Reader thread: the acknowledged commits.
        let acks = std::thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .map_while(|l| l.ok())
                // libtest may print "test kill_child ... " before the first ack.
                .filter_map(|l| l.split("done ").nth(1)?.trim().parse::<usize>().ok())
                .max()
        });
        let delay = 20 + rng.below(180);
        std::thread::sleep(Duration::from_millis(delay));
        // SIGKILL (std's kill sends SIGKILL on Unix).
        let _ = child.kill();
        let status = child.wait().unwrap();
        let acked = acks.join().unwrap();
        let done = acked.map_or(0, |i| i + 1);
        if status.success() {
            clean += 1;
            plan_len = (plan_len * 2).min(640);
        }
        // Candidate states: after `done` ops (the acknowledged ones), or one more.
        let mut s_done = state.clone();
        for op in &ops[..done] {
            s_done = apply(&s_done, op);
        }
        let s_next = ops.get(done).map(|op| apply(&s_done, op));
        let focus: Vec<String> = match ops.get(done) {
            Some(Op::Add(d, _)) | Some(Op::Update(d, _)) => d.iter().map(|x| x.0.clone()).collect(),
            Some(Op::Delete(ids)) => ids.clone(),
            None => Vec::new(),
        };
        let g_done = generation + done as u64;
        let r_done = check(&path, &s_done, g_done, &focus, &mut rng);
        state = match (r_done, s_next) {
            (Ok(()), _) => {
                before += 1;
                generation = g_done;
                s_done
            }
            (Err(e), Some(next)) => match check(&path, &next, g_done + 1, &focus, &mut rng) {
                Ok(()) => {
                    after += 1;
                    generation = g_done + 1;
                    next
                }
                Err(e2) => panic!(
                    "round {round} (killed after {delay} ms, {done} acknowledged, exit {status}): \
                     the index is neither before ({e}) nor after ({e2}) the interrupted mutation \
                     {:?}; the next: {:?}",
                    ops.get(done),
                    ops.get(done + 1)
                ),
            },
            (Err(e), None) => panic!("round {round}: {e}"),
        };
        // The next writer cleans up what the killed one left uncommitted.
        drop(IndexWriter::open(&path, Duration::from_secs(5)).unwrap());
        let stray = std::fs::read_dir(&path)
            .unwrap()
            .filter(|e| {
                let n = e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                n.ends_with(".tmp")
            })
            .count();
        assert_eq!(
            stray, 0,
            "round {round}: temporary files left after recovery"
        );
        round += 1;
    }
    eprintln!(
        "{kills} writers killed mid-plan in {round} rounds ({:.1} s; {clean} more finished \
         before their kill): {before} reopened at the last acknowledged commit, {after} with \
         the interrupted mutation committed; {} documents live, {op_no} mutations planned",
        start.elapsed().as_secs_f64(),
        state.len()
    );
}
