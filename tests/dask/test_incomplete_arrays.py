"""An array whose save_array did not finish is never taken for a complete one (issue 10, class 11)."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr

from polystore import ZarrBackend


def test_an_array_created_incomplete_is_refused_until_marked_complete(tmp_path: Path):
    backend = ZarrBackend(root=tmp_path)
    backend.create_array("a.zarr", (4, 4), "int32", (2, 2), incomplete=True)
    backend.save(np.ones((2, 2), dtype=np.int32), "a.zarr", region=(slice(0, 2), slice(0, 2)))
    assert backend.stat("a.zarr")["incomplete"] is True
    with pytest.raises(ValueError, match="incomplete.*overwrite=True"):
        backend.load("a.zarr")
    with pytest.raises(ValueError, match="incomplete"):
        backend.load("a.zarr", region=(slice(0, 2), slice(0, 2)))
    backend.complete_array("a.zarr")
    backend.complete_array("a.zarr")  # already complete: nothing changes
    assert backend.stat("a.zarr")["incomplete"] is False
    expected = np.zeros((4, 4), dtype=np.int32)
    expected[:2, :2] = 1
    np.testing.assert_array_equal(backend.load("a.zarr"), expected)
    assert "polystore.incomplete" not in zarr.open_array(str(tmp_path / "a.zarr"), mode="r").attrs


def fail_on_one_block(block: np.ndarray, block_info=None) -> np.ndarray:
    if block_info[None]["chunk-location"] == (1, 0):
        raise RuntimeError("this block fails, as a killed or broken task would")
    return block


def test_a_save_array_that_failed_part_way_leaves_an_array_that_is_refused_and_can_be_replaced(dfm, tmp_path):
    path = str(tmp_path / "partial.zarr")
    x = da.ones((40, 30), chunks=(10, 30))
    with pytest.raises(RuntimeError, match="this block fails"):
        dfm.save_array(x.map_blocks(fail_on_one_block, dtype=x.dtype), path, "zarr")
    assert dfm.is_file(path, "zarr") and dfm.stat(path, "zarr")["incomplete"] is True
    with pytest.raises(ValueError, match="incomplete"):
        dfm.load(path, "zarr").result()
    with pytest.raises(ValueError, match="incomplete"):
        dfm.load_array(path, "zarr")
    dfm.save_array(x * 3, path, "zarr", overwrite=True)
    assert dfm.stat(path, "zarr")["incomplete"] is False
    np.testing.assert_array_equal(dfm.load_array(path, "zarr").compute(), np.full((40, 30), 3.0))


def test_a_save_array_without_compute_is_incomplete_until_computed(dfm, tmp_path):
    path = str(tmp_path / "later.zarr")
    delayed = dfm.save_array(da.ones((8, 8), chunks=(4, 4)), path, "zarr", compute=False)
    assert dfm.stat(path, "zarr")["incomplete"] is True
    delayed.compute()
    np.testing.assert_array_equal(dfm.load(path, "zarr").result(), np.ones((8, 8)))


def test_a_memory_save_array_that_failed_part_way_is_not_an_array(dfm, tmp_path):
    path = f"{tmp_path.name}/partial"
    x = da.ones((40, 30), chunks=(10, 30))
    with pytest.raises(RuntimeError, match="this block fails"):
        dfm.save_array(x.map_blocks(fail_on_one_block, dtype=x.dtype), path, "memory")
    with pytest.raises(FileNotFoundError, match="save_array"):
        dfm.load_array(path, "memory")
    dfm.save_array(x, path, "memory", overwrite=True)
    np.testing.assert_array_equal(dfm.load_array(path, "memory").compute(), np.ones((40, 30)))
