"""save_array(..., resume=True) finishes an array a failed run left incomplete (issue 14, item 2).

A run fails for real here: a worker is SIGKILLed part-way, and the cluster
gives up on the task it was running (allowed-failures 0, as a preemptible
node that never comes back would leave it). Every block the resumed run
computes leaves a file in a log directory, so the tests count exactly which
blocks it wrote. Each block is written by a task of its own (no groups of
small blocks, see polystore_dask.array_writes), so a kill lands between
the blocks' commits.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client
from distributed.scheduler import KilledWorker

from polystore import ZarrBackend
from polystore_dask import PolystorePlugin
from polystore_dask.array_writes import GROUP_BYTES_CONFIG
from tests._cluster import PATIENCE, cluster_client, wait_until

pytestmark = pytest.mark.cluster

SHAPE, BLOCKS, CHUNKS = (120, 60), (10, 60), (5, 60)  # 12 blocks, each 2 chunks
ALL_BLOCKS = {(row, 0) for row in range(SHAPE[0] // BLOCKS[0])}


@pytest.fixture(scope="module")
def client(polystore_plugin: PolystorePlugin) -> Iterator[Client]:
    """A cluster that fails a task whose worker died running it (no retry), and never gives up on a killed worker."""
    settings = {
        "distributed.scheduler.allowed-failures": 0, "distributed.deploy.lost-worker-timeout": "1h",
        GROUP_BYTES_CONFIG: 0,
    }
    with dask.config.set(settings), cluster_client(2) as client:
        client.register_plugin(polystore_plugin)
        yield client


def expected_array() -> np.ndarray:
    return np.arange(SHAPE[0] * SHAPE[1], dtype=np.int64).reshape(SHAPE) + 1


def logged_block(
    block: np.ndarray, block_info: dict | None = None, *, log: str, kill: tuple[int, ...] | None = None,
    armed: str = "", path: str = "", once_committed: int = 0,
) -> np.ndarray:
    """Note that this block was computed; the ``kill`` block, while ``armed`` exists, SIGKILLs its worker instead.

    It waits first until ``once_committed`` blocks of ``path`` are recorded
    written, so the kill lands part-way through the save.
    """
    index = tuple(block_info[None]["chunk-location"])
    if index == kill and os.path.exists(armed):
        deadline = time.monotonic() + PATIENCE
        while len(ZarrBackend().committed_regions(path)) < once_committed and time.monotonic() < deadline:
            time.sleep(0.01)
        os.unlink(armed)
        os.kill(os.getpid(), signal.SIGKILL)
    Path(log, f"{'.'.join(map(str, index))}-{uuid.uuid4().hex}").touch()
    return block


def source(log: Path, **kill: object) -> da.Array:
    log.mkdir(exist_ok=True)
    x = da.from_array(expected_array(), chunks=BLOCKS)
    return x.map_blocks(logged_block, dtype=x.dtype, log=str(log), **kill)


def computed_blocks(log: Path) -> list[tuple[int, ...]]:
    return sorted(tuple(int(part) for part in name.split("-")[0].split(".")) for name in os.listdir(log))


def committed_blocks(path: str) -> set[tuple[int, ...]]:
    """The blocks the array at ``path`` records as written (each block one recorded region)."""
    regions = ZarrBackend().committed_regions(path)
    assert all(region[0].stop - region[0].start == BLOCKS[0] for region in regions)
    return {(region[0].start // BLOCKS[0], 0) for region in regions}


def wait_until_idle(client: Client) -> None:
    """Both workers up, and no task running anywhere (a failed save's last writes have ended)."""
    client.wait_for_workers(2, timeout=PATIENCE)

    def idle() -> bool:
        executing = client.run(lambda dask_worker: dask_worker.state.executing_count)
        return len(executing) == 2 and not any(executing.values()) and not any(client.processing().values())

    wait_until(idle, "the cluster to be idle")


def incomplete_array(tmp_path: Path, written: set[tuple[int, ...]], **options: object) -> str:
    """An array as a failed save_array leaves it: marked incomplete, with ``written`` blocks recorded."""
    path = str(tmp_path / "left.zarr")
    backend = ZarrBackend()
    backend.create_array(path, SHAPE, "int64", CHUNKS, incomplete=True, **options)
    for row, _ in written:
        rows = slice(row * BLOCKS[0], (row + 1) * BLOCKS[0])
        backend.save(expected_array()[rows], path, region=(rows, slice(0, SHAPE[1])))
    return path


def test_a_save_killed_part_way_is_resumed_writing_only_the_missing_blocks(client, dfm, tmp_path, record_property):
    path = str(tmp_path / "killed.zarr")
    armed = tmp_path / "armed"
    armed.touch()
    failing = source(tmp_path / "first", kill=(9, 0), armed=str(armed), path=path, once_committed=3)
    with pytest.raises(KilledWorker):
        dfm.save_array(failing, path, "zarr", chunks=CHUNKS)
    assert not armed.exists()  # the kill happened
    wait_until_idle(client)
    assert dfm.stat(path, "zarr")["incomplete"] is True
    committed = committed_blocks(path)
    assert 3 <= len(committed) < len(ALL_BLOCKS)

    dfm.save_array(source(tmp_path / "resumed"), path, "zarr", chunks=CHUNKS, resume=True)

    resumed = computed_blocks(tmp_path / "resumed")
    assert resumed == sorted(ALL_BLOCKS - committed)  # each missing block once, no committed one again
    np.testing.assert_array_equal(dfm.load(path, "zarr").result(timeout=PATIENCE), expected_array())
    assert dfm.stat(path, "zarr")["incomplete"] is False
    assert ZarrBackend().committed_regions(path) == []
    record_property("blocks", f"{len(ALL_BLOCKS)} in all, {len(committed)} committed, {len(resumed)} resumed")


def test_a_block_torn_by_a_killed_writer_is_written_again(dfm, tmp_path):
    """Chunks a killed writer left of a block it did not finish are new files, yet the block is not committed."""
    path = incomplete_array(tmp_path, {(0, 0), (1, 0), (2, 0)})
    torn = zarr.open_array(path, mode="r+")
    torn[30:35] = -1  # the first of block 3's two chunks: stored, the block's record never written
    dfm.save_array(source(tmp_path / "log"), path, "zarr", chunks=CHUNKS, resume=True)
    assert computed_blocks(tmp_path / "log") == sorted(ALL_BLOCKS - {(0, 0), (1, 0), (2, 0)})
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[...], expected_array())


