#!/usr/bin/env bash
# The main job on the bundled example (examples/scifact-mini: 120 SciFact
# abstracts, 20 test claims with their qrels), on the backend `auto` picks (a
# hardware GPU if there is one, else the native CPU backend):
# encode → index → search → eval.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/colwgpu
model=models/colbert-minilm
ex=examples/scifact-mini
out=target/example
mkdir -p "$out"

"$bin" info --model "$model"
"$bin" encode --model "$model" --queries "$ex/queries.jsonl" --out "$out/queries.safetensors"
"$bin" index --model "$model" --corpus "$ex/corpus.jsonl" --index "$out/scifact-mini.index" --nbits 2
# The index records its model: search and eval need no --model.
"$bin" search --index "$out/scifact-mini.index" -k 3 \
  --query "0-dimensional biomaterials show inductive properties."
# The same index from the vectors `encode` wrote (vectors in), searched with query vectors.
"$bin" encode --model "$model" --docs "$ex/corpus.jsonl" --out "$out/docs.safetensors"
"$bin" index --vectors "$out/docs.safetensors" --index "$out/from-vectors.index"
"$bin" search --index "$out/from-vectors.index" --query-vectors "$out/queries.safetensors" -k 1
"$bin" eval --index "$out/scifact-mini.index" \
  --queries "$ex/queries.jsonl" --qrels "$ex/qrels/test.tsv" -k 100
