"""Rows 5 to 8: polystore_dask against plain Dask on one LocalCluster.

The cluster is ``LocalCluster(n_workers=2, threads_per_worker=1,
processes=True)`` with ``PolystorePlugin`` registered, shared by both sides.

- Rows 5a-5d: ``DaskFileManager.save_array`` of a 1 GiB float32 array
  generated on the workers (``da.random.default_rng(42)``) against
  ``da.to_zarr`` with the same chunks and the codecs ours wrote: zstd with
  chunks (and blocks) of 1024 x 1024 (5a) and 256 x 256 (5b), no
  compression with the same two (5c, 5d). The wall time includes
  generating the data, for both.
- Rows 6a-6d: ``load_array(...).sum().compute()`` against
  ``da.from_zarr(...).sum().compute()`` in the same four cases, both
  reading one array written before the reps.
- Row 7: 1000 arrays of 64 KiB held by the client, saved to disk with one
  ``save_batch`` against one ``client.submit(np.save, ...)`` per file; both
  ship the arrays from the client. 7b: the same save_batch against a plain
  ``np.save`` loop in the client process; 7c: against two processes (no
  Dask) each holding half the arrays and saving them at once, the ceiling
  of this work with two writers on this disk.
- Row 8: the client process's peak RSS growth during each rep of rows 5a
  and 6a, sampled every 2 ms in a thread.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import (
    Bench,
    MiB,
    Result,
    RssSampler,
    Stats,
    compare,
    compare_several,
    dask_client,
    throughput_result,
    timed,
)

__all__ = ["run"]

MAX_CLIENT_GROWTH_MIB = 200.0


class _Sampled:
    """Wraps timed calls with an RSS sampler and keeps each call's peak growth."""

    def __init__(self) -> None:
        self.growth: list[float] = []

    def __call__(self, function: Callable[..., object], *args: object, **kwargs: object) -> float:
        with RssSampler() as sampler:
            seconds = timed(function, *args, **kwargs)
        self.growth.append(sampler.peak_growth / MiB)
        return seconds

    def timed_reps(self, warmup: int) -> list[float]:
        return self.growth[warmup:]


def _memory_result(
    row: str, title: str, ours: tuple[str, _Sampled], baseline: tuple[str, _Sampled], warmup: int
) -> Result:
    ours_growth = ours[1].timed_reps(warmup)
    return Result(
        row=row,
        title=title,
        unit="MiB",
        ours_label=ours[0],
        ours=Stats.of(ours_growth),
        baseline_label=baseline[0],
        baseline=Stats.of(baseline[1].timed_reps(warmup)),
        target=f"max <= {MAX_CLIENT_GROWTH_MIB:.0f} MiB",
        met=max(ours_growth) <= MAX_CLIENT_GROWTH_MIB,
        note=f"max {max(ours_growth):.0f} MiB over {len(ours_growth)} reps",
    )


#: The cases of rows 5 and 6: (letter, chunk side, chunk side in --quick mode, compressor).
ARRAY_CASES = (("a", 1024, 256, "zstd"), ("b", 256, 128, "zstd"), ("c", 1024, 256, None), ("d", 256, 128, None))


def _save_and_load_array(bench: Bench, client: Any, rows: set[str]) -> list[Result]:
    results = []
    for letter, full_chunk, quick_chunk, compressor in ARRAY_CASES:
        # Row 8 (client RSS) follows the first case only: 1024 x 1024 chunks, zstd.
        memory = "8" in rows and letter == "a"
        results += _array_case(bench, client, rows, letter, bench.size(full_chunk, quick_chunk), compressor, memory)
    return results


