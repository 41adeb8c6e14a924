#!/usr/bin/env bash
# Not part of CI's pass/fail: what the next re-lock would bring. Re-resolves the unit tier with the newest versions
# the registries offer (.ci/make_locks.sh unit, in a temporary folder: torch stays the tier's CPU 2.13.0), runs
# tests/unit there from the checkout, and prints what changed against .ci/locks/unit.txt and which tests broke.
#
#   .ci/newest_versions.sh
#
# Exit status: 0 when tests/unit passes with the newest versions, 1 when something broke. Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "newest_versions: resolving the unit tier afresh in $WORK"
.ci/make_locks.sh --out "$WORK/locks" --keep "$WORK/venvs" unit

echo "newest_versions: changes against .ci/locks/unit.txt (package: locked -> newest)"
awk -F'==' '
    /^#/ || NF < 2 { next }
    { name = tolower($1); gsub(/[-_.]+/, "-", name) }
    FNR == NR { old[name] = $2; next }
    { new[name] = $2 }
    END {
        for (n in new) if (!(n in old)) printf "  added   %s %s\n", n, new[n]
        for (n in old) if (!(n in new)) printf "  removed %s %s\n", n, old[n]
        for (n in new) if ((n in old) && old[n] != new[n]) printf "  changed %s: %s -> %s\n", n, old[n], new[n]
        for (n in new) same += (n in old) && old[n] == new[n]
        printf "  (%d unchanged)\n", same
    }' .ci/locks/unit.txt "$WORK/locks/unit.txt" | LC_ALL=C sort -k1,1 -k2,2

echo "newest_versions: running tests/unit with the newest versions"
set +e
COMFYUI_PATH="" "$WORK/venvs/unit/bin/python" -m pytest -p no:cacheprovider -q -rfE tests/unit > "$WORK/pytest.log" 2>&1
rc=$?
set -e
broken=$(grep -E '^(FAILED|ERROR) ' "$WORK/pytest.log" | sed 's/ - .*//' || true)
echo "newest_versions: $(tail -n 1 "$WORK/pytest.log") (pytest exit $rc)"
if [ "$rc" -eq 0 ]; then
    echo "newest_versions: nothing broke; to adopt these versions: .ci/make_locks.sh unit"
    exit 0
fi
echo "newest_versions: broke with the newest versions:"
if [ -n "$broken" ]; then
    echo "$broken" | sed 's/^/  /'
else
    tail -n 30 "$WORK/pytest.log" | sed 's/^/  /'
fi
exit 1
