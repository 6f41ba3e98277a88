"""The memory backend: the conformance kit plus what only memory promises."""

from __future__ import annotations

import numpy as np
import pytest

from polystore import MemoryBackend
from polystore.testing import BackendTests


class TestMemoryConformance(BackendTests):
    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend()


def test_save_stores_a_copy_so_caller_mutation_does_not_leak() -> None:
    backend = MemoryBackend()
    data = np.zeros(5)
    backend.save(data, "a.npy")
    data[:] = 9
    np.testing.assert_array_equal(backend.load("a.npy"), np.zeros(5))


def test_save_with_copy_false_stores_the_callers_array() -> None:
    backend = MemoryBackend()
    data = np.zeros(5)
    backend.save(data, "a.npy", copy=False)
    assert np.shares_memory(backend.load("a.npy"), data)


def test_a_copy_of_an_array_saved_with_copy_false_is_independent_of_the_callers_buffer() -> None:
    backend = MemoryBackend()
    data = np.zeros(5)
    backend.save(data, "borrowed.npy", copy=False)
    backend.copy("borrowed.npy", "copied.npy")
    data[0] = 42
    np.testing.assert_array_equal(backend.load("copied.npy"), np.zeros(5))
    assert backend.load("borrowed.npy")[0] == 42  # copy=False keeps the caller's array, as asked


def test_a_moved_array_saved_with_copy_false_still_shares_the_callers_buffer_and_its_copies_do_not() -> None:
    backend = MemoryBackend()
    data = np.zeros(3)
    backend.save(data, "first.npy", copy=False)
    backend.move("first.npy", "second.npy")
    backend.copy("second.npy", "third.npy")
    data[1] = 7
    assert backend.load("second.npy")[1] == 7
    np.testing.assert_array_equal(backend.load("third.npy"), np.zeros(3))


def test_an_array_overwritten_with_a_copy_is_no_longer_borrowed() -> None:
    backend = MemoryBackend()
    caller = np.zeros(3)
    backend.save(caller, "a.npy", copy=False)
    backend.save(np.ones(3), "a.npy", overwrite=True)
    backend.copy("a.npy", "b.npy")
    assert np.shares_memory(backend.load("a.npy"), backend.load("b.npy"))  # owned: copies share it, read-only


def test_load_returns_a_read_only_zero_copy_view() -> None:
    backend = MemoryBackend()
    backend.save(np.arange(4), "a.npy")
    first, second = backend.load("a.npy"), backend.load("a.npy")
    assert np.shares_memory(first, second)
    with pytest.raises(ValueError, match="read-only"):
        first[0] = 100
    assert first.copy().flags.writeable


def test_loaded_dicts_are_independent_copies() -> None:
    backend = MemoryBackend()
    backend.save({"a": [1]}, "meta")
    backend.load("meta")["a"].append(2)
    assert backend.load("meta") == {"a": [1]}


def test_leading_slash_and_redundant_parts_name_the_same_object() -> None:
    backend = MemoryBackend()
    backend.save(b"x", "/a//b/./c.bin")
    assert backend.load("a/b/c.bin") == b"x"
    assert backend.list_dir("/") == ["a"]


def test_dotdot_above_the_root_is_refused() -> None:
    from polystore import InvalidPathError

    backend = MemoryBackend()
    with pytest.raises(InvalidPathError, match="climbs above"):
        backend.save(b"x", "../escape.bin")
    backend.save(b"x", "a/../inside.bin")
    assert backend.load("inside.bin") == b"x"


def test_object_arrays_are_refused() -> None:
    from polystore import UnsupportedFormatError

    backend = MemoryBackend()
    with pytest.raises(UnsupportedFormatError, match="object array"):
        backend.save(np.array([object()]), "o.npy")
    assert not backend.exists("o.npy")


def test_two_instances_do_not_share_objects() -> None:
    first, second = MemoryBackend(), MemoryBackend()
    first.save(b"x", "a.bin")
    assert not second.exists("a.bin")


def test_threads_doing_mixed_operations_lose_nothing_and_never_read_partial_objects() -> None:
    import threading

    backend = MemoryBackend()
    shared = "shared/value.npy"
    backend.save(np.full(1000, -1.0), shared)
    errors: list[str] = []

    def work(thread: int) -> None:
        for step in range(500):
            own = f"t{thread}/item{step % 7}.npy"
            value = np.full(1000, thread * 1000 + step, dtype=np.float64)
            backend.save(value, own, overwrite=True)
            if not np.array_equal(backend.load(own), value):
                errors.append(f"{own} lost its value at step {step}")
            backend.save(value, shared, overwrite=True)
            seen = backend.load(shared)
            if np.unique(seen).size != 1:
                errors.append("a torn object was read")
            if not backend.exists(own):
                errors.append(f"{own} vanished")
            if step % 7 == 6:
                backend.delete(own)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(backend.list_dir("/")) == ["shared"] + [f"t{i}" for i in range(8)]