def _array_case(
    bench: Bench, client: Any, rows: set[str], letter: str, chunk: int, compressor: str | None, memory: bool
) -> list[Result]:
    import dask.array as da
    import zarr

    from polystore_dask import DaskFileManager

    dfm = DaskFileManager(client)
    side = bench.size(16384, 512)

    def generated() -> Any:
        return da.random.default_rng(42).random((side, side), dtype=np.float32, chunks=(chunk, chunk))

    with bench.scratch() as directory:
        probe = str(directory / "probe.zarr")
        dfm.save_array(generated(), probe, "zarr", compressor=compressor)
        written = zarr.open_array(probe, mode="r")
    if written.chunks != (chunk, chunk) or written.shards is not None:
        raise RuntimeError(
            f"save_array wrote chunks {written.chunks}, shards {written.shards}; expected {(chunk, chunk)}, no shards"
        )
    # The baseline writes with the codecs ours wrote (the same codec and level, or none).
    compressors = written.compressors or None
    source = str(bench.fresh_dir() / "source.zarr")
    da.to_zarr(generated(), source, compressors=compressors)
    expected = float(da.from_zarr(source).sum().compute())
    found = float(dfm.load_array(source, "zarr").sum().compute())
    if not np.isclose(found, expected, rtol=1e-5):
        raise RuntimeError(f"load_array(...).sum() gave {found}, from_zarr(...).sum() {expected}")

    sampled = {name: _Sampled() for name in ("save ours", "save dask", "load ours", "load dask")}

    def ours_save() -> float:
        with bench.scratch() as directory:
            x = generated()
            return sampled["save ours"](dfm.save_array, x, str(directory / "a.zarr"), "zarr", compressor=compressor)

    def dask_save() -> float:
        with bench.scratch() as directory:
            x = generated()
            return sampled["save dask"](da.to_zarr, x, str(directory / "a.zarr"), compressors=compressors)

    def ours_load() -> float:
        return sampled["load ours"](lambda: dfm.load_array(source, "zarr").sum().compute())

    def dask_load() -> float:
        return sampled["load dask"](lambda: da.from_zarr(source).sum().compute())

    reps, warmup = bench.heavy_reps, bench.warmup
    megabytes = side * side * 4 / 1e6
    codec = "+".join(type(codec).__name__ for codec in compressors or ()) or "no compression"
    title = f"{side * side * 4 // MiB} MiB float32, chunks {chunk}x{chunk}, {codec}"
    results = []
    if "5" in rows or memory:
        save = compare(ours_save, dask_save, reps=reps, warmup=warmup)
        results.append(throughput_result(
            f"5{letter}", f"Dask save_array, {title}, generated on workers", unit="MB/s", work=megabytes,
            ours=("dfm.save_array(x, p, 'zarr')", save[0]), baseline=("da.to_zarr(x, p)", save[1]), min_ratio=1.0,
            note="aim 1.5"))
    if "6" in rows or memory:
        load = compare(ours_load, dask_load, reps=reps, warmup=warmup)
        results.append(throughput_result(
            f"6{letter}", f"Dask load_array(...).sum().compute(), {title} (hot cache)", unit="MB/s", work=megabytes,
            ours=("dfm.load_array(p, 'zarr').sum()", load[0]), baseline=("da.from_zarr(p).sum()", load[1]),
            min_ratio=1.0, note="aim 1.3"))
    if memory:
        results.append(_memory_result("8a", f"client peak RSS growth during row 5{letter}",
                                      ("save_array", sampled["save ours"]), ("da.to_zarr", sampled["save dask"]),
                                      warmup))
        results.append(_memory_result("8b", f"client peak RSS growth during row 6{letter}",
                                      ("load_array.sum", sampled["load ours"]), ("from_zarr.sum", sampled["load dask"]),
                                      warmup))
    return results


