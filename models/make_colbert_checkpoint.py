#!/usr/bin/env python3
"""Builds a ColBERT checkpoint in the PyLate / sentence-transformers layout from a
plain BERT directory, using only the Python standard library.

    python3 make_colbert_checkpoint.py BERT_DIR OUT_DIR [--dim 128] [--seed 12345]

OUT_DIR gets the backbone files (hard-linked or copied), `1_Dense/model.safetensors`
holding `linear.weight` [dim, hidden] (f32, no bias) and `config_sentence_transformers.json`
with the ColBERTv2 markers ([unused0] for queries, [unused1] for documents), the
lengths (query 32, document 180), `attend_to_expansion_tokens: false` and the
punctuation skiplist.

No trained ColBERT head can be obtained on this machine, so the projection is
*seeded*: a Gaussian matrix N(0, 1/hidden) from a fixed seed. Retrieval quality
therefore comes from the MiniLM backbone alone; the code paths (and the parity
with the reference implementation) are the same as for a trained head.
"""
import json, math, os, random, shutil, string, struct, sys, argparse


def write_safetensors(path, tensors):
    """tensors: {name: (shape, list_of_floats)} written as little-endian F32."""
    header, blobs, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        blob = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bert_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=12345)
    a = ap.parse_args()

    with open(os.path.join(a.bert_dir, "config.json")) as f:
        hidden = json.load(f)["hidden_size"]

    os.makedirs(os.path.join(a.out_dir, "1_Dense"), exist_ok=True)
    for name in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.txt"]:
        src, dst = os.path.join(a.bert_dir, name), os.path.join(a.out_dir, name)
        if not os.path.exists(src):
            continue
        if os.path.exists(dst):
            os.remove(dst)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)

    rng = random.Random(a.seed)
    std = 1.0 / math.sqrt(hidden)
    weight = [rng.gauss(0.0, std) for _ in range(a.dim * hidden)]
    write_safetensors(os.path.join(a.out_dir, "1_Dense", "model.safetensors"),
                      {"linear.weight": ((a.dim, hidden), weight)})
    with open(os.path.join(a.out_dir, "1_Dense", "config.json"), "w") as f:
        json.dump({"in_features": hidden, "out_features": a.dim, "bias": False,
                   "activation_function": "torch.nn.modules.linear.Identity"}, f, indent=2)
    with open(os.path.join(a.out_dir, "modules.json"), "w") as f:
        json.dump([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
        ], f, indent=2)
    with open(os.path.join(a.out_dir, "config_sentence_transformers.json"), "w") as f:
        json.dump({
            "query_prefix": "[unused0]",
            "document_prefix": "[unused1]",
            "query_length": 32,
            "document_length": 180,
            "attend_to_expansion_tokens": False,
            "skiplist_words": list(string.punctuation),
            "similarity_fn_name": "MaxSim",
            "colwgpu_note": "seeded projection (seed %d): no trained ColBERT head is obtainable here" % a.seed,
        }, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
