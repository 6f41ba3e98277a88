"""The disk backend: the conformance kit plus what only disk promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from polystore import DiskBackend, InvalidPathError, UnsupportedFormatError
from polystore.backends.disk import TEMP_PREFIX
from polystore.testing import BackendTests, assert_same_data


class TestDiskConformance(BackendTests):
    array_suffixes = (".npy", ".tif", ".TIFF")

    @pytest.fixture
    def backend(self, tmp_path: Path) -> DiskBackend:
        return DiskBackend(root=tmp_path)


@pytest.fixture
def disk(tmp_path: Path) -> DiskBackend:
    return DiskBackend(root=tmp_path / "root")


@pytest.fixture
def root(disk: DiskBackend) -> Path:
    assert disk.root is not None
    return disk.root


def all_files(directory: Path) -> list[str]:
    """Every file under ``directory``, temporary ones included."""
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file())


# -- formats ---------------------------------------------------------------
ARRAYS = {
    "float32-2d": np.arange(12, dtype=np.float32).reshape(3, 4),
    "big-endian": np.arange(5, dtype=">i4"),
    "fortran-order": np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
    "non-contiguous": np.arange(40, dtype=np.float64).reshape(5, 8)[::2, 1::3],
    "zero-dimensional": np.array(3.5),
    "empty": np.zeros((0, 4), dtype=np.uint8),
    "bool": np.array([True, False, True]),
    "complex128": np.array([1 + 2j, -3j]),
    "datetime64": np.array(["2026-01-01", "2026-11-26"], dtype="datetime64[D]"),
    "fixed-width-str": np.array(["a", "polystore"]),
    "structured": np.array([(1, 2.0)], dtype=[("id", "<i8"), ("value", "<f4")]),
    "large (numpy's writer)": np.arange(3 << 20, dtype=np.float32),
}


@pytest.mark.parametrize("array", ARRAYS.values(), ids=ARRAYS.keys())
def test_npy_round_trips_dtype_shape_and_values(disk: DiskBackend, array: np.ndarray) -> None:
    disk.save(array, "a.npy")
    assert_same_data(disk.load("a.npy"), array)


def test_npy_files_are_plain_numpy_files(disk: DiskBackend, root: Path) -> None:
    array = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    disk.save(array, "a.npy")
    assert_same_data(np.load(root / "a.npy"), array)


def test_a_numpy_scalar_is_saved_as_a_zero_dimensional_array(disk: DiskBackend) -> None:
    disk.save(np.float32(2.5), "scalar.npy")
    assert_same_data(disk.load("scalar.npy"), np.array(2.5, dtype=np.float32))


def test_suffixes_are_case_insensitive(disk: DiskBackend, root: Path) -> None:
    disk.save(np.arange(3), "UPPER.NPY")
    assert_same_data(np.load(root / "UPPER.NPY"), np.arange(3))
    assert_same_data(disk.load("UPPER.NPY"), np.arange(3))


def test_npz_round_trips_a_dict_of_arrays(disk: DiskBackend) -> None:
    # "file" and "allow_pickle" would collide with np.savez's own arguments.
    arrays = {"image": np.ones((4, 4), dtype=np.uint16), "file": np.arange(3), "allow_pickle": np.array(1.5)}
    disk.save(arrays, "bundle.npz")
    loaded = disk.load("bundle.npz")
    assert type(loaded) is dict and sorted(loaded) == sorted(arrays)
    for key, array in arrays.items():
        assert_same_data(loaded[key], array)


def test_npz_load_reads_everything_and_closes_the_file(disk: DiskBackend, root: Path) -> None:
    disk.save({"a": np.arange(4)}, "bundle.npz")
    loaded = disk.load("bundle.npz")
    open_files = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    assert str(root / "bundle.npz") not in open_files
    os.unlink(root / "bundle.npz")
    assert_same_data(loaded["a"], np.arange(4))


@pytest.mark.parametrize(
    "data", [{"a": [1, 2.5, None], "b": {"c": "\u00e9"}}, [1, "two", {"three": 3}]], ids=["dict", "list"]
)
def test_json_round_trips_dicts_and_lists(disk: DiskBackend, root: Path, data: Any) -> None:
    disk.save(data, "meta.json")
    assert disk.load("meta.json") == data
    assert json.loads((root / "meta.json").read_text(encoding="utf-8")) == data


def test_txt_round_trips_unicode_and_line_endings_exactly(disk: DiskBackend) -> None:
    text = "line one\r\nline two\n\u00e9\u4e2d\n"
    disk.save(text, "notes.txt")
    assert disk.load("notes.txt") == text


@pytest.mark.parametrize(
    "data",
    [b"\x00raw\xff", bytearray(b"mutable"), memoryview(b"viewed"), memoryview(b"0123456789")[::2]],
    ids=["bytes", "bytearray", "memoryview", "strided-memoryview"],
)
def test_other_suffixes_round_trip_raw_bytes(disk: DiskBackend, data: Any) -> None:
    disk.save(data, "blob.bin")
    assert disk.load("blob.bin") == bytes(data)
    disk.save(data, "no_suffix")
    assert disk.load("no_suffix") == bytes(data)


@pytest.mark.parametrize("name", ["image.tif", "image.TIFF", "image.ome.tif"])
def test_tiff_round_trips_through_tifffile(disk: DiskBackend, root: Path, name: str) -> None:
    import tifffile

    image = np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 16, 16)
    disk.save(image, name)
    assert_same_data(disk.load(name), image)
    assert_same_data(tifffile.imread(root / name), image)


def test_tiff_options_reach_tifffile(disk: DiskBackend) -> None:
    image = np.zeros((64, 64), dtype=np.uint8)
    disk.save(image, "plain.tif")
    disk.save(image, "packed.tif", compression="zlib")
    assert disk.stat("packed.tif")["size"] < disk.stat("plain.tif")["size"]
    assert_same_data(disk.load("packed.tif", key=0), image)


def test_tiff_without_tifffile_raises_import_error_with_install_hint(tmp_path: Path) -> None:
    code = f"""
        import sys
        sys.modules["tifffile"] = None  # as if it were not installed
        import numpy as np
        from polystore import DiskBackend
        disk = DiskBackend(root={str(tmp_path)!r})
        try:
            disk.save(np.zeros((2, 2), dtype=np.uint8), "a.tif")
        except ImportError as error:
            print(error)
        print(sorted(p.name for p in disk.root.iterdir()))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pip install polystore[tiff]" in result.stdout
    assert result.stdout.strip().endswith("[]")


