"""What save_array's fused and grouped writes keep (issue 13): tasks, order, whole chunks, errors, no client data.

Each write task computes its blocks itself (their tasks are inlined into
it) and writes small neighbouring blocks as one region; these tests check
the task counts the scheduler saw and the semantics that must not change.
"""

from __future__ import annotations

import itertools

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import get_task_stream

from benchmarks._harness import RssSampler
from polystore_dask import PolystorePlugin
from polystore_dask.array_writes import GROUP_BYTES_CONFIG
from tests._cluster import PATIENCE
from tests._recording_backends import writers_directory

pytestmark = pytest.mark.cluster

WRITE = "('polystore-save_array-write-"


@pytest.fixture(scope="module")
def polystore_plugin() -> PolystorePlugin:
    # The recording zarr backend notes each region written, and by which worker.
    return PolystorePlugin(imports=["tests._recording_backends"])


def generated(shape=(512, 512), chunks=(64, 64)) -> da.Array:
    """An array made on the workers: dask's random layer is not Blockwise, the + 1 is."""
    return da.random.default_rng(5).random(shape, dtype=np.float32, chunks=chunks) + 1


def tasks_run(stream) -> list[str]:
    return [str(entry["key"]) for entry in stream.data]


def recorded_regions(path: str) -> list[tuple[tuple[int, int], ...]]:
    """The regions the recording backend saw written into the array at ``path``."""
    regions = []
    for record in writers_directory(path).iterdir():
        regions.append(tuple(tuple(int(bound) for bound in part.split("-")) for part in record.name.split("_")))
    return sorted(regions)


def test_each_write_is_fused_with_the_computation_of_its_block(dfm, tmp_path):
    x = generated()  # 64 blocks of 16 KiB
    path = str(tmp_path / "fused.zarr")
    with dask.config.set({GROUP_BYTES_CONFIG: 0}), get_task_stream(dfm.client) as stream:
        dfm.save_array(x, path)
    keys = tasks_run(stream)
    assert len([key for key in keys if key.startswith(WRITE)]) == 64
    # Nothing of x ran as a task of its own: generating and adding 1 happen inside the write tasks.
    assert not [key for key in keys if "random" in key or "add" in key]
    # The writes, creating the array and marking it complete (and the manager's first look at the backend).
    assert len([key for key in keys if not key.startswith("polystore-describe-")]) == 64 + 2
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[...], x.compute())


def test_small_blocks_are_written_several_to_a_task_as_one_region(dfm, tmp_path):
    x = generated()
    path = str(tmp_path / "grouped.zarr")
    with dask.config.set({GROUP_BYTES_CONFIG: 4 * 64 * 64 * 4}), get_task_stream(dfm.client) as stream:
        dfm.save_array(x, path, "test_recording_zarr")
    writes = [key for key in tasks_run(stream) if key.startswith(WRITE)]
    assert len(writes) == 16  # groups of 2 x 2 blocks
    regions = recorded_regions(path)
    assert regions == [((row, row + 128), (column, column + 128)) for row in range(0, 512, 128)
                       for column in range(0, 512, 128)]
    assert zarr.open_array(path, mode="r").chunks == (64, 64)
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[...], x.compute())


def test_the_default_groups_many_small_blocks_and_leaves_large_ones_alone(dfm, tmp_path):
    with get_task_stream(dfm.client) as stream:
        dfm.save_array(generated(), str(tmp_path / "small.zarr"))  # 64 blocks of 16 KiB: 4 MiB holds them all
        dfm.save_array(generated((2048, 1024), (1024, 1024)), str(tmp_path / "large.zarr"))  # 2 blocks of 4 MiB
    writes = [key for key in tasks_run(stream) if key.startswith(WRITE)]
    assert len(writes) == 1 + 2


@pytest.mark.parametrize(
    ("dask_chunks", "chunks", "shards"),
    [
        ((70, 90), (64, 64), None),  # blocks straddle chunks
        ((50, 50), (32, 32), (64, 128)),  # small blocks straddle shards
        (((100, 300, 112), (512,)), (16, 16), (128, 128)),  # irregular blocks
    ],
)
def test_groups_of_unaligned_blocks_still_own_whole_chunks_and_give_exactly_the_array(
    dfm, tmp_path, dask_chunks, chunks, shards
):
    x = generated(chunks=dask_chunks)
    path = str(tmp_path / "unaligned.zarr")
    dfm.save_array(x, path, "test_recording_zarr", chunks=chunks, shards=shards)
    stored = zarr.open_array(path, mode="r")
    np.testing.assert_array_equal(stored[...], x.compute())
    unit = shards or chunks
    owners: dict[tuple[int, ...], int] = {}
    for number, region in enumerate(recorded_regions(path)):
        for (start, stop), side, size in zip(region, unit, x.shape, strict=True):
            assert start % side == 0 and (stop % side == 0 or stop == size), f"{region} cuts a chunk of {unit}"
        cells = [range(start // side, -(-stop // side)) for (start, stop), side in zip(region, unit, strict=True)]
        for cell in itertools.product(*cells):
            assert owners.setdefault(cell, number) == number, f"chunk {cell} written by two tasks"


def test_a_load_and_a_delete_right_after_save_array_see_it(dfm, tmp_path):
    path = str(tmp_path / "ordered.zarr")
    x = generated()
    dfm.save_array(x, path)
    np.testing.assert_array_equal(dfm.load(path, "zarr").result(timeout=PATIENCE), x.compute())
    dfm.save_array(x * 2, path, overwrite=True, compute=False).compute()
    np.testing.assert_array_equal(dfm.load_array(path).compute(), x.compute() * 2)
    deleted = dfm.delete(path, "zarr")
    assert not dfm.exists(path, "zarr")
    deleted.result(timeout=PATIENCE)


def test_a_failing_write_in_a_group_names_the_path(dfm, tmp_path):
    x = generated()
    # A block of another shape than x says: the region write refuses it, naming the array.
    wrong = x.map_blocks(lambda block: block[:-1] if block.shape == (64, 64) else block, dtype=x.dtype)
    path = str(tmp_path / "failing.zarr")
    with pytest.raises(ValueError, match="failing.zarr") as raised:
        dfm.save_array(wrong, path)
    assert "does not fit region" in str(raised.value)
    assert dfm.stat(path, "zarr")["incomplete"] is True


def test_save_array_sends_no_block_data_through_the_client(dfm, tmp_path):
    # 256 MiB made on the workers, grouped and written there: the client's memory does not grow by a block's worth.
    x = da.random.default_rng(3).random((8192, 8192), dtype=np.float32, chunks=(512, 512))
    with RssSampler() as sampler:
        assert dfm.save_array(x, str(tmp_path / "big.zarr"), compressor=None) is None
    assert sampler.peak_growth < 32 * 2**20, f"the client grew by {sampler.peak_growth / 2**20:.0f} MiB"
    assert zarr.open_array(str(tmp_path / "big.zarr"), mode="r")[8000:, 8000:].sum() > 0


def test_save_array_is_exact_with_dask_fusion_turned_off(dfm, tmp_path):
    x = generated()
    path = str(tmp_path / "unfused.zarr")
    with dask.config.set({"optimization.fuse.active": False}):
        dfm.save_array(x, path)
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[...], x.compute())
