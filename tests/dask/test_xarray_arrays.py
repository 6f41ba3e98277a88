"""xarray through the cluster (issue 14, item 1): DataArrays into save_array, DataArrays out of load_array."""

from __future__ import annotations

import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

pytestmark = pytest.mark.cluster


def labelled(values: np.ndarray, chunks: tuple[int, ...]) -> xr.DataArray:
    return xr.DataArray(
        da.from_array(values, chunks=chunks), dims=("time", "y", "x"), attrs={"units": "K", "source": "test"}
    )


def sample(shape: tuple[int, ...] = (4, 20, 30)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype="float32").reshape(shape)


def test_a_dataarray_is_saved_with_its_dims_and_attrs(dfm, tmp_path):
    path = str(tmp_path / "ds.zarr" / "temperature")
    dfm.save_array(labelled(sample(), (1, 20, 30)), path, "zarr")
    array = zarr.open_array(path, mode="r")
    assert array.metadata.dimension_names == ("time", "y", "x")
    assert dict(array.attrs) == {"units": "K", "source": "test"}
    np.testing.assert_array_equal(array[...], sample())


def test_arrays_saved_through_the_cluster_open_with_xarray_as_a_dataset(dfm, tmp_path):
    directory = tmp_path / "run" / "ds.zarr"
    dfm.save_array(labelled(sample(), (2, 10, 30)), str(directory / "temperature"), "zarr")
    dfm.save_array(da.arange(4, chunks=2) * 10, str(directory / "time"), "zarr", dimension_names=("time",))
    dfm.save_array(
        da.ones((20, 30), chunks=(10, 30), dtype="int8"), str(directory / "mask"), "zarr",
        dimension_names=("y", "x"), attributes={"meaning": "valid"},
    )
    dataset = xr.open_zarr(directory, consolidated=False)
    assert set(dataset.data_vars) == {"temperature", "mask"}
    assert dataset["temperature"].attrs == {"units": "K", "source": "test"}
    assert dataset["mask"].attrs == {"meaning": "valid"}
    np.testing.assert_array_equal(dataset["time"].values, [0, 10, 20, 30])
    np.testing.assert_array_equal(dataset["temperature"].mean("time").values, sample().mean(axis=0))


def test_given_names_and_attributes_win_over_the_dataarrays(dfm, tmp_path):
    path = str(tmp_path / "renamed.zarr")
    dfm.save_array(
        labelled(sample(), (4, 20, 30)), path, "zarr", dimension_names=("t", "row", "col"), attributes={"units": "C"}
    )
    info = dfm.stat(path, "zarr")
    assert info["dimension_names"] == ("t", "row", "col")
    assert info["attributes"] == {"units": "C", "source": "test"}


def test_load_array_as_dataarray_gives_back_dims_attrs_and_values(dfm, tmp_path):
    path = str(tmp_path / "ds.zarr" / "temperature")
    dfm.save_array(labelled(sample(), (2, 20, 30)), path, "zarr")
    loaded = dfm.load_array(path, "zarr", as_dataarray=True)
    assert isinstance(loaded, xr.DataArray) and isinstance(loaded.data, da.Array)
    assert loaded.name == "temperature" and loaded.dims == ("time", "y", "x")
    assert loaded.attrs == {"units": "K", "source": "test"}
    assert loaded.data.chunks == ((2, 2), (20,), (30,))
    np.testing.assert_array_equal(loaded.sum("time").compute().values, sample().sum(axis=0))
    assert isinstance(dfm.load_array(path, "zarr"), da.Array)  # the default is unchanged


def test_a_dataset_written_by_xarray_loads_as_dataarrays(dfm, tmp_path):
    directory = tmp_path / "by-xarray.zarr"
    xr.Dataset({"v": (("a", "b"), np.arange(6.0).reshape(2, 3), {"long_name": "vee"})}).to_zarr(
        directory, zarr_format=3, consolidated=False
    )
    loaded = dfm.load_array(str(directory / "v"), "zarr", as_dataarray=True)
    assert loaded.dims == ("a", "b") and loaded.attrs["long_name"] == "vee"
    np.testing.assert_array_equal(loaded.values, np.arange(6.0).reshape(2, 3))


def test_load_array_as_dataarray_refuses_an_array_without_dimension_names(dfm, tmp_path):
    path = str(tmp_path / "bare.zarr")
    dfm.save_array(da.ones((4, 4), chunks=2), path, "zarr")
    with pytest.raises(ValueError, match="needs the dimension names.*dimension_names="):
        dfm.load_array(path, "zarr", as_dataarray=True)


def test_a_dataset_is_refused_saying_to_save_each_variable(dfm, tmp_path):
    dataset = xr.Dataset({"v": ("x", np.arange(3))})
    with pytest.raises(TypeError, match="not an xarray.Dataset; save each variable"):
        dfm.save_array(dataset, str(tmp_path / "ds.zarr"), "zarr")
    assert not (tmp_path / "ds.zarr").exists()


def test_a_memory_save_array_refuses_labels_it_cannot_keep(dfm, tmp_path):
    with pytest.raises(ValueError, match="cannot take dimension_names, attributes.*\\.data"):
        dfm.save_array(labelled(sample(), (2, 20, 30)), f"{tmp_path.name}/kept", "memory")
    dfm.save_array(labelled(sample(), (2, 20, 30)).data, f"{tmp_path.name}/kept", "memory")
    np.testing.assert_array_equal(dfm.load_array(f"{tmp_path.name}/kept", "memory").compute(), sample())


def test_bad_dimension_names_are_refused_before_anything_is_created(dfm, tmp_path):
    path = str(tmp_path / "bad" / "a.zarr")
    with pytest.raises(ValueError, match="one name per dimension"):
        dfm.save_array(da.ones((4, 4), chunks=2), path, "zarr", dimension_names=("only-one",))
    assert not (tmp_path / "bad").exists()


def test_without_xarray_arrays_still_save_and_as_dataarray_names_the_install():
    """xarray is optional: without it dask arrays are taken as before, and a DataArray asked for names the install."""
    code = """
import sys
sys.modules["xarray"] = None  # as if not installed: importing it raises ImportError
import dask.array as da
from polystore_dask.labelled import import_xarray, unlabelled
x = da.ones(3)
assert unlabelled(x, None, None) == (x, None, None)
try:
    import_xarray()
except ImportError as error:
    print(error)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'polystore[xarray]'" in out
