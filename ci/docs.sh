#!/usr/bin/env bash
# The documentation (docs/, Sphinx) into docs/_build/html. Every warning is
# an error; --keep-going reports them all. -E rereads every page, so warnings
# of unchanged pages (and of changed docstrings) are never hidden by a cache.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m sphinx -E -W --keep-going -q -b html docs docs/_build/html
