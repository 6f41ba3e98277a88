"""Command line: ``python -m benchmarks [--quick] [--only ROWS] [--output PATH]``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import dask_bench, disk, hosts_bench, limits, memory, replicas_bench, s3_bench, scale, zarr_bench
from benchmarks._harness import Bench, Result
from benchmarks._report import merge, render

RESULTS = Path(__file__).resolve().parent / "results.md"

#: Areas in the order they run: the rows each measures and its runner.
AREAS: list[tuple[tuple[str, ...], Callable[[Bench, set[str]], list[Result]]]] = [
    (("9",), limits.run),
    (("1", "2"), disk.run),
    (("3",), memory.run),
    (("4",), zarr_bench.run),
    (("5", "6", "7", "8"), dask_bench.run),
    (("10", "11", "12", "13"), s3_bench.run),
    (("14",), scale.run),
    (("15",), hosts_bench.run),
    (("16",), replicas_bench.run),
]
ALL_ROWS = [row for rows, _ in AREAS for row in rows]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every row runs (under a minute)")
    parser.add_argument(
        "--only", metavar="ROWS", action="append", default=[],
        help=f"comma-separated rows to run, from {', '.join(sorted(ALL_ROWS))} (may repeat); row 8 comes with 5 and 6",
    )
    parser.add_argument(
        "--scratch", type=Path, default=Path("/tmp"),
        help="directory in which the run makes (and then removes) its scratch directory; default /tmp",
    )
    parser.add_argument(
        "--merge", action="store_true",
        help=(
            "keep the result rows of the existing --output report that this run does not measure "
            "(each noted with the run that measured it), e.g. --only 12,13 --merge --output benchmarks/results.md"
        ),
    )
    parser.add_argument(
        "--output", type=Path,
        help=(
            f"where to write the report; default {RESULTS} for a full run of every row, "
            "else a file in the temp directory"
        ),
    )
    args = parser.parse_args(argv)
    selected = {row.strip() for value in args.only for row in value.split(",") if row.strip()}
    unknown = selected - set(ALL_ROWS)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; choose from {', '.join(sorted(ALL_ROWS))}")
    args.rows = selected or set(ALL_ROWS)
    if args.merge and (args.output is None or not args.output.exists()):
        parser.error("--merge needs --output naming an existing report to merge into")
    if args.output is None:
        if args.quick or selected:
            args.output = Path(tempfile.gettempdir()) / f"polystore-bench-{'quick' if args.quick else 'partial'}.md"
        else:
            args.output = RESULTS
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    results: list[Result] = []
    errors: dict[str, str] = {}
    started = time.perf_counter()
    with Bench.create(quick=args.quick, scratch=args.scratch) as bench:
        for rows, runner in AREAS:
            chosen = args.rows & set(rows)
            if not chosen:
                continue
            label = ",".join(sorted(chosen))
            print(f"rows {label} ...", file=sys.stderr, flush=True)
            area_started = time.perf_counter()
            try:
                area_results = runner(bench, chosen)
            except Exception as error:  # report every area, then fail
                traceback.print_exc()
                errors[label] = f"{type(error).__name__}: {error}"
                continue
            for result in area_results:
                ratio = "" if result.ratio is None else f" ratio {result.ratio.median:.2f}"
                verdict = "" if result.met is None else (" met" if result.met else " MISSED")
                print(
                    f"  {result.row:>3} {result.title}: {result.ours.median:,.1f} {result.unit}{ratio}{verdict}",
                    file=sys.stderr,
                )
            print(f"  ({time.perf_counter() - area_started:.1f} s)", file=sys.stderr, flush=True)
            results += area_results
        command = " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])])
        report = render(bench, results, errors, command)
        if args.merge:
            report = merge(args.output.read_text(), report)
        args.output.write_text(report)
    print(f"wrote {args.output} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
