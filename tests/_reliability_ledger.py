"""Counting for the reliability tests, and their default and deep sizes.

The reliability tests (test_model_based, test_racing_writers,
test_write_faults, test_cluster_faults) count what they tried into a ledger:
one JSON line per count, appended to ``ledger-<pid>.jsonl`` in the directory
named by ``POLYSTORE_RELIABILITY_DIR``. ``tests/reliability_report.py`` adds
the lines up into the table ``make test-deep`` ends with. Without that
variable nothing is written.

``POLYSTORE_DEEP=1`` (set by ``make test-deep``) makes every reliability test
try many more examples, trials and faults; :func:`scaled` picks the number.
"""

from __future__ import annotations

import json
import os
import time

__all__ = ["COUNTS", "DEEP", "record", "scaled"]

#: Whether the long version of every reliability test runs.
DEEP = os.environ.get("POLYSTORE_DEEP", "") not in ("", "0")

#: What a ledger line counts.
COUNTS = ("operations", "faults", "bad_inputs", "lost_or_torn")


def scaled(default: int, deep: int) -> int:
    """The number of examples or trials to run: ``deep`` under POLYSTORE_DEEP=1, else ``default``."""
    return deep if DEEP else default


def record(area: str, *, operations: int = 0, faults: int = 0, bad_inputs: int = 0, lost_or_torn: int = 0) -> None:
    """Add counts under ``area`` (a row of the report) to the ledger, if one is set.

    Parameters
    ----------
    area
        The row: what was exercised, e.g. ``"model: disk"``.
    operations
        Backend or manager calls whose outcome was checked.
    faults
        Faults injected: processes killed, writes refused by the OS, workers killed.
    bad_inputs
        Calls with invalid paths or unstorable data, checked to fail cleanly.
    lost_or_torn
        Checked objects found missing, partial, mixed or stale: must stay 0.
    """
    directory = os.environ.get("POLYSTORE_RELIABILITY_DIR")
    if not directory:
        return
    line = {"area": area, "operations": operations, "faults": faults, "bad_inputs": bad_inputs,
            "lost_or_torn": lost_or_torn, "time": time.time()}
    os.makedirs(directory, exist_ok=True)
    # One file per process and O_APPEND: lines from racing processes never interleave.
    with open(os.path.join(directory, f"ledger-{os.getpid()}.jsonl"), "a", encoding="utf-8") as ledger:
        ledger.write(json.dumps(line) + "\n")
