"""Replicated memory paths (``replicas=k``): held on k workers, read from any, healed after a worker's loss."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client

from polystore_dask import DaskFileManager, PolystorePlugin
from polystore_dask.plugin import registry_of
from tests._cluster import PATIENCE, cluster_client, kill_worker, wait_until, worker_info
from tests._reliability_ledger import record

pytestmark = pytest.mark.cluster

WORKERS = 3


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """3 workers; memory paths default to 2 replicas; the kills are the tests' own, so no worker is given up on."""
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"}), cluster_client(WORKERS) as client:
        client.register_plugin(PolystorePlugin(options={"memory": {"replicas": 2}}))
        yield client


@pytest.fixture
def dfm(client: Client) -> DaskFileManager:
    client.wait_for_workers(WORKERS, timeout=PATIENCE)
    wait_until(lambda: len(client.run(os.getpid)) == WORKERS, "every worker to answer")
    return DaskFileManager(client)


def kept_here(paths: list[str], dask_worker: Any) -> dict[str, Any]:
    """On a worker: what its memory backend keeps at each of ``paths`` (missing ones left out)."""
    memory = registry_of(dask_worker)["memory"]
    return {path: np.array(memory.load(path)) for path in paths if memory.is_file(path)}


def holders(client: Client, paths: list[str]) -> dict[str, list[str]]:
    """For each path: the addresses of the live workers that keep it, sorted."""
    found: dict[str, list[str]] = {path: [] for path in paths}
    for address, kept in sorted(client.run(kept_here, paths).items()):
        for path in kept:
            found[path].append(address)
    return found


def values(client: Client, path: str) -> list[Any]:
    """What each live worker keeping ``path`` holds there."""
    return [kept[path] for kept in client.run(kept_here, [path]).values() if path in kept]


def healed(client: Client, paths: list[str], count: int) -> bool:
    return all(len(where) >= count for where in holders(client, paths).values())


def test_each_path_is_held_by_as_many_workers_as_replicas_asks(client, dfm, tmp_path):
    paths = [f"{tmp_path.name}/item{i}" for i in range(12)]
    dfm.save_batch([np.full(4, i) for i in range(12)], paths, "memory", replicas=3).result(timeout=PATIENCE)
    dfm.save(np.ones(3), f"{tmp_path.name}/single", "memory").result(timeout=PATIENCE)  # the plugin's default: 2
    dfm.save(np.ones(3), f"{tmp_path.name}/one", "memory", replicas=1).result(timeout=PATIENCE)

    where = holders(client, [*paths, f"{tmp_path.name}/single", f"{tmp_path.name}/one"])
    assert all(len(where[path]) == 3 for path in paths)
    assert len(where[f"{tmp_path.name}/single"]) == 2
    assert len(where[f"{tmp_path.name}/one"]) == 1
    loaded = dfm.load_batch(paths, "memory").result(timeout=PATIENCE)
    assert [int(array[0]) for array in loaded] == list(range(12))


def test_listings_show_each_replicated_path_once_and_delete_removes_every_replica(client, dfm, tmp_path):
    paths = [f"{tmp_path.name}/d/f{i}" for i in range(5)]
    dfm.save_batch([np.arange(i + 1) for i in range(5)], paths, "memory").result(timeout=PATIENCE)
    assert dfm.list_files(f"{tmp_path.name}/d", "memory") == paths
    assert dfm.list_dir(f"{tmp_path.name}/d", "memory") == [f"f{i}" for i in range(5)]
    assert dfm.stat(paths[0], "memory")["type"] == "file"

    dfm.delete(paths[0], "memory").result(timeout=PATIENCE)
    assert holders(client, [paths[0]]) == {paths[0]: []}
    assert dfm.exists(paths[0], "memory") is False
    with pytest.raises(FileNotFoundError):
        dfm.load(paths[0], "memory").result(timeout=PATIENCE)
    dfm.delete(f"{tmp_path.name}/d", "memory", recursive=True).result(timeout=PATIENCE)
    assert all(not where for where in holders(client, paths).values())


