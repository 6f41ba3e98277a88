"""Print the failure report of the reliability tests: what was tried, what was lost.

Usage: ``python tests/reliability_report.py DIRECTORY`` where DIRECTORY is
the ``POLYSTORE_RELIABILITY_DIR`` the tests ran with (see
tests/_reliability_ledger.py). Exits 1 if any data was lost or torn, or if
the ledger is empty (the reliability tests did not run).
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections import defaultdict

COLUMNS = (
    ("operations", "operations tried"),
    ("faults", "faults injected"),
    ("bad_inputs", "bad inputs tried"),
    ("lost_or_torn", "data lost or torn"),
)


def read_ledger(directory: str) -> dict[str, dict[str, int]]:
    """Sum the ledger lines in ``directory`` per area."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys((key for key, _ in COLUMNS), 0))
    for name in sorted(glob.glob(os.path.join(directory, "ledger-*.jsonl"))):
        with open(name, encoding="utf-8") as ledger:
            for line in ledger:
                if not line.strip():
                    continue
                entry = json.loads(line)
                row = totals[entry["area"]]
                for key, _ in COLUMNS:
                    row[key] += int(entry.get(key, 0))
    return dict(totals)


def format_table(totals: dict[str, dict[str, int]]) -> str:
    """The report as a plain-text table with a total row."""
    header = ["area", *(title for _, title in COLUMNS)]
    rows = [[area, *(str(counts[key]) for key, _ in COLUMNS)] for area, counts in sorted(totals.items())]
    rows.append(["total", *(str(sum(counts[key] for counts in totals.values())) for key, _ in COLUMNS)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows[:-1]), rule, line(rows[-1])])


def main(argv: list[str]) -> int:
    directory = argv[1] if len(argv) > 1 else os.environ.get("POLYSTORE_RELIABILITY_DIR", "")
    if not directory:
        print("usage: reliability_report.py DIRECTORY", file=sys.stderr)
        return 2
    totals = read_ledger(directory)
    print("\nReliability report")
    if not totals:
        print(f"no ledger lines in {directory}: the reliability tests did not run")
        return 1
    print(format_table(totals))
    lost = sum(counts["lost_or_torn"] for counts in totals.values())
    if lost:
        print(f"\nFAILED: {lost} objects were lost or torn")
        return 1
    print("\nno data lost or torn")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