# -- bad input ---------------------------------------------------------------
MISFITS = {
    "str to .npy": ("text", "a.npy"),
    "list to .npy": ([1, 2, 3], "a.npy"),
    "python int to .npy": (5, "a.npy"),
    "array to .bin": (np.arange(3), "a.bin"),
    "dict to .txt": ({"a": 1}, "a.txt"),
    "bytes to .json": (b"{}", "a.json"),
    "str to .json": ("{}", "a.json"),
    "array to .npz": (np.arange(3), "a.npz"),
    "non-str key to .npz": ({1: np.arange(3)}, "a.npz"),
    "list value to .npz": ({"a": [1, 2]}, "a.npz"),
    "list to .tif": ([[1, 2]], "a.tif"),
    "set to .json": ({1, 2}, "a.json"),
    "unserializable value to .json": ({"a": np.arange(3)}, "a.json"),
}


@pytest.mark.parametrize(("data", "name"), MISFITS.values(), ids=MISFITS.keys())
def test_data_that_does_not_fit_the_suffix_is_refused_before_any_io(
    disk: DiskBackend, tmp_path: Path, data: Any, name: str
) -> None:
    with pytest.raises(UnsupportedFormatError, match=name):
        disk.save(data, f"sub/{name}")
    assert not (tmp_path / "root").exists()


def test_an_object_array_is_refused_before_anything_is_written(disk: DiskBackend, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormatError, match="object array"):
        disk.save(np.array([{"a": 1}, None], dtype=object), "sub/objects.npy")
    assert not (tmp_path / "root").exists()


def test_an_object_array_inside_an_npz_dict_is_refused(disk: DiskBackend, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormatError, match="object array"):
        disk.save({"ok": np.arange(2), "bad": np.array([None], dtype=object)}, "bundle.npz")
    assert not (tmp_path / "root").exists()


def test_save_batch_checks_every_item_before_writing_any(disk: DiskBackend, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormatError, match="c.npy"):
        disk.save_batch([np.arange(2), np.arange(2), "not an array"], ["a.npy", "b.npy", "c.npy"])
    assert not (tmp_path / "root").exists()


def test_unknown_save_option_raises_type_error(disk: DiskBackend) -> None:
    with pytest.raises(TypeError, match="compression"):
        disk.save(np.arange(3), "a.npy", compression="zlib")


def test_unknown_load_option_raises_type_error(disk: DiskBackend) -> None:
    disk.save(np.arange(3), "a.npy")
    with pytest.raises(TypeError, match="mmap_mode"):
        disk.load("a.npy", mmap_mode="r")


