#!/usr/bin/env bash
# Makes the lock files the test environments install from (.ci/venv_from_lock.sh): each is a clean resolve in a
# fresh virtual environment, written out by pip freeze.
#
#   .ci/make_locks.sh [--out DIR] [--keep DIR] [TARGET...]
#
#   unit           -> unit.txt           CPU torch 2.13.0 (/opt/wheels), requirements.txt, requirements-test.txt,
#                                        requirements-ray.txt (the Ray tier runs in the unit tier's .venv)
#   device-parity  -> device-parity.txt  a lent GPU's torch 2.11.0 and Triton 3.6.0, and the GPU suite's wheels
#   score          -> score.txt          torch 2.14.1 + torchvision 0.29.1, the score extra, VBench 0.1.5 (no deps)
#   HOST_DIR       -> host-VERSION.txt   what tests/host/setup_host_env.sh resolves for that ComfyUI tree
#
# No TARGET: unit, device-parity, score and every ../shared/host/ComfyUI-* tree. --out DIR writes the locks to DIR instead
# of .ci/locks; --keep DIR keeps each resolved environment as DIR/<lock name> (the newest-versions command tests it).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
OUT=$REPO/.ci/locks
KEEP=""
while [ "$#" -gt 0 ]; do
    case $1 in
        --out) OUT=$(mkdir -p "$2" && cd "$2" && pwd); shift 2 ;;
        --keep) KEEP=$(mkdir -p "$2" && cd "$2" && pwd); shift 2 ;;
        *) break ;;
    esac
done
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(unit device-parity score)
    for dir in "$REPO"/../shared/host/ComfyUI-*; do
        [ -f "$dir/main.py" ] && targets+=("$(cd "$dir" && pwd)")
    done
fi
# What the GPU suite imports beyond torch and Triton (benchmarks/README.md, benchmarks/prepare_gpu_carry.sh).
SUITE_WHEELS=(psutil einops numpy pillow gguf pyyaml safetensors pytest pluggy iniconfig packaging)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

. "$REPO/.ci/quiet_pip.sh"

lock_one() {  # TARGET: resolve it in a fresh venv and write its lock
    local target=$1 name venv inputs=() version t0 how
    t0=$(date +%s)
    case $target in
        unit) name=unit; how=unit
            inputs=("$REPO/requirements.txt" "$REPO/requirements-test.txt" "$REPO/requirements-ray.txt") ;;
        device-parity) name=device-parity; how=device-parity ;;
        score) name=score; how=score
            inputs=("$REPO/requirements.txt" "$REPO/requirements-test.txt" "$REPO/requirements-score.txt") ;;
        *)
            if [ ! -f "$target/comfyui_version.py" ]; then
                echo "make_locks: $target is neither unit, device-parity, score nor a ComfyUI tree (no comfyui_version.py)" >&2
                exit 2
            fi
            version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$target/comfyui_version.py")
            name=host-$version
            how="<the ComfyUI $version tree>"
            inputs=("$target/requirements.txt" "$REPO/requirements.txt" "$REPO/requirements-test.txt") ;;
    esac
    venv=$WORK/$name
    [ -n "$KEEP" ] && venv=$KEEP/$name && rm -rf "$venv"
    case $target in
        unit)
            "$PYTHON" -m venv "$venv"
            quiet_pip "$venv/bin/python" install --quiet torch==2.13.0
            quiet_pip "$venv/bin/python" install --quiet -r "$REPO/requirements.txt" -r "$REPO/requirements-test.txt" \
                -r "$REPO/requirements-ray.txt" ;;
        device-parity)
            # numpy<2.4: Triton 3.6's interpreter calls int() on one-element arrays (triton/runtime/interpreter.py,
            # tensor __index__), which NumPy 2.4 refuses; a GPU compiles its kernels and never runs that code.
            "$PYTHON" -m venv "$venv"
            quiet_pip "$venv/bin/python" install --quiet torch==2.11.0 triton==3.6.0 "${SUITE_WHEELS[@]}" "numpy<2.4" ;;
        score)
            # VBench pins transformers 4.33 and timm <= 1.0.12 that the rest cannot use; its metric code (AMT-S
            # among it) needs none of them, so it goes in without its dependencies, as the README tells users.
            "$PYTHON" -m venv "$venv"
            quiet_pip "$venv/bin/python" install --quiet torch==2.14.1 torchvision==0.29.1
            quiet_pip "$venv/bin/python" install --quiet -r "$REPO/requirements.txt" -r "$REPO/requirements-test.txt" \
                -r "$REPO/requirements-score.txt"
            quiet_pip "$venv/bin/python" install --quiet --no-deps vbench==0.1.5 ;;
        *) "$REPO/tests/host/setup_host_env.sh" --unlocked "$target" "$venv" ;;
    esac
    {
        echo "# $name: made by .ci/make_locks.sh $how from a clean resolve (pip freeze); installed by" \
            ".ci/venv_from_lock.sh; never edit by hand."
        echo "# python $("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        echo "# inputs sha256 $(cat /dev/null "${inputs[@]}" | sha256sum | cut -d' ' -f1)"
        "$venv/bin/python" -m pip freeze --all --exclude pip 2>/dev/null
    } > "$OUT/$name.txt"
    echo "make_locks: $OUT/$name.txt ($(grep -c -v '^#' "$OUT/$name.txt") packages, $(( $(date +%s) - t0 )) s)"
}

for target in "${targets[@]}"; do
    lock_one "$target"
done
