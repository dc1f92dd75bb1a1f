#!/usr/bin/env bash
# A Python environment for the reference PLAID implementation (stanford ColBERT,
# `colbert-ai` on PyPI), used only by scripts/compare_reference.sh — never by the
# tests or CI.
#
#   bash scripts/reference/setup_colbert_env.sh [VENV_DIR]   (default: .venv-colbert)
#
# colbert-ai 0.2.22 predates transformers 5 (its HF_ColBERT misses attributes that
# transformers 5's from_pretrained needs), so transformers is pinned below 5.
# It runs on the CPU here; its C++ extensions are compiled on first use (g++, ninja).
set -euo pipefail
VENV="${1:-.venv-colbert}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet torch "colbert-ai==0.2.22" "transformers>=4.40,<5" faiss-cpu ninja safetensors numpy
"$VENV/bin/python" -c "import colbert, transformers, torch; print('colbert-ai ready: transformers', transformers.__version__, 'torch', torch.__version__)"
