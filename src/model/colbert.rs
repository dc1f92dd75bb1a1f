//! ColBERT: a BERT checkpoint plus a linear head to a small dimension, token
//! vectors L2-normalised. Loads the two layouts people have on disk and encodes
//! queries and documents in length-sorted, padded batches.

use std::path::{Path, PathBuf};

use crate::backend::{Activation, Backend, HostMatrix, TokenBatch};
use crate::error::{Error, Result};
use crate::model::bert::{self, BertWeights};
use crate::model::config::{read_json, BertConfig, ColbertSettings, StanfordMetadata};
use crate::model::weights::TensorFile;
use crate::text::{ColbertTokenizer, TokenCounts, TokenizerSettings};

/// Where the ColBERT projection was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLayout {
    /// `1_Dense/model.safetensors` + `config_sentence_transformers.json` (PyLate).
    PyLate,
    /// `linear.weight` inside `model.safetensors` (stanford ColBERT).
    Stanford,
    /// A plain BERT directory: token vectors are the L2-normalised hidden states.
    None,
}

/// A checkpoint read from disk, on the host.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: BertConfig,
    pub tokenizer: ColbertTokenizer,
    pub weights: BertWeights<HostMatrix>,
    /// `[dim, hidden]`, no bias.
    pub projection: Option<HostMatrix>,
    pub head: HeadLayout,
}

fn require(path: PathBuf, what: &str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::io(
            &path,
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("{what} not found")),
        ))
    }
}

impl Checkpoint {
    /// Reads a Hugging Face BERT directory with an optional ColBERT head.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
            ));
        }
        let config = BertConfig::load(&require(dir.join("config.json"), "config.json")?)?;
        let model_path = dir.join("model.safetensors");
        if !model_path.is_file() {
            let hint = if dir.join("pytorch_model.bin").exists() {
                " (only pytorch_model.bin is present: colwgpu reads safetensors; convert it first)"
            } else {
                ""
            };
            return Err(Error::io(
                &model_path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("model.safetensors not found{hint}"),
                ),
            ));
        }
        let file = TensorFile::open(&model_path)?;
        let prefix = bert::find_prefix(&file)?;
        let weights = BertWeights::load(&file, &prefix, &config)?;

        let dense_path = dir.join("1_Dense").join("model.safetensors");
        check_declared_head(dir)?;
        let (head, projection, settings) = if dense_path.is_file() {
            let dense = TensorFile::open(&dense_path)?;
            let proj = read_projection(&dense, &config)?;
            let st_path = dir.join("config_sentence_transformers.json");
            let settings: ColbertSettings = if st_path.is_file() {
                read_json(&st_path)?
            } else {
                ColbertSettings::default()
            };
            (HeadLayout::PyLate, Some(proj), settings)
        } else if file.contains("linear.weight") {
            let proj = read_projection(&file, &config)?;
            let meta_path = dir.join("artifact.metadata");
            let settings = if meta_path.is_file() {
                read_json::<StanfordMetadata>(&meta_path)?.into()
            } else {
                ColbertSettings::default()
            };
            (HeadLayout::Stanford, Some(proj), settings)
        } else {
            (HeadLayout::None, None, ColbertSettings::default())
        };

        let defaults = TokenizerSettings::default();
        let tok_settings = TokenizerSettings {
            query_marker: settings
                .query_prefix
                .map(|s| s.trim().to_string())
                .unwrap_or(defaults.query_marker),
            document_marker: settings
                .document_prefix
                .map(|s| s.trim().to_string())
                .unwrap_or(defaults.document_marker),
            query_length: settings.query_length.unwrap_or(defaults.query_length),
            document_length: settings
                .document_length
                .unwrap_or(defaults.document_length)
                .min(config.max_position_embeddings),
            query_expansion: settings.do_query_expansion.unwrap_or(true),
            attend_to_expansion_tokens: settings.attend_to_expansion_tokens.unwrap_or(false),
            skiplist_words: settings.skiplist_words.unwrap_or(defaults.skiplist_words),
        };
        if tok_settings.query_length > config.max_position_embeddings {
            return Err(Error::Config {
                path: dir.to_path_buf(),
                message: format!(
                    "query length {} exceeds the model's {} positions",
                    tok_settings.query_length, config.max_position_embeddings
                ),
            });
        }
        let tokenizer = ColbertTokenizer::load(
            &require(dir.join("tokenizer.json"), "tokenizer.json")?,
            &tok_settings,
        )?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            tokenizer,
            weights,
            projection,
            head,
        })
    }

    /// The dimension of the token vectors.
    pub fn dim(&self) -> usize {
        self.projection
            .as_ref()
            .map(|p| p.rows)
            .unwrap_or(self.config.hidden_size)
    }
}

