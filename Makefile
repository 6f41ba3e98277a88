# Every target sets up .venv first (created and installed from pyproject.toml
# when missing or out of date), so a fresh clone needs only `make test` or
# `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv test test-multihost docs lint types test-deep demo bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dask,tiff,test,docs]"
	touch $(STAMP)

venv: $(STAMP)

# The CI scripts in ci/ run each check; `make test` runs them all.
test: $(STAMP)
	ci/lint.sh
	ci/types.sh
	ci/tests.sh
	ci/docs.sh

# The multi-host tests alone (also part of `make test`): 4 isolated worker hosts per module,
# each under unshare with its own hostname and scratch tmpfs (tests/_hosts.py; needs root).
test-multihost: $(STAMP)
	ci/tests.sh tests/multihost

# The documentation, built into docs/_build/html; any warning fails it.
docs: $(STAMP)
	ci/docs.sh

lint: $(STAMP)
	ci/lint.sh

types: $(STAMP)
	ci/types.sh

demo: $(STAMP)
	$(BIN)/python examples/pipeline.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

bench: $(STAMP)
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	ci/bench-quick.sh

# The whole suite with the reliability tests at deep sizes (POLYSTORE_DEEP=1:
# many more model-based examples, races, killed writers and killed workers),
# then the failure report they counted into (tests/reliability_report.py).
test-deep: $(STAMP)
	ledger=$$(mktemp -d) && status=0 && \
	{ POLYSTORE_DEEP=1 POLYSTORE_RELIABILITY_DIR=$$ledger $(BIN)/python -m pytest -q tests || status=$$?; } && \
	{ $(BIN)/python tests/reliability_report.py $$ledger || status=1; } && \
	rm -rf $$ledger && exit $$status
