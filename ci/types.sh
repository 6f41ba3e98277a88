#!/usr/bin/env bash
# mypy over both packages (settings in pyproject.toml, [tool.mypy]).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/mypy polystore polystore_dask
