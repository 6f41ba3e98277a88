"""The conformance kit: the storage contract as a pytest suite.

A backend's test module subclasses :class:`BackendTests` (or
:class:`ReadOnlyBackendTests`) and overrides the ``backend`` fixture; every
behaviour the contract promises is then checked against that backend. The
shipped backends use it, and so can third-party ones::

    from polystore.testing import BackendTests

    class TestMyBackend(BackendTests):
        @pytest.fixture
        def backend(self, tmp_path):
            return MyBackend(root=tmp_path)

The kit uses relative paths only: the fixture must return a backend that
resolves them somewhere private to the test (a ``root`` in ``tmp_path``).
"""

from __future__ import annotations

import errno
import math
import pathlib
import posixpath
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import pytest

from polystore.backend import StorageBackend
from polystore.errors import InvalidPathError, ReadOnlyError, UnsupportedFormatError
from polystore.paths import natural_key

__all__ = [
    "SAMPLES",
    "BackendTests",
    "ReadOnlyBackendTests",
    "assert_same_data",
    "dtype_samples",
    "kept_exactly",
]

#: One sample object of each kind of data a backend may store.
SAMPLES: dict[str, Any] = {
    "array": np.arange(24, dtype=np.float32).reshape(4, 6),
    "bytes": b"\x00\x01polystore\xff",
    "str": "plain text, with unicode: \u00e9\u00e8",
    "dict": {"name": "sample", "values": [1, 2, 3], "nested": {"ok": True}},
}

#: A second sample of each kind, different from the first, for overwrites.
OTHER_SAMPLES: dict[str, Any] = {
    "array": np.full((2, 3), 7, dtype=np.int16),
    "bytes": b"another payload",
    "str": "another text",
    "dict": {"other": 1},
}


def assert_same_data(actual: Any, expected: Any) -> None:
    """Assert that ``actual`` is what was saved as ``expected`` (dtype, shape, values)."""
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), f"expected an array, got {type(actual).__name__}"
        assert actual.dtype == expected.dtype
        assert actual.shape == expected.shape
        np.testing.assert_array_equal(actual, expected)
    else:
        assert type(actual) is type(expected)
        assert actual == expected


def dtype_samples() -> dict[str, np.ndarray]:
    """Small arrays of every family of numpy dtype, by name, for the kit's dtype-fidelity test.

    Each either round-trips exactly through a backend (dtype with byte
    order, shape, every bit of every value, the mask) or is refused when
    saved. Several hold values a careless format changes: NaN, -0.0,
    infinities, NaT, big-endian bytes, empty strings, NUL bytes.
    """
    floats = np.array([[0.0, -0.0, np.nan], [np.inf, -np.inf, 1.5]])
    samples: dict[str, np.ndarray] = {"bool": np.array([[True, False, True], [False, False, True]])}
    for code in ("i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8"):
        info = np.iinfo(code)
        values = np.array([[info.min, info.max, 0], [1, info.max - 1, info.min + 1]], dtype=code)
        samples[np.dtype(code).name] = values
        if values.itemsize > 1:
            samples[f">{code}"] = values.astype(f">{code}")
    for code in ("f2", "f4", "f8", "c8", "c16"):
        values = np.empty(floats.shape, code)
        values.real = floats
        if code.startswith("c"):
            values.imag = floats[::-1]
        samples[np.dtype(code).name] = values
        samples[f">{code}"] = values.astype(f">{code}")
    if np.dtype(np.longdouble).itemsize > 8:
        samples["longdouble"] = floats.astype(np.longdouble)
        samples["clongdouble"] = floats.astype(np.clongdouble)
    samples["datetime64[ns]"] = np.array([["2020-01-01T00:00:00.000000001", "NaT", "1970-01-01"]], "M8[ns]")
    samples[">datetime64[ns]"] = samples["datetime64[ns]"].astype(">M8[ns]")
    samples["datetime64[D]"] = np.array(["2000-02-29", "NaT"], "M8[D]")
    samples["datetime64 (no unit)"] = np.array(["NaT", "NaT"], "M8")
    samples["timedelta64[s]"] = np.array([[1, -5, np.iinfo(np.int64).max]], "m8[s]")
    samples["S5"] = np.array([[b"", b"a\x00b", b"abcde"]], "S5")
    samples["U5"] = np.array([["", "\u00e9t\u00e9", "abcde"]], "U5")
    samples[">U5"] = samples["U5"].astype(">U5")
    samples["V3"] = np.frombuffer(b"\x00\x01\x02\xff\xfe\xfd", "V3")
    samples["structured"] = np.array([(1, 2.5, b"ab"), (-3, np.nan, b"")], [("a", "<i4"), ("b", "<f8"), ("c", "S2")])
    samples["structured, big-endian field"] = np.array([(1, 2.0)], [("a", ">i4"), ("b", "<f8")])
    samples["structured, subarray field"] = np.array([((1, 2), 3.0)], [("a", "<i2", (2,)), ("b", "<f4")])
    samples["StringDType"] = np.array(["", "a much longer string \u00e9", "x"], np.dtypes.StringDType())
    samples["StringDType(na_object=None)"] = np.array(["a", None], np.dtypes.StringDType(na_object=None))
    samples["0-d"] = np.array(2.5)
    samples["empty"] = np.zeros((0, 3), "int16")
    samples["masked"] = np.ma.masked_array([[1.0, 2.0], [3.0, 4.0]], mask=[[False, True], [False, False]])
    return samples


