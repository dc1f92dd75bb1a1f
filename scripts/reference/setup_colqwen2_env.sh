#!/usr/bin/env bash
# Creates the Python environment that scripts/reference/make_colqwen2_fixtures.py
# needs: colpali-engine 0.3.18 from PyPI (it pulls torch, transformers,
# torchvision, peft). Outside the repository; never needed by the tests or CI.
#
#   bash scripts/reference/setup_colqwen2_env.sh [VENV_DIR]   (default /work/.venv-qwen)
#
# PyPI's default torch wheel is the CUDA build (~3 GB with its nvidia-* wheels);
# it runs on the CPU all the same. Where the PyTorch CPU index is reachable,
# `pip install torch --index-url https://download.pytorch.org/whl/cpu` first
# saves the download.
set -euo pipefail
VENV="${1:-/work/.venv-qwen}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install colpali-engine==0.3.18
"$VENV/bin/python" - <<'PY'
from importlib.metadata import version as v
print(*(f"{p} {v(p)}" for p in ("colpali-engine", "transformers", "torch", "tokenizers", "pillow")))
PY
