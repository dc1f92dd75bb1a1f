//! Text → token ids with ColBERT's conventions: `[CLS] marker tokens… [SEP]`,
//! queries padded with `[MASK]` to the query length (query augmentation),
//! documents truncated to the document length, punctuation skiplist.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// ColBERT's tokenization settings, resolved to token ids.
#[derive(Debug, Clone)]
pub struct ColbertTokens {
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
    pub pad: u32,
    pub query_marker: u32,
    pub document_marker: u32,
    /// Total query length including `[CLS]`, marker, `[SEP]` and `[MASK]` padding.
    pub query_length: usize,
    /// Maximum document length including `[CLS]`, marker and `[SEP]`.
    pub document_length: usize,
    /// Pad queries with `[MASK]` to `query_length` (ColBERT's query augmentation).
    pub query_expansion: bool,
    /// Whether the `[MASK]` expansion tokens are attended to.
    pub attend_to_expansion_tokens: bool,
    /// Document tokens dropped from the output (punctuation).
    pub skiplist: HashSet<u32>,
}

/// Token and truncation counts of texts, as the tokenizer sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Tokens of every text, `[CLS]`, marker and `[SEP]` included (a query
    /// counts its `[MASK]` expansion; a document its skiplisted tokens).
    pub tokens: usize,
    /// Texts cut to the model's query or document length.
    pub truncated: usize,
}

impl TokenCounts {
    /// The counts of tokenized queries.
    pub fn of_queries(queries: &[TokenizedQuery]) -> Self {
        Self::of(queries.iter().map(|q| (q.ids.len(), q.truncated)))
    }

    /// The counts of tokenized documents.
    pub fn of_documents(documents: &[TokenizedDocument]) -> Self {
        Self::of(documents.iter().map(|d| (d.ids.len(), d.truncated)))
    }

    fn of(texts: impl Iterator<Item = (usize, bool)>) -> Self {
        texts.fold(Self::default(), |c, (len, truncated)| Self {
            tokens: c.tokens + len,
            truncated: c.truncated + usize::from(truncated),
        })
    }
}

/// A tokenized query: `ids.len() == query_length` when expansion is on.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedQuery {
    pub ids: Vec<u32>,
    /// How many leading tokens are attended to (all but the expansion tokens,
    /// unless `attend_to_expansion_tokens`).
    pub attended: usize,
    /// Whether the text was cut to fit.
    pub truncated: bool,
}

/// A tokenized document (before the skiplist is applied).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedDocument {
    pub ids: Vec<u32>,
    pub truncated: bool,
}

/// A WordPiece tokenizer from `tokenizer.json` plus ColBERT's conventions.
pub struct ColbertTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    pub tokens: ColbertTokens,
}

/// Settings that are not token ids yet.
#[derive(Debug, Clone)]
pub struct TokenizerSettings {
    pub query_marker: String,
    pub document_marker: String,
    pub query_length: usize,
    pub document_length: usize,
    pub query_expansion: bool,
    pub attend_to_expansion_tokens: bool,
    pub skiplist_words: Vec<String>,
}