def test_loading_text_from_an_npy_path_raises_value_error_naming_the_file(disk: DiskBackend, root: Path) -> None:
    disk.save("this is not an array", "fake.txt")
    os.rename(root / "fake.txt", root / "fake.npy")
    with pytest.raises(ValueError, match="fake.npy"):
        disk.load("fake.npy")


def test_loading_a_truncated_npy_raises_value_error_naming_the_file(disk: DiskBackend, root: Path) -> None:
    disk.save(np.arange(1000, dtype=np.float64), "cut.npy")
    with open(root / "cut.npy", "r+b") as stream:
        stream.truncate(os.path.getsize(root / "cut.npy") - 100)
    with pytest.raises(ValueError, match=r"cut\.npy.*truncated"):
        disk.load("cut.npy")


@pytest.mark.parametrize(
    "content",
    [b"", os.urandom(4096), b"\x93NUMPY\x01\x00" + os.urandom(200), b"\x93NUMPY\x01\x00\x10\x00{'descr': 'zz'}     \n"],
    ids=["empty", "random", "random-after-magic", "bad-header"],
)
def test_loading_a_garbage_npy_raises_value_error_naming_the_file(
    disk: DiskBackend, root: Path, content: bytes
) -> None:
    root.mkdir()
    (root / "garbage.npy").write_bytes(content)
    with pytest.raises(ValueError, match="garbage.npy"):
        disk.load("garbage.npy")


