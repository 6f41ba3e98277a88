"""0-d and empty arrays work through save_array/load_array; zero-sized chunks are refused before anything is created."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest


def where(backend: str, tmp_path, name: str) -> str:
    return str(tmp_path / f"{name}.zarr") if backend == "zarr" else f"{tmp_path.name}/{name}"


@pytest.mark.parametrize("backend", ["zarr", "memory"])
@pytest.mark.parametrize(
    "value", [np.array(5.5), np.zeros((0, 5)), np.zeros((3, 0, 2), dtype=np.int16)], ids=["0-d", "empty", "empty-3d"]
)
def test_0d_and_empty_arrays_round_trip(dfm, tmp_path, backend, value):
    path = where(backend, tmp_path, "odd")
    dfm.save_array(da.from_array(value), path, backend)
    loaded = dfm.load_array(path, backend).compute()
    assert loaded.shape == value.shape and loaded.dtype == value.dtype
    np.testing.assert_array_equal(loaded, value)
    dfm.save_array(da.from_array(value + 1), path, backend, overwrite=True)
    np.testing.assert_array_equal(dfm.load_array(path, backend).compute(), value + 1)


@pytest.mark.parametrize("backend", ["zarr", "memory"])
def test_zero_sized_chunks_are_refused_before_anything_is_created(dfm, tmp_path, backend):
    path = where(backend, tmp_path, "zero")
    with pytest.raises(ValueError, match="chunk"):
        dfm.save_array(da.ones((4, 5), chunks=(2, 5)), path, backend, chunks=(0, 5))
    assert not dfm.exists(path, backend)
    dfm.save_array(da.ones((4, 5), chunks=(2, 5)), path, backend, chunks=(2, 5))
    np.testing.assert_array_equal(dfm.load_array(path, backend).compute(), np.ones((4, 5)))


@pytest.mark.parametrize("backend", ["zarr", "memory"])
@pytest.mark.parametrize("dtype", [">i4", ">f8", "<u2", ">M8[s]"])
def test_save_array_keeps_the_byte_order(dfm, tmp_path, backend, dtype):
    value = np.arange(24).reshape(4, 6).astype(dtype)
    path = where(backend, tmp_path, f"order-{dtype.strip('<>[]')}")
    dfm.save_array(da.from_array(value, chunks=(2, 6)), path, backend)
    loaded = dfm.load_array(path, backend)
    assert loaded.dtype == value.dtype
    computed = loaded.compute()
    assert computed.dtype == value.dtype
    np.testing.assert_array_equal(computed, value)
