"""Row 9: what the machine can do at best, to read the other rows against.

Sequential write + fsync of 1 GiB (16 MiB writes from a pre-faulted buffer
into a new file, then fsync and close), the same write without fsync (into
the page cache only, which is what ``np.save`` and zarr do), memcpy of
1 GiB (``np.copyto`` into a pre-faulted destination), and the rate of
creating empty files in the scratch directory (which bounds rows 2 and 7). :func:`fractions`
then states the disk and zarr throughputs of rows 1 and 4 as fractions of
these.
"""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks._harness import Bench, GiB, MiB, Result, Stats, measure, timed

__all__ = ["fractions", "run"]

WRITE_BLOCK = 16 * MiB


def run(bench: Bench, rows: set[str]) -> list[Result]:
    """Measure sequential write + fsync and memcpy throughput."""
    nbytes = bench.size(GiB, 16 * MiB)
    count = bench.size(1000, 20)
    source = np.ones(nbytes, dtype=np.uint8)
    destination = np.zeros(nbytes, dtype=np.uint8)
    view = memoryview(source)

    def write(sync: bool) -> float:
        with bench.scratch() as directory:
            start = time.perf_counter()
            fd = os.open(directory / "limit.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                for offset in range(0, nbytes, WRITE_BLOCK):
                    os.write(fd, view[offset : offset + WRITE_BLOCK])
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            return time.perf_counter() - start

    def create_files() -> float:
        with bench.scratch() as directory:
            names = [str(directory / f"e{i:04d}") for i in range(count)]
            start = time.perf_counter()
            for name in names:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return time.perf_counter() - start

    def memcpy() -> float:
        return timed(np.copyto, destination, source)

    bench.notes["9"] = (
        "Row 9: saves that do not fsync (rows 1a, 4) can beat 9a; a 1 GiB buffered write (9b) meets the "
        "kernel's dirty-page throttling sooner than a 256 MiB one, so 1a can beat 9b too. "
        "9d (file creation) bounds rows 2 and 7, and swings widely with other I/O on the machine."
    )
    reps = bench.heavy_reps
    synced = measure(lambda: write(True), reps=reps, warmup=bench.warmup)
    buffered = measure(lambda: write(False), reps=reps, warmup=bench.warmup)
    copied = measure(memcpy, reps=reps, warmup=bench.warmup)
    created = measure(create_files, reps=reps, warmup=bench.warmup)
    size = f"{nbytes // MiB} MiB"
    megabytes = nbytes / 1e6
    return [
        Result(
            "9a",
            f"machine: sequential write + fsync, {size}",
            "MB/s",
            "os.write 16 MiB blocks + fsync",
            Stats.throughput(megabytes, synced),
        ),
        Result(
            "9b",
            f"machine: sequential write, no fsync, {size}",
            "MB/s",
            "os.write 16 MiB blocks",
            Stats.throughput(megabytes, buffered),
        ),
        Result(
            "9c",
            f"machine: memcpy, {size}",
            "MB/s",
            "np.copyto into a pre-faulted array",
            Stats.throughput(megabytes, copied),
        ),
        Result(
            "9d",
            f"machine: create {count} empty files in a new scratch directory",
            "files/s",
            "os.open(O_CREAT | O_EXCL) + close",
            Stats.throughput(count, created),
        ),
    ]


#: Our rows read against the machine limits: saves against the writes, loads against memcpy.
_AGAINST = {"1a": ("9a", "9b"), "1b": ("9c",), "4a": ("9a", "9b"), "4b": ("9c",), "4c": ("9a", "9b"), "4d": ("9c",)}
_LIMITS = ("9a", "9b", "9c")


def fractions(results: list[Result]) -> list[str]:
    """Markdown table lines: our rows 1 and 4 as fractions of the row 9 limits."""
    by_row = {result.row: result for result in results}
    limits = [by_row[row] for row in _LIMITS if row in by_row]
    ours = [by_row[row] for row in _AGAINST if row in by_row]
    if not limits or not ours:
        return []
    header = " | ".join(f"fraction of {limit.row} ({limit.ours.median:,.0f} MB/s)" for limit in limits)
    lines = [f"| row | ours | median MB/s | {header} |", "|---" * (3 + len(limits)) + "|"]
    for result in ours:
        shares = " | ".join(
            f"{result.ours.median / limit.ours.median:.2f}" if limit.row in _AGAINST[result.row] else "–"
            for limit in limits
        )
        lines.append(f"| {result.row} | {result.title} | {result.ours.median:,.0f} | {shares} |")
    return lines
