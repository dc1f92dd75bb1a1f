#!/usr/bin/env python3
"""PyTorch + transformers reference for the ColBERT encoder that colwgpu implements.

    python scripts/reference/colbert_reference.py MODEL_DIR [--text "..."] [--pylate]

MODEL_DIR is a checkpoint in the PyLate / sentence-transformers layout
(models/colbert-minilm): BERT backbone files at the root, `1_Dense/model.safetensors`
holding `linear.weight` [dim, hidden] (no bias) and `config_sentence_transformers.json`.

Semantics (exactly what the Rust engine does; f32, BertModel in eval mode):

* Tokens come from the checkpoint's WordPiece tokenizer (`tokenizer.json`) with its
  baked-in truncation / padding switched off; text tokens are produced without special
  tokens and the sequence is assembled here.
* Query:    [CLS, Q_MARKER, t1..tn, SEP] with n <= query_length - 3, then padded to
  exactly query_length with [MASK] (query augmentation). attention_mask is 1 on the real
  tokens and 0 on the [MASK] expansion (attend_to_expansion_tokens = false); all
  query_length positions produce a vector.
* Document: [CLS, D_MARKER, t1..tn, SEP] with n <= document_length - 3, no padding in the
  output; every position yields a vector except tokens whose id is in the skiplist
  (first token id of each punctuation character). CLS, marker and SEP are kept.
* Vector = L2-normalise(last_hidden_state @ linear.weight.T), norm clamped at 1e-12.
  token_type_ids are all 0 and position ids are 0..L-1.

Batches are padded with [PAD] (0) and attention_mask 0; padded positions are dropped.
"""
import argparse
import json
import os
import string
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import BertModel
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()  # the unused pooler weights are expected


@dataclass
class EncodedQuery:
    ids: np.ndarray       # int32 [query_length]
    vectors: np.ndarray   # float32 [query_length, dim]


@dataclass
class EncodedDocument:
    ids: np.ndarray       # int32 [n_tokens], the full sequence CLS..SEP (before the skiplist)
    kept: np.ndarray      # bool [n_tokens], False where the id is in the skiplist
    vectors: np.ndarray   # float32 [kept.sum(), dim], vectors of the kept tokens only

    @property
    def kept_ids(self) -> np.ndarray:
        return self.ids[self.kept]


