"""The zarr backend given what a careless or hostile user tries: each is refused with a clear error, nothing is lost.

Layouts (chunks, shards), unknown options, names too long for the filesystem,
region bounds and region casts. Every refusal names the user's own path and
what to do, and leaves nothing behind: no array, no temporary directory, and
a retry with good values succeeds.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from polystore import FileManager, InvalidPathError, ZarrBackend
from polystore.backends.disk import TEMP_PREFIX


@pytest.fixture
def backend(tmp_path: Path) -> ZarrBackend:
    return ZarrBackend(root=tmp_path)


@pytest.fixture
def fm(backend: ZarrBackend) -> FileManager:
    return FileManager({"zarr": backend})


def nothing_left(root: Path) -> bool:
    return not any(name.startswith(TEMP_PREFIX) or name.endswith(".zarr") for name in os.listdir(root))


# -- chunks and shards ---------------------------------------------------------------------
BAD_LAYOUTS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"chunks": (0, 5)}, ValueError, r"chunks \(0, 5\).*positive"),
    ({"chunks": (-1, 5)}, ValueError, r"chunks \(-1, 5\).*positive"),
    ({"chunks": (2,)}, ValueError, r"chunks \(2,\).*one per dimension.*2 dimensions"),
    ({"chunks": (2, 5, 1)}, ValueError, r"chunks \(2, 5, 1\).*one per dimension"),
    ({"chunks": (2.5, 2)}, TypeError, r"chunks \(2.5, 2\).*integers"),
    ({"chunks": "ab"}, TypeError, r"chunks 'ab'.*integers"),
    ({"chunks": (True, 5)}, TypeError, r"chunks \(True, 5\).*integers"),
    ({"shards": (0, 5)}, ValueError, r"shards \(0, 5\).*positive"),
    ({"chunks": (2, 2), "shards": (3, 3)}, ValueError, r"shards \(3, 3\).*multiple of the chunks \(2, 2\)"),
    ({"chunks": (2, 2), "shards": (4,)}, ValueError, r"shards \(4,\).*one per dimension"),
]


@pytest.mark.parametrize(("layout", "error", "message"), BAD_LAYOUTS, ids=[str(case[0]) for case in BAD_LAYOUTS])
def test_a_bad_layout_given_to_save_is_refused_before_anything_is_created(
    fm: FileManager, tmp_path: Path, layout: dict[str, Any], error: type[Exception], message: str
) -> None:
    data = np.arange(40, dtype="int32").reshape(8, 5)
    with pytest.raises(error, match=message) as raised:
        fm.save(data, "sub/bad.zarr", "zarr", **layout)
    assert "'sub/bad.zarr'" in str(raised.value)
    assert not fm.exists("sub/bad.zarr", "zarr")
    assert nothing_left(tmp_path) and not (tmp_path / "sub").exists()
    fm.save(data, "sub/bad.zarr", "zarr", chunks=(4, 5))  # a retry is not blocked
    np.testing.assert_array_equal(fm.load("sub/bad.zarr", "zarr"), data)


@pytest.mark.parametrize(("layout", "error", "message"), BAD_LAYOUTS, ids=[str(case[0]) for case in BAD_LAYOUTS])
def test_a_bad_layout_given_to_create_array_is_refused_before_anything_is_created(
    backend: ZarrBackend, tmp_path: Path, layout: dict[str, Any], error: type[Exception], message: str
) -> None:
    options = dict(layout)
    chunks = options.pop("chunks", None)
    with pytest.raises(error, match=message) as raised:
        backend.create_array("made.zarr", (8, 5), "float32", chunks, **options)
    assert "'made.zarr'" in str(raised.value)
    assert nothing_left(tmp_path)
    backend.create_array("made.zarr", (8, 5), "float32", (4, 5))
    assert backend.load("made.zarr").shape == (8, 5)


def test_zero_chunks_are_refused_for_an_empty_array_too(backend: ZarrBackend, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        backend.save(np.zeros((0, 5)), "empty.zarr", chunks=(0, 5))
    assert nothing_left(tmp_path)


def test_an_empty_dimension_gets_chunks_of_one_by_default(backend: ZarrBackend) -> None:
    backend.save(np.zeros((0, 5), "int8"), "empty.zarr")
    assert backend.stat("empty.zarr")["chunks"] == (1, 5)


# -- 0-d and empty arrays ---------------------------------------------------------------
@pytest.mark.parametrize("shape", [(), (0,), (0, 5), (5, 0), (3, 0, 2)], ids=str)
def test_created_0d_and_empty_arrays_load_and_take_region_writes(backend: ZarrBackend, shape: tuple[int, ...]) -> None:
    backend.create_array("grid.zarr", shape, "int16", None, fill_value=7)
    np.testing.assert_array_equal(backend.load("grid.zarr"), np.full(shape, 7, "int16"))
    region = tuple(slice(0, size) for size in shape)
    backend.save(np.full(shape, 3, "int16"), "grid.zarr", region=region)
    loaded = backend.load("grid.zarr", region=region)
    assert loaded.shape == shape and loaded.dtype == np.int16
    np.testing.assert_array_equal(loaded, np.full(shape, 3, "int16"))


# -- unknown options ---------------------------------------------------------------------
def test_an_unknown_save_option_names_itself_the_path_and_the_options_there_are(
    fm: FileManager, tmp_path: Path
) -> None:
    with pytest.raises(TypeError, match=r"'a.zarr'.*'chunk'.*did you mean 'chunks'") as raised:
        fm.save(np.ones(3), "a.zarr", "zarr", chunk=(2,))
    assert "compressor" in str(raised.value) and "ZarrBackend.save()" not in str(raised.value)
    assert nothing_left(tmp_path)


def test_an_unknown_load_option_names_itself_the_path_and_the_options_there_are(fm: FileManager) -> None:
    fm.save(np.ones(3), "a.zarr", "zarr")
    with pytest.raises(TypeError, match=r"'a.zarr'.*'regions'.*did you mean 'region'"):
        fm.load("a.zarr", "zarr", regions=(slice(0, 1),))


def test_an_unknown_create_array_option_is_a_plain_type_error(backend: ZarrBackend) -> None:
    with pytest.raises(TypeError):
        backend.create_array("a.zarr", (3,), "int8", None, chunk=(1,))  # type: ignore[call-arg]


# -- names too long for the filesystem ---------------------------------------------------
@pytest.mark.parametrize(
    "name", ["a" * 300 + ".zarr", "\u00e9" * 128 + ".zarr", "d" * 256 + "/x.zarr"], ids=["ascii", "utf8", "directory"]
)
def test_a_name_over_255_bytes_is_refused_naming_the_users_path(fm: FileManager, tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidPathError, match="255 bytes") as raised:
        fm.save(np.ones(3), name, "zarr")
    message = str(raised.value)
    assert repr(name)[:60].rstrip("'") in message and TEMP_PREFIX not in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["\u00e9" * 125 + ".zarr", "\U0001f600" * 62 + ".zarr"], ids=["2-byte", "4-byte"])
def test_a_name_of_up_to_255_bytes_in_multibyte_characters_is_saved(fm: FileManager, name: str) -> None:
    # It fits, though a temporary name built on it might not.
    fm.save(np.arange(3), name, "zarr")
    np.testing.assert_array_equal(fm.load(name, "zarr"), np.arange(3))
    fm.save(np.arange(4), name, "zarr", overwrite=True)
    np.testing.assert_array_equal(fm.load(name, "zarr"), np.arange(4))


# -- region bounds: loads refuse what saves refuse ---------------------------------------
@pytest.mark.parametrize(
    "region",
    [
        (slice(0, 41), slice(0, 30)),
        (slice(35, 45),),
        (slice(0, 10), slice(25, 31)),
        (40,),
        (-41,),
        (slice(-50, None),),
        (slice(0, 5), slice(0, 5), slice(0, 1)),
        (0, 0, 0),
    ],
    ids=["stop-past-end", "start-inside-stop-past", "second-dim", "index-past-end", "negative-index-past-start",
         "negative-start-past-start", "too-many-dims", "too-many-ints"],
)
def test_an_out_of_bounds_region_load_is_refused_naming_region_shape_and_path(fm: FileManager, region: tuple) -> None:
    fm.save(np.zeros((40, 30), "float32"), "tiles.zarr", "zarr", chunks=(10, 10))
    with pytest.raises(ValueError, match=r"region .* outside the array at 'tiles.zarr' of shape \(40, 30\)"):
        fm.load("tiles.zarr", "zarr", region=region)


@pytest.mark.parametrize(
    "region",
    [(slice(0, 40), slice(0, 30)), (slice(-10, None),), (39,), (-40, slice(None)), (slice(None, None, 3),),
     (Ellipsis, 29), (slice(20, 10),)],
    ids=["whole", "negative-start", "last-index", "negative-first-index", "step", "ellipsis", "empty"],
)
def test_an_in_bounds_region_load_returns_what_numpy_returns(fm: FileManager, region: tuple) -> None:
    data = np.arange(1200, dtype="int32").reshape(40, 30)
    fm.save(data, "tiles.zarr", "zarr", chunks=(10, 10))
    np.testing.assert_array_equal(fm.load("tiles.zarr", "zarr", region=region), data[region])


def test_out_of_bounds_region_save_and_load_raise_the_same_error_type(fm: FileManager) -> None:
    fm.save(np.zeros((4, 4)), "same.zarr", "zarr")
    region = (slice(2, 6), slice(0, 4))
    with pytest.raises(ValueError, match="outside") as saving:
        fm.save(np.ones((4, 4)), "same.zarr", "zarr", region=region)
    with pytest.raises(ValueError, match="outside") as loading:
        fm.load("same.zarr", "zarr", region=region)
    assert type(saving.value) is type(loading.value)
    np.testing.assert_array_equal(fm.load("same.zarr", "zarr"), np.zeros((4, 4)))


# -- region writes never change a value silently -------------------------------------------
@pytest.mark.parametrize(
    ("target", "block", "error"),
    [
        ("int16", np.array([[70000]], "int64"), ValueError),
        ("int16", np.array([[-40000]], "int32"), ValueError),
        ("uint8", np.array([[-1]], "int16"), ValueError),
        ("uint8", np.array([[256]], "uint16"), ValueError),
        ("int64", np.array([[2**63]], "uint64"), ValueError),
        ("float16", np.array([[70000.0]], "float64"), ValueError),
        ("float32", np.array([[1e300]], "float64"), ValueError),
        ("int32", np.array([[1.5]], "float64"), TypeError),
        ("float64", np.array([[1j]], "complex128"), TypeError),
        ("bool", np.array([[2]], "int8"), TypeError),
        ("int32", np.array([[1]], "datetime64[s]"), TypeError),
        ("<U2", np.array([["abc"]], "<U3"), ValueError),
        ("|S2", np.array([[b"abc"]], "|S3"), ValueError),
    ],
    ids=["int64-70000-into-int16", "int32-below-int16", "negative-into-uint8", "256-into-uint8", "2**63-into-int64",
         "70000.0-into-float16", "1e300-into-float32", "float-into-int", "complex-into-float", "int-into-bool",
         "datetime-into-int", "longer-str", "longer-bytes"],
)
def test_a_region_write_that_would_change_a_value_is_refused_and_changes_nothing(
    backend: ZarrBackend, target: str, block: np.ndarray, error: type[Exception]
) -> None:
    fill = np.zeros((), target)
    backend.create_array("typed.zarr", (2, 2), target, (1, 1), fill_value=fill.item())
    with pytest.raises(error, match=re.escape(str(np.dtype(target))) + ".*'typed.zarr'") as raised:
        backend.save(block, "typed.zarr", region=(slice(0, 1), slice(0, 1)))
    assert str(block.dtype) in str(raised.value)
    np.testing.assert_array_equal(backend.load("typed.zarr"), np.zeros((2, 2), target))


@pytest.mark.parametrize(
    ("target", "block"),
    [
        ("int16", np.array([[30000]], "int64")),
        ("uint8", np.array([[255]], "int64")),
        ("int64", np.array([[2**63 - 1]], "uint64")),
        ("uint16", np.array([[True]], "bool")),
        ("float32", np.array([[0.1]], "float64")),
        ("float16", np.array([[np.inf]], "float64")),
        ("float32", np.array([[np.nan]], "float64")),
        ("float64", np.array([[2**53]], "int64")),
        ("complex64", np.array([[1 + 2j]], "complex128")),
        ("<U3", np.array([["ab"]], "<U2")),
        ("datetime64[ms]", np.array([["2020-01-01"]], "datetime64[s]")),
    ],
    ids=["int64-that-fits-int16", "int64-that-fits-uint8", "uint64-that-fits-int64", "bool-into-uint16",
         "float64-into-float32", "inf-stays-inf", "nan-stays-nan", "int-into-float", "complex128-into-complex64",
         "shorter-str", "seconds-into-ms"],
)
def test_a_region_write_whose_values_fit_is_written(backend: ZarrBackend, target: str, block: np.ndarray) -> None:
    backend.create_array("typed.zarr", (1, 1), target, (1, 1), fill_value=np.zeros((), target).item())
    backend.save(block, "typed.zarr", region=(slice(0, 1), slice(0, 1)))
    np.testing.assert_array_equal(backend.load("typed.zarr"), block.astype(target))
