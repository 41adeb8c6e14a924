#!/usr/bin/env bash
# Makes VENV hold exactly the packages of LOCK (a lock file of .ci/locks, made by .ci/make_locks.sh): installs
# them without resolving (--no-deps) and uninstalls what the lock does not list. Reproducible test environments.
#
#   .ci/venv_from_lock.sh VENV LOCK [INPUT...]
#
# INPUT: the requirement files the lock was resolved from, in make_locks.sh's order; when their digest differs
# from the lock's "# inputs sha256" line the lock is stale and this fails, naming the command that re-makes it.
# Idempotent: when pip freeze already equals the lock it only says so. Quiet, except for pip's errors.
set -euo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: $0 VENV LOCK [INPUT...]" >&2
    exit 2
fi
VENV=$1
LOCK=$2
shift 2
PYTHON=${PYTHON:-python3}
if [ ! -f "$LOCK" ]; then
    echo "venv_from_lock: no lock file $LOCK; make it with .ci/make_locks.sh" >&2
    exit 2
fi

want_inputs=$(sed -n 's/^# inputs sha256 //p' "$LOCK")
have_inputs=$(cat /dev/null "$@" | sha256sum | cut -d' ' -f1)
if [ "$want_inputs" != "$have_inputs" ]; then
    echo "venv_from_lock: $LOCK is stale: it was made from other contents of ${*:-no input files};" \
        "re-make it: $(sed -n 's/^# [^:]*: made by \(.ci\/make_locks.sh [^(]*\) from .*/\1/p' "$LOCK")" >&2
    exit 1
fi

. "$(dirname "$0")/quiet_pip.sh"
frozen() { "$VENV/bin/python" -m pip freeze --all --exclude pip 2>/dev/null | LC_ALL=C sort; }
locked() { grep -v -E '^(#|$)' "$LOCK" | LC_ALL=C sort; }

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    echo "venv_from_lock: created $VENV"
fi
want_python=$(sed -n 's/^# python //p' "$LOCK")
have_python=$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if [ "$want_python" != "$have_python" ]; then
    echo "venv_from_lock: $LOCK was made for Python $want_python, $VENV has $have_python; remove $VENV and set" \
        "PYTHON to a Python $want_python, or re-make the lock with this one (.ci/make_locks.sh)" >&2
    exit 1
fi
if [ "$(frozen)" = "$(locked)" ]; then
    echo "venv_from_lock: $VENV matches $LOCK (nothing changed)"
    exit 0
fi
quiet_pip "$VENV/bin/python" install --quiet --no-deps -r <(locked)
extra=$(comm -23 <(frozen | sed 's/==.*//' | LC_ALL=C sort) <(locked | sed 's/==.*//' | LC_ALL=C sort))
if [ -n "$extra" ]; then
    # shellcheck disable=SC2086  # one package name per word
    quiet_pip "$VENV/bin/python" uninstall --quiet --yes $extra
fi
if [ "$(frozen)" != "$(locked)" ]; then
    echo "venv_from_lock: $VENV still differs from $LOCK after installing it:" >&2
    diff <(locked) <(frozen) >&2 || true
    exit 1
fi
echo "venv_from_lock: $VENV installed from $LOCK ($(locked | wc -l) packages)"
