#!/usr/bin/env bash
# Rendering fidelity: colwgpu's PDF renderer (hayro) against poppler's pdftoppm
# at the same resolution, on every page of the PDFs in a folder (default
# ../shared/data/pdf-docs, 53 pages). Prints, per page, the mean absolute
# difference per pixel and channel (0–255 scale) over the common area, and the
# mean over all pages. Needs `pdftoppm` (Debian poppler-utils; for this
# measurement only, never at run time) and python3 with numpy and Pillow.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
data="${1:-$here/../shared/data/pdf-docs}"
dpi="${2:-100}"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# RENDER_PDF: a render_pdf binary already built (else it is built here).
render="${RENDER_PDF:-}"
if [ -z "$render" ]; then
  cargo build --release --example render_pdf --manifest-path "$here/Cargo.toml" >&2
  render="$here/target/release/examples/render_pdf"
fi
for pdf in "$data"/*.pdf; do
  name="$(basename "$pdf" .pdf)"
  "$render" "$pdf" "$dpi" "$work/$name/hayro" >/dev/null
  mkdir -p "$work/$name/poppler"
  pdftoppm -r "$dpi" -png "$pdf" "$work/$name/poppler/p"
done
"$python" - "$work" "$dpi" <<'PY'
import pathlib, re, sys
import numpy as np
from PIL import Image
work, dpi = pathlib.Path(sys.argv[1]), sys.argv[2]
allm = []
for doc in sorted(p for p in work.iterdir() if p.is_dir()):
    pop = {int(re.search(r"(\d+)\.png$", f.name).group(1)): f for f in (doc / "poppler").glob("*.png")}
    for f in sorted((doc / "hayro").glob("page-*.png"), key=lambda f: int(f.stem.split("-")[1])):
        n = int(f.stem.split("-")[1])
        a = np.asarray(Image.open(f).convert("RGB"), dtype=np.int16)
        b = np.asarray(Image.open(pop[n]).convert("RGB"), dtype=np.int16)
        h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
        m = np.abs(a[:h, :w] - b[:h, :w]).mean()
        allm.append(m)
        print(f"{doc.name}.pdf#{n}\t{a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]}\tMAD {m:.3f}")
a = np.array(allm)
print(f"{len(a)} pages at {dpi} DPI: mean absolute difference per pixel and channel "
      f"mean {a.mean():.3f}, median {np.median(a):.3f}, max {a.max():.3f} (0-255 scale)")
PY