def kept_exactly(actual: Any, expected: np.ndarray) -> str | None:
    """None if ``actual`` is ``expected`` exactly (dtype with byte order, shape, bits, mask), else what differs."""
    if not isinstance(actual, np.ndarray):
        return f"came back as {type(actual).__name__}, not an array"
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        return f"came back as {actual.dtype} of shape {actual.shape}, not {expected.dtype} of shape {expected.shape}"
    if isinstance(expected, np.ma.MaskedArray):
        if not isinstance(actual, np.ma.MaskedArray):
            return "came back without its mask"
        if not np.array_equal(np.ma.getmaskarray(actual), np.ma.getmaskarray(expected)):
            return "came back with another mask"
        actual, expected = np.ma.getdata(actual), np.ma.getdata(expected)
    if expected.dtype.kind == "T":
        same = np.array_equal(actual, expected)
    else:
        same = np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(expected).tobytes()
    return None if same else "came back with other values"


class BackendTests:
    """The storage contract, run against the backend the ``backend`` fixture returns.

    Attributes
    ----------
    suffixes
        The kinds of data the backend stores, each with the path suffix used
        for it. A backend that stores arrays only (zarr) sets
        ``{"array": ".zarr"}``; the kit then checks that the other kinds are
        refused with :class:`UnsupportedFormatError`.
    array_suffixes
        Every suffix whose files hold one array, when there are several
        formats (disk: ``(".npy", ".tif")``); each gets the dtype-fidelity
        and shape tests. By default the one of ``suffixes["array"]``.

    Notes
    -----
    A backend with its own ``save_batch`` checks every item before writing
    any; one that inherits it implements
    :meth:`~polystore.StorageBackend.check_save`, which the inherited
    ``save_batch`` calls first. The kit tests that one bad item writes nothing.
    """

    suffixes: ClassVar[Mapping[str, str]] = {"array": ".npy", "bytes": ".bin", "str": ".txt", "dict": ".json"}
    array_suffixes: ClassVar[tuple[str, ...]] = ()

    @pytest.fixture
    def backend(self) -> StorageBackend:
        """Override: return a fresh, empty backend that resolves relative paths privately."""
        raise NotImplementedError("subclasses of BackendTests override the 'backend' fixture")

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "kind" in metafunc.fixturenames:
            metafunc.parametrize("kind", sorted(self.suffixes))
        if "unsupported" in metafunc.fixturenames:
            # An object no backend stores, then every kind this backend does not.
            kinds = sorted(set(SAMPLES) - set(self.suffixes))
            metafunc.parametrize("unsupported", [object(), *(SAMPLES[k] for k in kinds)], ids=["object", *kinds])
        if "array_suffix" in metafunc.fixturenames:
            found = list(self.array_suffixes or ([self.suffixes["array"]] if "array" in self.suffixes else []))
            metafunc.parametrize("array_suffix", found or [None], ids=found or ["no-arrays"])

    @property
    def kind_any(self) -> str:
        return "array" if "array" in self.suffixes else sorted(self.suffixes)[0]

    def path(self, stem: str, kind: str | None = None) -> str:
        return stem + self.suffixes[kind or self.kind_any]

    # -- save and load ----------------------------------------------------
    def test_save_then_load_returns_equal_data(self, backend: StorageBackend, kind: str) -> None:
        path = self.path("roundtrip", kind)
        backend.save(SAMPLES[kind], path)
        assert_same_data(backend.load(path), SAMPLES[kind])

    def test_arrays_of_several_dtypes_round_trip(self, backend: StorageBackend) -> None:
        if "array" not in self.suffixes:
            pytest.skip(f"{type(self).__name__}.suffixes has no 'array': this backend stores no arrays")
        for dtype in ("uint8", "int32", "int64", "float64", "complex64", "bool"):
            data = (np.arange(30).reshape(5, 6) % 3).astype(dtype)
            path = self.path(f"dtype_{dtype}", "array")
            backend.save(data, path)
            assert_same_data(backend.load(path), data)

    def test_every_dtype_round_trips_exactly_or_is_refused_before_anything_is_written(
        self, backend: StorageBackend, array_suffix: str | None
    ) -> None:
        if array_suffix is None:
            pytest.skip(f"{type(self).__name__}.suffixes has no 'array': this backend stores no arrays")
        problems = []
        for index, (name, data) in enumerate(dtype_samples().items()):
            path = f"dtypes/{index}{array_suffix}"
            try:
                backend.save(data, path)
            except UnsupportedFormatError as error:
                message = str(error)
                if str(data.dtype) not in message and not (isinstance(data, np.ma.MaskedArray) and "mask" in message):
                    problems.append(f"{name}: refused without naming the dtype {data.dtype}: {message}")
                elif array_suffix not in message and backend.name not in message:
                    problems.append(f"{name}: refused without naming the format: {message}")
                elif backend.exists(path):
                    problems.append(f"{name}: refused, but something was written at {path!r}")
                continue
            difference = kept_exactly(backend.load(path), data)
            if difference:
                problems.append(f"{name}: saved to {path!r}, but it {difference}")
        assert not problems, "\n".join(problems)

    def test_zero_dimensional_and_empty_arrays_round_trip(
        self, backend: StorageBackend, array_suffix: str | None
    ) -> None:
        if array_suffix is None:
            pytest.skip(f"{type(self).__name__}.suffixes has no 'array': this backend stores no arrays")
        for index, shape in enumerate([(), (0,), (0, 4), (4, 0), (2, 0, 3), (1,), (1, 1)]):
            data = (np.arange(math.prod(shape), dtype=np.float32) + 0.5).reshape(shape)
            path = f"shapes/{index}{array_suffix}"
            backend.save(data, path)
            assert kept_exactly(backend.load(path), data) is None, f"shape {shape} did not round-trip"

    def test_save_creates_missing_parent_directories(self, backend: StorageBackend) -> None:
        path = self.path("deep/er/still/file")
        backend.save(SAMPLES[self.kind_any], path)
        assert backend.is_dir("deep/er/still")
        assert backend.is_dir("deep")

    def test_save_over_existing_path_without_overwrite_raises_and_keeps_old(self, backend: StorageBackend) -> None:
        path = self.path("taken")
        backend.save(SAMPLES[self.kind_any], path)
        with pytest.raises(FileExistsError):
            backend.save(OTHER_SAMPLES[self.kind_any], path)
        assert_same_data(backend.load(path), SAMPLES[self.kind_any])

    def test_save_with_overwrite_replaces(self, backend: StorageBackend) -> None:
        path = self.path("replaced")
        backend.save(SAMPLES[self.kind_any], path)
        backend.save(OTHER_SAMPLES[self.kind_any], path, overwrite=True)
        assert_same_data(backend.load(path), OTHER_SAMPLES[self.kind_any])

    def test_save_onto_a_directory_raises_is_a_directory(self, backend: StorageBackend) -> None:
        directory = self.path("a_directory")
        backend.ensure_directory(directory)
        with pytest.raises(IsADirectoryError):
            backend.save(SAMPLES[self.kind_any], directory, overwrite=True)
        assert backend.is_dir(directory)

    def test_save_under_a_file_raises_not_a_directory(self, backend: StorageBackend) -> None:
        parent = self.path("plain")
        backend.save(SAMPLES[self.kind_any], parent)
        with pytest.raises(NotADirectoryError):
            backend.save(SAMPLES[self.kind_any], parent + "/" + self.path("child"))
        assert_same_data(backend.load(parent), SAMPLES[self.kind_any])

    def test_unsupported_data_raises_unsupported_format(self, backend: StorageBackend, unsupported: Any) -> None:
        path = self.path("unsupported")
        with pytest.raises(UnsupportedFormatError):
            backend.save(unsupported, path)
        assert not backend.exists(path)

    def test_load_missing_path_raises_file_not_found_naming_it(self, backend: StorageBackend) -> None:
        path = self.path("never_saved")
        with pytest.raises(FileNotFoundError, match="never_saved"):
            backend.load(path)

    def test_load_of_a_directory_raises_is_a_directory(self, backend: StorageBackend) -> None:
        backend.ensure_directory("just_a_dir")
        with pytest.raises(IsADirectoryError):
            backend.load("just_a_dir")

    def test_paths_may_be_pathlike(self, backend: StorageBackend) -> None:
        path = pathlib.PurePosixPath("viapath") / self.path("obj")
        backend.save(SAMPLES[self.kind_any], path)
        assert backend.is_file(str(path))
        assert_same_data(backend.load(path), SAMPLES[self.kind_any])

    @pytest.mark.parametrize("bad_path", [None, 3, b"bytes/path", ["a"]])
    def test_path_of_wrong_type_raises_type_error(self, backend: StorageBackend, bad_path: Any) -> None:
        with pytest.raises(TypeError, match="path"):
            backend.save(SAMPLES[self.kind_any], bad_path)
        with pytest.raises(TypeError, match="path"):
            backend.load(bad_path)

    def test_empty_path_raises_invalid_path(self, backend: StorageBackend) -> None:
        with pytest.raises(InvalidPathError):
            backend.save(SAMPLES[self.kind_any], "")
        with pytest.raises(InvalidPathError):
            backend.load("")

    # -- batches ------------------------------------------------------------
    def test_save_batch_then_load_batch_in_order(self, backend: StorageBackend) -> None:
        data = [SAMPLES[self.kind_any], OTHER_SAMPLES[self.kind_any]] * 3
        paths = [self.path(f"batch/item{i}") for i in range(len(data))]
        backend.save_batch(data, paths)
        for actual, expected in zip(backend.load_batch(paths), data, strict=True):
            assert_same_data(actual, expected)

    def test_save_batch_with_mismatched_lengths_raises_and_writes_nothing(self, backend: StorageBackend) -> None:
        paths = [self.path("mismatch/a"), self.path("mismatch/b")]
        with pytest.raises(ValueError, match="2 paths"):
            backend.save_batch([SAMPLES[self.kind_any]], paths)
        assert not backend.exists(paths[0])

    def test_save_batch_with_one_bad_item_raises_its_error_and_writes_nothing(self, backend: StorageBackend) -> None:
        good = SAMPLES[self.kind_any]
        taken = self.path("held/taken")
        backend.save(OTHER_SAMPLES[self.kind_any], taken)
        cases: list[tuple[str, Any, Any, type[Exception]]] = [
            ("unstorable data", object(), self.path("item_bad"), UnsupportedFormatError),
            ("a path of the wrong type", good, 3, TypeError),
            ("an empty path", good, "", InvalidPathError),
            ("a path taken", good, taken, FileExistsError),
            ("a path named twice", good, "twice", FileExistsError),
            ("a directory's name", good, "dir_named/.", IsADirectoryError),
            ("a path under another item", good, "under", NotADirectoryError),
        ]
        for case, (what, bad_data, bad_path, error) in enumerate(cases):
            for position in (0, 1, 2):
                directory = f"batch_{case}_{position}"
                paths: list[Any] = [self.path(f"{directory}/item{i}") for i in range(3)]
                data: list[Any] = [good] * 3
                if bad_path == "twice":
                    paths[position] = paths[position - 1]
                elif bad_path == "under":
                    paths[position] = paths[position - 1] + "/" + self.path("below")
                else:
                    data[position], paths[position] = bad_data, bad_path
                with pytest.raises(error):
                    backend.save_batch(data, paths)
                written = [path for path in paths if isinstance(path, str) and path and backend.exists(path)]
                assert written in ([], [taken]), f"a batch with {what} at position {position} wrote {written}"
        assert_same_data(backend.load(taken), OTHER_SAMPLES[self.kind_any])

    # -- special paths ----------------------------------------------------------
    def test_saving_at_a_name_that_can_only_be_a_directory_raises_is_a_directory_and_writes_nothing(
        self, backend: StorageBackend
    ) -> None:
        data = SAMPLES[self.kind_any]
        for path in (".", "./", "sub/..", "made/.", "./made/..//"):
            for overwrite in (False, True):
                with pytest.raises(IsADirectoryError):
                    backend.save(data, path, overwrite=overwrite)
                with pytest.raises(IsADirectoryError):
                    backend.save_batch([data], [path], overwrite=overwrite)
        assert backend.list_dir(".") == []
        source = self.path("source")
        backend.save(data, source)
        for path in (".", "made/."):
            with pytest.raises(IsADirectoryError):
                backend.copy(source, path)
            with pytest.raises(IsADirectoryError):
                backend.move(source, path, overwrite=True)
        assert backend.list_dir(".") == [source]
        assert_same_data(backend.load(source), data)

    def test_the_root_is_a_directory_that_cannot_be_deleted(self, backend: StorageBackend) -> None:
        backend.save(SAMPLES[self.kind_any], self.path("kept"))
        for root in (".", "./"):
            assert (backend.exists(root), backend.is_dir(root), backend.is_file(root)) == (True, True, False)
            assert backend.stat(root)["type"] == "directory"
            assert backend.list_dir(root) == [self.path("kept")]
            with pytest.raises(IsADirectoryError):
                backend.load(root)
            for recursive in (False, True):
                with pytest.raises(IsADirectoryError):
                    backend.delete(root, recursive=recursive)
        assert_same_data(backend.load(self.path("kept")), SAMPLES[self.kind_any])

    def test_the_empty_path_is_invalid_for_every_operation(self, backend: StorageBackend) -> None:
        calls: list[Callable[[str], Any]] = [
            backend.exists, backend.is_file, backend.is_dir, backend.load, backend.list_dir, backend.stat,
            backend.list_files, backend.ensure_directory, backend.delete,
        ]
        for call in calls:
            with pytest.raises(InvalidPathError):
                call("")
        assert backend.list_dir(".") == []

    def test_a_trailing_slash_is_another_spelling_of_the_same_path(self, backend: StorageBackend) -> None:
        backend.save(SAMPLES[self.kind_any], self.path("dir/obj") + "/")
        assert backend.list_dir("dir/") == backend.list_dir("dir") == [self.path("obj")]
        assert backend.is_dir("dir/") and backend.exists("dir/") and backend.stat("dir/")["type"] == "directory"
        assert backend.is_file(self.path("dir/obj") + "//")
        assert_same_data(backend.load(self.path("dir/obj") + "/"), SAMPLES[self.kind_any])

    def test_a_name_over_255_bytes_is_saved_or_refused_naming_the_path_given(self, backend: StorageBackend) -> None:
        name = "n" * 300 + self.suffixes[self.kind_any]
        try:
            backend.save(SAMPLES[self.kind_any], name)
        except (ValueError, OSError) as error:
            assert name[:100] in str(error), f"the error does not name the path given: {error}"
            assert "-tmp-" not in str(error), f"the error names a temporary file: {error}"
            assert backend.list_dir(".") == []
        else:
            assert_same_data(backend.load(name), SAMPLES[self.kind_any])

    # -- queries --------------------------------------------------------------
    def test_queries_on_a_missing_path_are_false(self, backend: StorageBackend) -> None:
        assert backend.exists("nowhere/at/all") is False
        assert backend.is_file("nowhere/at/all") is False
        assert backend.is_dir("nowhere/at/all") is False

    def test_file_and_directory_are_told_apart(self, backend: StorageBackend) -> None:
        path = self.path("kinds/obj")
        backend.save(SAMPLES[self.kind_any], path)
        assert (backend.exists(path), backend.is_file(path), backend.is_dir(path)) == (True, True, False)
        assert (backend.exists("kinds"), backend.is_file("kinds"), backend.is_dir("kinds")) == (True, False, True)

    def test_stat_reports_type_and_size(self, backend: StorageBackend) -> None:
        path = self.path("stat/obj")
        backend.save(SAMPLES[self.kind_any], path)
        info = backend.stat(path)
        assert info["type"] == "file"
        assert isinstance(info["size"], int) and info["size"] > 0
        assert backend.stat("stat")["type"] == "directory"
        with pytest.raises(FileNotFoundError):
            backend.stat("stat/missing")

    # -- listings -------------------------------------------------------------
    def _populate_listing(self, backend: StorageBackend) -> list[str]:
        names = [
            self.path("listing/b"),
            self.path("listing/a"),
            self.path("listing/sub/c"),
            self.path("listing/sub/deeper/d"),
        ]
        for name in names:
            backend.save(SAMPLES[self.kind_any], name)
        backend.ensure_directory("listing/empty")
        return names

    def test_list_files_is_sorted_and_joins_the_directory(self, backend: StorageBackend) -> None:
        self._populate_listing(backend)
        assert backend.list_files("listing") == [f"listing/{self.path('a')}", f"listing/{self.path('b')}"]
        assert backend.list_files("listing/") == [f"listing/{self.path('a')}", f"listing/{self.path('b')}"]

    def test_list_files_results_load_directly(self, backend: StorageBackend) -> None:
        self._populate_listing(backend)
        for path in backend.list_files("listing", recursive=True):
            assert_same_data(backend.load(path), SAMPLES[self.kind_any])

    def test_list_files_recursive_includes_subdirectories(self, backend: StorageBackend) -> None:
        names = self._populate_listing(backend)
        assert backend.list_files("listing", recursive=True) == sorted(names)

    def test_list_files_pattern_matches_names(self, backend: StorageBackend) -> None:
        self._populate_listing(backend)
        assert backend.list_files("listing", pattern="a*") == [f"listing/{self.path('a')}"]
        assert backend.list_files("listing", pattern="c*", recursive=True) == [f"listing/sub/{self.path('c')}"]

    def test_list_files_extensions_match_name_endings(self, backend: StorageBackend) -> None:
        suffix = self.suffixes[self.kind_any]
        backend.save(SAMPLES[self.kind_any], f"ext/plain{suffix}")
        backend.save(SAMPLES[self.kind_any], f"ext/double.ome{suffix}")
        assert backend.list_files("ext", extensions={suffix}) == [f"ext/double.ome{suffix}", f"ext/plain{suffix}"]
        assert backend.list_files("ext", extensions={f".ome{suffix}"}) == [f"ext/double.ome{suffix}"]
        assert backend.list_files("ext", extensions={".nothing"}) == []

    def test_list_files_of_missing_directory_raises(self, backend: StorageBackend) -> None:
        with pytest.raises(FileNotFoundError):
            backend.list_files("no_such_dir")

    def test_list_files_of_a_file_raises_not_a_directory(self, backend: StorageBackend) -> None:
        path = self.path("lonely")
        backend.save(SAMPLES[self.kind_any], path)
        with pytest.raises(NotADirectoryError):
            backend.list_files(path)

    def test_list_dir_gives_sorted_entry_names(self, backend: StorageBackend) -> None:
        self._populate_listing(backend)
        assert backend.list_dir("listing") == sorted([self.path("a"), self.path("b"), "empty", "sub"])
        with pytest.raises(FileNotFoundError):
            backend.list_dir("no_such_dir")

    def _populate_numbered(self, backend: StorageBackend) -> None:
        for stem in ("img10", "img2", "img1", "img02", "run10/frame", "run2/frame"):
            backend.save(SAMPLES[self.kind_any], f"numbered/{self.path(stem)}")

    def test_list_files_natural_sort_orders_digit_runs_by_value(self, backend: StorageBackend) -> None:
        self._populate_numbered(backend)
        # Equal values spelled differently (img02, img2) keep their lexicographic order.
        images = [f"numbered/{self.path(stem)}" for stem in ("img1", "img02", "img2", "img10")]
        assert backend.list_files("numbered", sort="natural") == images
        runs = [f"numbered/{self.path(stem)}" for stem in ("run2/frame", "run10/frame")]
        assert backend.list_files("numbered", recursive=True, sort="natural") == images + runs

    def test_list_dir_natural_sort_orders_digit_runs_by_value(self, backend: StorageBackend) -> None:
        self._populate_numbered(backend)
        images = [self.path(stem) for stem in ("img1", "img02", "img2", "img10")]
        assert backend.list_dir("numbered", sort="natural") == [*images, "run2", "run10"]

    def test_listings_are_lexicographic_by_default(self, backend: StorageBackend) -> None:
        self._populate_numbered(backend)
        images = [f"numbered/{self.path(stem)}" for stem in ("img02", "img1", "img10", "img2")]
        assert backend.list_files("numbered") == backend.list_files("numbered", sort="lexicographic") == images
        entries = [self.path(stem) for stem in ("img02", "img1", "img10", "img2")] + ["run10", "run2"]
        assert backend.list_dir("numbered") == backend.list_dir("numbered", sort="lexicographic") == entries

    @pytest.mark.parametrize("listing", ["list_files", "list_dir"])
    def test_listing_with_an_unknown_sort_raises_value_error(self, backend: StorageBackend, listing: str) -> None:
        self._populate_numbered(backend)
        for sort in ("numeric", "Natural", None):
            with pytest.raises(ValueError, match=f"'lexicographic'.*'natural'.*not {sort!r}"):
                getattr(backend, listing)("numbered", sort=sort)

    # -- directories -----------------------------------------------------------
    def test_ensure_directory_creates_parents_and_is_idempotent(self, backend: StorageBackend) -> None:
        backend.ensure_directory("made/of/parts")
        backend.ensure_directory("made/of/parts")
        assert backend.is_dir("made/of/parts") and backend.is_dir("made")
        assert backend.list_dir("made/of/parts") == []

    def test_ensure_directory_on_a_file_raises_file_exists(self, backend: StorageBackend) -> None:
        path = self.path("occupied")
        backend.save(SAMPLES[self.kind_any], path)
        with pytest.raises(FileExistsError):
            backend.ensure_directory(path)

    # -- delete ----------------------------------------------------------------
    def test_delete_file_removes_it(self, backend: StorageBackend) -> None:
        path = self.path("doomed")
        backend.save(SAMPLES[self.kind_any], path)
        backend.delete(path)
        assert not backend.exists(path)

    def test_delete_missing_path_raises_file_not_found(self, backend: StorageBackend) -> None:
        with pytest.raises(FileNotFoundError):
            backend.delete(self.path("ghost"))

    def test_delete_empty_directory(self, backend: StorageBackend) -> None:
        backend.ensure_directory("vacant")
        backend.delete("vacant")
        assert not backend.exists("vacant")

    def test_delete_non_empty_directory_needs_recursive(self, backend: StorageBackend) -> None:
        path = self.path("full/obj")
        backend.save(SAMPLES[self.kind_any], path)
        with pytest.raises(OSError) as raised:
            backend.delete("full")
        assert raised.value.errno == errno.ENOTEMPTY
        assert_same_data(backend.load(path), SAMPLES[self.kind_any])
        backend.delete("full", recursive=True)
        assert not backend.exists("full") and not backend.exists(path)

    # -- copy and move -----------------------------------------------------------
    def test_copy_keeps_source_and_writes_destination(self, backend: StorageBackend) -> None:
        src, dst = self.path("copy/src"), self.path("copy/elsewhere/dst")
        backend.save(SAMPLES[self.kind_any], src)
        backend.copy(src, dst)
        assert_same_data(backend.load(src), SAMPLES[self.kind_any])
        assert_same_data(backend.load(dst), SAMPLES[self.kind_any])

    def test_copy_onto_existing_needs_overwrite(self, backend: StorageBackend) -> None:
        src, dst = self.path("copy2/src"), self.path("copy2/dst")
        backend.save(SAMPLES[self.kind_any], src)
        backend.save(OTHER_SAMPLES[self.kind_any], dst)
        with pytest.raises(FileExistsError):
            backend.copy(src, dst)
        assert_same_data(backend.load(dst), OTHER_SAMPLES[self.kind_any])
        backend.copy(src, dst, overwrite=True)
        assert_same_data(backend.load(dst), SAMPLES[self.kind_any])

    def test_move_removes_source(self, backend: StorageBackend) -> None:
        src, dst = self.path("move/src"), self.path("move/dst")
        backend.save(SAMPLES[self.kind_any], src)
        backend.move(src, dst)
        assert not backend.exists(src)
        assert_same_data(backend.load(dst), SAMPLES[self.kind_any])

    def test_move_onto_existing_needs_overwrite(self, backend: StorageBackend) -> None:
        src, dst = self.path("move2/src"), self.path("move2/dst")
        backend.save(SAMPLES[self.kind_any], src)
        backend.save(OTHER_SAMPLES[self.kind_any], dst)
        with pytest.raises(FileExistsError):
            backend.move(src, dst)
        assert_same_data(backend.load(src), SAMPLES[self.kind_any])
        backend.move(src, dst, overwrite=True)
        assert_same_data(backend.load(dst), SAMPLES[self.kind_any])
        assert not backend.exists(src)

    def test_copy_and_move_of_missing_source_raise_file_not_found(self, backend: StorageBackend) -> None:
        with pytest.raises(FileNotFoundError):
            backend.copy(self.path("absent"), self.path("target"))
        with pytest.raises(FileNotFoundError):
            backend.move(self.path("absent"), self.path("target"))
        assert not backend.exists(self.path("target"))

    # -- directory copy --------------------------------------------------------------
    def _populate_tree(self, backend: StorageBackend, root: str) -> dict[str, Any]:
        """A tree with nested files and an empty subdirectory; returns the files' data by relative path."""
        files = {
            self.path("top"): SAMPLES[self.kind_any],
            self.path("sub/middle"): OTHER_SAMPLES[self.kind_any],
            self.path("sub/deeper/bottom"): SAMPLES[self.kind_any],
        }
        for relative, data in files.items():
            backend.save(data, posixpath.join(root, relative))
        backend.ensure_directory(posixpath.join(root, "sub/empty"))
        return files

    def _relative_tree(self, backend: StorageBackend, root: str) -> tuple[list[str], list[str]]:
        """The files and the directories under ``root``, relative to it."""
        files = [path[len(root) + 1:] for path in backend.list_files(root, recursive=True)]
        directories, pending = [], [""]
        while pending:
            relative = pending.pop()
            for name in backend.list_dir(posixpath.join(root, relative)):
                child = posixpath.join(relative, name) if relative else name
                if backend.is_dir(posixpath.join(root, child)):
                    directories.append(child)
                    pending.append(child)
        return sorted(files), sorted(directories)

    def test_copy_recursive_copies_a_tree_whole_and_equal(self, backend: StorageBackend) -> None:
        files = self._populate_tree(backend, "tree_src")
        backend.copy("tree_src", "tree_dst", recursive=True)
        assert self._relative_tree(backend, "tree_dst") == self._relative_tree(backend, "tree_src")
        assert self._relative_tree(backend, "tree_dst")[0] == sorted(files)
        assert backend.is_dir("tree_dst/sub/empty") and backend.list_dir("tree_dst/sub/empty") == []
        for relative, data in files.items():
            assert_same_data(backend.load(posixpath.join("tree_dst", relative)), data)

    def test_copy_recursive_leaves_the_source_unchanged_and_independent(self, backend: StorageBackend) -> None:
        files = self._populate_tree(backend, "indep_src")
        before = self._relative_tree(backend, "indep_src")
        backend.copy("indep_src", "indep_dst", recursive=True)
        top = self.path("top")
        backend.save(OTHER_SAMPLES[self.kind_any], posixpath.join("indep_dst", top), overwrite=True)
        backend.delete("indep_dst/sub", recursive=True)
        assert self._relative_tree(backend, "indep_src") == before
        for relative, data in files.items():
            assert_same_data(backend.load(posixpath.join("indep_src", relative)), data)

    def test_copy_recursive_onto_existing_without_overwrite_raises_and_changes_nothing(
        self, backend: StorageBackend
    ) -> None:
        self._populate_tree(backend, "busy_src")
        kept = self.path("kept")
        backend.save(OTHER_SAMPLES[self.kind_any], posixpath.join("busy_dst", kept))
        with pytest.raises(FileExistsError):
            backend.copy("busy_src", "busy_dst", recursive=True)
        assert self._relative_tree(backend, "busy_dst") == ([kept], [])
        assert_same_data(backend.load(posixpath.join("busy_dst", kept)), OTHER_SAMPLES[self.kind_any])

    def test_copy_recursive_with_overwrite_replaces_same_paths_and_keeps_others(self, backend: StorageBackend) -> None:
        files = self._populate_tree(backend, "over_src")
        top, kept = self.path("top"), self.path("kept")
        backend.save(OTHER_SAMPLES[self.kind_any], posixpath.join("over_dst", top))
        backend.save(OTHER_SAMPLES[self.kind_any], posixpath.join("over_dst", kept))
        backend.copy("over_src", "over_dst", overwrite=True, recursive=True)
        for relative, data in files.items():
            assert_same_data(backend.load(posixpath.join("over_dst", relative)), data)
        assert_same_data(backend.load(posixpath.join("over_dst", kept)), OTHER_SAMPLES[self.kind_any])

    def test_copy_recursive_into_its_own_subtree_is_refused(self, backend: StorageBackend) -> None:
        self._populate_tree(backend, "self_src")
        before = self._relative_tree(backend, "self_src")
        with pytest.raises(ValueError, match="subtree"):
            backend.copy("self_src", "self_src/sub/inside", recursive=True)
        assert self._relative_tree(backend, "self_src") == before

    def test_copy_of_a_directory_without_recursive_raises_is_a_directory(self, backend: StorageBackend) -> None:
        self._populate_tree(backend, "plain_src")
        with pytest.raises(IsADirectoryError, match="recursive=True"):
            backend.copy("plain_src", "plain_dst")
        assert not backend.exists("plain_dst")

    # -- concurrency ---------------------------------------------------------------
    def test_racing_exclusive_saves_have_exactly_one_winner(self, backend: StorageBackend) -> None:
        path = self.path("race/target")
        outcomes: list[str] = []
        start = threading.Barrier(8)

        def writer(index: int) -> None:
            data = np.full((64, 64), index, dtype=np.int32) if self.kind_any == "array" else SAMPLES[self.kind_any]
            start.wait()
            try:
                backend.save(data, path)
                outcomes.append(f"won:{index}")
            except FileExistsError:
                outcomes.append("lost")

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [outcome for outcome in outcomes if outcome.startswith("won")]
        assert len(winners) == 1 and outcomes.count("lost") == 7
        if self.kind_any == "array":
            winner = int(winners[0].split(":")[1])
            assert_same_data(backend.load(path), np.full((64, 64), winner, dtype=np.int32))


