"""Rows 1 and 2: the disk backend against plain ``np.save`` / ``np.load``.

Row 1 moves one 256 MiB float32 array; row 2 moves 1000 arrays of 64 KiB
(float32[16384]) with ``save_batch`` / ``load_batch`` against a loop of
``np.save`` / ``np.load``. Saves go to a fresh directory per rep on /tmp;
loads read files written once before the reps (so from the page cache,
for both sides). Neither side calls fsync.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks._harness import Bench, MiB, Result, compare, throughput_result, timed
from polystore import BackendRegistry, FileManager

__all__ = ["run"]


def _one_large_array(bench: Bench, fm: FileManager) -> list[Result]:
    side = bench.size(8192, 512)  # 256 MiB of float32 in full mode, 1 MiB quick
    data = np.random.default_rng(1).random((side, side), dtype=np.float32)
    source = bench.fresh_dir() / "source.npy"
    np.save(source, data)
    np.testing.assert_array_equal(fm.load(str(source), "disk"), data)

    def ours_save() -> float:
        with bench.scratch() as directory:
            return timed(fm.save, data, str(directory / "a.npy"), "disk")

    def numpy_save() -> float:
        with bench.scratch() as directory:
            return timed(np.save, str(directory / "a.npy"), data)

    def ours_load() -> float:
        return timed(fm.load, str(source), "disk")

    def numpy_load() -> float:
        return timed(np.load, str(source))

    save = compare(ours_save, numpy_save, reps=bench.reps, warmup=bench.warmup)
    load = compare(ours_load, numpy_load, reps=bench.reps, warmup=bench.warmup)
    size = f"{data.nbytes // MiB} MiB"
    megabytes = data.nbytes / 1e6
    return [
        throughput_result("1a", f"disk save, one {size} float32 .npy", unit="MB/s", work=megabytes,
                          ours=("fm.save(a, p, 'disk')", save[0]), baseline=("np.save(p, a)", save[1]), min_ratio=0.9),
        throughput_result("1b", f"disk load, one {size} float32 .npy (hot cache)", unit="MB/s", work=megabytes,
                          ours=("fm.load(p, 'disk')", load[0]), baseline=("np.load(p)", load[1]), min_ratio=0.9),
    ]


def _many_small_arrays(bench: Bench, fm: FileManager) -> list[Result]:
    count = bench.size(1000, 20)
    rng = np.random.default_rng(2)
    arrays = [rng.random(16384, dtype=np.float32) for _ in range(count)]
    names = [f"a{i:04d}.npy" for i in range(count)]
    source = bench.fresh_dir()
    source_paths = [str(source / name) for name in names]
    for array, path in zip(arrays, source_paths, strict=True):
        np.save(path, array)
    np.testing.assert_array_equal(fm.load_batch(source_paths, "disk")[-1], arrays[-1])

    def paths_in(directory: Path) -> list[str]:
        return [str(directory / name) for name in names]

    def ours_save() -> float:
        with bench.scratch() as directory:
            return timed(fm.save_batch, arrays, paths_in(directory), "disk")

    def numpy_save() -> float:
        def loop(paths: list[str]) -> None:
            for array, path in zip(arrays, paths, strict=True):
                np.save(path, array)

        with bench.scratch() as directory:
            return timed(loop, paths_in(directory))

    def ours_load() -> float:
        return timed(fm.load_batch, source_paths, "disk")

    def numpy_load() -> float:
        return timed(lambda: [np.load(path) for path in source_paths])

    save = compare(ours_save, numpy_save, reps=bench.reps, warmup=bench.warmup)
    load = compare(ours_load, numpy_load, reps=bench.reps, warmup=bench.warmup)
    title = f"{count} x 64 KiB float32 .npy"
    return [
        throughput_result("2a", f"disk save_batch, {title}", unit="files/s", work=count,
                          ours=("fm.save_batch(arrays, paths, 'disk')", save[0]),
                          baseline=("loop of np.save", save[1]), min_ratio=0.8),
        throughput_result("2b", f"disk load_batch, {title} (hot cache)", unit="files/s", work=count,
                          ours=("fm.load_batch(paths, 'disk')", load[0]),
                          baseline=("loop of np.load", load[1]), min_ratio=0.9),
    ]


def run(bench: Bench, rows: set[str]) -> list[Result]:
    """Measure the selected rows among 1 (one large array) and 2 (many small arrays)."""
    fm = FileManager(BackendRegistry())
    bench.notes["1-2"] = (
        "Rows 1-2: `DiskBackend()` with default options (no fsync, like `np.save`); loads read files "
        "written once before the reps, so from the page cache, for both sides."
    )
    results = []
    if "1" in rows:
        results += _one_large_array(bench, fm)
    if "2" in rows:
        results += _many_small_arrays(bench, fm)
    return results