def test_a_killed_holder_loses_nothing_and_after_healing_a_second_kill_loses_nothing(client, dfm, tmp_path):
    paths = [f"{tmp_path.name}/p{i}" for i in range(30)]
    dfm.save_batch([np.full(8, i) for i in range(30)], paths, "memory").result(timeout=PATIENCE)
    first = holders(client, paths)[paths[0]][0]
    kill_worker(client, first)

    loaded = dfm.load_batch(paths, "memory").result(timeout=PATIENCE)  # served by the live replicas
    assert [int(array[0]) for array in loaded] == list(range(30))
    client.wait_for_workers(WORKERS, timeout=PATIENCE)
    wait_until(lambda: healed(client, paths, 2), "every path to be held by 2 live workers again")

    second = holders(client, paths)[paths[0]][0]
    kill_worker(client, second)
    loaded = dfm.load_batch(paths, "memory").result(timeout=PATIENCE)
    lost = sum(1 for index, array in enumerate(loaded) if not np.array_equal(array, np.full(8, index)))
    record("cluster: memory replicas=2, a holder killed, healed, another killed", operations=2 * len(paths), faults=2,
           lost_or_torn=lost)
    assert lost == 0


def test_a_restarted_holder_comes_back_empty_and_is_not_counted(client, dfm, tmp_path):
    path = f"{tmp_path.name}/restarted"
    dfm.save(np.arange(5), path, "memory").result(timeout=PATIENCE)
    one, other = holders(client, [path])[path]
    client.restart_workers([one])
    # The restarted worker holds nothing; the path is copied to a worker until two hold it again.
    wait_until(lambda: healed(client, [path], 2), "the path to be held by 2 live workers again")
    kill_worker(client, other)
    np.testing.assert_array_equal(dfm.load(path, "memory").result(timeout=PATIENCE), np.arange(5))


def test_when_every_holder_is_lost_a_load_names_the_path_and_every_lost_worker(client, dfm, tmp_path):
    path = f"{tmp_path.name}/gone"
    dfm.save(np.ones(4), path, "memory").result(timeout=PATIENCE)
    lost = holders(client, [path])[path]
    assert len(lost) == 2
    # Both at once, before any healing can copy it.
    for address in lost:
        client.run(os._exit, 1, workers=[address], on_error="ignore")
    wait_until(lambda: not set(lost) & set(worker_info(client)), "both holders to leave")
    with pytest.raises(FileNotFoundError) as caught:
        dfm.load(path, "memory").result(timeout=PATIENCE)
    message = str(caught.value)
    assert path in message and all(address in message for address in lost), message
    with pytest.raises(FileNotFoundError, match="all left or restarted"):
        dfm.load_batch([path], "memory").result(timeout=PATIENCE)


@pytest.mark.parametrize("then", [signal.SIGKILL, signal.SIGCONT], ids=["killed", "thawed"])
def test_an_overwrite_with_a_frozen_holder_switches_every_live_replica_or_none(client, dfm, tmp_path, then):
    path = f"{tmp_path.name}/versioned"
    dfm.save(np.full(6, 1), path, "memory").result(timeout=PATIENCE)
    frozen, running = holders(client, [path])[path]
    pid = client.run(os.getpid, workers=[frozen])[frozen]
    os.kill(pid, signal.SIGSTOP)
    try:
        overwrite = dfm.save(np.full(6, 2), path, "memory", overwrite=True)
        reading = dfm.load(path, "memory")  # issued after the overwrite: sees it whole, or waits for it
        with pytest.raises(TimeoutError):
            overwrite.result(timeout=2)  # a frozen replica has not acked: the path has not switched
        assert not reading.done()
    finally:
        os.kill(pid, then)  # the frozen holder dies with the new version unwritten, or writes it now
    overwrite.result(timeout=PATIENCE)  # every live replica holds the new version
    np.testing.assert_array_equal(reading.result(timeout=PATIENCE), np.full(6, 2))
    wait_until(lambda: healed(client, [path], 2), "the path to be held by 2 live workers again")
    assert [int(array[0]) for array in values(client, path)] == [2, 2]


