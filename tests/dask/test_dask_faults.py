"""Workers that die or restart: memory loss is reported, zarr writes stay whole."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client

from polystore_dask import DaskFileManager, PolystorePlugin
from tests._cluster import PATIENCE, cluster_client, kill_worker, wait_until, worker_addresses

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def client(polystore_plugin: PolystorePlugin) -> Iterator[Client]:
    """The module's cluster, which never gives up on a killed worker (the kills here are the tests' own).

    LocalCluster closes a worker's nanny for good if no worker of that name
    is back lost-worker-timeout after a loss; with kills seconds apart on a
    loaded machine, one can land just then.
    """
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"}), cluster_client(2) as client:
        client.register_plugin(polystore_plugin)
        yield client


def make_array(value: float) -> np.ndarray:
    return np.full(8, value)


def save_on(client, dfm, address: str, path: str, value: float):
    data = client.submit(make_array, value, workers=[address], pure=False)
    return dfm.save(data, path, "memory").result(timeout=PATIENCE)


def test_memory_kept_by_a_killed_worker_raises_file_not_found_naming_path_and_worker(client, dfm, tmp_path):
    victim, survivor = worker_addresses(client)
    lost, kept = f"{tmp_path.name}/lost", f"{tmp_path.name}/kept"
    save_on(client, dfm, victim, lost, 1.0)
    save_on(client, dfm, survivor, kept, 2.0)
    kill_worker(client, victim)

    with pytest.raises(FileNotFoundError) as caught:
        dfm.load(lost, "memory").result(timeout=PATIENCE)
    assert lost in str(caught.value) and victim in str(caught.value)
    with pytest.raises(FileNotFoundError, match=victim):
        dfm.stat(lost, "memory")
    with pytest.raises(FileNotFoundError, match=victim):
        dfm.load_batch([kept, lost], "memory").result(timeout=PATIENCE)
    assert dfm.exists(lost, "memory") is False
    assert dfm.list_files(tmp_path.name, "memory") == [kept]
    np.testing.assert_array_equal(dfm.load(kept, "memory").result(timeout=PATIENCE), np.full(8, 2.0))

    dfm.save(np.full(8, 3.0), lost, "memory").result(timeout=PATIENCE)  # saved again, on a live worker
    np.testing.assert_array_equal(dfm.load(lost, "memory").result(timeout=PATIENCE), np.full(8, 3.0))


def test_restart_loses_memory_with_an_error_naming_the_lost_worker(client, dfm, tmp_path):
    path = f"{tmp_path.name}/before-restart"
    owner = worker_addresses(client)[0]
    save_on(client, dfm, owner, path, 1.0)
    client.restart()
    with pytest.raises(FileNotFoundError, match="left or restarted") as caught:
        dfm.load(path, "memory").result(timeout=PATIENCE)
    assert owner in str(caught.value)


def test_a_memory_array_with_a_lost_block_raises_instead_of_returning_holes(client, dfm, tmp_path):
    key = f"{tmp_path.name}/arr"
    dfm.save_array(da.ones((40, 40), chunks=(10, 40)), key, "memory")
    kill_worker(client, worker_addresses(client)[0])
    client.wait_for_workers(2, timeout=PATIENCE)
    with pytest.raises(FileNotFoundError, match="left or restarted"):
        dfm.load_array(key, "memory").sum().compute()


def slowly(block: np.ndarray) -> np.ndarray:
    time.sleep(0.03)
    return block


def chunk_files(path: str) -> int:
    return sum(len(files) for _, _, files in os.walk(os.path.join(path, "c")))


def assert_stored_chunks_hold_their_part(path: str, expected: np.ndarray) -> None:
    """Each chunk file at ``path`` decodes to its part of ``expected``; a chunk not stored reads as the fill value."""
    stored = zarr.open_array(path, mode="r")
    unit = stored.shards or stored.chunks  # one file per shard when sharded
    root = os.path.join(path, "c")
    stored_files = {
        tuple(int(part) for part in os.path.relpath(os.path.join(folder, name), root).split(os.sep))
        for folder, _, names in os.walk(root)
        for name in names
    }
    for index in np.ndindex(*(-(-size // side) for size, side in zip(stored.shape, unit, strict=True))):
        region = tuple(slice(i * side, (i + 1) * side) for i, side in zip(index, unit, strict=True))
        if index in stored_files:
            np.testing.assert_array_equal(stored[region], expected[region], err_msg=f"chunk {index}")
        else:
            assert not stored[region].any(), f"chunk {index} has no file but reads other than the fill value"


def test_a_worker_killed_during_save_array_leaves_a_whole_array_or_a_clear_error(client, dfm, tmp_path):
    x = da.random.default_rng(5).random((1024, 1024), chunks=(128, 128)).map_blocks(slowly)
    path = str(tmp_path / "killed.zarr")
    writing = client.compute(dfm.save_array(x, path, compute=False))
    wait_until(lambda: chunk_files(path) >= 8 or writing.done(), "some chunks to be written")
    kill_worker(client, worker_addresses(client)[0])
    error = writing.exception(timeout=PATIENCE)
    if error is None:
        assert np.array_equal(zarr.open_array(path, mode="r")[...], x.compute())
    else:  # the cluster gave up on a task: that must be said plainly
        assert type(error).__name__ == "KilledWorker", repr(error)
        assert_stored_chunks_hold_their_part(path, x.compute())  # every chunk file written is whole and right


def block(seconds: float) -> None:
    time.sleep(seconds)


def test_a_task_waiting_for_a_worker_that_dies_does_not_hang():
    # One worker: when it dies no other worker is running, so the pending
    # load is left without a worker until the nanny's new process joins.
    with cluster_client(1) as client:
        client.register_plugin(PolystorePlugin())
        dfm = DaskFileManager(client)
        dfm.save(np.ones(3), "only/a", "memory").result(timeout=PATIENCE)
        (owner,) = worker_addresses(client)
        busy = client.submit(block, 60, pure=False)
        wait_until(lambda: client.processing()[owner], "the worker to be busy")
        pending = dfm.load("only/a", "memory")
        kill_worker(client, owner)
        client.cancel(busy)
        with pytest.raises(FileNotFoundError, match=owner):
            pending.result(timeout=PATIENCE)


def rerun_flag(marker: str) -> bool:
    """First run: leave ``marker`` and hang (to be killed); a run after that: whether it is a re-run."""
    from distributed import get_worker

    from polystore_dask.tasks import is_rerun

    if not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(PATIENCE)
    return is_rerun(get_worker())


def test_a_task_knows_it_is_run_again_after_its_worker_died(client, tmp_path):
    (tmp_path / "done-before").touch()
    assert client.submit(rerun_flag, str(tmp_path / "done-before"), pure=False).result(timeout=PATIENCE) is False
    marker = tmp_path / "started"
    running = client.submit(rerun_flag, str(marker), pure=False)
    wait_until(marker.exists, "the first run to start")
    where = next(address for address, keys in client.processing().items() if running.key in keys)
    kill_worker(client, where)
    assert running.result(timeout=PATIENCE) is True


def spread_ones(client) -> da.Array:
    """A (40, 40) array of ones in 8 blocks, computed half on each worker, so each worker holds blocks.

    Left to the scheduler, a loaded machine can run every block on one
    worker, and a test of a lost block then has no worker to kill.
    """
    addresses = worker_addresses(client)
    blocks = [
        client.submit(np.ones, (5, 40), workers=[addresses[index % len(addresses)]], pure=False)
        for index in range(8)
    ]
    client.gather(client.map(len, blocks))  # every block computed where it was pinned
    return da.concatenate([da.from_delayed(dask.delayed(block), (5, 40), float) for block in blocks])


def holding(client, key: str) -> dict[str, list[str]]:
    """Each worker's memory entries inside ``key``."""

    def names(dask_worker):
        backend = dask_worker.plugins["polystore"].registry["memory"]
        return backend.list_dir(key) if backend.is_dir(key) else []

    return client.run(names)


