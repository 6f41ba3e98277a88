"""Workers SIGKILLed at random points of save_array, save_batch and load_array.

Each call must end with the right data or a clear error (the cluster giving
up on a task, or a memory path lost with its worker, named), never with wrong
data; memory routing never returns data from a dead or restarted worker. Every
wait is bounded. Kill points are drawn uniformly over the first 80% of the
time the same call takes without a fault.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client, Future
from distributed.scheduler import KilledWorker

from polystore import DiskBackend
from polystore_dask import DaskFileManager, PolystorePlugin
from polystore_dask.shipping import RESENDS, Refusal, Shipments, ShippedPart, take_shipped
from polystore_dask.tasks import call
from tests._cluster import PATIENCE, cluster_client, wait_until, worker_info
from tests._reliability_ledger import DEEP, record, scaled
from tests._reliability_workers import identify, token_data

pytestmark = pytest.mark.cluster

TRIALS = scaled(4, 14)
SHAPE, CHUNKS = (512, 512), (32, 512)  # int64: 2 MiB in 16 blocks
BATCH, ITEM = 24, 8192  # 24 arrays of 64 KiB


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    # LocalCluster closes a worker's nanny for good if no worker of that name is
    # back lost-worker-timeout after a loss; with kills seconds apart, one can
    # land just then. Kills here are the test's own, so never give up on a worker.
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"}), cluster_client(2) as client:
        # The slow backend is imported on the workers only (see tests/_reliability_slow_backend.py).
        client.register_plugin(PolystorePlugin(imports=["tests._reliability_slow_backend"]))
        yield client


@pytest.fixture(scope="module")
def rng() -> random.Random:
    return random.Random(None if DEEP else 20261127)


def slowly(block: np.ndarray) -> np.ndarray:
    time.sleep(0.02)
    return block


def expected_array() -> np.ndarray:
    return np.arange(SHAPE[0] * SHAPE[1], dtype=np.int64).reshape(SHAPE) + 1


def source_array() -> da.Array:
    """The array to save, computed on the workers, slowed so kills land during the writes."""
    x = (
        da.arange(SHAPE[0] * SHAPE[1], dtype=np.int64, chunks=CHUNKS[0] * CHUNKS[1]).reshape(SHAPE) + 1
    ).rechunk(CHUNKS)
    return x.map_blocks(slowly, dtype=np.int64)


def kill_a_worker_during(client: Client, rng: random.Random, future: Future, duration: float) -> bool:
    """SIGKILL a random worker after a random share of ``duration``; whether ``future`` was unfinished then."""
    time.sleep(rng.uniform(0, 0.8 * duration))
    pids = client.run(os.getpid)
    victim = rng.choice(sorted(pids))
    running = not future.done()
    os.kill(pids[victim], signal.SIGKILL)
    wait_until(lambda: victim not in worker_info(client), f"worker {victim} to leave")
    return running


def recover(client: Client) -> None:
    """Wait until the nanny's new worker has joined, so every trial starts with two."""
    client.wait_for_workers(2, timeout=PATIENCE)
    wait_until(lambda: len(client.run(os.getpid)) == 2, "two workers to answer")


def outcome_of(future: Future) -> BaseException | None:
    try:
        future.result(timeout=PATIENCE)
    except Exception as error:  # judged by the caller
        return error
    return None


def assert_clear(error: BaseException, *names: str) -> None:
    """A clear error: the cluster gave up on a task, or a lost memory path named with its worker."""
    if isinstance(error, KilledWorker):
        return
    if (
        isinstance(error, FileNotFoundError)
        and "left or restarted" in str(error)
        and any(name in str(error) for name in names)
    ):
        return
    raise AssertionError(f"not a clear error: {type(error).__name__}: {error}")