class ReadOnlyBackendTests:
    """The contract for read-only backends: reads work, every write raises :class:`ReadOnlyError`.

    Override ``backend`` and ``contents`` (the files, by path, that the
    backend holds) in the subclass.
    """

    @pytest.fixture
    def backend(self) -> StorageBackend:
        """Override: return the read-only backend under test."""
        raise NotImplementedError("subclasses of ReadOnlyBackendTests override the 'backend' fixture")

    @pytest.fixture
    def contents(self) -> dict[str, Any]:
        """Override: the objects the backend serves, by path (at least one)."""
        raise NotImplementedError("subclasses of ReadOnlyBackendTests override the 'contents' fixture")

    def test_backend_declares_itself_read_only(self, backend: StorageBackend) -> None:
        assert backend.supports_writes is False

    def test_load_returns_the_contents(self, backend: StorageBackend, contents: dict[str, Any]) -> None:
        for path, expected in contents.items():
            assert backend.is_file(path)
            assert_same_data(backend.load(path), expected)

    def test_load_missing_raises_file_not_found(self, backend: StorageBackend) -> None:
        with pytest.raises(FileNotFoundError):
            backend.load("never/there.bin")

    @pytest.mark.parametrize(
        "write",
        [
            lambda b, p: b.save(b"x", p),
            lambda b, p: b.save(b"x", p, overwrite=True),
            lambda b, p: b.save_batch([b"x"], [p]),
            lambda b, p: b.delete(p),
            lambda b, p: b.copy(p, p + ".copy"),
            lambda b, p: b.move(p, p + ".moved"),
            lambda b, p: b.ensure_directory(p + ".dir"),
        ],
        ids=["save", "save-overwrite", "save_batch", "delete", "copy", "move", "ensure_directory"],
    )
    def test_every_write_raises_read_only_and_changes_nothing(
        self, backend: StorageBackend, contents: dict[str, Any], write: Any
    ) -> None:
        path, expected = next(iter(contents.items()))
        with pytest.raises(ReadOnlyError, match="read-only"):
            write(backend, path)
        assert_same_data(backend.load(path), expected)

    def test_listings_take_sort_and_refuse_an_unknown_one(
        self, backend: StorageBackend, contents: dict[str, Any]
    ) -> None:
        directory = posixpath.dirname(next(iter(contents))) or "/"
        files, entries = backend.list_files(directory), backend.list_dir(directory)
        assert backend.list_files(directory, sort="natural") == sorted(files, key=natural_key)
        assert backend.list_dir(directory, sort="natural") == sorted(entries, key=natural_key)
        with pytest.raises(ValueError, match="'numeric'"):
            backend.list_dir(directory, sort="numeric")
