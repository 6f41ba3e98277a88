"""Row 9: what the machine can do at best, to read the other rows against.

Sequential write + fsync of 1 GiB (16 MiB writes from a pre-faulted buffer
into a new file, then fsync and close), and memcpy of 1 GiB (``np.copyto``
into a pre-faulted destination). :func:`fractions` then states the disk
and zarr throughputs of rows 1 and 4 as fractions of these.
"""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks._harness import GiB, MiB, Bench, Result, Stats, measure, timed

__all__ = ["fractions", "run"]

WRITE_BLOCK = 16 * MiB


def run(bench: Bench, rows: set[str]) -> list[Result]:
    """Measure sequential write + fsync and memcpy throughput."""
    nbytes = bench.size(GiB, 16 * MiB)
    source = np.ones(nbytes, dtype=np.uint8)
    destination = np.zeros(nbytes, dtype=np.uint8)
    view = memoryview(source)

    def write_fsync() -> float:
        with bench.scratch() as directory:
            start = time.perf_counter()
            fd = os.open(directory / "limit.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                for offset in range(0, nbytes, WRITE_BLOCK):
                    os.write(fd, view[offset : offset + WRITE_BLOCK])
                os.fsync(fd)
            finally:
                os.close(fd)
            return time.perf_counter() - start

    def memcpy() -> float:
        return timed(np.copyto, destination, source)

    reps = bench.heavy_reps
    write_seconds = measure(write_fsync, reps=reps, warmup=bench.warmup)
    copy_seconds = measure(memcpy, reps=reps, warmup=bench.warmup)
    size = f"{nbytes // MiB} MiB"
    return [
        Result("9a", f"machine: sequential write + fsync, {size}", "MB/s", "os.write 16 MiB blocks + fsync", Stats.throughput(nbytes / 1e6, write_seconds)),
        Result("9b", f"machine: memcpy, {size}", "MB/s", "np.copyto into a pre-faulted array", Stats.throughput(nbytes / 1e6, copy_seconds)),
    ]


#: Rows whose median throughput is read against a machine limit: row -> limit row.
_AGAINST = {"1a": "9a", "1b": "9b", "4a": "9a", "4b": "9b", "4c": "9a", "4d": "9b"}


def fractions(results: list[Result]) -> list[str]:
    """Markdown table lines: our rows 1 and 4 as fractions of the row 9 limits."""
    by_row = {result.row: result for result in results}
    lines = []
    for row, limit_row in _AGAINST.items():
        if row in by_row and limit_row in by_row:
            ours, limit = by_row[row], by_row[limit_row]
            lines.append(
                f"| {row} | {ours.title} | {ours.ours.median:,.0f} MB/s | {limit.title} | "
                f"{limit.ours.median:,.0f} MB/s | {ours.ours.median / limit.ours.median:.2f} |"
            )
    if not lines:
        return []
    return [
        "| row | ours | ours median | machine limit | limit median | fraction |",
        "|---|---|---|---|---|---|",
        *lines,
    ]
