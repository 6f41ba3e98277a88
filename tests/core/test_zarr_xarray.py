"""What xarray needs of the zarr backend (issue 14, item 1): dimension names, attributes, and a group around arrays."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from polystore import BackendRegistry, FileManager, InvalidPathError, ZarrBackend
from polystore.testing import BackendTests


@pytest.fixture
def backend(tmp_path: Path) -> ZarrBackend:
    return ZarrBackend(root=tmp_path)


def group_metadata(directory: Path) -> dict:
    return json.loads((directory / "zarr.json").read_text())


def open_dataset(directory: Path) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zarr warning either (of a member it does not recognise)
        return xr.open_zarr(directory, consolidated=False)


class TestZarrConformanceUnderAGroupRoot(BackendTests):
    """The whole contract holds in a tree whose root is a zarr group too: group metadata never shows."""

    suffixes = {"array": ".zarr"}

    @pytest.fixture
    def backend(self, tmp_path: Path) -> ZarrBackend:
        backend = ZarrBackend(root=tmp_path)
        backend.ensure_directory(".")
        assert group_metadata(tmp_path)["node_type"] == "group"
        return backend


# -- dimension names and attributes ------------------------------------------------
def test_save_stores_dimension_names_and_attributes_in_the_v3_metadata(backend, tmp_path):
    backend.save(np.zeros((3, 4), "float32"), "t.zarr", dimension_names=("y", "x"), attributes={"units": "K"})
    array = zarr.open_array(tmp_path / "t.zarr", mode="r")
    assert array.metadata.dimension_names == ("y", "x")
    assert dict(array.attrs) == {"units": "K"}
    info = backend.stat("t.zarr")
    assert info["dimension_names"] == ("y", "x") and info["attributes"] == {"units": "K"}


def test_create_array_takes_dimension_names_and_attributes(backend, tmp_path):
    backend.create_array("c.zarr", (2, 5), "int16", (1, 5), dimension_names=("row", None), attributes={"n": 2})
    array = zarr.open_array(tmp_path / "c.zarr", mode="r")
    assert array.metadata.dimension_names == ("row", None) and dict(array.attrs) == {"n": 2}


def test_an_incomplete_array_shows_its_own_attributes_without_polystores_mark(backend):
    backend.create_array("i.zarr", (4,), "int8", (2,), attributes={"a": 1}, incomplete=True)
    info = backend.stat("i.zarr")
    assert info["incomplete"] is True and info["attributes"] == {"a": 1}


def test_numpy_values_in_attributes_are_stored_as_python_values(backend):
    attributes = {"scale": np.float32(0.5), "shape": np.array([1, 2]), "deep": {"k": np.int64(3)}}
    backend.save(np.ones(3), "n.zarr", attributes=attributes)
    assert backend.stat("n.zarr")["attributes"] == {"scale": 0.5, "shape": [1, 2], "deep": {"k": 3}}


def test_file_manager_passes_dimension_names_through(tmp_path):
    fm = FileManager(BackendRegistry({"zarr": {"root": tmp_path}}))
    fm.save(np.ones((2, 2)), "fm.zarr", "zarr", dimension_names=("a", "b"))
    assert fm.stat("fm.zarr", "zarr")["dimension_names"] == ("a", "b")


def test_an_array_saved_without_dimension_names_says_so(backend):
    backend.save(np.ones(3), "plain.zarr")
    assert backend.stat("plain.zarr")["dimension_names"] is None


@pytest.mark.parametrize(
    ("names", "error", "match"),
    [
        (("y",), ValueError, "one name per dimension"),
        (("y", "x", "z"), ValueError, "one name per dimension"),
        ("yx", TypeError, "sequence of str"),
        (("y", 3), TypeError, "sequence of str"),
    ],
)
def test_bad_dimension_names_are_refused_before_anything_is_created(backend, tmp_path, names, error, match):
    with pytest.raises(error, match=match):
        backend.save(np.ones((2, 2)), "bad/d.zarr", dimension_names=names)
    with pytest.raises(error, match=match):
        backend.create_array("bad/c.zarr", (2, 2), "f8", None, dimension_names=names)
    assert not (tmp_path / "bad").exists()


def test_attributes_json_cannot_hold_are_refused_naming_the_key(backend, tmp_path):
    with pytest.raises(TypeError, match="attribute 'when'.*JSON"):
        backend.save(np.ones(2), "a.zarr", attributes={"units": "K", "when": object()})
    with pytest.raises(TypeError, match="dict with str keys"):
        backend.create_array("b.zarr", (2,), "f8", None, attributes=["not", "a", "dict"])
    assert os.listdir(tmp_path) == []


def test_a_region_write_refuses_dimension_names(backend):
    backend.create_array("r.zarr", (4,), "f8", (2,))
    with pytest.raises(TypeError, match="dimension_names apply when creating"):
        backend.save(np.ones(2), "r.zarr", region=(slice(0, 2),), dimension_names=("x",))


# -- groups ------------------------------------------------------------------------
def test_every_directory_the_backend_creates_is_a_zarr_group(backend, tmp_path):
    backend.save(np.ones(2), "run/ds.zarr/t")
    backend.ensure_directory("made/by/ensure")
    for directory in ("run", "run/ds.zarr", "made", "made/by", "made/by/ensure"):
        assert group_metadata(tmp_path / directory) == {"zarr_format": 3, "node_type": "group", "attributes": {}}
    assert zarr.open_group(tmp_path / "run", mode="r")["ds.zarr"]["t"].shape == (2,)


def test_group_metadata_never_shows_and_groups_are_directories(backend):
    backend.save(np.ones(2), "g/sub/a.zarr")
    assert backend.list_dir("g") == ["sub"]
    assert backend.list_dir("g/sub") == ["a.zarr"]
    assert backend.list_files("g", recursive=True) == ["g/sub/a.zarr"]
    assert backend.is_dir("g/sub") and not backend.is_file("g/sub")
    assert backend.stat("g/sub") == {"type": "directory", "size": 0, "mtime": backend.stat("g/sub")["mtime"]}
    for hidden in ("g/zarr.json", "g/sub/zarr.json"):
        assert (backend.exists(hidden), backend.is_file(hidden), backend.is_dir(hidden)) == (False, False, False)
        with pytest.raises(FileNotFoundError):
            backend.delete(hidden)


def test_no_array_or_directory_is_made_with_the_name_zarr_json(backend, tmp_path):
    backend.ensure_directory("g")
    for make in (
        lambda: backend.save(np.ones(2), "g/zarr.json"),
        lambda: backend.create_array("zarr.json/a.zarr", (2,), "f8", None),
        lambda: backend.ensure_directory("g/zarr.json/deeper"),
        lambda: backend.copy("g", "zarr.json", recursive=True),
    ):
        with pytest.raises(InvalidPathError, match="'zarr.json' is reserved"):
            make()
    assert group_metadata(tmp_path / "g")["node_type"] == "group" and backend.list_dir(".") == ["g"]


def test_groups_are_deleted_copied_and_cleaned_up_like_directories(backend, tmp_path):
    backend.ensure_directory("empty")
    backend.delete("empty")  # an empty group: its own zarr.json goes with it
    assert not (tmp_path / "empty").exists()
    backend.save(np.arange(3), "src/inner/a.zarr")
    backend.copy("src", "dst", recursive=True)
    assert group_metadata(tmp_path / "dst/inner")["node_type"] == "group"
    assert backend.list_files("dst", recursive=True) == ["dst/inner/a.zarr"]
    backend.move("dst/inner/a.zarr", "moved/b.zarr")
    assert group_metadata(tmp_path / "moved")["node_type"] == "group"
    assert backend.cleanup() == []  # nothing of a group is a leftover
    backend.delete("src", recursive=True)
    assert backend.list_dir(".") == ["dst", "moved"]


def test_a_directory_of_arrays_opens_with_xarray_as_a_dataset(backend, tmp_path):
    temperature = np.arange(24, dtype="float32").reshape(2, 3, 4)
    backend.save(temperature, "ds.zarr/temperature", dimension_names=("time", "y", "x"), attributes={"units": "K"})
    backend.save(np.array([10, 20]), "ds.zarr/time", dimension_names=("time",))
    backend.save(np.zeros((3, 4), "int8"), "ds.zarr/mask", dimension_names=("y", "x"))
    dataset = open_dataset(tmp_path / "ds.zarr")
    assert set(dataset.data_vars) == {"temperature", "mask"}
    assert dataset["temperature"].dims == ("time", "y", "x")
    assert dataset["temperature"].attrs == {"units": "K"}
    np.testing.assert_array_equal(dataset["temperature"].values, temperature)
    np.testing.assert_array_equal(dataset["time"].values, [10, 20])
    np.testing.assert_array_equal(dataset["mask"].values, 0)  # zeros (the fill value) are not masked as missing


def test_an_incomplete_array_opened_by_xarray_shows_polystores_mark(backend, tmp_path):
    """xarray reads every attribute: the mark says the array is not whole, whoever reads it."""
    backend.create_array("ds.zarr/partial", (4,), "f8", (2,), dimension_names=("x",), incomplete=True)
    assert open_dataset(tmp_path / "ds.zarr")["partial"].attrs == {"polystore.incomplete": True}


# -- directories polystore did not create --------------------------------------------
def test_an_existing_plain_directory_is_left_as_it_is_by_saves(backend, tmp_path):
    (tmp_path / "mine").mkdir()
    backend.save(np.ones(2), "mine/a.zarr", dimension_names=("x",))
    assert not (tmp_path / "mine" / "zarr.json").exists()
    assert not (tmp_path / "zarr.json").exists()  # nor is the root touched
    assert backend.list_files("mine") == ["mine/a.zarr"]


def test_ensure_directory_makes_an_existing_plain_directory_a_group(backend, tmp_path):
    (tmp_path / "mine").mkdir()
    backend.save(np.arange(3), "mine/a.zarr", dimension_names=("x",))
    backend.ensure_directory("mine")
    assert group_metadata(tmp_path / "mine")["node_type"] == "group"
    np.testing.assert_array_equal(open_dataset(tmp_path / "mine")["a.zarr"].values, [0, 1, 2])
    assert backend.list_dir("mine") == ["a.zarr"]


def test_ensure_directory_never_replaces_a_zarr_json_that_is_there(backend, tmp_path):
    zarr.open_group(tmp_path / "theirs", mode="w", attributes={"title": "kept"})
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "zarr.json").write_text("not json")
    backend.ensure_directory("theirs")
    backend.ensure_directory("odd")
    assert group_metadata(tmp_path / "theirs")["attributes"] == {"title": "kept"}
    assert (tmp_path / "odd" / "zarr.json").read_text() == "not json"
    assert backend.is_dir("odd") and backend.list_dir("odd") == []
