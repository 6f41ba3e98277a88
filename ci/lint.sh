#!/usr/bin/env bash
# ruff over both packages and the tests, benchmarks and examples
# (rules in pyproject.toml, [tool.ruff]).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check polystore polystore_dask tests benchmarks examples