def _many_small_arrays(bench: Bench, client: Any) -> list[Result]:
    from polystore_dask import DaskFileManager

    dfm = DaskFileManager(client)
    count = bench.size(1000, 20)
    rng = np.random.default_rng(7)
    arrays = [rng.random(16384, dtype=np.float32) for _ in range(count)]
    names = [f"a{i:04d}.npy" for i in range(count)]

    with bench.scratch() as directory:
        client.gather(dfm.save_batch(arrays, [str(directory / name) for name in names], "disk"))
        np.testing.assert_array_equal(np.load(directory / names[-1]), arrays[-1])

    def ours() -> float:
        with bench.scratch() as directory:
            paths = [str(directory / name) for name in names]
            return timed(lambda: client.gather(dfm.save_batch(arrays, paths, "disk")))

    def one_task_per_file() -> float:
        with bench.scratch() as directory:
            paths = [str(directory / name) for name in names]
            return timed(lambda: client.gather([
                client.submit(np.save, path, array, pure=False) for path, array in zip(paths, arrays, strict=True)
            ]))

    def one_process_loop() -> float:
        with bench.scratch() as directory:
            paths = [str(directory / name) for name in names]

            def loop() -> None:
                for path, array in zip(paths, arrays, strict=True):
                    np.save(path, array)

            return timed(loop)

    with _TwoWriters(arrays, names) as two:

        def two_processes() -> float:
            with bench.scratch() as directory:
                return timed(two.write, directory)

        times = compare_several(
            ours, [one_task_per_file, one_process_loop, two_processes], reps=bench.heavy_reps, warmup=bench.warmup
        )
    title = f"Dask save_batch, {count} x 64 KiB float32 .npy to disk, arrays shipped from the client"
    label = "dfm.save_batch(arrays, paths, 'disk')"
    row7 = throughput_result(
        "7", title, unit="files/s", work=count, ours=(label, times[0]),
        baseline=("client.submit(np.save, p, a) per file", times[1]), min_ratio=5.0)
    ceiling = throughput_result(
        "7c", f"{title}, against two processes writing half each (the machine's ceiling)", unit="files/s",
        work=count, ours=(label, times[0]),
        baseline=("np.save loop in each of 2 processes, half the files each, no Dask", times[3]), min_ratio=0.0)
    assert row7.baseline is not None and ceiling.baseline is not None
    wanted = 5 * row7.baseline.median
    ceiling = dataclasses.replace(ceiling, target="", met=None, note=(
        f"{ceiling.note}; 5x row 7's baseline is {wanted:,.0f} files/s, "
        f"{wanted / ceiling.baseline.median:.2f} of this ceiling"))
    return [
        row7,
        throughput_result(
            "7b", f"{title}, against one process (moonshot)", unit="files/s", work=count,
            ours=(label, times[0]), baseline=("np.save loop in the client process", times[2]), min_ratio=0.4),
        ceiling,
    ]


class _TwoWriters:
    """Two processes (spawned once, no Dask) each holding half the arrays; :meth:`write` saves both halves at once.

    Each process gets its half once, when it starts, so a rep times only the
    writing, as the workers' part of row 7 is.
    """

    def __init__(self, arrays: list[np.ndarray], names: list[str]) -> None:
        half = (len(arrays) + 1) // 2
        self._halves = [(arrays[:half], names[:half]), (arrays[half:], names[half:])]
        self._pools: list[ProcessPoolExecutor] = []

    def __enter__(self) -> _TwoWriters:
        context = multiprocessing.get_context("spawn")
        for items, names in self._halves:
            pool = ProcessPoolExecutor(1, mp_context=context, initializer=_hold, initargs=(items, names))
            self._pools.append(pool)
            pool.submit(_write_held, None).result()  # started and holding its half before the first rep
        return self

    def __exit__(self, *exc: object) -> None:
        for pool in self._pools:
            pool.shutdown()

    def write(self, directory: Path) -> None:
        for running in [pool.submit(_write_held, str(directory)) for pool in self._pools]:
            running.result()


_HELD: tuple[list[np.ndarray], list[str]] = ([], [])


def _hold(arrays: list[np.ndarray], names: list[str]) -> None:
    global _HELD
    _HELD = (arrays, names)


def _write_held(directory: str | None) -> None:
    if directory is None:
        return
    for array, name in zip(*_HELD, strict=True):
        np.save(os.path.join(directory, name), array)


def run(bench: Bench, rows: set[str]) -> list[Result]:
    """Measure the selected rows among 5, 6, 7 and 8 on one LocalCluster."""
    results = []
    with warnings.catch_warnings(), dask_client() as client:
        # Both sides of row 7 put arrays in the graph, which Dask warns about.
        warnings.filterwarnings("ignore", message=".*Sending large graph.*")
        if rows & {"5", "6", "8"}:
            results += _save_and_load_array(bench, client, rows)
        if "7" in rows:
            results += _many_small_arrays(bench, client)
    bench.notes["5-8"] = (
        "Rows 5-8: LocalCluster(n_workers=2, threads_per_worker=1, processes=True) with PolystorePlugin "
        "registered, shared by both sides. Rows 5a-5d and 6a-6d: zstd with 1024x1024 and 256x256 chunks (a, b), "
        "no compression with the same (c, d); row 5's wall time includes generating the data on the workers. "
        "Rows 8a-8b: during 5a and 6a. "
        "Row 7: both sides ship the arrays from the client; 7b puts the same save_batch beside a plain "
        "np.save loop in the client process (no cluster), the moonshot being 40% of it; 7c beside two "
        "processes (no Dask) each already holding half the arrays and saving them with np.save into the "
        "same directory at once, what this disk allows two writers. Rows 7, 7b and 7c share ours' reps: "
        "each rep runs ours and the three baselines, in reversed order on odd reps."
    )
    return results