def test_a_failed_overwrite_leaves_the_old_version_on_every_replica(client, dfm, tmp_path):
    path = f"{tmp_path.name}/kept"
    dfm.save(np.full(3, 7), path, "memory").result(timeout=PATIENCE)
    with pytest.raises(ValueError, match="object array"):
        dfm.save(np.array([object()]), path, "memory", overwrite=True).result(timeout=PATIENCE)
    assert [int(array[0]) for array in values(client, path)] == [7, 7]
    np.testing.assert_array_equal(dfm.load(path, "memory").result(timeout=PATIENCE), np.full(3, 7))


def test_copy_and_move_keep_the_replicas(client, dfm, tmp_path):
    source, copied, moved = (f"{tmp_path.name}/{name}" for name in ("src", "copied", "moved"))
    dfm.save(np.arange(4), source, "memory").result(timeout=PATIENCE)
    dfm.copy(source, copied, "memory", replicas=3).result(timeout=PATIENCE)
    dfm.move(source, moved, "memory").result(timeout=PATIENCE)
    where = holders(client, [source, copied, moved])
    assert (len(where[source]), len(where[copied]), len(where[moved])) == (0, 3, 2)
    np.testing.assert_array_equal(dfm.load(moved, "memory").result(timeout=PATIENCE), np.arange(4))
    with pytest.raises(FileNotFoundError):
        dfm.load(source, "memory").result(timeout=PATIENCE)


def test_fewer_workers_than_replicas_keeps_what_it_can_and_says_so_in_a_log_line(client, dfm, tmp_path, caplog):
    path = f"{tmp_path.name}/many"
    with caplog.at_level(logging.WARNING, logger="polystore_dask.replicas"):
        dfm.save(np.ones(2), path, "memory", replicas=5).result(timeout=PATIENCE)
    assert len(holders(client, [path])[path]) == WORKERS
    assert any("fewer workers than the replicas asked" in record.getMessage() for record in caplog.records)


def test_replicas_on_a_shared_backend_or_below_one_is_refused_before_anything_is_written(client, dfm, tmp_path):
    with pytest.raises(ValueError, match="locality 'process' or 'host'"):
        dfm.save(np.ones(2), str(tmp_path / "a.npy"), "disk", replicas=2)
    assert not (tmp_path / "a.npy").exists()
    dfm.save(np.ones(2), str(tmp_path / "a.npy"), "disk", replicas=1).result(timeout=PATIENCE)  # 1 is no replicas
    with pytest.raises(ValueError, match="at least 1"):
        dfm.save(np.ones(2), f"{tmp_path.name}/zero", "memory", replicas=0)
    with pytest.raises(TypeError, match="positive int"):
        dfm.save_batch([np.ones(2)], [f"{tmp_path.name}/text"], "memory", replicas="2")
    assert not dfm.exists(f"{tmp_path.name}/zero", "memory")
    with pytest.raises(ValueError, match="at least 1"):
        PolystorePlugin(options={"memory": {"replicas": 0}})


def block_paths(client: Client, directory: str) -> list[str]:
    return sorted({path for kept in client.run(listed_here, directory).values() for path in kept})


def listed_here(directory: str, dask_worker: Any) -> list[str]:
    memory = registry_of(dask_worker)["memory"]
    return memory.list_files(directory) if memory.is_dir(directory) else []


def test_save_array_keeps_each_block_on_two_workers_and_load_array_reads_live_replicas(client, dfm, tmp_path):
    x = da.arange(64 * 64, chunks=512).reshape(64, 64).rechunk((16, 64))
    key = f"{tmp_path.name}/arr"
    dfm.save_array(x, key, "memory")  # the plugin's default: 2 replicas
    kept = block_paths(client, key)
    assert len(kept) == 5  # 4 blocks and the layout
    assert all(len(where) == 2 for where in holders(client, kept).values())
    kill_worker(client, holders(client, kept)[kept[0]][0])
    assert int(dfm.load_array(key, "memory").sum().compute()) == int(x.sum().compute())
    with pytest.raises(ValueError, match="needs compute=True"):
        dfm.save_array(x, f"{tmp_path.name}/lazy", "memory", compute=False)
    assert not dfm.exists(f"{tmp_path.name}/lazy", "memory")