impl Default for TokenizerSettings {
    fn default() -> Self {
        Self {
            query_marker: "[unused0]".into(),
            document_marker: "[unused1]".into(),
            query_length: 32,
            document_length: 180,
            query_expansion: true,
            attend_to_expansion_tokens: false,
            skiplist_words: PUNCTUATION.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Python's `string.punctuation`, one character each: ColBERT's default skiplist.
pub const PUNCTUATION: &[&str] = &[
    "!", "\"", "#", "$", "%", "&", "'", "(", ")", "*", "+", ",", "-", ".", "/", ":", ";", "<", "=",
    ">", "?", "@", "[", "\\", "]", "^", "_", "`", "{", "|", "}", "~",
];

impl ColbertTokenizer {
    /// Loads `tokenizer.json`, switching off any truncation or padding baked into
    /// it (ColBERT's lengths are applied here instead).
    pub fn load(path: &Path, settings: &TokenizerSettings) -> Result<Self> {
        if !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer.json not found"),
            ));
        }
        let terr = |message: String| Error::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| terr(e.to_string()))?;
        inner
            .with_truncation(None)
            .map_err(|e| terr(e.to_string()))?;
        inner.with_padding(None);
        let id = |tok: &str| {
            inner
                .token_to_id(tok)
                .ok_or_else(|| terr(format!("the vocabulary has no token '{tok}'")))
        };
        if settings.query_length < 4 || settings.document_length < 3 {
            return Err(terr(format!(
                "query length {} / document length {} too small (need room for [CLS], marker, [SEP])",
                settings.query_length, settings.document_length
            )));
        }
        let mut skiplist = HashSet::new();
        for w in &settings.skiplist_words {
            let enc = inner
                .encode(w.as_str(), false)
                .map_err(|e| terr(e.to_string()))?;
            if let Some(&first) = enc.get_ids().first() {
                skiplist.insert(first);
            }
        }
        let tokens = ColbertTokens {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            mask: id("[MASK]")?,
            pad: id("[PAD]")?,
            query_marker: id(&settings.query_marker)?,
            document_marker: id(&settings.document_marker)?,
            query_length: settings.query_length,
            document_length: settings.document_length,
            query_expansion: settings.query_expansion,
            attend_to_expansion_tokens: settings.attend_to_expansion_tokens,
            skiplist,
        };
        Ok(Self {
            inner,
            path: path.to_path_buf(),
            tokens,
        })
    }

    /// Word-piece ids of `texts`, without special tokens.
    pub fn word_pieces(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encs = self
            .inner
            .encode_batch(texts.to_vec(), false)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        Ok(encs.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// `[CLS] [Q] tokens… [SEP] [MASK]…` padded to the query length.
    pub fn queries(&self, texts: &[&str]) -> Result<Vec<TokenizedQuery>> {
        let t = &self.tokens;
        Ok(self
            .word_pieces(texts)?
            .into_iter()
            .map(|pieces| {
                let room = t.query_length - 3;
                let truncated = pieces.len() > room;
                let mut ids = Vec::with_capacity(t.query_length);
                ids.push(t.cls);
                ids.push(t.query_marker);
                ids.extend_from_slice(&pieces[..pieces.len().min(room)]);
                ids.push(t.sep);
                let real = ids.len();
                if t.query_expansion {
                    ids.resize(t.query_length, t.mask);
                }
                let attended = if t.attend_to_expansion_tokens {
                    ids.len()
                } else {
                    real
                };
                TokenizedQuery {
                    ids,
                    attended,
                    truncated,
                }
            })
            .collect())
    }

    /// `[CLS] [D] tokens… [SEP]`, cut to the document length.
    pub fn documents(&self, texts: &[&str]) -> Result<Vec<TokenizedDocument>> {
        let t = &self.tokens;
        Ok(self
            .word_pieces(texts)?
            .into_iter()
            .map(|pieces| {
                let room = t.document_length - 3;
                let truncated = pieces.len() > room;
                let mut ids = Vec::with_capacity(pieces.len().min(room) + 3);
                ids.push(t.cls);
                ids.push(t.document_marker);
                ids.extend_from_slice(&pieces[..pieces.len().min(room)]);
                ids.push(t.sep);
                TokenizedDocument { ids, truncated }
            })
            .collect())
    }

    /// For each vector a document's text becomes (the tokens
    /// [`Self::documents`] gives that [`Self::keeps`]), its span in `text` in
    /// characters (Unicode scalar values), `start..end`; `None` for the
    /// `[CLS]`, marker and `[SEP]` tokens.
    pub fn document_spans(&self, text: &str) -> Result<Vec<Option<(usize, usize)>>> {
        let t = &self.tokens;
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        let room = t.document_length - 3;
        // Byte offset → character offset.
        let mut chars = vec![0usize; text.len() + 1];
        let mut n = 0;
        for (b, _) in text.char_indices() {
            chars[b] = n;
            n += 1;
        }
        chars[text.len()] = n;
        for b in (0..text.len()).rev() {
            if !text.is_char_boundary(b) {
                chars[b] = chars[b + 1];
            }
        }
        let mut spans = Vec::new();
        for id in [t.cls, t.document_marker] {
            if self.keeps(id) {
                spans.push(None);
            }
        }
        for (id, &(a, b)) in enc.get_ids().iter().zip(enc.get_offsets()).take(room) {
            if self.keeps(*id) {
                spans.push(Some((chars[a.min(text.len())], chars[b.min(text.len())])));
            }
        }
        if self.keeps(t.sep) {
            spans.push(None);
        }
        Ok(spans)
    }

    /// Whether a document token is kept in the output (not punctuation, not padding).
    pub fn keeps(&self, id: u32) -> bool {
        id != self.tokens.pad && !self.tokens.skiplist.contains(&id)
    }
}
