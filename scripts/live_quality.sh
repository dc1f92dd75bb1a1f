#!/usr/bin/env bash
# Issue 12's quality check: encode SciFact once (MiniLM, CPU), then
# examples/live_quality.rs indexes a seeded half, adds the other half in ten
# batches, and compares nDCG@10 with a full rebuild (and measures the outlier
# distance, add vs rebuild time, filtered QPS / recall). Prints one JSON summary.
# Usage: scripts/live_quality.sh [DATA_DIR] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/scifact}"
WORK="${2:-/tmp/colwgpu-live-quality}"
mkdir -p "$WORK"
BIN=target/release/colwgpu
cargo build --release --locked --bin colwgpu --example live_quality
[ -f "$WORK/docs.safetensors" ] || "$BIN" encode --device cpu --model models/colbert-minilm \
  --docs "$DATA/corpus.jsonl" --out "$WORK/docs.safetensors"
[ -f "$WORK/queries.safetensors" ] || "$BIN" encode --device cpu --model models/colbert-minilm \
  --queries "$DATA/queries.jsonl" --out "$WORK/queries.safetensors"
rm -rf "$WORK/out"
target/release/examples/live_quality "$WORK/docs.safetensors" "$WORK/queries.safetensors" \
  "$DATA/qrels/test.tsv" "$WORK/out"
