"""Region writes into an incomplete zarr array are recorded once finished (what save_array resume=True keeps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from polystore import ZarrBackend


@pytest.fixture
def backend(tmp_path: Path) -> ZarrBackend:
    return ZarrBackend(root=tmp_path)


def test_each_finished_region_write_into_an_incomplete_array_is_recorded(backend):
    backend.create_array("a.zarr", (6, 4), "int32", (2, 4), incomplete=True)
    assert backend.committed_regions("a.zarr") == []
    backend.save(np.ones((4, 4), dtype=np.int32), "a.zarr", region=(slice(2, 6),))
    backend.save(np.ones((2, 4), dtype=np.int32), "a.zarr", region=(slice(0, 2), slice(0, 4)))
    assert backend.committed_regions("a.zarr") == [(slice(0, 2), slice(0, 4)), (slice(2, 6), slice(0, 4))]


def test_completing_the_array_removes_the_records(backend, tmp_path):
    backend.create_array("a.zarr", (4,), "int8", (2,), incomplete=True)
    backend.save(np.ones(2, dtype=np.int8), "a.zarr", region=(slice(0, 2),))
    backend.complete_array("a.zarr")
    assert backend.committed_regions("a.zarr") == []
    assert sorted(path.name for path in (tmp_path / "a.zarr").iterdir()) == ["c", "zarr.json"]


def test_writes_into_a_complete_array_record_nothing(backend, tmp_path):
    backend.create_array("a.zarr", (4,), "int8", (2,))
    backend.save(np.ones(2, dtype=np.int8), "a.zarr", region=(slice(0, 2),))
    assert backend.committed_regions("a.zarr") == []
    assert sorted(path.name for path in (tmp_path / "a.zarr").iterdir()) == ["c", "zarr.json"]


def test_a_write_that_fails_records_nothing(backend):
    backend.create_array("a.zarr", (4,), "int8", (2,), incomplete=True)
    with pytest.raises(ValueError, match="outside"):
        backend.save(np.full(2, 300), "a.zarr", region=(slice(0, 2),))
    assert backend.committed_regions("a.zarr") == []


def test_a_zero_dimensional_incomplete_array_records_its_one_region(backend):
    backend.create_array("s.zarr", (), "float64", (), incomplete=True)
    backend.save(np.array(2.5), "s.zarr", region=())
    assert backend.committed_regions("s.zarr") == [()]


def test_the_records_leave_the_array_readable_by_plain_zarr(backend, tmp_path):
    backend.create_array("a.zarr", (4,), "int8", (2,), incomplete=True)
    backend.save(np.arange(2, dtype=np.int8), "a.zarr", region=(slice(0, 2),))
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr", mode="r")[...], [0, 1, 0, 0])
    assert backend.list_files(".") == ["./a.zarr"]


def test_committed_regions_of_something_that_is_not_an_array_says_what_is_there(backend):
    backend.ensure_directory("d")
    with pytest.raises(IsADirectoryError, match="committed regions"):
        backend.committed_regions("d")
    with pytest.raises(FileNotFoundError):
        backend.committed_regions("missing.zarr")
