#!/usr/bin/env bash
# Makes (or refreshes) one virtual environment for one ComfyUI host tree, from the host's lock file
# .ci/locks/host-VERSION.txt (VERSION: the tree's comfyui_version.py) through .ci/venv_from_lock.sh.
#
#   tests/host/setup_host_env.sh [--unlocked] HOST_DIR VENV_DIR
#
# Without a lock for that version, or with --unlocked (how .ci/make_locks.sh makes the locks), it resolves: the
# host's own pinned requirements, this pack's requirements and the test requirements, with the CPU-only
# workarounds below; without a lock it says loudly that the environment is not reproducible.
# Idempotent: VENV_DIR/.wan_accel_env records a digest of every input (this script, the lock, the three
# requirement files, the host version, the interpreter); a second run with nothing changed only compares it.
set -euo pipefail

UNLOCKED=0
if [ "${1:-}" = "--unlocked" ]; then
    UNLOCKED=1
    shift
fi
if [ "$#" -ne 2 ]; then
    echo "usage: $0 [--unlocked] HOST_DIR VENV_DIR" >&2
    exit 2
fi
HOST_DIR=$(cd "$1" && pwd)
VENV_DIR=$2
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-python3}

if [ ! -f "$HOST_DIR/main.py" ] || [ ! -f "$HOST_DIR/requirements.txt" ]; then
    echo "setup_host_env: $HOST_DIR has no main.py and requirements.txt; pass a ComfyUI checkout" >&2
    exit 2
fi
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$HOST_DIR/comfyui_version.py" 2>/dev/null || true)
VERSION=${VERSION:-unknown}
LOCK=$REPO/.ci/locks/host-$VERSION.txt
INPUTS=("$HOST_DIR/requirements.txt" "$REPO/requirements.txt" "$REPO/requirements-test.txt")
if [ "$UNLOCKED" -eq 0 ] && [ ! -f "$LOCK" ]; then
    UNLOCKED=1
    echo "setup_host_env: ************************************************************************" >&2
    echo "setup_host_env: NO LOCK for ComfyUI $VERSION ($LOCK): resolving UNLOCKED; this environment is" >&2
    echo "setup_host_env: NOT reproducible. Make the lock with: .ci/make_locks.sh $HOST_DIR" >&2
    echo "setup_host_env: ************************************************************************" >&2
fi

digest() {
    cat "$0" "${INPUTS[@]}"
    [ "$UNLOCKED" -eq 1 ] || cat "$LOCK" "$REPO/.ci/venv_from_lock.sh"
    echo "$VERSION unlocked=$UNLOCKED"
    "$PYTHON" -c 'import sys; print(sys.version)'
}
WANT=$(digest | sha256sum | cut -d' ' -f1)
STAMP="$VENV_DIR/.wan_accel_env"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VENV_DIR/bin/python" -c "import torch" 2>/dev/null; then
    echo "setup_host_env: $VENV_DIR is up to date for ComfyUI $VERSION (nothing changed)"
    exit 0
fi

check_imports() {  # the torch family the host imports at start
    "$VENV_DIR/bin/python" -c "import torch, torchvision, torchaudio" \
        || { echo "setup_host_env: torch, torchvision or torchaudio does not import in $VENV_DIR" >&2; exit 1; }
}
if [ "$UNLOCKED" -eq 0 ]; then
    rm -f "$STAMP"
    PYTHON=$PYTHON "$REPO/.ci/venv_from_lock.sh" "$VENV_DIR" "$LOCK" "${INPUTS[@]}"
    check_imports
    echo "$WANT" > "$STAMP"
    echo "setup_host_env: $VENV_DIR ready for ComfyUI $VERSION (from $LOCK)"
    exit 0
fi

if [ ! -x "$VENV_DIR/bin/python" ]; then
    "$PYTHON" -m venv "$VENV_DIR"
    echo "setup_host_env: created $VENV_DIR"
fi
. "$REPO/.ci/quiet_pip.sh"
PIP=(quiet_pip "$VENV_DIR/bin/python" install --quiet)
before=$(mktemp)
"$VENV_DIR/bin/python" -m pip freeze --all 2>/dev/null | sort > "$before"

# The host's requirements without the torch family, which is chosen per host below.
host_reqs=$(mktemp)
grep -v -E '^(torch|torchvision|torchaudio)([<>=~ ;]|$)' "$HOST_DIR/requirements.txt" > "$host_reqs"

# torch 2.14.1 with torchvision 0.29.1 (a CUDA build, which runs on CPU): what 0.33.0's own requirements resolve
# to, and a pair whose compiled parts import cleanly (PyPI's torchvision does not import beside CPU torch 2.13.0).
"${PIP[@]}" torch==2.14.1 torchvision==0.29.1
# torchaudio is not pulled in but imported at start (comfy/ldm/lightricks/vae/audio_vae.py); 2.11.1 is the newest
# on the registry and imports with torch 2.14.1; --no-deps keeps it from asking for another torch.
"${PIP[@]}" --no-deps torchaudio==2.11.1
# requests: the host imports it but 0.3.64 does not list it (newer transformers no longer pull it in).
"${PIP[@]}" -r "$host_reqs" requests -r "$REPO/requirements.txt" -r "$REPO/requirements-test.txt"
rm -f "$host_reqs"

check_imports

after=$(mktemp)
"$VENV_DIR/bin/python" -m pip freeze --all 2>/dev/null | sort > "$after"
changes=$(comm -13 "$before" "$after" | wc -l)
comm -13 "$before" "$after" | sed -n '1,40s/^/setup_host_env: installed /p'  # no head: SIGPIPE under pipefail
if [ "$changes" -gt 40 ]; then
    echo "setup_host_env: ... and $((changes - 40)) more"
fi
rm -f "$before" "$after"
echo "$WANT" > "$STAMP"
echo "setup_host_env: $VENV_DIR ready for ComfyUI $VERSION, unlocked ($changes packages changed)"
