#!/usr/bin/env bash
# The Python package's tests: builds the abi3 wheel with maturin (release, the
# workspace's lock file and target directory), installs it into a virtual
# environment, and runs pytest on python/tests. Called by scripts/test.sh after
# the Rust suite (the model it fetched is shared). PyTorch is never needed.
#
#   bash scripts/test-python.sh [pytest args...]      (venv: $COLWGPU_PY_VENV, default .venv-python)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${COLWGPU_PY_VENV:-.venv-python}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r python/requirements-test.txt
rm -rf target/wheels
"$VENV/bin/maturin" build --quiet --release --locked -m python/Cargo.toml -o target/wheels
"$VENV/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps target/wheels/colwgpu-*.whl
# Run from outside the source tree so `import colwgpu` is the installed wheel.
cd python/tests
"../../$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" .
