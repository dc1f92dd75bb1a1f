#!/usr/bin/env bash
# The test suite. Installs what the tests need first (idempotent): lavapipe, so
# every WGSL kernel runs on a real (software) Vulkan adapter, and the real model
# for the parity and end-to-end tests. No test is skipped for lack of either.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-system.sh
bash models/fetch-model.sh
# Keep Mesa's shader cache inside the build tree (not $HOME) so runs are reproducible.
export MESA_SHADER_CACHE_DIR="${MESA_SHADER_CACHE_DIR:-$PWD/target/mesa-shader-cache}"
cargo test --release --locked "$@"
# Benches must keep compiling.
cargo bench --locked --no-run >/dev/null 2>&1 || { echo "benches fail to compile" >&2; cargo bench --locked --no-run; exit 1; }
