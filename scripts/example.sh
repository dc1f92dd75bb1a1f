#!/usr/bin/env bash
# The main job on the bundled example (examples/scifact-mini): encode its
# documents and queries with the backend `auto` picks (a hardware GPU if there
# is one, else the native CPU backend), then show what the adapter looks like.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/colwgpu
model=models/colbert-minilm
ex=examples/scifact-mini
out=target/example
mkdir -p "$out"

"$bin" info --model "$model"
"$bin" encode --model "$model" --docs "$ex/corpus.jsonl" --out "$out/docs.safetensors"
"$bin" encode --model "$model" --queries "$ex/queries.jsonl" --out "$out/queries.safetensors"
