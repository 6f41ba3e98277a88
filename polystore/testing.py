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
import pathlib
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pytest

from polystore.backend import StorageBackend
from polystore.errors import InvalidPathError, ReadOnlyError, UnsupportedFormatError

__all__ = ["SAMPLES", "BackendTests", "ReadOnlyBackendTests", "assert_same_data"]

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


class BackendTests:
    """The storage contract, run against the backend the ``backend`` fixture returns.

    Attributes
    ----------
    suffixes
        The kinds of data the backend stores, each with the path suffix used
        for it. A backend that stores arrays only (zarr) sets
        ``{"array": ".zarr"}``; the kit then checks that the other kinds are
        refused with :class:`UnsupportedFormatError`.
    """

    suffixes: ClassVar[Mapping[str, str]] = {"array": ".npy", "bytes": ".bin", "str": ".txt", "dict": ".json"}

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
