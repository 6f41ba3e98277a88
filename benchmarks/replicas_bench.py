"""Row 16: replicated memory paths (``replicas=2``) against one copy, and the time to heal after a kill.

The cluster is ``LocalCluster(n_workers=3, threads_per_worker=1)`` with
``PolystorePlugin`` registered (never giving up on a killed worker).

- Row 16a: ``save_batch`` of 1000 arrays of 64 KiB to memory with
  ``replicas=2`` against ``replicas=1``, both shipped from the client
  (target: at most 2.2x the time, a ratio of at least 1/2.2).
- Row 16b: ``load_batch`` of those 1000 paths saved with ``replicas=2``
  against the same paths saved with ``replicas=1`` (target: no slower).
- Row 16c: 10,000 paths of 1 KiB saved with ``replicas=2``; one worker
  SIGKILLed; the seconds from its leaving the scheduler until the manager
  counts 2 live holders for every path again (no baseline: none of the
  tools users would pick instead heals named data).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

from benchmarks._harness import Bench, Result, Stats, compare, throughput_result

__all__ = ["run"]

WORKERS = 3


@contextlib.contextmanager
def _cluster() -> Iterator[Any]:
    import dask
    from distributed import Client, LocalCluster

    from polystore_dask import PolystorePlugin

    with (
        dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"}),
        LocalCluster(
            n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=logging.ERROR, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(PolystorePlugin())
        yield client


def _save_and_load(bench: Bench, client: Any) -> list[Result]:
    from polystore_dask import DaskFileManager

    dfm = DaskFileManager(client)
    count = bench.size(1000, 100)
    arrays = [np.random.default_rng(index).random(8192).astype(np.float64) for index in range(count)]

    def save(replicas: int) -> float:
        paths = [f"bench-{uuid.uuid4().hex}/a{index}" for index in range(count)]
        start = time.perf_counter()
        dfm.save_batch(arrays, paths, "memory", replicas=replicas).result()
        elapsed = time.perf_counter() - start
        dfm.delete(paths[0].rsplit("/", 1)[0], "memory", recursive=True).result()
        return elapsed

    saved_twice, saved_once = save(2), save(1)  # warm both paths once
    del saved_twice, saved_once
    ours, baseline = compare(lambda: save(2), lambda: save(1), reps=bench.heavy_reps)
    results = [
        throughput_result(
            "16a", f"Dask save_batch to memory, {count} x 64 KiB float64, 3 workers: replicas=2 vs replicas=1",
            unit="files/s", work=count, ours=("dfm.save_batch(..., 'memory', replicas=2)", ours),
            baseline=("dfm.save_batch(..., 'memory', replicas=1)", baseline), min_ratio=round(1 / 2.2, 3),
            note="target: replicas=2 takes at most 2.2x the time",
        )
    ]
    twice = [f"bench-loads-2/a{index}" for index in range(count)]
    once = [f"bench-loads-1/a{index}" for index in range(count)]
    dfm.save_batch(arrays, twice, "memory", replicas=2).result()
    dfm.save_batch(arrays, once, "memory", replicas=1).result()

    def load(paths: list[str]) -> float:
        start = time.perf_counter()
        dfm.load_batch(paths, "memory").result()
        return time.perf_counter() - start

    ours, baseline = compare(lambda: load(twice), lambda: load(once), reps=bench.heavy_reps)
    results.append(
        throughput_result(
            "16b", f"Dask load_batch from memory, {count} x 64 KiB float64, 3 workers: saved with replicas=2 vs 1",
            unit="files/s", work=count, ours=("dfm.load_batch(paths saved with replicas=2)", ours),
            baseline=("dfm.load_batch(paths saved with replicas=1)", baseline), min_ratio=0.9,
        )
    )
    return results


def _heal(bench: Bench, client: Any) -> Result:
    from polystore_dask import DaskFileManager

    count = bench.size(10_000, 1_000)
    data = [np.full(128, index, dtype=np.float64) for index in range(count)]
    seconds = []
    for _ in range(bench.size(4, 2)):
        dfm = DaskFileManager(client)
        paths = [f"heal-{uuid.uuid4().hex}/p{index}" for index in range(count)]
        dfm.save_batch(data, paths, "memory", replicas=2).result()
        placement = dfm._placement("memory")
        workers = placement.owners.workers()
        victim = sorted(workers.members)[0]
        client.run(os._exit, 1, workers=[victim], on_error="ignore")
        deadline = time.monotonic() + 300
        while victim in client.nthreads():
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {victim} did not leave")
            time.sleep(0.01)
        gone = time.perf_counter()
        while True:
            live = placement.owners.workers()
            records = placement.owners.replicated_paths()
            if all(len(live.live(_holders(record.holders))) >= 2 for record in records.values()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("healing did not finish in 300 s")
            time.sleep(0.02)
        seconds.append(time.perf_counter() - gone)
        dfm.delete(paths[0].rsplit("/", 1)[0], "memory", recursive=True).result()
        client.wait_for_workers(WORKERS, timeout=120)
    return Result(
        row="16c", title=f"heal {count:,} memory paths of 1 KiB (replicas=2, 3 workers) after one worker is SIGKILLed",
        unit="s", ours_label="worker gone until every path has 2 live holders (DaskFileManager's healer)",
        ours=Stats.of(seconds), note=f"{len(seconds)} kills; the healer looks every 0.5 s",
    )


def _holders(owners: tuple[Any, ...]) -> Any:
    from polystore_dask.workers import Holders

    return Holders(owners)


def run(bench: Bench, rows: set[str]) -> list[Result]:
    """Measure row 16."""
    bench.notes["16"] = (
        "Row 16: replicated memory paths on a LocalCluster of 3 single-threaded workers; 16a/16b pair "
        "replicas=2 with replicas=1 rep by rep (ABBA), 16c times healing after a SIGKILL."
    )
    with _cluster() as client:
        return [*_save_and_load(bench, client), _heal(bench, client)]