class ColbertReference:
    def __init__(self, model_dir: str, threads: Optional[int] = 2, attn_implementation: str = "eager"):
        """attn_implementation: "eager" (plain softmax(QK^T)V, used for the fixtures) or
        "sdpa" (torch's fused scaled_dot_product_attention, transformers' default)."""
        if threads:
            torch.set_num_threads(threads)
        self.model_dir = model_dir
        with open(os.path.join(model_dir, "config_sentence_transformers.json")) as f:
            st_cfg = json.load(f)
        self.query_length = int(st_cfg.get("query_length", 32))
        self.document_length = int(st_cfg.get("document_length", 180))
        self.attend_to_expansion = bool(st_cfg.get("attend_to_expansion_tokens", False))
        skiplist_words = st_cfg.get("skiplist_words", list(string.punctuation))

        # Raw `tokenizers` object: tokenizer.json bakes in truncation(128) and fixed
        # padding(128); both are switched off and special tokens added by hand.
        tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        self.tokenizer = tok

        def tid(token: str) -> int:
            i = tok.token_to_id(token)
            if i is None:
                raise ValueError(f"token {token!r} is not in the vocabulary")
            return i

        self.cls_id = tid("[CLS]")
        self.sep_id = tid("[SEP]")
        self.mask_id = tid("[MASK]")
        self.pad_id = tid("[PAD]")
        self.query_marker_id = tid(st_cfg.get("query_prefix", "[unused0]"))
        self.document_marker_id = tid(st_cfg.get("document_prefix", "[unused1]"))
        self.skiplist_ids = sorted({self.text_ids(w)[0] for w in skiplist_words if self.text_ids(w)})

        self.model = BertModel.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation=attn_implementation, add_pooling_layer=False
        ).eval()
        dense = load_file(os.path.join(model_dir, "1_Dense", "model.safetensors"))
        self.linear = dense["linear.weight"].to(torch.float32).contiguous()  # [dim, hidden]
        if "linear.bias" in dense:
            raise ValueError("1_Dense with a bias is not supported (colwgpu assumes none)")
        self.dim = self.linear.shape[0]

    # ---------------------------------------------------------------- tokenisation
    def text_ids(self, text: str) -> List[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def query_ids(self, text: str) -> List[int]:
        body = self.text_ids(text)[: self.query_length - 3]
        ids = [self.cls_id, self.query_marker_id] + body + [self.sep_id]
        return ids + [self.mask_id] * (self.query_length - len(ids))

    def query_attention(self, text: str) -> List[int]:
        """1 on CLS, marker, text tokens and SEP; 0 on the [MASK] expansion."""
        if self.attend_to_expansion:
            return [1] * self.query_length
        n_real = min(len(self.text_ids(text)), self.query_length - 3) + 3
        return [1] * n_real + [0] * (self.query_length - n_real)

    def document_ids(self, text: str) -> List[int]:
        body = self.text_ids(text)[: self.document_length - 3]
        return [self.cls_id, self.document_marker_id] + body + [self.sep_id]

    # ---------------------------------------------------------------- forward
    @torch.inference_mode()
    def _forward(self, ids: List[List[int]], masks: List[List[int]], hidden_states: bool = False):
        """Pads the batch to its longest sequence with [PAD] / mask 0."""
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        for r, (x, m) in enumerate(zip(ids, masks)):
            input_ids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
            attention[r, : len(m)] = torch.tensor(m, dtype=torch.long)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention,
            token_type_ids=torch.zeros_like(input_ids),
            position_ids=torch.arange(width, dtype=torch.long).unsqueeze(0).expand(len(ids), width),
            output_hidden_states=hidden_states,
        )
        proj = out.last_hidden_state @ self.linear.T
        vec = proj / proj.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return vec, (out.hidden_states if hidden_states else None)

    @staticmethod
    def _batches(lengths: List[int], batch_size: int, sort_by_length: bool):
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort_by_length else list(range(len(lengths)))
        for s in range(0, len(order), batch_size):
            yield order[s : s + batch_size]

    def encode_queries(self, texts: Sequence[str], batch_size: int = 32) -> List[EncodedQuery]:
        all_ids = [self.query_ids(t) for t in texts]
        out: List[Optional[EncodedQuery]] = [None] * len(texts)
        # Queries all have query_length positions: no sorting needed.
        for chunk in self._batches([len(x) for x in all_ids], batch_size, sort_by_length=False):
            ids = [all_ids[i] for i in chunk]
            vec, _ = self._forward(ids, [self.query_attention(texts[i]) for i in chunk])
            for r, i in enumerate(chunk):
                out[i] = EncodedQuery(np.asarray(all_ids[i], dtype=np.int32), vec[r].numpy().astype(np.float32))
        return out

    def encode_documents(self, texts: Sequence[str], batch_size: int = 32, sort_by_length: bool = True) -> List[EncodedDocument]:
        all_ids = [self.document_ids(t) for t in texts]
        skip = set(self.skiplist_ids)
        out: List[Optional[EncodedDocument]] = [None] * len(texts)
        for chunk in self._batches([len(x) for x in all_ids], batch_size, sort_by_length):
            ids = [all_ids[i] for i in chunk]
            vec, _ = self._forward(ids, [[1] * len(x) for x in ids])
            for r, i in enumerate(chunk):
                x = np.asarray(all_ids[i], dtype=np.int32)
                kept = np.array([t not in skip for t in all_ids[i]], dtype=bool)
                v = vec[r, : len(x)].numpy().astype(np.float32)
                out[i] = EncodedDocument(x, kept, np.ascontiguousarray(v[kept]))
        return out

    def query_hidden_states(self, text: str) -> List[np.ndarray]:
        """[embeddings output (after its LayerNorm), encoder layer 0 .. L-1 outputs],
        each [query_length, hidden], for one query."""
        ids = self.query_ids(text)
        _, hs = self._forward([ids], [self.query_attention(text)], hidden_states=True)
        return [h[0].numpy().astype(np.float32) for h in hs]


