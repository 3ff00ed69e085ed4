#!/usr/bin/env bash
# One shard of the gate matrix, as a CI job runs it (ci/github-actions.yml, ci/gitlab-ci.yml).
#
#   ci/shard.sh I N
#
# Judges the candidates a pull request adds or changes (CANDIDATES, or `git diff` against BASE_REF) against
# the device targets (TARGETS; default: the device default), each against the model it replaces (BASELINE;
# default: the targets' own baseline), shard I of N, into $REPORTS/shard-I with JUnit XML. A failing gate
# does not fail this job: the merge job judges the whole matrix. A run that could not judge (exit 2 or more:
# a configuration error, an interrupt) fails it.
set -euo pipefail
shard=${1:?usage: ci/shard.sh I N}
total=${2:?usage: ci/shard.sh I N}
reports=${REPORTS:-reports}/shard-$shard
python=${PYTHON_BIN:-.venv/bin/python}
if [ -z "${CANDIDATES:-}" ] && [ -n "${BASE_REF:-}" ]; then
    CANDIDATES=$(git diff --name-only --diff-filter=AM "$BASE_REF"... -- 'candidates/*.yaml' | tr '\n' ' ')
fi
args=()
for c in ${CANDIDATES:-gemma3-270m-q4km}; do args+=("--candidate=$c"); done
for t in ${TARGETS:-}; do args+=("--target=$t"); done
[ -n "${BASELINE:-}" ] && args+=("--baseline=$BASELINE")
status=0
"$python" -m pytest -c pyproject.toml -p no:cacheprovider -m "${MARKERS:-device}" "${args[@]}" \
    --shard="$shard/$total" --reports="$reports" --junitxml="$reports/junit.xml" || status=$?
echo "shard $shard/$total: pytest exit $status; reports in $reports"
[ "$status" -le 1 ]
