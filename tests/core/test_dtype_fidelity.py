"""Dtype fidelity, as a property over many dtypes: every format gives an array back exactly, or refuses it unwritten.

"Exactly" is the dtype with its byte order, the shape, every bit of every
value and the mask where the format keeps one (see
:func:`polystore.testing.kept_exactly`). A refusal is an
UnsupportedFormatError naming the dtype, and nothing is left at the path,
not even a temporary file. Region writes into zarr never change a value:
they are written exactly (up to float rounding) or refused, the array
unchanged.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from polystore import DiskBackend, MemoryBackend, UnsupportedFormatError, ZarrBackend
from polystore.backend import StorageBackend
from polystore.backends.disk import TEMP_PREFIX
from polystore.testing import dtype_samples, kept_exactly
from tests._reliability_ledger import record, scaled

EXAMPLES = scaled(120, 1500)
#: Each target: a backend maker and the suffix of its files (None: a dict in an .npz).
TARGETS = {"memory": ("memory", ""), "disk .npy": ("disk", ".npy"), "disk .npz": ("disk", ".npz"),
           "disk .tif": ("disk", ".tif"), "zarr": ("zarr", ".zarr")}

names = itertools.count()

SIMPLE = st.one_of(
    hnp.scalar_dtypes(),
    hnp.byte_string_dtypes(max_len=5),
    hnp.unicode_string_dtypes(max_len=5),
    st.sampled_from([np.dtype(np.longdouble), np.dtype(np.clongdouble)]),
)
DTYPES = st.one_of(
    SIMPLE, hnp.array_dtypes(SIMPLE, max_size=3, allow_subarrays=True), hnp.nested_dtypes(SIMPLE, max_leaves=4)
)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3)


@st.composite
def any_array(draw: st.DrawFn) -> np.ndarray:
    """An array of any dtype and a small shape; sometimes variable-width str, raw void or masked."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        texts = draw(st.lists(st.text(max_size=6), max_size=6))
        return np.array(texts, dtype=np.dtypes.StringDType())
    if choice == 2:
        width, count = draw(st.integers(1, 4)), draw(st.integers(0, 4))
        return np.frombuffer(draw(st.binary(min_size=width * count, max_size=width * count)), f"V{width}").copy()
    array = draw(hnp.arrays(DTYPES, SHAPES))
    if choice == 1 and array.dtype.kind in "biuf":
        mask = draw(hnp.arrays(np.bool_, array.shape))
        return np.ma.masked_array(array, mask=mask)
    return array


