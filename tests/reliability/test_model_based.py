"""Model-based tests: random operation sequences agree with a plain model of the contract.

Each test runs :class:`StorageMachine` (tests/_reliability_machine.py)
against one backend: Hypothesis draws sequences of save, load, exists,
delete, copy, move, ensure_directory, list_files, list_dir, stat and bad
inputs, and after every step the backend and the model must agree on
results, exception types, the whole tree and the data. A smaller run drives
DaskFileManager (memory and disk) on a LocalCluster the same way. Default
sizes are seeded (``derandomize``) and small; ``POLYSTORE_DEEP=1`` runs many
more, randomly seeded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from distributed import Client
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from polystore import DiskBackend, MemoryBackend, ZarrBackend
from polystore_dask import DaskFileManager, PolystorePlugin
from tests._cluster import cluster_client
from tests._reliability_ledger import DEEP, scaled
from tests._reliability_machine import BAD_PATHS, ROOTED_BAD_PATHS, MachineConfig, StorageMachine
from tests._reliability_model import ManagerAdapter

#: Names paths are made of on backends storing every kind: the suffix picks the kind.
MIXED_COMPONENTS = ("a.npy", "b.npy", "c.bin", "d.json", "e.txt")
_KINDS = {".npy": "array", ".bin": "bytes", ".json": "dict", ".txt": "str"}


def mixed_kind(name: str) -> str:
    return _KINDS.get(os.path.splitext(name)[1], "bytes")


def machine_settings(
    default_examples: int, deep_examples: int, default_steps: int = 30, deep_steps: int = 60
) -> settings:
    return settings(
        max_examples=scaled(default_examples, deep_examples),
        stateful_step_count=scaled(default_steps, deep_steps),
        derandomize=not DEEP,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        print_blob=True,
        report_multiple_bugs=False,  # shrink one failure well rather than several badly
    )


def rooted(backend_class: type, base: Path) -> Callable[[], object]:
    def open_store() -> object:
        return backend_class(root=tempfile.mkdtemp(dir=base))

    return open_store


def remove_root(store: DiskBackend | ZarrBackend) -> None:
    shutil.rmtree(store.root, ignore_errors=True)


# -- regressions found by the model (fixed in DiskBackend) ----------------------
def test_disk_move_onto_the_directory_holding_the_source_raises_is_a_directory_error(tmp_path: Path) -> None:
    disk = DiskBackend(root=tmp_path)
    disk.save(b"data", "x/a.bin")
    with pytest.raises(IsADirectoryError, match="'x'"):
        disk.move("x/a.bin", "x", overwrite=True)
    assert disk.load("x/a.bin") == b"data"


@pytest.mark.parametrize("listing", ["list_dir", "list_files"])
def test_disk_listing_a_path_below_a_file_raises_file_not_found_as_memory_and_zarr_do(
    tmp_path: Path, listing: str
) -> None:
    disk = DiskBackend(root=tmp_path)
    disk.save(b"data", "x/a.bin")
    with pytest.raises(FileNotFoundError, match="x/a.bin/q"):
        getattr(disk, listing)("x/a.bin/q")


# -- the model-based runs ----------------------------------------------------
def test_memory_backend_agrees_with_the_model() -> None:
    config = MachineConfig(
        area="model: memory",
        open_store=MemoryBackend,
        close_store=lambda store: None,
        components=MIXED_COMPONENTS,
        kind_of=mixed_kind,
        leading_slash=True,
    )
    run_state_machine_as_test(StorageMachine.bound(config), settings=machine_settings(100, 1500))


def test_disk_backend_agrees_with_the_model(tmp_path: Path) -> None:
    config = MachineConfig(
        area="model: disk",
        open_store=rooted(DiskBackend, tmp_path),
        close_store=remove_root,
        components=MIXED_COMPONENTS,
        kind_of=mixed_kind,
        bad_paths=BAD_PATHS + ROOTED_BAD_PATHS,
    )
    run_state_machine_as_test(StorageMachine.bound(config), settings=machine_settings(80, 1000))


def test_zarr_backend_agrees_with_the_model(tmp_path: Path) -> None:
    config = MachineConfig(
        area="model: zarr",
        open_store=rooted(ZarrBackend, tmp_path),
        close_store=remove_root,
        # No "zarr.json": every directory is a zarr group with its metadata there, so no path is made with it.
        components=("a.zarr", "b.zarr", "c", "d.json"),
        kind_of=lambda name: "array",
        bad_paths=BAD_PATHS + ROOTED_BAD_PATHS,
        check_data_every_step=False,
    )
    run_state_machine_as_test(StorageMachine.bound(config), settings=machine_settings(40, 400))


# -- the same machine through DaskFileManager on a LocalCluster ---------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, Path]]:
    """A 2-worker LocalCluster whose disk backend is rooted in a private directory."""
    root = tmp_path_factory.mktemp("dask-model-root")
    with cluster_client(2) as client:
        client.register_plugin(PolystorePlugin(options={"disk": {"root": str(root)}}))
        yield client, root


def empty_directory(root: Path) -> None:
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def empty_memory(store: ManagerAdapter) -> None:
    # A fresh manager knows no owners, so it deletes on every worker.
    fresh = ManagerAdapter(DaskFileManager(store.manager.client), "memory")
    for name in fresh.list_dir("."):
        fresh.delete(name, recursive=True)


# Regressions found by the model (fixed in polystore_dask).
@pytest.fixture
def dfm(cluster: tuple[Client, Path]) -> Iterator[DaskFileManager]:
    client, _ = cluster
    manager = DaskFileManager(client)
    yield manager
    empty_memory(ManagerAdapter(manager, "memory"))


@pytest.mark.cluster
def test_dask_memory_queries_of_the_root_answer_as_the_memory_backend_does(dfm: DaskFileManager) -> None:
    assert dfm.exists(".", "memory") is True
    assert dfm.is_dir("/", "memory") is True
    assert dfm.stat(".", "memory")["type"] == "directory"
    with pytest.raises(IsADirectoryError):
        dfm.load(".", "memory").result()


@pytest.mark.cluster
def test_dask_memory_save_onto_a_directory_kept_by_another_worker_raises_is_a_directory_error(
    dfm: DaskFileManager
) -> None:
    dfm.save(b"inside", "q/a", "memory").result()  # q is a directory on the first worker in turn
    with pytest.raises(IsADirectoryError):
        dfm.save(b"file", "q", "memory").result()  # the next worker in turn has no q
    assert dfm.is_file("q", "memory") is False


@pytest.mark.cluster
def test_dask_memory_recursive_delete_removes_the_directory_from_every_worker(dfm: DaskFileManager) -> None:
    dfm.save(b"1", "q/a", "memory").result()  # on the first worker in turn
    dfm.save(b"2", "q/b", "memory").result()  # on the second
    with pytest.raises(IsADirectoryError):
        dfm.save(b"3", "q", "memory").result()  # fails, yet records q's owner
    dfm.delete("q", "memory", recursive=True).result()
    assert dfm.list_dir(".", "memory") == []
    assert not dfm.exists("q/a", "memory") and not dfm.exists("q/b", "memory")


@pytest.mark.cluster
def test_dask_memory_save_onto_a_directory_made_by_ensure_directory_raises_is_a_directory_error(
    dfm: DaskFileManager
) -> None:
    dfm.ensure_directory("d", "memory").result()  # on the first worker in turn
    with pytest.raises(IsADirectoryError):
        dfm.save(b"file", "d", "memory").result()  # the next worker in turn has no d
    assert dfm.is_file("d", "memory") is False


@pytest.mark.cluster
def test_dask_memory_overwrite_of_a_path_another_manager_saved_succeeds(cluster: tuple[Client, Path]) -> None:
    client, _ = cluster
    first, second = DaskFileManager(client), DaskFileManager(client)
    first.save(b"1", "x/f", "memory").result()
    assert second.load("x/f", "memory").result() == b"1"  # second finds the owner by asking every worker
    second.save(b"2", "x/f", "memory", overwrite=True).result()
    assert second.load("x/f", "memory").result() == b"2"
    empty_memory(ManagerAdapter(second, "memory"))


@pytest.mark.cluster
def test_dask_file_manager_on_memory_agrees_with_the_model(cluster: tuple[Client, Path]) -> None:
    client, _ = cluster
    config = MachineConfig(
        area="model: dask memory",
        open_store=lambda: ManagerAdapter(DaskFileManager(client), "memory"),
        close_store=empty_memory,
        components=MIXED_COMPONENTS,
        kind_of=mixed_kind,
        leading_slash=True,
    )
    run_state_machine_as_test(StorageMachine.bound(config), settings=machine_settings(6, 40, 15, 25))


@pytest.mark.cluster
def test_dask_file_manager_on_disk_agrees_with_the_model(cluster: tuple[Client, Path]) -> None:
    client, root = cluster
    config = MachineConfig(
        area="model: dask disk",
        open_store=lambda: ManagerAdapter(DaskFileManager(client), "disk"),
        close_store=lambda store: empty_directory(root),
        components=MIXED_COMPONENTS,
        kind_of=mixed_kind,
        bad_paths=BAD_PATHS + ROOTED_BAD_PATHS,
    )
    run_state_machine_as_test(StorageMachine.bound(config), settings=machine_settings(6, 40, 15, 25))
