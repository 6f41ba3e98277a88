"""DaskFileManager routes by the locality a backend declares, and keeps one order per path for every operation."""

from __future__ import annotations

import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client

from polystore_dask import DaskFileManager, PolystorePlugin
from tests._cluster import PATIENCE, kill_worker, worker_info

#: How long the Future a save waits for takes to compute: long enough that later calls are issued before it ends.
SLOW_SECONDS = 1.5
PER_PROCESS = ["memory", "test_renamed_memory", "test_process_dict"]


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-root")


@pytest.fixture(scope="module")
def polystore_plugin(shared_root: Path) -> PolystorePlugin:
    return PolystorePlugin(
        options={
            "disk": {"root": str(shared_root / "disk")},
            "test_shared_folder": {"root": str(shared_root / "folder")},
        },
        imports=["tests._locality_backends"],
    )


def slow_array(value: float) -> np.ndarray:
    time.sleep(SLOW_SECONDS)
    return np.full((40, 30), value, dtype=np.float64)


def slow(client: Client, value: float):
    return client.submit(slow_array, value, pure=False)


def holders(client: Client, backend: str, path: str) -> list[str]:
    """The workers whose own registry has a file at ``path`` on ``backend``."""

    def has(dask_worker):
        return dask_worker.plugins["polystore"].registry[backend].is_file(path)

    return sorted(address for address, found in client.run(has).items() if found)


# -- routing by locality --------------------------------------------------------
@pytest.mark.parametrize("backend", PER_PROCESS)
def test_a_per_process_backend_keeps_each_path_on_one_worker_and_reads_it_there(client, dfm, backend, tmp_path):
    path = f"{tmp_path.name}/{backend}/a.bin"
    dfm.save(b"payload", path, backend).result()
    (owner,) = holders(client, backend, path)
    assert [dfm.load(path, backend).result() for _ in range(4)] == [b"payload"] * 4
    assert holders(client, backend, path) == [owner]
    assert dfm.exists(path, backend) and dfm.is_file(path, backend)


@pytest.mark.parametrize("backend", PER_PROCESS)
def test_a_per_process_backend_lists_the_union_over_workers(client, dfm, backend, tmp_path):
    names = [f"{tmp_path.name}/{backend}/item{index}.bin" for index in range(8)]
    dfm.save_batch([bytes([index]) for index in range(8)], names, backend).result()
    spread = {address for name in names for address in holders(client, backend, name)}
    assert len(spread) == 2, "a batch of 8 items on 2 workers should use both"
    assert dfm.list_files(f"{tmp_path.name}/{backend}", backend) == sorted(names)


@pytest.mark.parametrize("backend", PER_PROCESS)
def test_a_per_process_path_found_on_a_worker_is_read_there(client, dfm, backend, tmp_path):
    path = f"{tmp_path.name}/{backend}/direct.bin"

    def save_here(dask_worker):
        dask_worker.plugins["polystore"].registry[backend].save(b"direct", path)

    first = sorted(worker_info(client))[0]
    client.run(save_here, workers=[first])
    assert DaskFileManager(client).load(path, backend).result() == b"direct"


@pytest.mark.parametrize("backend", PER_PROCESS)
def test_a_per_process_path_lost_with_its_worker_names_that_worker(client, dfm, backend, tmp_path):
    path = f"{tmp_path.name}/{backend}/lost.bin"
    dfm.save(b"gone soon", path, backend).result()
    (owner,) = holders(client, backend, path)
    kill_worker(client, owner)
    client.wait_for_workers(2, timeout=PATIENCE)
    with pytest.raises(FileNotFoundError, match=owner) as caught:
        dfm.load(path, backend).result(timeout=PATIENCE)
    assert backend in str(caught.value) and path in str(caught.value)