# -------------------------------------------------------------------- PyLate check
def pylate_cross_check(ref: ColbertReference, queries: Sequence[str], docs: Sequence[str]) -> Optional[dict]:
    """Encodes the same texts with pylate.models.ColBERT (pointing at the same checkpoint)
    and reports max |diff| against this reference. Informational only: returns None when
    PyLate cannot be imported. PyLate inserts its prefix as text ("[unused0] " + text) and
    tokenizes that, so token ids are compared too and reported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local checkpoint: no hub look-ups
    try:
        from pylate import models as pl_models  # noqa: WPS433
    except Exception as e:  # pragma: no cover - optional dependency
        print(f"pylate cross-check skipped: {type(e).__name__}: {e}", file=sys.stderr)
        return None

    model = pl_models.ColBERT(model_name_or_path=os.path.abspath(ref.model_dir), device="cpu")
    model.eval()
    report = {}

    # Token ids as PyLate builds them.
    q_tok = model.tokenize(list(queries), is_query=True)
    d_tok = model.tokenize(list(docs), is_query=False)
    ours_q = [ref.query_ids(t) for t in queries]
    ours_d = [ref.document_ids(t) for t in docs]
    q_id_match = sum(
        1 for r, x in enumerate(ours_q) if q_tok["input_ids"][r].tolist() == x
    )
    d_id_match = 0
    for r, x in enumerate(ours_d):
        got = d_tok["input_ids"][r][d_tok["attention_mask"][r].bool()].tolist()
        d_id_match += int(got == x)
    report["query_ids_equal"] = f"{q_id_match}/{len(queries)}"
    report["doc_ids_equal"] = f"{d_id_match}/{len(docs)}"

    with torch.inference_mode():
        pq = model.encode(list(queries), is_query=True, batch_size=32, convert_to_numpy=True)
        pd = model.encode(list(docs), is_query=False, batch_size=32, convert_to_numpy=True)
    rq = ref.encode_queries(queries)
    rd = ref.encode_documents(docs)

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        if a.shape != b.shape:
            return float("nan")
        return float(np.abs(a - b).max())

    q_diffs = [diff(np.asarray(p), r.vectors) for p, r in zip(pq, rq)]
    d_diffs = [diff(np.asarray(p), r.vectors) for p, r in zip(pd, rd)]
    report["query_shape_mismatches"] = sum(1 for x in q_diffs if x != x)
    report["doc_shape_mismatches"] = sum(1 for x in d_diffs if x != x)
    report["query_max_abs_diff"] = max((x for x in q_diffs if x == x), default=float("nan"))
    report["doc_max_abs_diff"] = max((x for x in d_diffs if x == x), default=float("nan"))
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--text", action="append", default=None, help="text(s) to tokenize/encode")
    ap.add_argument("--pylate", action="store_true", help="also cross-check against pylate.models.ColBERT")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    ref = ColbertReference(a.model_dir, threads=a.threads)
    texts = a.text or ["Hello, world!", "0-dimensional biomaterials lack inductive properties."]
    print(f"skiplist ids: {ref.skiplist_ids}")
    for t in texts:
        print(f"text ids     {t!r}: {ref.text_ids(t)}")
        print(f"query ids    : {ref.query_ids(t)}")
        print(f"document ids : {ref.document_ids(t)}")
    q = ref.encode_queries(texts)
    d = ref.encode_documents(texts)
    for t, qq, dd in zip(texts, q, d):
        print(f"{t!r}: query vectors {qq.vectors.shape}, document vectors {dd.vectors.shape} "
              f"(kept {int(dd.kept.sum())}/{len(dd.ids)})")
    if a.pylate:
        print(json.dumps(pylate_cross_check(ref, texts, texts), indent=1))


if __name__ == "__main__":
    main()
