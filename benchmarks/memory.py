"""Row 3: the per-call cost of FileManager on the memory backend.

A (16, 16) float32 array is saved and loaded through ``FileManager`` and,
as the baseline, kept in a plain dict as a copy (``d[k] = a.copy()``;
``d[k]``). Both sides cycle over the same 1000 keys with the same loop, so
the loop's own cost cancels in the difference, which is the overhead the
target bounds (at most 1 µs per operation).

Row 3c measures the memory backend the way users call it: paths such as
``/b/12345`` (nested under a directory, a leading slash, 20,000 distinct
ones), each visited by a save and then a load. Its overhead is the pair's
time over a dict of copies' (``d[k] = a.copy(); d[k]``), halved: per
operation.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import numpy as np

from benchmarks._harness import Bench, Result, Stats, compare
from polystore import BackendRegistry, FileManager

__all__ = ["run"]

MAX_OVERHEAD_NS = 1000.0
KEY_COUNT = 1000
#: Distinct user-style paths of row 3c.
USER_PATHS = 20_000


def _loop_ns(body: Callable[[list[str]], None], keys: list[str]) -> Callable[[], float]:
    """A trial running ``body`` over ``keys`` with gc off; returns seconds per key."""

    def trial() -> float:
        gc.disable()
        try:
            start = time.perf_counter()
            body(keys)
            elapsed = time.perf_counter() - start
        finally:
            gc.enable()
        return elapsed / len(keys)

    return trial


def _result(row: str, title: str, ours: tuple[str, list[float]], baseline: tuple[str, list[float]]) -> Result:
    ours_stats = Stats.of([s * 1e9 for s in ours[1]])
    baseline_stats = Stats.of([s * 1e9 for s in baseline[1]])
    overhead = ours_stats.median - baseline_stats.median
    return Result(
        row=row,
        title=title,
        unit="ns/op",
        ours_label=ours[0],
        ours=ours_stats,
        baseline_label=baseline[0],
        baseline=baseline_stats,
        ratio=Stats.paired_ratio(ours[1], baseline[1]),
        target=f"overhead <= {MAX_OVERHEAD_NS:.0f} ns/op",
        met=overhead <= MAX_OVERHEAD_NS,
        note=f"overhead {overhead:.0f} ns/op",
    )


def run(bench: Bench, rows: set[str]) -> list[Result]:
    """Measure save and load of a (16, 16) array: FileManager vs a dict of copies."""
    ops = bench.size(100_000, 2_000)
    array = np.random.default_rng(0).random((16, 16), dtype=np.float32)
    keys = [f"bench/k{i % KEY_COUNT}" for i in range(ops)]
    fm = FileManager(BackendRegistry())
    store: dict[str, np.ndarray] = {}
    for key in keys[:KEY_COUNT]:
        fm.save(array, key, "memory", overwrite=True)
        store[key] = array.copy()

    def ours_save(keys: list[str]) -> None:
        for k in keys:
            fm.save(array, k, "memory", overwrite=True)

    def dict_save(keys: list[str]) -> None:
        for k in keys:
            store[k] = array.copy()

    def ours_load(keys: list[str]) -> None:
        for k in keys:
            fm.load(k, "memory")

    def dict_load(keys: list[str]) -> None:
        for k in keys:
            store[k]

    reps = bench.reps
    save = compare(_loop_ns(ours_save, keys), _loop_ns(dict_save, keys), reps=reps, warmup=bench.warmup)
    load = compare(_loop_ns(ours_load, keys), _loop_ns(dict_load, keys), reps=reps, warmup=bench.warmup)
    bench.notes["3"] = (
        f"Row 3: {ops:,} operations per rep over {KEY_COUNT} keys (saves overwrite), {reps} reps, gc off "
        "while timing; ns/op includes the shared loop cost, which cancels in the overhead "
        "(median ours minus median baseline)."
    )
    user_keys = [f"/b/{10_000 + i % USER_PATHS}" for i in range(ops)]
    for key in user_keys[:USER_PATHS]:
        fm.save(array, key, "memory", overwrite=True)
        store[key] = array.copy()

    def ours_pair(keys: list[str]) -> None:
        for k in keys:
            fm.save(array, k, "memory", overwrite=True)
            fm.load(k, "memory")

    def dict_pair(keys: list[str]) -> None:
        for k in keys:
            store[k] = array.copy()
            store[k]

    pair = compare(_loop_ns(ours_pair, user_keys), _loop_ns(dict_pair, user_keys), reps=reps, warmup=bench.warmup)
    per_operation = ([s / 2 for s in pair[0]], [s / 2 for s in pair[1]])
    return [
        _result(
            "3a",
            "memory save (16,16) float32",
            ("fm.save(a, k, 'memory', overwrite=True)", save[0]),
            ("d[k] = a.copy()", save[1]),
        ),
        _result("3b", "memory load (16,16) float32", ("fm.load(k, 'memory')", load[0]), ("d[k]", load[1])),
        _result(
            "3c",
            f"memory save then load (16,16) float32 at user paths (/b/12345, {USER_PATHS:,} distinct), per operation",
            ("fm.save(a, p, 'memory', overwrite=True); fm.load(p, 'memory')", per_operation[0]),
            ("d[p] = a.copy(); d[p]", per_operation[1]),
        ),
    ]
