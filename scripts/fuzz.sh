#!/usr/bin/env bash
# Fuzzes the three parsers that take a user's bytes (tests/fuzz.rs): the
# corpus/queries reader, the model loader, Index::open. Each target runs for
# SECONDS (default 600) in turn, at low priority; a panic saves its input under
# target/fuzz-crashes/ and fails.
#   bash scripts/fuzz.sh [SECONDS] [SEED]     (FUZZ_TARGETS="fuzz_reader ..." to pick)
# An abort (e.g. a failed huge allocation) cannot be caught: the input of the
# running case is then in target/fuzz-crashes/last-input.bin.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
seed="${2:-$RANDOM}"
export MESA_SHADER_CACHE_DIR="${MESA_SHADER_CACHE_DIR:-$PWD/target/mesa-shader-cache}"
# Build once, then run the built binary (later edits do not change a run).
exe=$(cargo test --release --test fuzz --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "fuzz":
        print(m["executable"])')
[ -n "$exe" ] || { echo "fuzz.sh: could not build tests/fuzz.rs" >&2; exit 1; }
targets="${FUZZ_TARGETS:-fuzz_reader fuzz_model_loader fuzz_index_open}"
for target in $targets; do
  echo "== $target: ${secs} s, seed $seed ($(date -u +%H:%M:%S))"
  COLWGPU_FUZZ_SECONDS="$secs" COLWGPU_FUZZ_SEED="$seed" \
    nice -n 10 "$exe" --exact "$target" --nocapture --test-threads 1
done
