# Shared set-up of the precision quality scripts (bf16_quality.sh,
# f16_quality.sh), sourced from the repository root after DATA and WORK are
# set: PYTHON, MODEL and BIN, the release binary built, the model fetched,
# numpy checked, and the machine and load printed.
PYTHON=${PYTHON:-python3}
MODEL=models/colbert-minilm
BIN=target/release/colwgpu
mkdir -p "$WORK"
cargo build --release --locked --bin colwgpu >&2
[ -f "$MODEL/model.safetensors" ] || bash models/fetch-model.sh >&2
"$PYTHON" -c 'import numpy' || { echo "$PYTHON has no numpy (set PYTHON)" >&2; exit 1; }
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs;" \
    "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