# The fast paths of save and load (a path saved before has its key remembered; the lock is
# taken without `with`; plain arrays skip the general checks) keep every rule of the slow ones.


def test_options_are_refused_on_a_path_saved_before() -> None:
    from polystore import FileManager

    fm = FileManager()
    fm.save(np.zeros(2), "/known/a.npy", "memory")
    with pytest.raises(TypeError, match="'/known/a.npy' got unexpected options \\['compression'\\]"):
        fm.save(np.ones(2), "/known/a.npy", "memory", overwrite=True, compression="zstd")
    with pytest.raises(TypeError, match="'/known/a.npy' got unexpected options \\['region'\\]"):
        fm.load("/known/a.npy", "memory", region=(slice(0, 1),))
    np.testing.assert_array_equal(fm.load("/known/a.npy", "memory"), np.zeros(2))


def test_a_path_saved_before_is_still_refused_without_overwrite_and_the_store_stays_usable() -> None:
    import threading

    backend = MemoryBackend()
    backend.save(np.zeros(2), "/b/12345")
    with pytest.raises(FileExistsError, match="overwrite=True") as raised:
        backend.save(np.ones(2), "/b/12345")
    assert raised.value.filename == "/b/12345"
    # The refused save let go of the lock: a save from another thread completes.
    other = threading.Thread(
        target=backend.save, args=(np.ones(2), "/b/12345"), kwargs={"overwrite": True}, daemon=True
    )
    other.start()
    other.join(timeout=10)
    assert not other.is_alive()
    np.testing.assert_array_equal(backend.load("b/12345"), np.ones(2))


def test_a_path_saved_before_is_refused_once_its_parent_became_a_file() -> None:
    backend = MemoryBackend()
    backend.save(b"x", "/b/c/d.bin")
    backend.delete("/b/c", recursive=True)
    backend.save(b"file", "/b/c")
    with pytest.raises(NotADirectoryError, match="'b/c' is a file"):
        backend.save(b"y", "/b/c/d.bin", overwrite=True)
    assert backend.load("/b/c") == b"file"


def test_a_path_saved_before_after_its_directory_was_deleted_recreates_the_directory() -> None:
    backend = MemoryBackend()
    backend.save(np.zeros(2), "/b/c/d.npy")
    backend.delete("/b", recursive=True)
    backend.save(np.ones(2), "/b/c/d.npy")
    assert backend.is_dir("b/c")
    assert backend.list_dir("/b") == ["c"]


def test_the_same_path_as_str_and_as_pathlike_names_one_object() -> None:
    from pathlib import PurePosixPath

    backend = MemoryBackend()
    backend.save(np.zeros(2), "/b/p.npy")
    backend.save(np.ones(2), PurePosixPath("/b/p.npy"), overwrite=True)
    np.testing.assert_array_equal(backend.load("/b/p.npy"), np.ones(2))
    np.testing.assert_array_equal(backend.load(PurePosixPath("b/p.npy")), np.ones(2))


def test_unhashable_paths_are_refused_with_a_type_error() -> None:
    backend = MemoryBackend()
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, not list"):
        backend.save(np.zeros(2), ["b", "c"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, not list"):
        backend.load(["b", "c"])  # type: ignore[arg-type]


def test_every_save_of_a_path_saved_before_stores_its_own_copy() -> None:
    backend = MemoryBackend()
    data = np.zeros(3)
    backend.save(data, "/b/1", overwrite=True)
    data[0] = 1
    backend.save(data, "/b/1", overwrite=True)
    data[0] = 2
    assert backend.load("/b/1")[0] == 1


def test_a_loaded_array_subclass_is_a_read_only_view_of_the_same_class() -> None:
    backend = MemoryBackend()
    backend.save(np.ma.masked_array([1.0, 2.0], mask=[False, True]), "/b/m.npy")
    first, second = backend.load("/b/m.npy"), backend.load("/b/m.npy")
    assert type(first) is np.ma.MaskedArray
    assert np.shares_memory(first, second)
    with pytest.raises(ValueError, match="read-only"):
        first[0] = 5.0
