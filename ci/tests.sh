#!/usr/bin/env bash
# The test suite. Arguments go to pytest: options (ci/tests.sh -m "not cluster")
# still run all of tests/ (testpaths in pyproject.toml); paths narrow the run
# (ci/tests.sh tests/core).
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
.venv/bin/python -m pytest -q "$@" || status=$?
if [ "$status" -eq 5 ]; then
    # pytest's "no tests collected": a suite that runs nothing is not a pass.
    echo "ci/tests.sh: pytest collected no tests (arguments: ${*:-none}); failing" >&2
    exit 1
fi
exit "$status"
