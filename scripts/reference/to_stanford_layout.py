#!/usr/bin/env python3
"""Rewrite a PyLate-layout ColBERT checkpoint into the stanford ColBERT layout.

    python scripts/reference/to_stanford_layout.py SRC_DIR DST_DIR

SRC_DIR (e.g. models/colbert-minilm): BERT weights in `model.safetensors` at the root,
the projection `linear.weight` [dim, hidden] in `1_Dense/model.safetensors`, the ColBERT
settings in `config_sentence_transformers.json`.

DST_DIR gets what `colbert-ai` (stanford ColBERT, HF_ColBERT) loads and colwgpu reads too:
one `model.safetensors` with the backbone tensors under `bert.` and `linear.weight`,
`config.json`, the tokenizer files and `artifact.metadata` with the same settings.
Tensor values are copied bit for bit, so both engines see one and the same model.
"""
import argparse
import json
import shutil
from pathlib import Path

from safetensors.numpy import load_file, save_file

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    args = ap.parse_args()

    backbone = load_file(str(args.src / "model.safetensors"))
    dense = load_file(str(args.src / "1_Dense" / "model.safetensors"))
    if "linear.weight" not in dense:
        raise SystemExit(f"{args.src}/1_Dense/model.safetensors has no 'linear.weight'")
    settings = json.loads((args.src / "config_sentence_transformers.json").read_text())

    args.dst.mkdir(parents=True, exist_ok=True)
    tensors = {f"bert.{name}": value for name, value in backbone.items()}
    tensors["linear.weight"] = dense["linear.weight"]
    save_file(tensors, str(args.dst / "model.safetensors"))

    config = json.loads((args.src / "config.json").read_text())
    config["architectures"] = ["HF_ColBERT"]
    (args.dst / "config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        if (args.src / name).exists():
            shutil.copy(args.src / name, args.dst / name)

    dim, _hidden = dense["linear.weight"].shape
    metadata = {
        "query_token_id": settings.get("query_prefix", "[unused0]"),
        "doc_token_id": settings.get("document_prefix", "[unused1]"),
        "query_maxlen": settings.get("query_length", 32),
        "doc_maxlen": settings.get("document_length", 180),
        "dim": int(dim),
        "attend_to_mask_tokens": settings.get("attend_to_expansion_tokens", False),
        "mask_punctuation": True,
        "similarity": "cosine",
    }
    (args.dst / "artifact.metadata").write_text(json.dumps(metadata, indent=2))
    print(f"wrote {args.dst} ({len(tensors)} tensors, dim {dim})")


if __name__ == "__main__":
    main()
