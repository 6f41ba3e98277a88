#!/usr/bin/env bash
# The benchmarks at tiny sizes: they assert nothing about speed, only that
# the benchmark code still runs.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m benchmarks --quick
