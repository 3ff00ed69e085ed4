#!/usr/bin/env bash
# The merge job: the shards' reports into one verdict (python -m edgeready merge), its summary into the CI
# page ($GITHUB_STEP_SUMMARY where there is one), and the exit status one unsharded run would have had.
#
#   ci/merge.sh SHARD_DIR...
set -euo pipefail
out=${REPORTS:-reports}/merged
python=${PYTHON_BIN:-.venv/bin/python}
status=0
"$python" -m edgeready merge "$out" "$@" || status=$?
if [ -n "${GITHUB_STEP_SUMMARY:-}" ] && [ -f "$out/summary.md" ]; then
    cat "$out/summary.md" >> "$GITHUB_STEP_SUMMARY"
fi
exit "$status"