def test_resume_keeps_blocks_that_hold_only_the_fill_value(dfm, tmp_path):
    """A block of zeros stores no chunk file at all: its record, not its files, says it is written."""
    path = str(tmp_path / "zeros.zarr")
    backend = ZarrBackend()
    backend.create_array(path, SHAPE, "int64", CHUNKS, incomplete=True)
    backend.save(np.zeros(BLOCKS, dtype=np.int64), path, region=(slice(0, 10), slice(0, 60)))
    assert not (Path(path) / "c" / "0").exists() and not (Path(path) / "c" / "1").exists()
    dfm.save_array(source(tmp_path / "log"), path, "zarr", chunks=CHUNKS, resume=True)
    assert computed_blocks(tmp_path / "log") == sorted(ALL_BLOCKS - {(0, 0)})
    expected = expected_array()
    expected[:10] = 0
    np.testing.assert_array_equal(dfm.load(path, "zarr").result(timeout=PATIENCE), expected)


@pytest.mark.parametrize(
    ("options", "differs"),
    [
        ({"x": da.zeros((120, 61), chunks=BLOCKS, dtype="int64")}, "shape"),
        ({"x": da.zeros(SHAPE, chunks=BLOCKS, dtype="int32")}, "dtype"),
        ({"chunks": (10, 60)}, "chunks"),
        ({"chunks": CHUNKS, "shards": (10, 60)}, "shards"),
        ({"compressor": "gzip"}, "compressor"),
        ({"dimension_names": ("y", "x")}, "dimension_names"),
    ],
)
def test_resume_refuses_a_layout_other_than_the_incomplete_arrays(dfm, tmp_path, options, differs):
    path = incomplete_array(tmp_path, {(0, 0)})
    x = options.pop("x", da.from_array(expected_array(), chunks=BLOCKS))
    options = {"chunks": CHUNKS, **options}
    with pytest.raises(ValueError, match=f"cannot resume the array at .*asks for {differs} .*overwrite=True"):
        dfm.save_array(x, path, "zarr", resume=True, **options)
    assert committed_blocks(path) == {(0, 0)} and dfm.stat(path, "zarr")["incomplete"] is True


def test_resume_without_chunks_takes_the_stored_chunks(dfm, tmp_path):
    path = incomplete_array(tmp_path, {(0, 0), (5, 0)})
    irregular = da.from_array(expected_array(), chunks=((7, 53, 60), (60,)))  # no regular block shape to ask for
    dfm.save_array(irregular, path, "zarr", resume=True)
    np.testing.assert_array_equal(dfm.load(path, "zarr").result(timeout=PATIENCE), expected_array())


def test_resume_on_a_complete_array_leaves_it_as_it_is(dfm, tmp_path):
    path = str(tmp_path / "done.zarr")
    dfm.save_array(da.from_array(expected_array(), chunks=BLOCKS), path, "zarr", chunks=CHUNKS)
    dfm.save_array(source(tmp_path / "log") * 0, path, "zarr", chunks=CHUNKS, resume=True)
    assert computed_blocks(tmp_path / "log") == []
    np.testing.assert_array_equal(dfm.load(path, "zarr").result(timeout=PATIENCE), expected_array())


def test_resume_on_a_missing_array_writes_it_whole(dfm, tmp_path):
    path = str(tmp_path / "new.zarr")
    dfm.save_array(source(tmp_path / "log"), path, "zarr", chunks=CHUNKS, resume=True)
    assert computed_blocks(tmp_path / "log") == sorted(ALL_BLOCKS)
    np.testing.assert_array_equal(dfm.load(path, "zarr").result(timeout=PATIENCE), expected_array())


def test_resume_without_compute_writes_the_missing_blocks_when_computed(dfm, tmp_path):
    path = incomplete_array(tmp_path, {(0, 0), (11, 0)})
    delayed = dfm.save_array(source(tmp_path / "log"), path, "zarr", chunks=CHUNKS, resume=True, compute=False)
    assert computed_blocks(tmp_path / "log") == []
    delayed.compute()
    assert computed_blocks(tmp_path / "log") == sorted(ALL_BLOCKS - {(0, 0), (11, 0)})
    np.testing.assert_array_equal(dfm.load(path, "zarr").result(timeout=PATIENCE), expected_array())


def test_resume_with_overwrite_is_refused(dfm, tmp_path):
    path = incomplete_array(tmp_path, {(0, 0)})
    with pytest.raises(ValueError, match="resume=True .* overwrite=True .*pass one of them"):
        dfm.save_array(da.ones(SHAPE, chunks=BLOCKS), path, "zarr", resume=True, overwrite=True)
    assert committed_blocks(path) == {(0, 0)}


def test_resume_on_a_memory_backend_is_refused(dfm, tmp_path):
    with pytest.raises(ValueError, match="cannot take resume"):
        dfm.save_array(da.ones(SHAPE, chunks=BLOCKS), f"{tmp_path.name}/m", "memory", resume=True)
