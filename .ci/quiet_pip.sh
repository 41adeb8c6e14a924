# Sourced by the environment scripts. quiet_pip PYTHON ARGS... runs "PYTHON -m pip ARGS" without the
# "Location ... is ignored" lines that this machine's absent local indexes print, keeping pip's errors and exit code.
quiet_pip() {
    local python=$1 rc
    shift
    set +e
    "$python" -m pip --disable-pip-version-check "$@" 2>&1 \
        | grep -v -E "is ignored: it is neither a file nor a directory"
    rc=${PIPESTATUS[0]}
    set -e
    return "$rc"
}
