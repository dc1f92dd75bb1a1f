#!/usr/bin/env bash
# The test suite. Installs what the tests need first (idempotent): lavapipe, so
# every WGSL kernel runs on a real (software) Vulkan adapter, and the real model
# for the parity and end-to-end tests. No test is skipped for lack of either.
# Then the habits: formatting, clippy with warnings as errors, benches compiling,
# and the library building without the `cli` feature.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check || { echo "cargo fmt: files need formatting (run cargo fmt --all)" >&2; exit 1; }
bash scripts/install-system.sh
bash models/fetch-model.sh
# Keep Mesa's shader cache inside the build tree (not $HOME) so runs are reproducible.
export MESA_SHADER_CACHE_DIR="${MESA_SHADER_CACHE_DIR:-$PWD/target/mesa-shader-cache}"
cargo test --release --locked "$@"
# --release: build scripts and proc-macros are shared with the test build above.
cargo clippy --release --all-targets --locked -- -D warnings
# Benches must keep compiling (the bench profile reuses the release build).
cargo bench --locked --no-run >/dev/null 2>&1 || { echo "benches fail to compile" >&2; cargo bench --locked --no-run; exit 1; }
# The library alone, without the CLI-only crates (clap, indicatif, anyhow, env_logger):
# checked (not built), reusing the dependencies clippy just checked.
cargo clippy --release --locked --lib --no-default-features -- -D warnings
# The Python bindings: clippy, then the wheel built, installed and tested with pytest.
cargo clippy --release --locked -p colwgpu-python -- -D warnings
bash scripts/test-python.sh