def make(kind: str, root: Path) -> StorageBackend:
    if kind == "memory":
        return MemoryBackend()
    return DiskBackend(root=root) if kind == "disk" else ZarrBackend(root=root)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_any_array_round_trips_exactly_or_is_refused_before_anything_is_written(target: str, tmp_path: Path) -> None:
    kind, suffix = TARGETS[target]
    backend = make(kind, tmp_path)
    counts = {"kept": 0, "refused": 0, "lost": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(array=any_array())
    def check(array: np.ndarray) -> None:
        path = f"a{next(names)}{suffix}"
        data: Any = {"x": array} if suffix == ".npz" else array
        try:
            backend.save(data, path)
        except UnsupportedFormatError as error:
            counts["refused"] += 1
            message = str(error)
            assert str(array.dtype) in message or (isinstance(array, np.ma.MaskedArray) and "mask" in message), message
            assert not backend.exists(path)
            if kind != "memory":
                assert not any(name.startswith(TEMP_PREFIX) for name in os.listdir(tmp_path))
            return
        loaded = backend.load(path)
        difference = kept_exactly(loaded["x"] if suffix == ".npz" else loaded, array)
        counts["lost" if difference else "kept"] += 1
        assert difference is None, f"{array.dtype} of shape {array.shape}: {difference}"

    check()
    record(f"bad inputs: class 3 dtype fidelity, {target}", operations=counts["kept"] * 2 + counts["refused"],
           bad_inputs=counts["refused"], lost_or_torn=counts["lost"])


def test_memory_keeps_every_dtype_of_the_kit_samples_but_object() -> None:
    backend = MemoryBackend()
    for index, (name, data) in enumerate(dtype_samples().items()):
        backend.save(data, f"sample{index}")
        assert kept_exactly(backend.load(f"sample{index}"), data) is None, name


def test_a_masked_array_loaded_from_memory_has_a_read_only_mask() -> None:
    backend = MemoryBackend()
    backend.save(np.ma.masked_array([1, 2, 3], mask=[False, True, False]), "m")
    loaded = backend.load("m")
    with pytest.raises(ValueError, match="read-only"):
        loaded.mask[0] = True
    with pytest.raises(ValueError, match="read-only"):
        loaded[0] = np.ma.masked
    np.testing.assert_array_equal(np.ma.getmaskarray(backend.load("m")), [False, True, False])


@pytest.mark.parametrize(
    ("name", "expected"),
    [("big-endian int16", ">i2"), ("big-endian float64", ">f8"), ("big-endian datetime", ">M8[ns]"),
     ("big-endian str", ">U5")],
)
def test_zarr_keeps_the_byte_order_in_load_stat_and_region_loads(tmp_path: Path, name: str, expected: str) -> None:
    backend = ZarrBackend(root=tmp_path)
    data = np.zeros((4, 3), expected) if expected[1] in "MU" else np.arange(12).reshape(4, 3).astype(expected)
    backend.save(data, "big.zarr", chunks=(2, 3))
    assert backend.load("big.zarr").dtype == np.dtype(expected)
    assert backend.load("big.zarr", region=(slice(1, 3),)).dtype == np.dtype(expected)
    assert backend.load("big.zarr", region=(0, 0)).dtype == np.dtype(expected)
    assert backend.stat("big.zarr")["dtype"] == np.dtype(expected)
    backend.create_array("made.zarr", (4, 3), expected, (2, 3), shards=(4, 3), fill_value=None)
    backend.save(data[:2], "made.zarr", region=(slice(0, 2),))
    assert kept_exactly(backend.load("made.zarr", region=(slice(0, 2),)), data[:2]) is None


@pytest.mark.parametrize(
    ("name", "data", "fmt"),
    [
        ("structured", np.zeros(2, [("a", "<i4")]), ".tif"),
        ("datetime", np.zeros(2, "M8[s]"), ".tif"),
        ("str", np.array(["a"]), ".tif"),
        ("big-endian", np.arange(3, dtype=">u2"), ".tif"),
        ("masked", np.ma.masked_array([1.0], mask=[True]), ".tif"),
        ("32 dimensions", np.zeros((1,) * 32, "uint8"), ".tif"),
        ("masked", np.ma.masked_array([1.0], mask=[True]), ".npy"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_the_refusals_the_issue_found_say_what_to_use_instead(
    tmp_path: Path, name: str, data: np.ndarray, fmt: str
) -> None:
    disk = DiskBackend(root=tmp_path)
    with pytest.raises(UnsupportedFormatError, match=r"use|save") as raised:
        disk.save(data, f"refused{fmt}")
    message = str(raised.value)
    assert str(data.dtype) in message and f"refused{fmt}" in message and fmt in message
    assert os.listdir(tmp_path) == []


def test_a_tiff_option_that_changes_the_shape_is_refused(tmp_path: Path) -> None:
    disk = DiskBackend(root=tmp_path)
    data = np.zeros((1, 4, 5), "uint8")
    with pytest.raises(UnsupportedFormatError, match=r"read it back as uint8 of shape \(4, 5\)"):
        disk.save(data, "planes.tif", shaped=False)
    assert os.listdir(tmp_path) == []


# -- region writes: no value changes on the way in ---------------------------------------
INTEGER = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.boolean_dtypes())
FLOATING = st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes())


@pytest.mark.parametrize("family", ["integers", "floats"])
def test_a_region_write_stores_every_value_exactly_or_is_refused_leaving_the_array_unchanged(
    family: str, tmp_path: Path
) -> None:
    backend = ZarrBackend(root=tmp_path)
    counts = {"written": 0, "refused": 0, "changed": 0}
    sources = INTEGER if family == "integers" else FLOATING
    targets = hnp.integer_dtypes(endianness="=") | hnp.unsigned_integer_dtypes(endianness="=")
    if family == "floats":
        targets = hnp.floating_dtypes(endianness="=")

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(source=sources, target=targets, data=st.data())
    def check(source: np.dtype[Any], target: np.dtype[Any], data: st.DataObject) -> None:
        block = data.draw(hnp.arrays(source, (2, 3)))
        path = f"r{next(names)}.zarr"
        backend.create_array(path, (2, 3), target, (2, 3), fill_value=0)
        try:
            backend.save(block, path, region=(slice(0, 2), slice(0, 3)))
        except (TypeError, ValueError):
            counts["refused"] += 1
            assert not backend.load(path).any()
            return
        stored = backend.load(path)
        if family == "integers":
            same = stored.astype(object).tolist() == block.astype(object).tolist()
        else:
            with np.errstate(all="ignore"):
                rounded = block.astype(target)
            same = np.array_equal(stored, rounded, equal_nan=True) and np.array_equal(
                np.isfinite(stored), np.isfinite(block)
            )
        counts["changed" if not same else "written"] += 1
        assert same, f"{source} block {block.tolist()} into {target} became {stored.tolist()}"

    check()
    record(f"bad inputs: class 3 region casts, {family}", operations=sum(counts.values()),
           bad_inputs=counts["refused"], lost_or_torn=counts["changed"])


# -- the README's table is true ------------------------------------------------------------
README = Path(__file__).resolve().parents[2] / "README.md"
#: The kit's samples (see polystore.testing.dtype_samples) that each row of the table stands for.
ROWS = {
    "bool, int8 to int64": ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                            "float16", "float32", "float64", "complex64", "complex128"],
    "the same in big-endian": [">i2", ">u2", ">i4", ">u4", ">i8", ">u8", ">f2", ">f4", ">f8", ">c8", ">c16"],
    "float128, complex256": ["longdouble", "clongdouble"],
    "datetime64, timedelta64 with a unit": ["datetime64[ns]", ">datetime64[ns]", "datetime64[D]", "timedelta64[s]"],
    "datetime64 without a unit": ["datetime64 (no unit)"],
    "fixed-width bytes, str, void": ["S5", "U5", ">U5", "V3"],
    "variable-width str": ["StringDType"],
    "`StringDType(na_object=...)`": ["StringDType(na_object=None)"],
    "structured, packed": ["structured"],
    "structured with a big-endian or a subarray field": ["structured, big-endian field", "structured, subarray field"],
    "masked arrays": ["masked"],
    "0-d and empty arrays": ["0-d", "empty"],
    "object": [],
}
#: The table's columns, as (backend, suffixes).
COLUMNS = [("memory", [""]), ("disk", [".npy", ".npz"]), ("disk", [".tif", ".tiff"]), ("zarr", [".zarr"])]


def readme_table() -> list[list[str]]:
    text = README.read_text()
    table = text[text.index("<!-- begin:dtype-table -->"):text.index("<!-- end:dtype-table -->")]
    lines = [line for line in table.splitlines() if line.startswith("|")][2:]  # past the header and its rule
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_the_readme_dtype_table_has_every_row_and_column() -> None:
    rows = readme_table()
    assert len(rows) == len(ROWS) and all(len(row) == 1 + len(COLUMNS) for row in rows)
    assert all(any(row[0].startswith(label) for row in rows) for label in ROWS)
    assert all(cell in ("yes", "no") for row in rows for cell in row[1:])


@pytest.mark.parametrize("row", readme_table(), ids=lambda row: row[0][:40])
def test_the_readme_dtype_table_is_true(row: list[str], tmp_path: Path) -> None:
    samples = dtype_samples()
    label = next(label for label in ROWS if row[0].startswith(label))
    arrays = [samples[name] for name in ROWS[label] if name in samples] or [np.array([object(), 1], dtype=object)]
    for (kind, suffixes), cell in zip(COLUMNS, row[1:], strict=True):
        backend = make(kind, tmp_path)
        for suffix in suffixes:
            for array in arrays:
                path = f"t{next(names)}{suffix}"
                data: Any = {"x": array} if suffix == ".npz" else array
                where = f"{kind} {suffix or ''} for {array.dtype}: the table says {cell!r}"
                if cell == "yes":
                    backend.save(data, path)
                    loaded = backend.load(path)
                    assert kept_exactly(loaded["x"] if suffix == ".npz" else loaded, array) is None, where
                else:
                    with pytest.raises(UnsupportedFormatError):
                        backend.save(data, path)
                    assert not backend.exists(path), where