@pytest.mark.parametrize("lost", ["the layout", "a block"])
def test_a_memory_array_saved_without_compute_names_the_worker_it_lost(client, dfm, tmp_path, lost):
    key = f"{tmp_path.name}/arr"
    dask.compute(dfm.save_array(spread_ones(client), key, "memory", compute=False))
    held = holding(client, key)
    victim = next(address for address, names in held.items() if (".array" in names) == (lost == "the layout") and names)
    kill_worker(client, victim)
    client.wait_for_workers(2, timeout=PATIENCE)
    with pytest.raises(FileNotFoundError, match="left or restarted") as caught:
        dfm.load_array(key, "memory").sum().compute()
    assert victim in str(caught.value)


def test_a_load_batch_counts_every_path_lost_with_a_worker(client, dfm, tmp_path):
    paths = [f"{tmp_path.name}/counted/item{index}" for index in range(12)]
    dfm.save_batch([np.full(4, index) for index in range(12)], paths, "memory").result(timeout=PATIENCE)
    held = holding(client, f"{tmp_path.name}/counted")
    victim = max(held, key=lambda address: len(held[address]))
    lost = len(held[victim])
    assert 1 < lost < 12
    kill_worker(client, victim)
    client.wait_for_workers(2, timeout=PATIENCE)
    with pytest.raises(FileNotFoundError, match=victim) as caught:
        dfm.load_batch(paths, "memory").result(timeout=PATIENCE)
    assert f"(and {lost - 1} more paths of this batch)" in str(caught.value)


@pytest.mark.parametrize("manager", ["the same manager", "a new manager"])
@pytest.mark.parametrize("lost", ["the layout", "a block"])
def test_a_memory_array_names_the_worker_it_lost(client, dfm, tmp_path, lost, manager):
    key = f"{tmp_path.name}/arr"
    dfm.save_array(spread_ones(client), key, "memory")
    held = holding(client, key)
    victim = next(address for address, names in held.items() if (".array" in names) == (lost == "the layout") and names)
    kill_worker(client, victim)
    client.wait_for_workers(2, timeout=PATIENCE)
    reader = dfm if manager == "the same manager" else DaskFileManager(client)
    with pytest.raises(FileNotFoundError, match="left or restarted") as caught:
        reader.load_array(key, "memory").sum().compute()
    assert victim in str(caught.value)