def test_loading_an_npy_holding_pickled_objects_is_refused(disk: DiskBackend, root: Path) -> None:
    root.mkdir()
    np.save(root / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled"):
        disk.load("pickled.npy")


@pytest.mark.parametrize(
    ("name", "content"),
    [("bad.json", b"{not json"), ("bad.txt", b"\xff\xfe\xfa"), ("bad.npz", b"not a zip"), ("bad.tif", b"not a tiff")],
)
def test_loading_a_corrupt_file_raises_value_error_naming_it(
    disk: DiskBackend, root: Path, name: str, content: bytes
) -> None:
    root.mkdir()
    (root / name).write_bytes(content)
    with pytest.raises(ValueError, match=name):
        disk.load(name)


# -- confinement ---------------------------------------------------------------
@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A directory outside the root that must stay empty; a symlink in the root points to it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(outside)
    return outside


ESCAPES = {
    "dotdot": "../x.npy",
    "dotdot-after-a-name": "a/../../x.npy",
    "absolute-outside": "{outside}/x.npy",
    "absolute-sibling-prefix": "{outside}/../root-sibling/x.npy",
    "through-symlinked-dir": "link/x.npy",
    "nul-byte": "a\x00b.npy",
}

OPERATIONS = {
    "save": lambda disk, path: disk.save(np.arange(3), path),
    "save_batch": lambda disk, path: disk.save_batch([np.arange(3)], [path]),
    "load": lambda disk, path: disk.load(path),
    "load_batch": lambda disk, path: disk.load_batch([path]),
    "exists": lambda disk, path: disk.exists(path),
    "is_file": lambda disk, path: disk.is_file(path),
    "stat": lambda disk, path: disk.stat(path),
    "ensure_directory": lambda disk, path: disk.ensure_directory(path),
    "list_files": lambda disk, path: disk.list_files(path),
    "delete": lambda disk, path: disk.delete(path),
    "copy-to": lambda disk, path: disk.copy("inside.npy", path),
    "move-to": lambda disk, path: disk.move("inside.npy", path),
}


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
@pytest.mark.parametrize("escape", ESCAPES.values(), ids=ESCAPES.keys())
def test_paths_escaping_the_root_are_refused_before_any_io(
    disk: DiskBackend, sentinel: Path, escape: str, operation: Any
) -> None:
    disk.save(np.arange(3), "inside.npy")
    with pytest.raises(InvalidPathError):
        operation(disk, escape.format(outside=sentinel))
    assert list(sentinel.iterdir()) == []
    assert not (sentinel.parent / "root-sibling").exists()
    assert_same_data(disk.load("inside.npy"), np.arange(3))


def test_a_symlinked_file_pointing_out_of_the_root_is_refused(disk: DiskBackend, root: Path, sentinel: Path) -> None:
    (sentinel / "secret.bin").write_bytes(b"secret")
    (root / "innocent.bin").symlink_to(sentinel / "secret.bin")
    with pytest.raises(InvalidPathError):
        disk.load("innocent.bin")
    with pytest.raises(InvalidPathError):
        disk.load_batch(["innocent.bin"])
    with pytest.raises(InvalidPathError):
        disk.save(b"overwritten", "innocent.bin", overwrite=True)
    assert (sentinel / "secret.bin").read_bytes() == b"secret"


def test_a_batch_refuses_a_symlink_out_even_after_a_safe_path_in_the_same_directory(
    disk: DiskBackend, root: Path, sentinel: Path
) -> None:
    (sentinel / "secret.bin").write_bytes(b"secret")
    (root / "innocent.bin").symlink_to(sentinel / "secret.bin")
    disk.save(b"fine", "fine.bin")
    with pytest.raises(InvalidPathError):
        disk.load_batch(["fine.bin", "innocent.bin"])


def test_a_batch_with_the_root_itself_refuses_a_sibling_of_the_root(disk: DiskBackend, sentinel: Path) -> None:
    with pytest.raises(InvalidPathError):
        disk.load_batch([".", str(sentinel)])


def test_absolute_paths_inside_the_root_are_accepted(disk: DiskBackend, root: Path) -> None:
    disk.save(np.arange(3), str(root / "abs.npy"))
    assert_same_data(disk.load("abs.npy"), np.arange(3))


def test_symlinks_that_stay_inside_the_root_are_followed(disk: DiskBackend, root: Path) -> None:
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real")
    disk.save(np.arange(3), "alias/a.npy")
    assert_same_data(disk.load("real/a.npy"), np.arange(3))


def test_the_root_is_resolved_through_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    disk = DiskBackend(root=tmp_path / "alias")
    assert disk.root == tmp_path.resolve() / "real"
    disk.save(b"x", "a.bin")
    assert (tmp_path / "real" / "a.bin").read_bytes() == b"x"


def test_without_a_root_relative_paths_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    disk = DiskBackend()
    disk.save(np.arange(3), "rel/a.npy")
    assert_same_data(np.load(tmp_path / "rel" / "a.npy"), np.arange(3))
    assert disk.list_files("rel") == ["rel/a.npy"]


def test_the_root_directory_itself_cannot_be_deleted(disk: DiskBackend, root: Path) -> None:
    disk.ensure_directory(".")
    with pytest.raises(IsADirectoryError, match="root"):
        disk.delete(".", recursive=True)
    assert root.is_dir()


# -- atomic writes and temporary files -------------------------------------------
def test_a_refused_save_leaves_the_old_file_and_no_temporary_file(disk: DiskBackend, root: Path) -> None:
    disk.save(np.arange(3), "a.npy")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        disk.save(np.zeros(3), "a.npy")
    assert_same_data(disk.load("a.npy"), np.arange(3))
    assert all_files(root) == ["a.npy"]


def test_a_failed_write_removes_its_temporary_file(disk: DiskBackend, root: Path) -> None:
    disk.ensure_directory(".")
    with pytest.raises(ValueError):
        disk.save(np.zeros((2, 2), dtype=np.complex128), "bad.tif", photometric="rgb")
    assert all_files(root) == []


def test_an_exclusive_save_onto_a_directory_raises_is_a_directory(disk: DiskBackend, root: Path) -> None:
    disk.ensure_directory("taken.npy")
    with pytest.raises(IsADirectoryError):
        disk.save(np.arange(3), "taken.npy")
    assert all_files(root) == []


def test_listings_never_show_temporary_files(disk: DiskBackend, root: Path) -> None:
    disk.save(np.arange(3), "dir/a.npy")
    (root / "dir" / f"{TEMP_PREFIX}0123-a.npy").write_bytes(b"half")
    (root / "dir" / "sub").mkdir()
    (root / "dir" / "sub" / f"{TEMP_PREFIX}4567-b.npy").write_bytes(b"half")
    assert disk.list_files("dir", recursive=True) == ["dir/a.npy"]
    assert disk.list_dir("dir") == ["a.npy", "sub"]
    assert disk.list_dir("dir/sub") == []


def test_temporary_file_names_are_reserved(disk: DiskBackend) -> None:
    with pytest.raises(InvalidPathError, match="reserved"):
        disk.save(b"x", f"{TEMP_PREFIX}mine.bin")
    with pytest.raises(InvalidPathError, match="reserved"):
        disk.exists(f"dir/{TEMP_PREFIX}mine.bin")


def test_cleanup_removes_leftover_temporary_files_and_nothing_else(disk: DiskBackend, root: Path) -> None:
    disk.save(np.arange(3), "a/b/keep.npy")
    leftovers = [root / "a" / f"{TEMP_PREFIX}1-x.npy", root / "a" / "b" / f"{TEMP_PREFIX}2-y.npy"]
    for leftover in leftovers:
        leftover.write_bytes(b"torn")
    assert disk.cleanup() == sorted(str(leftover) for leftover in leftovers)
    assert all_files(root) == ["a/b/keep.npy"]


def test_cleanup_of_a_directory_stays_in_it(disk: DiskBackend, root: Path) -> None:
    disk.ensure_directory("a")
    disk.ensure_directory("b")
    (root / "a" / f"{TEMP_PREFIX}1-x.npy").write_bytes(b"torn")
    (root / "b" / f"{TEMP_PREFIX}2-y.npy").write_bytes(b"torn")
    assert disk.cleanup("a") == [str(root / "a" / f"{TEMP_PREFIX}1-x.npy")]
    assert all_files(root) == [f"b/{TEMP_PREFIX}2-y.npy"]


def test_cleanup_older_than_spares_recent_temporary_files(disk: DiskBackend, root: Path) -> None:
    disk.ensure_directory(".")
    old, recent = root / f"{TEMP_PREFIX}1-old.npy", root / f"{TEMP_PREFIX}2-new.npy"
    old.write_bytes(b"torn")
    recent.write_bytes(b"in progress")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert disk.cleanup(older_than=600) == [str(old)]
    assert recent.exists()


def test_cleanup_without_a_root_needs_a_directory() -> None:
    with pytest.raises(TypeError, match="directory"):
        DiskBackend().cleanup()


def test_deleting_a_directory_holding_only_temporary_files_says_so(disk: DiskBackend, root: Path) -> None:
    disk.ensure_directory("d")
    (root / "d" / f"{TEMP_PREFIX}1-x.npy").write_bytes(b"torn")
    with pytest.raises(OSError, match="cleanup"):
        disk.delete("d")


def test_fsync_mode_writes_the_same_files(tmp_path: Path) -> None:
    disk = DiskBackend(root=tmp_path, fsync=True)
    disk.save(np.arange(3), "a/b.npy")
    disk.save(np.arange(4), "a/b.npy", overwrite=True)
    disk.copy("a/b.npy", "c.npy")
    assert_same_data(disk.load("c.npy"), np.arange(4))
    assert all_files(tmp_path) == ["a/b.npy", "c.npy"]


# -- other operations ----------------------------------------------------------------
def test_stat_reports_type_size_and_mtime(disk: DiskBackend, root: Path) -> None:
    before = time.time()
    disk.save(b"12345", "five.bin")
    info = disk.stat("five.bin")
    assert info["type"] == "file" and info["size"] == 5
    assert before - 2 <= info["mtime"] <= time.time() + 2
    assert disk.stat(".")["type"] == "directory"


def test_list_files_joins_results_to_the_directory_as_given(disk: DiskBackend, root: Path) -> None:
    disk.save(b"x", "d/sub/a.bin")
    assert disk.list_files(Path("d"), recursive=True) == ["d/sub/a.bin"]
    assert disk.list_files(str(root / "d"), recursive=True) == [f"{root}/d/sub/a.bin"]


def test_list_files_does_not_walk_into_symlinked_directories(disk: DiskBackend, root: Path) -> None:
    disk.save(b"x", "real/a.bin")
    (root / "mirror").symlink_to(root / "real")
    assert disk.list_files(".", recursive=True) == ["./real/a.bin"]


def test_move_across_filesystems_copies_then_removes_the_source(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        pytest.skip("needs a writable /dev/shm directory to move to; there is none here")
    if os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than tmp_path; here both are on one filesystem")
    target = shm / f"polystore-test-{os.getpid()}-{time.monotonic_ns()}.npy"
    disk = DiskBackend()
    disk.save(np.arange(3), tmp_path / "a.npy")
    try:
        disk.move(tmp_path / "a.npy", target)
        assert_same_data(np.load(target), np.arange(3))
        assert not (tmp_path / "a.npy").exists()
    finally:
        target.unlink(missing_ok=True)


def test_move_of_a_directory_raises_is_a_directory(disk: DiskBackend) -> None:
    disk.ensure_directory("d")
    with pytest.raises(IsADirectoryError):
        disk.move("d", "e")
    with pytest.raises(IsADirectoryError):
        disk.copy("d", "e")


def test_repr_names_root_and_fsync(disk: DiskBackend, root: Path) -> None:
    assert repr(disk) == f"DiskBackend(root={str(root)!r}, fsync=False)"
