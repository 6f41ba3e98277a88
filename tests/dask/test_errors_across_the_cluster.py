"""Errors raised by polystore tasks reach the caller with their own type and message, never a bare Exception."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from polystore import FileManager


def local_error(call) -> BaseException:
    try:
        call()
    except Exception as error:
        return error
    raise AssertionError("the local call was expected to fail")


@pytest.mark.parametrize("what", ["a directory", "a plain file", "a missing path", "a non-array zarr.json"])
def test_a_zarr_load_error_has_the_same_type_and_message_through_the_cluster(dfm, tmp_path: Path, what):
    target = tmp_path / "target"
    if what == "a directory":
        target.mkdir()
    elif what == "a plain file":
        target.write_bytes(b"not zarr")
    elif what == "a non-array zarr.json":
        target.mkdir()
        (target / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    expected = local_error(lambda: FileManager().load(str(target), "zarr"))
    with pytest.raises(type(expected)) as caught:
        dfm.load(str(target), "zarr").result()
    assert type(caught.value) is type(expected)
    assert str(caught.value) == str(expected)
    assert str(target) in str(caught.value)


def test_a_zarr_load_array_error_has_its_own_type_through_the_cluster(dfm, tmp_path: Path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(IsADirectoryError, match="plain"):
        dfm.load_array(str(tmp_path / "plain"), "zarr")


def test_a_region_write_error_keeps_its_type_through_the_cluster(dfm, tmp_path: Path):
    path = str(tmp_path / "a.zarr")
    dfm.save(np.zeros((4, 4)), path, "zarr").result()
    expected = local_error(lambda: FileManager().save(np.ones((2, 2)), path, "zarr", region=(slice(0, 3), slice(0, 2))))
    with pytest.raises(type(expected)) as caught:
        dfm.save(np.ones((2, 2)), path, "zarr", region=(slice(0, 3), slice(0, 2))).result()
    assert str(caught.value) == str(expected)
