#!/usr/bin/env bash
# Prepares .gpu_carry/ for the GPU suite (python -m benchmarks.gpu_suite) on a bare GPU image (torch + Triton,
# no registry access):
#   .gpu_carry/ComfyUI-0.3.64/  the host tree, imported in-process (no .git, no tests)
#   .gpu_carry/wheels/          the wheels the host and the pack import beyond torch and Triton (benchmarks/README.md)
# Usage (from anywhere): benchmarks/prepare_gpu_carry.sh [HOST_TREE] [PYTHON_VERSION]
#   HOST_TREE defaults to ../shared/host/ComfyUI-0.3.64 beside the repository, PYTHON_VERSION to 3.12 (the GPU image's).
set -euo pipefail
cd "$(dirname "$0")/.."
HOST=${1:-../shared/host/ComfyUI-0.3.64}
PY=${2:-3.12}
CARRY=.gpu_carry
LIMIT_MIB=56  # the run carries at most 64 MiB with the repository's own files (about 2 MiB)
# What a clean venv holding only torch and Triton lacks for the suite (found by importing each section there):
# host: psutil einops numpy pillow; pack: gguf pyyaml safetensors; unit-test section: pytest and its needs.
WHEELS="psutil einops numpy pillow gguf pyyaml safetensors pytest pluggy iniconfig packaging"
OPTIONAL="sageattention==1.0.6"

if [ ! -f "$HOST/comfy/ldm/wan/model.py" ]; then
    echo "prepare_gpu_carry.sh: $HOST is not a ComfyUI checkout; pass the 0.3.64 tree as the first argument" >&2
    exit 1
fi
rm -rf "$CARRY"
mkdir -p "$CARRY/wheels"
tar -C "$(dirname "$HOST")" --exclude=.git --exclude=tests --exclude=tests-unit --exclude='__pycache__' \
    -cf - "$(basename "$HOST")" | tar -C "$CARRY" -xf -
mv "$CARRY/$(basename "$HOST")" "$CARRY/ComfyUI-0.3.64" 2>/dev/null || true
download() {
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d "$CARRY/wheels" "$@"
}
download $WHEELS
download $OPTIONAL || echo "prepare_gpu_carry.sh: $OPTIONAL not downloadable: the suite reports sage as unavailable"
size=$(du -sm "$CARRY" | cut -f1)
if [ "$size" -gt "$LIMIT_MIB" ]; then
    rm -f "$CARRY"/wheels/sageattention-*.whl
    echo "prepare_gpu_carry.sh: over $LIMIT_MIB MiB, $OPTIONAL left out (the suite reports sage as unavailable)"
    size=$(du -sm "$CARRY" | cut -f1)
fi
echo "prepared $CARRY: ${size} MiB"
ls "$CARRY/wheels"
