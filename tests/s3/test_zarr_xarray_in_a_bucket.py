"""xarray opens what the zarr backend writes in a bucket (issue 14, item 1): dimension names, attributes, groups."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xarray as xr
from zarr.storage import ObjectStore

from tests._seaweed import SeaweedServer
from tests.s3.test_zarr_in_a_bucket import bucket_zarr, raw_store


def test_a_directory_of_arrays_in_a_bucket_opens_with_xarray(s3_options: dict[str, Any], seaweed: SeaweedServer):
    zb = bucket_zarr(s3_options)
    temperature = np.arange(24, dtype="float32").reshape(2, 3, 4)
    zb.save(temperature, "ds.zarr/temperature", dimension_names=("time", "y", "x"), attributes={"units": "K"})
    zb.save(np.array([10, 20]), "ds.zarr/time", dimension_names=("time",))
    info = zb.stat("ds.zarr/temperature")
    assert info["dimension_names"] == ("time", "y", "x") and info["attributes"] == {"units": "K"}
    store = ObjectStore(raw_store(seaweed, zb), read_only=True)
    dataset = xr.open_zarr(store, group="ds.zarr", consolidated=False)
    assert dataset["temperature"].dims == ("time", "y", "x") and dataset["temperature"].attrs == {"units": "K"}
    np.testing.assert_array_equal(dataset["temperature"].values, temperature)
    np.testing.assert_array_equal(dataset["time"].values, [10, 20])


def test_create_array_in_a_bucket_takes_dimension_names_and_refuses_bad_ones(s3_options: dict[str, Any]):
    zb = bucket_zarr(s3_options)
    zb.create_array("c.zarr", (2, 5), "int16", (1, 5), dimension_names=("row", "col"), attributes={"n": np.int64(2)})
    assert zb.stat("c.zarr")["dimension_names"] == ("row", "col") and zb.stat("c.zarr")["attributes"] == {"n": 2}
    with pytest.raises(ValueError, match="one name per dimension"):
        zb.save(np.ones((2, 2)), "bad.zarr", dimension_names=("x",))
    assert not zb.exists("bad.zarr")


def test_an_incomplete_array_in_a_bucket_records_no_regions(s3_options: dict[str, Any]):
    """Region writes in a bucket are not recorded yet: a resume there writes every block again."""
    zb = bucket_zarr(s3_options)
    zb.create_array("i.zarr", (4,), "int8", (2,), incomplete=True)
    zb.save(np.ones(2, dtype=np.int8), "i.zarr", region=(slice(0, 2),))
    assert zb.committed_regions("i.zarr") == [] and zb.stat("i.zarr")["incomplete"] is True
    with pytest.raises(FileNotFoundError):
        zb.committed_regions("missing.zarr")