/// A module of `modules.json` (sentence-transformers / PyLate).
#[derive(serde::Deserialize)]
struct StModule {
    #[serde(default)]
    path: String,
    #[serde(rename = "type", default)]
    kind: String,
}

/// Errors if `modules.json` declares a Dense (projection) module whose weights
/// are missing: encoding without it would silently give hidden-size vectors.
fn check_declared_head(dir: &Path) -> Result<()> {
    let path = dir.join("modules.json");
    if !path.is_file() {
        return Ok(());
    }
    let modules: Vec<StModule> = read_json(&path)?;
    for m in modules.iter().filter(|m| m.kind.ends_with("Dense")) {
        let bad = |message: String| {
            Err(Error::Config {
                path: path.clone(),
                message,
            })
        };
        if m.path != "1_Dense" {
            return bad(format!(
                "declares the projection head {} in '{}/', but colwgpu reads it from '1_Dense/'",
                m.kind, m.path
            ));
        }
        let weights = dir.join(&m.path).join("model.safetensors");
        if !weights.is_file() {
            return bad(format!(
                "declares the projection head {} but {} is missing{}",
                m.kind,
                weights.display(),
                if dir.join(&m.path).join("pytorch_model.bin").is_file() {
                    " (only pytorch_model.bin is there: convert it to safetensors)"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(())
}

fn read_projection(file: &TensorFile, config: &BertConfig) -> Result<HostMatrix> {
    let shape = file
        .shape("linear.weight")?
        .ok_or_else(|| Error::Safetensors {
            path: file.path().to_path_buf(),
            message: "tensor 'linear.weight' (the ColBERT projection) is missing".into(),
        })?;
    match shape.as_slice() {
        [dim, hidden] if *hidden == config.hidden_size && *dim > 0 => {
            file.matrix("linear.weight", &[*dim, *hidden])
        }
        _ => Err(Error::Safetensors {
            path: file.path().to_path_buf(),
            message: format!(
                "tensor 'linear.weight' has shape {shape:?}, expected [dim, {}]",
                config.hidden_size
            ),
        }),
    }
}

/// The token vectors of one text: `vectors` is `ids.len() × dim`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenVectors {
    pub ids: Vec<u32>,
    pub vectors: Vec<f32>,
}

impl TokenVectors {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Padded sequence lengths are rounded up to a multiple of this, so batches of
/// similar texts share a shape.
const LENGTH_BUCKET: usize = 8;

/// A ColBERT encoder on one backend.
pub struct ColbertEncoder<B: Backend> {
    backend: B,
    config: BertConfig,
    tokenizer: ColbertTokenizer,
    weights: BertWeights<B::Weight>,
    projection: Option<B::Weight>,
    head: HeadLayout,
    dim: usize,
    /// Sequences per forward pass.
    pub batch_size: usize,
}

/// One sequence to encode: its ids, how many leading positions are attended to,
/// and which output rows to keep.
struct Sequence {
    ids: Vec<u32>,
    attended: usize,
    keep: Vec<bool>,
}

impl<B: Backend> ColbertEncoder<B> {
    /// Uploads `checkpoint` to `backend`.
    pub fn new(checkpoint: Checkpoint, backend: B) -> Result<Self> {
        backend.check_head_dim(checkpoint.config.head_dim())?;
        let weights = checkpoint.weights.upload(&backend)?;
        let projection = checkpoint
            .projection
            .as_ref()
            .map(|p| backend.linear_weight("colbert projection", p))
            .transpose()?;
        let dim = checkpoint.dim();
        Ok(Self {
            backend,
            config: checkpoint.config,
            tokenizer: checkpoint.tokenizer,
            weights,
            projection,
            head: checkpoint.head,
            dim,
            batch_size: 32,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn head(&self) -> HeadLayout {
        self.head
    }
    pub fn config(&self) -> &BertConfig {
        &self.config
    }
    pub fn tokenizer(&self) -> &ColbertTokenizer {
        &self.tokenizer
    }
    pub fn describe_backend(&self) -> String {
        self.backend.describe()
    }
    pub fn backend(&self) -> &B {
        &self.backend
    }
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Query vectors: one per position of the query length ([MASK] expansion included).
    pub fn encode_queries(&mut self, texts: &[&str]) -> Result<Vec<TokenVectors>> {
        Ok(self.encode_counted(texts, true)?.0)
    }

    /// Document vectors: one per token, punctuation (the skiplist) removed.
    pub fn encode_documents(&mut self, texts: &[&str]) -> Result<Vec<TokenVectors>> {
        Ok(self.encode_counted(texts, false)?.0)
    }

    /// Queries (`queries`) or documents, with the token counts of the same
    /// tokenization.
    pub fn encode_counted(
        &mut self,
        texts: &[&str],
        queries: bool,
    ) -> Result<(Vec<TokenVectors>, TokenCounts)> {
        let (seqs, counts) = if queries {
            let tokenized = self.tokenizer.queries(texts)?;
            let counts = TokenCounts::of_queries(&tokenized);
            let seqs = tokenized
                .into_iter()
                .map(|q| Sequence {
                    keep: vec![true; q.ids.len()],
                    attended: q.attended,
                    ids: q.ids,
                })
                .collect();
            (seqs, counts)
        } else {
            let tokenized = self.tokenizer.documents(texts)?;
            let counts = TokenCounts::of_documents(&tokenized);
            let seqs = tokenized
                .into_iter()
                .map(|d| Sequence {
                    keep: d.ids.iter().map(|&id| self.tokenizer.keeps(id)).collect(),
                    attended: d.ids.len(),
                    ids: d.ids,
                })
                .collect();
            (seqs, counts)
        };
        Ok((self.run(seqs)?, counts))
    }

    /// Hidden states of one query after the embeddings (`layers = 0`) or after
    /// `layers` transformer layers, `[query_length, hidden]`: for debugging parity.
    pub fn query_hidden_states(&mut self, text: &str, layers: usize) -> Result<HostMatrix> {
        let q = self.tokenizer.queries(&[text])?.remove(0);
        let batch = TokenBatch {
            type_ids: vec![0; q.ids.len()],
            batch: 1,
            seq_len: q.ids.len(),
            key_lens: vec![q.attended as u32],
            ids: q.ids,
        };
        let h = bert::forward(
            &mut self.backend,
            &self.config,
            &self.weights,
            &batch,
            Some(layers),
        )?;
        self.backend.read(&h)
    }

    fn run(&mut self, seqs: Vec<Sequence>) -> Result<Vec<TokenVectors>> {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        // Longest first, so each batch pads to little more than its own texts.
        order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].ids.len()));
        let lanes = self.backend.lanes();
        let max_rows = self.backend.max_pass_rows().unwrap_or(usize::MAX);
        let positions = self.config.max_position_embeddings;
        let (batches, side_by_side) =
            plan_batches(&seqs, &order, self.batch_size, lanes, max_rows, positions);
        let Self {
            backend,
            config,
            tokenizer,
            weights,
            projection,
            dim,
            ..
        } = self;
        let (pad, dim) = (tokenizer.tokens.pad, *dim);
        let (config, weights, projection) = (&*config, &*weights, projection.as_ref());
        let job = |backend: &mut B, j: usize| {
            let batch = token_batch(&seqs, batches[j], pad, config.max_position_embeddings);
            let hidden = bert::forward(backend, config, weights, &batch, None)?;
            let projected = match projection {
                Some(p) => {
                    let projected = backend.linear(&hidden, p, None, Activation::Identity)?;
                    backend.recycle(hidden);
                    projected
                }
                None => hidden,
            };
            let vectors = backend.l2_normalize(&projected)?;
            backend.recycle(projected);
            let host = backend.read(&vectors)?;
            backend.recycle(vectors);
            Ok((batch.seq_len, host))
        };
        let encoded = if side_by_side {
            backend.run_jobs(batches.len(), job)?
        } else {
            (0..batches.len())
                .map(|j| job(backend, j))
                .collect::<Result<Vec<_>>>()?
        };
        let mut out: Vec<Option<TokenVectors>> = vec![None; seqs.len()];
        for (chunk, (seq_len, host)) in batches.iter().zip(encoded) {
            for (b, &i) in chunk.iter().enumerate() {
                let s = &seqs[i];
                let mut tv = TokenVectors {
                    ids: Vec::with_capacity(s.ids.len()),
                    vectors: Vec::with_capacity(s.ids.len() * dim),
                };
                for (t, (&id, &keep)) in s.ids.iter().zip(&s.keep).enumerate() {
                    if keep {
                        tv.ids.push(id);
                        tv.vectors
                            .extend_from_slice(&host.data[(b * seq_len + t) * dim..][..dim]);
                    }
                }
                out[i] = Some(tv);
            }
        }
        Ok(out
            .into_iter()
            .map(|v| {
                v.unwrap_or(TokenVectors {
                    ids: vec![],
                    vectors: vec![],
                })
            })
            .collect())
    }
}

/// The forward passes over `order` (indices into `seqs`, longest first), and
/// whether they run side by side on the backend's lanes
/// ([`Backend::run_jobs`]). A pass takes at most `batch_size` sequences and,
/// beyond its first, at most `max_rows` padded rows
/// ([`Backend::max_pass_rows`]: past it the CPU's activations leave the
/// cache). Lanes pay when each gets work of about equal length: sequences of
/// one length (queries) are cut into a multiple of `lanes` near-equal batches;
/// documents use lanes only with at least two batches per lane, so the last
/// and shortest ones even the lanes out.
fn plan_batches<'a>(
    seqs: &[Sequence],
    order: &'a [usize],
    batch_size: usize,
    lanes: usize,
    max_rows: usize,
    max_positions: usize,
) -> (Vec<&'a [usize]>, bool) {
    let rows_fit = |i: usize| (max_rows / padded_len(seqs[i].ids.len(), max_positions)).max(1);
    let batch_size = batch_size.max(1);
    let n = order.len();
    let uniform = order
        .windows(2)
        .all(|w| seqs[w[0]].ids.len() == seqs[w[1]].ids.len());
    if uniform {
        let batch_size = order.first().map_or(batch_size, |&i| batch_size.min(rows_fit(i)));
        if lanes < 2 || n < 2 {
            return (order.chunks(batch_size).collect(), false);
        }
        // A multiple of `lanes` batches of near-equal size (at most
        // `batch_size`): lanes take batches as they finish, so a short last
        // batch would leave the others idle (300 queries in 32s on two lanes:
        // 160 against 140 rows; in 30s, 150 each).
        let batches = n.div_ceil(lanes * batch_size) * lanes;
        return (order.chunks(n.div_ceil(batches)).collect(), true);
    }
    let mut batches = Vec::new();
    let mut rest = order;
    while let Some(&longest) = rest.first() {
        let (batch, more) = rest.split_at(batch_size.min(rows_fit(longest)).min(rest.len()));
        batches.push(batch);
        rest = more;
    }
    let side_by_side = lanes >= 2 && batches.len() >= 2 * lanes;
    (batches, side_by_side)
}

/// The padded length of a batch whose longest sequence has `longest` tokens:
/// rounded up to a multiple of [`LENGTH_BUCKET`] within `max_positions`.
fn padded_len(longest: usize, max_positions: usize) -> usize {
    longest
        .div_ceil(LENGTH_BUCKET)
        .saturating_mul(LENGTH_BUCKET)
        .min(max_positions)
        .max(longest)
        .max(1)
}

/// The padded batch of `seqs[chunk]`: each sequence right-padded with `pad`
/// to the longest, rounded up to a multiple of [`LENGTH_BUCKET`] within
/// `max_positions`.
fn token_batch(seqs: &[Sequence], chunk: &[usize], pad: u32, max_positions: usize) -> TokenBatch {
    let longest = chunk.iter().map(|&i| seqs[i].ids.len()).max().unwrap_or(1);
    let seq_len = padded_len(longest, max_positions);
    let mut ids = vec![pad; chunk.len() * seq_len];
    let mut key_lens = Vec::with_capacity(chunk.len());
    for (b, &i) in chunk.iter().enumerate() {
        ids[b * seq_len..][..seqs[i].ids.len()].copy_from_slice(&seqs[i].ids);
        key_lens.push(seqs[i].attended as u32);
    }
    TokenBatch {
        type_ids: vec![0; ids.len()],
        ids,
        batch: chunk.len(),
        seq_len,
        key_lens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(lens: &[usize]) -> Vec<Sequence> {
        lens.iter()
            .map(|&n| Sequence {
                ids: vec![7; n],
                attended: n,
                keep: vec![true; n],
            })
            .collect()
    }

    /// `plan_batches` over `seqs` sorted longest first: the batch sizes, and
    /// whether the batches run on lanes.
    fn plan(seqs: &[Sequence], batch_size: usize, lanes: usize, max_rows: usize) -> (Vec<usize>, bool) {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].ids.len()));
        let (batches, lanes) = plan_batches(seqs, &order, batch_size, lanes, max_rows, 512);
        assert_eq!(batches.concat(), order, "every sequence once, in order");
        (batches.iter().map(|b| b.len()).collect(), lanes)
    }

    #[test]
    fn batches_are_planned_for_the_lanes() {
        let all = usize::MAX;
        let queries = seqs(&[32; 40]);
        // One lane: the batch size as given, one batch after another.
        assert_eq!(plan(&queries, 32, 1, all), (vec![32, 8], false));
        // Queries: at least one batch per lane, even when that makes them
        // smaller, and a multiple of the lanes of near-equal batches.
        assert_eq!(plan(&queries, 32, 2, all), (vec![20, 20], true));
        assert_eq!(plan(&queries, 8, 2, all), (vec![7, 7, 7, 7, 7, 5], true)); // not 5 × 8
        assert_eq!(plan(&queries, 10, 2, all), (vec![10; 4], true));
        assert_eq!(plan(&seqs(&[32; 300]), 32, 2, all), (vec![30; 10], true));
        assert_eq!(plan(&queries[..3], 32, 4, all), (vec![1; 3], true));
        assert_eq!(plan(&queries[..1], 32, 4, all), (vec![1], false));
        // Documents of mixed lengths: lanes only with two batches per lane.
        let docs = seqs(&[180, 40, 90, 12, 60, 33, 7, 150]);
        assert_eq!(plan(&docs, 2, 2, all), (vec![2; 4], true));
        assert_eq!(plan(&docs, 3, 2, all), (vec![3, 3, 2], false));
        assert_eq!(plan(&docs, 0, 2, all), (vec![1; 8], true));
    }

    #[test]
    fn batches_stay_within_the_backends_rows() {
        // Queries: 1,024 rows are 32 queries, then split evenly over the lanes.
        let queries = seqs(&[32; 100]);
        assert_eq!(plan(&queries, 64, 1, 1024), (vec![32, 32, 32, 4], false));
        assert_eq!(plan(&queries, 64, 2, 1024), (vec![25; 4], true));
        // Documents: a batch stops before its padded rows (the longest's
        // length rounded up to 8, times the count) pass the limit; short
        // documents fill a batch up to the batch size; one document longer
        // than the limit still makes a batch.
        let docs = seqs(&[180, 178, 175, 170, 100, 100, 100, 40, 40, 40, 40, 12, 1200]);
        let (sizes, _) = plan(&docs, 32, 1, 400);
        // 1200 → 1; 184·2 ≤ 400 → 180, 178; 176·2 → 175, 170; 104·3 → the
        // 100s; 40·10 = 400 → the 40s and 12.
        assert_eq!(sizes, vec![1, 2, 2, 3, 5]);
        assert_eq!(plan(&docs, 3, 1, 400).0, vec![1, 2, 2, 3, 3, 2]);
    }

    #[test]
    fn a_token_batch_pads_to_a_length_bucket() {
        let s = seqs(&[5, 11, 3]);
        let b = token_batch(&s, &[1, 0], 0, 512);
        assert_eq!((b.batch, b.seq_len), (2, 16));
        assert_eq!(b.key_lens, vec![11, 5]);
        assert_eq!(&b.ids[..16], &[[7; 11].as_slice(), &[0; 5]].concat()[..]);
        assert_eq!(&b.ids[16..21], &[7; 5]);
        assert!(b.ids[21..].iter().all(|&x| x == 0) && b.type_ids.len() == 32);
        // The bucket never passes the model's positions.
        assert_eq!(token_batch(&s, &[1], 0, 12).seq_len, 12);
    }
}