def timed(run: Callable[[], Any]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


# -- save_array --------------------------------------------------------------
def test_save_array_with_a_worker_killed_midway_ends_with_the_whole_array_or_a_clear_error(
    client: Client, rng: random.Random, tmp_path: Path
) -> None:
    dfm = DaskFileManager(client)
    expected = expected_array()
    durations = {
        "zarr": timed(lambda: dfm.save_array(source_array(), str(tmp_path / "calibration.zarr"), "zarr")),
        "memory": timed(lambda: dfm.save_array(source_array(), "calibration", "memory")),
    }
    for trial in range(TRIALS):
        backend = ("zarr", "memory")[trial % 2]
        path = str(tmp_path / f"trial{trial}.zarr") if backend == "zarr" else f"{tmp_path.name}/trial{trial}"
        future = client.compute(dfm.save_array(source_array(), path, backend, compute=False))
        killed = kill_a_worker_during(client, rng, future, durations[backend])
        error = outcome_of(future)
        recover(client)
        if error is not None:
            assert_clear(error, path)
        lost = check_saved_array(dfm, backend, path, expected, complete=error is None)
        record(f"cluster: save_array {backend}", operations=2, faults=int(killed), lost_or_torn=lost)
        assert lost == 0, f"trial {trial}: {lost} blocks of {path} hold wrong data"


def check_saved_array(dfm: DaskFileManager, backend: str, path: str, expected: np.ndarray, complete: bool) -> int:
    """How many blocks of the saved array are wrong; a memory array may instead be lost, named."""
    if backend == "zarr":
        stored = zarr.open_array(path, mode="r")[...]
        if complete:
            return int(not np.array_equal(stored, expected))
        # A failed save_array leaves the array it created: each chunk is whole or never written (0).
        return sum(
            not (np.array_equal(stored[rows], expected[rows]) or not stored[rows].any())
            for rows in (slice(start, start + CHUNKS[0]) for start in range(0, SHAPE[0], CHUNKS[0]))
        )
    try:
        loaded = dfm.load_array(path, "memory").compute()
    except FileNotFoundError as error:
        assert_clear(error, path)  # blocks were kept by the killed worker: lost, and said so
        return 0
    return int(not np.array_equal(loaded, expected))


# -- a single large save -------------------------------------------------------
def test_a_large_save_with_a_worker_killed_midway_completes_or_names_what_was_lost(
    client: Client, rng: random.Random, tmp_path: Path
) -> None:
    """Data over the ship threshold travels shipped; a kill must not cancel the save unnamed."""
    dfm = DaskFileManager(client)
    big = (12 << 20) // 8  # int64 items: above the manager's 8 MiB ship threshold

    def data(trial: int) -> np.ndarray:
        return np.arange(big, dtype=np.int64) + trial

    backend = "reliability-slow-disk"
    duration = timed(lambda: dfm.save(data(99), str(tmp_path / "warm.npy"), backend).result(timeout=PATIENCE))
    for trial in range(TRIALS):
        path = str(tmp_path / f"big{trial}.npy")
        future = dfm.save(data(trial), path, backend)
        killed = kill_a_worker_during(client, rng, future, duration)
        error = outcome_of(future)
        recover(client)
        record("cluster: save (large, shipped) disk", operations=1, faults=int(killed))
        assert error is None, f"trial {trial}: the save failed after a kill: {type(error).__name__}: {error}"
        np.testing.assert_array_equal(DiskBackend().load(path), data(trial))


# -- save_batch --------------------------------------------------------------
def test_save_batch_with_a_worker_killed_midway_leaves_each_item_whole_missing_or_reported_lost(
    client: Client, rng: random.Random, tmp_path: Path
) -> None:
    dfm = DaskFileManager(client)
    disk = DiskBackend()

    def batch(trial: int, backend: str) -> tuple[list[np.ndarray], list[str]]:
        items = [token_data(1000 * trial + index + 1, ITEM) for index in range(BATCH)]
        if backend == "disk":
            return items, [str(tmp_path / f"trial{trial}" / f"item{index}.npy") for index in range(BATCH)]
        return items, [f"{tmp_path.name}/trial{trial}/item{index}" for index in range(BATCH)]

    durations = {
        backend: timed(lambda backend=backend: dfm.save_batch(*batch(99, backend), backend).result(timeout=PATIENCE))
        for backend in ("disk", "memory")
    }
    for trial in range(TRIALS):
        backend = ("disk", "memory")[trial % 2]
        items, paths = batch(trial, backend)
        future = dfm.save_batch(items, paths, backend)
        killed = kill_a_worker_during(client, rng, future, durations[backend])
        error = outcome_of(future)
        recover(client)
        if error is not None:
            assert_clear(error, *paths)
        lost = 0
        for item, path in zip(items, paths, strict=True):
            try:
                loaded = disk.load(path) if backend == "disk" else dfm.load(path, "memory").result(timeout=PATIENCE)
            except FileNotFoundError as missing:
                if error is None and backend == "memory":
                    assert_clear(missing, path)  # saved, then kept by the killed worker: lost, and said so
                else:
                    lost += error is None  # an item may be missing only if the batch failed (all or nothing)
                continue
            lost += identify(loaded, ITEM) != identify(item, ITEM)
        record(f"cluster: save_batch {backend}", operations=1 + BATCH, faults=int(killed), lost_or_torn=lost)
        # On disk a failed batch may have saved some items: each must be whole (checked above).
        outcome = "failed" if error else "successful"
        assert lost == 0, f"trial {trial}: {lost} items lost or wrong after a {outcome} save_batch"
        check_memory_paths_take_new_data(dfm, backend, paths)


def test_a_save_batch_retried_after_its_worker_died_does_not_refuse_its_own_items(
    client: Client, tmp_path: Path
) -> None:
    dfm = DaskFileManager(client)
    items = [token_data(index + 1, ITEM) for index in range(8)]
    paths = [str(tmp_path / f"item{index}.npy") for index in range(8)]
    future = dfm.save_batch(items, paths, "reliability-slow-disk")  # 0.1 s per item, a few items per task
    wait_until(lambda: any(os.path.exists(path) for path in paths), "a first item to be written")
    pids = client.run(os.getpid)
    for pid in pids.values():  # every worker, so the unfinished batch tasks run again elsewhere
        os.kill(pid, signal.SIGKILL)
    error = outcome_of(future)
    recover(client)
    record("cluster: save_batch disk", operations=1, faults=len(pids))
    assert error is None, f"{type(error).__name__}: {error}"
    assert [identify(DiskBackend().load(path), ITEM) for path in paths] == [index + 1 for index in range(8)]


def test_a_batch_whose_workers_die_before_saving_their_shipped_parts_is_shipped_again_and_completes(
    client: Client, tmp_path: Path
) -> None:
    """Shipped parts have one copy on the workers: when it dies unsaved, the client sends the part again."""
    dfm = DaskFileManager(client)
    size = (1 << 20) // 8  # 1 MiB items: every part is shipped (PART_SHIP_BYTES), none travels in the graph
    items = [token_data(index + 1, size) for index in range(8)]
    paths = [str(tmp_path / f"item{index}.npy") for index in range(8)]
    future = dfm.save_batch(items, paths, "reliability-slow-disk")  # 0.1 s per item: about 0.4 s per worker
    pids = client.run(os.getpid)
    for pid in pids.values():  # every worker holding a part, before it has saved it
        os.kill(pid, signal.SIGKILL)
    unsaved = sum(not os.path.exists(path) for path in paths)
    error = outcome_of(future)
    recover(client)
    record("cluster: save_batch disk, shipped parts lost", operations=1, faults=len(pids))
    assert unsaved > 0, "every item was saved before the kill; the test needs a slower save"
    assert error is None, f"{type(error).__name__}: {error}"
    assert [identify(DiskBackend().load(path), size) for path in paths] == [index + 1 for index in range(8)]
    requests = client.get_events(Shipments.of(client).topic)
    assert len(requests) >= 1, "no worker asked the client for a part again"


def test_a_large_save_whose_workers_die_before_saving_it_is_shipped_again_and_completes(
    client: Client, tmp_path: Path
) -> None:
    """A single large save's data has one copy on the workers too: lost unsaved, the client sends it again."""
    dfm = DaskFileManager(client)
    size = (12 << 20) // 8  # above the 8 MiB at which one item is shipped rather than put in the graph
    path = str(tmp_path / "big.npy")
    future = dfm.save(token_data(5, size), path, "reliability-slow-disk")
    pids = client.run(os.getpid)
    for pid in pids.values():  # the worker holding the data, before it has saved it, and the other
        os.kill(pid, signal.SIGKILL)
    unsaved = not os.path.exists(path)
    error = outcome_of(future)
    recover(client)
    record("cluster: save (large, shipped) disk, data lost", operations=1, faults=len(pids))
    assert unsaved, "the item was saved before the kill; the test needs a slower save"
    assert error is None, f"{type(error).__name__}: {error}"
    assert identify(DiskBackend().load(path), size) == 5
    assert len(client.get_events(Shipments.of(client).topic)) >= 1, "no worker asked the client for the data again"


def test_a_shipped_part_is_sent_again_at_most_resends_times_then_refused_with_the_reason(client: Client) -> None:
    # Taken on a worker that does not hold it, a part is asked for again each time; the client sends it
    # RESENDS times, and then refuses: a task on a cluster whose workers keep dying never waits forever.
    first, second = sorted(worker_info(client))
    shipments = Shipments.of(client)
    (shipment,) = shipments.ship([[np.arange(4)]], [first])
    taken = [
        client.submit(take_shipped, shipment.part, workers=[second], pure=False).result(timeout=PATIENCE)
        for _ in range(RESENDS + 1)
    ]
    for items in taken[:RESENDS]:
        np.testing.assert_array_equal(items[0], np.arange(4))
    assert isinstance(taken[-1], Refusal)
    assert f"sent again {RESENDS} times" in taken[-1].reason


def test_a_batch_part_that_cannot_be_shipped_again_fails_naming_its_paths_and_writes_nothing(
    client: Client, tmp_path: Path
) -> None:
    # A part the client no longer holds (its operation released) is refused; the save says which paths it lost.
    paths = [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]
    unknown = ShippedPart("polystore-data-released", Shipments.of(client).topic)
    taken = client.submit(take_shipped, unknown, pure=False)
    outcome = client.submit(call, "disk", "save_batch", (taken, paths), {}, path_args=(1,), pure=False).result(
        timeout=PATIENCE
    )
    assert isinstance(outcome.error, ConnectionError)
    assert outcome.error.filename == paths[0]
    assert "(and 1 more paths of this batch)" in str(outcome.error)
    assert "no longer holds it" in str(outcome.error)
    assert not any(os.path.exists(path) for path in paths)


def check_memory_paths_take_new_data(dfm: DaskFileManager, backend: str, paths: list[str]) -> None:
    """After the kill, saving a memory path again and loading it gives the new data, never older data."""
    if backend != "memory":
        return
    for index, path in enumerate(paths[:4]):
        fresh = token_data(900_000 + index, ITEM)
        dfm.save(fresh, path, "memory", overwrite=True).result(timeout=PATIENCE)
        assert identify(dfm.load(path, "memory").result(timeout=PATIENCE), ITEM) == 900_000 + index
    record("cluster: save_batch memory", operations=8)


# -- load_array --------------------------------------------------------------
def test_load_array_with_a_worker_killed_midway_returns_the_array_or_a_clear_error(
    client: Client, rng: random.Random, tmp_path: Path
) -> None:
    dfm = DaskFileManager(client)
    expected = expected_array()
    sources = {"zarr": str(tmp_path / "source.zarr"), "memory": f"{tmp_path.name}/source"}
    for backend, path in sources.items():
        dfm.save_array(source_array(), path, backend)

    def reading(backend: str) -> da.Array:
        return dfm.load_array(sources[backend], backend).map_blocks(slowly, dtype=np.int64)

    durations = {backend: timed(lambda backend=backend: reading(backend).compute()) for backend in sources}
    for trial in range(TRIALS):
        backend = ("zarr", "memory")[trial % 2]
        if backend == "memory":  # whole again: an earlier kill may have taken blocks with it
            dfm.save_array(source_array(), sources[backend], backend, overwrite=True)
        future = client.compute(reading(backend))
        killed = kill_a_worker_during(client, rng, future, durations[backend])
        error = outcome_of(future)
        recover(client)
        wrong = 0
        if error is None:
            wrong = int(not np.array_equal(future.result(), expected))
        else:
            assert_clear(error, sources[backend])
        record(f"cluster: load_array {backend}", operations=1, faults=int(killed), lost_or_torn=wrong)
        assert wrong == 0, f"trial {trial}: load_array returned wrong data"