def test_a_users_own_shared_backend_works_through_the_manager(client, dfm, shared_root, tmp_path):
    backend = "test_shared_folder"
    folder = f"{tmp_path.name}/run"
    dfm.save(b"one", f"{folder}/a.bin", backend).result()
    dfm.save_batch([b"two", b"three"], [f"{folder}/b.bin", f"{folder}/sub/c.bin"], backend).result()
    # Shared: the object is a file under the root, whichever worker wrote it.
    assert (shared_root / "folder" / folder / "a.bin").read_bytes() == b"one"
    assert dfm.load(f"/{folder}/a.bin", backend).result() == b"one"
    assert dfm.load_batch([f"{folder}/b.bin", f"{folder}/sub/c.bin"], backend).result() == [b"two", b"three"]
    listed = dfm.list_files(folder, backend, recursive=True)
    assert listed == [f"{folder}/a.bin", f"{folder}/b.bin", f"{folder}/sub/c.bin"]
    dfm.copy(f"{folder}/a.bin", f"{folder}/copy.bin", backend).result()
    dfm.move(f"{folder}/b.bin", f"{folder}/moved.bin", backend).result()
    dfm.delete(f"{folder}/sub", backend, recursive=True).result()
    assert dfm.list_dir(folder, backend) == ["a.bin", "copy.bin", "moved.bin"]
    assert dfm.stat(f"{folder}/moved.bin", backend)["size"] == 3


# -- one order per path --------------------------------------------------------
def test_load_array_right_after_a_save_waits_for_it(client, dfm, tmp_path):
    path = str(tmp_path / "after-save.zarr")
    dfm.save(slow(client, 3.0), path, "zarr")
    lazy = dfm.load_array(path, "zarr")
    np.testing.assert_array_equal(lazy.compute(), np.full((40, 30), 3.0))


def test_save_array_right_after_a_save_of_the_same_path_runs_after_it(client, dfm, tmp_path):
    path = str(tmp_path / "replaced.zarr")
    first = dfm.save(slow(client, 1.0), path, "zarr")
    x = da.full((40, 30), 2.0, chunks=(20, 30))
    dfm.save_array(x, path, "zarr", overwrite=True)
    assert first.result() is None, "the earlier save must have run before the array was created"
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[...], np.full((40, 30), 2.0))


def test_save_array_without_compute_is_created_after_an_earlier_save(client, dfm, tmp_path):
    path = str(tmp_path / "delayed.zarr")
    first = dfm.save(slow(client, 1.0), path, "zarr")
    delayed = dfm.save_array(da.full((40, 30), 5.0, chunks=(20, 15)), path, "zarr", overwrite=True, compute=False)
    assert first.result() is None
    delayed.compute()
    np.testing.assert_array_equal(dfm.load_array(path, "zarr").compute(), np.full((40, 30), 5.0))


def test_a_memory_save_array_waits_for_an_earlier_save_inside_it(client, dfm, tmp_path):
    path = f"{tmp_path.name}/blocks"
    first = dfm.save(slow(client, 1.0), f"{path}/0.0", "memory")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        dfm.save_array(da.ones((4, 4), chunks=(2, 2)), path, "memory")
    assert first.result() is None
    dfm.save_array(da.ones((4, 4), chunks=(2, 2)), path, "memory", overwrite=True)
    np.testing.assert_array_equal(dfm.load_array(path, "memory").compute(), np.ones((4, 4)))


def test_two_spellings_of_one_disk_file_under_a_root_are_one_path(client, dfm, shared_root):
    dfm.save(slow(client, 4.0), "spelled.npy", "disk")
    loaded = dfm.load(str(shared_root / "disk" / "spelled.npy"), "disk")
    np.testing.assert_array_equal(loaded.result(timeout=PATIENCE), np.full((40, 30), 4.0))


def test_two_spellings_of_one_memory_key_are_one_path(client, dfm, tmp_path):
    dfm.save(slow(client, 6.0), f"/{tmp_path.name}//spelled", "memory")
    loaded = dfm.load(f"{tmp_path.name}/spelled/", "memory")
    np.testing.assert_array_equal(loaded.result(timeout=PATIENCE), np.full((40, 30), 6.0))
