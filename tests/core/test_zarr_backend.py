"""The zarr backend: the conformance kit plus what only zarr promises."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

from polystore import BackendRegistry, FileManager, InvalidPathError, UnsupportedFormatError, ZarrBackend
from polystore.backends.zarr.create import default_chunks
from polystore.testing import BackendTests

MiB = 2**20


class TestZarrConformance(BackendTests):
    suffixes = {"array": ".zarr"}

    @pytest.fixture
    def backend(self, tmp_path: Path) -> ZarrBackend:
        return ZarrBackend(root=tmp_path)


@pytest.fixture
def backend(tmp_path: Path) -> ZarrBackend:
    return ZarrBackend(root=tmp_path)


def sample(shape: tuple[int, ...] = (40, 30), dtype: str = "float32") -> np.ndarray:
    return np.arange(math.prod(shape), dtype=dtype).reshape(shape)


# -- registration and laziness ---------------------------------------------------
def test_import_polystore_does_not_import_zarr_yet_registry_lists_zarr() -> None:
    code = "import sys, polystore; print('zarr' in sys.modules, sorted(polystore.BackendRegistry()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split(" ", 1)[0] == "False"
    assert "'zarr'" in out


def test_file_manager_routes_to_the_zarr_backend(tmp_path: Path) -> None:
    fm = FileManager(BackendRegistry({"zarr": {"root": tmp_path}}))
    fm.save(sample(), "via/manager.zarr", "zarr", chunks=(8, 8))
    np.testing.assert_array_equal(fm.load("via/manager.zarr", "zarr"), sample())


# -- save: a standard zarr v3 array ----------------------------------------------
@pytest.mark.parametrize(
    ("compressor", "codec"),
    [("zstd", ZstdCodec), ("blosc-lz4", BloscCodec), ("gzip", GzipCodec), (None, None)],
)
def test_saved_array_is_plain_zarr_v3_with_the_chunks_and_codec_asked_for(
    backend: ZarrBackend, tmp_path: Path, compressor: str | None, codec: type | None
) -> None:
    data = sample()
    backend.save(data, "std.zarr", chunks=(16, 8), compressor=compressor)
    opened = zarr.open_array(tmp_path / "std.zarr", mode="r")
    assert opened.metadata.zarr_format == 3
    assert opened.chunks == (16, 8) and opened.shards is None
    if codec is None:
        assert opened.compressors == ()
    else:
        assert [type(c) for c in opened.compressors] == [codec]
    np.testing.assert_array_equal(opened[:], data)
    np.testing.assert_array_equal(da.from_zarr(str(tmp_path / "std.zarr")).compute(), data)


def test_zstd_is_zarr_default_level_and_blosc_uses_lz4_with_shuffle(backend: ZarrBackend, tmp_path: Path) -> None:
    backend.save(sample(), "z.zarr")
    backend.save(sample(), "b.zarr", compressor="blosc-lz4")
    assert zarr.open_array(tmp_path / "z.zarr").compressors[0].level == 0
    blosc = zarr.open_array(tmp_path / "b.zarr").compressors[0]
    assert (blosc.cname.value, blosc.shuffle.value) == ("lz4", "shuffle")


def test_shards_give_one_file_per_shard_and_read_back(backend: ZarrBackend, tmp_path: Path) -> None:
    data = sample((64, 64))
    backend.save(data, "sharded.zarr", chunks=(8, 8), shards=(32, 32))
    opened = zarr.open_array(tmp_path / "sharded.zarr")
    assert (opened.chunks, opened.shards) == ((8, 8), (32, 32))
    shard_files = [f for _, _, files in os.walk(tmp_path / "sharded.zarr" / "c") for f in files]
    assert len(shard_files) == 4
    np.testing.assert_array_equal(backend.load("sharded.zarr"), data)
    np.testing.assert_array_equal(da.from_zarr(str(tmp_path / "sharded.zarr")).compute(), data)


def test_shards_without_chunks_get_default_chunks_dividing_them(backend: ZarrBackend) -> None:
    backend.create_array("s.zarr", (6000, 6000), "float64", None, shards=(3000, 3000))
    info = backend.stat("s.zarr")
    assert info["shards"] == (3000, 3000)
    assert all(shard % chunk == 0 for shard, chunk in zip(info["shards"], info["chunks"], strict=True))
    assert MiB <= math.prod(info["chunks"]) * 8 <= 4 * MiB


def test_unknown_compressor_raises_value_error_listing_the_names_and_writes_nothing(backend: ZarrBackend) -> None:
    with pytest.raises(ValueError, match="'zstd', 'blosc-lz4', 'gzip' or None"):
        backend.save(sample(), "sub/bad.zarr", compressor="lzma")
    with pytest.raises(ValueError, match="lzma"):
        backend.create_array("sub/bad.zarr", (4,), "int8", None, compressor="lzma")
    assert backend.list_dir(".") == []


def test_attributes_are_stored_in_the_array_metadata(backend: ZarrBackend, tmp_path: Path) -> None:
    backend.save(sample(), "attrs.zarr", attributes={"units": "um", "scale": [1, 2]})
    assert dict(zarr.open_array(tmp_path / "attrs.zarr").attrs) == {"units": "um", "scale": [1, 2]}


@pytest.mark.parametrize(
    "data",
    [np.float64(2.5), np.zeros((0, 3), "int16"), np.arange(6, dtype="uint8")[::2], np.asfortranarray(sample())],
    ids=["0-d", "empty", "strided", "fortran"],
)
def test_unusual_arrays_round_trip(backend: ZarrBackend, data: np.ndarray) -> None:
    backend.save(data, "odd.zarr")
    loaded = backend.load("odd.zarr")
    assert isinstance(loaded, np.ndarray) and loaded.dtype == data.dtype and loaded.shape == np.shape(data)
    np.testing.assert_array_equal(loaded, data)


def test_array_likes_are_converted(backend: ZarrBackend) -> None:
    backend.save(da.from_array(sample(), chunks=(10, 10)), "from_dask.zarr")
    np.testing.assert_array_equal(backend.load("from_dask.zarr"), sample())


@pytest.mark.parametrize(
    "data",
    [b"bytes", "text", {"a": 1}, [1, 2], np.array([object()])],
    ids=["bytes", "str", "dict", "list", "object-array"],
)
def test_non_array_data_is_refused_naming_the_disk_backend(backend: ZarrBackend, data: object) -> None:
    with pytest.raises(UnsupportedFormatError, match="'disk'"):
        backend.save(data, "nope.zarr")
    assert not backend.exists("nope.zarr")


# -- default chunks ----------------------------------------------------------------
def test_default_chunks_examples() -> None:
    assert default_chunks((16384, 16384), "float32") == (1024, 1024)
    assert default_chunks((100, 512, 512), "float32") == (4, 512, 512)
    assert default_chunks((1000, 1000), "float64") == (500, 1000)
    assert default_chunks((10, 20), "float32") == (10, 20)
    assert default_chunks((), "float32") == ()
    assert default_chunks((0, 5), "int8") == (1, 5)


@settings(max_examples=300, deadline=None)
@given(
    shape=st.lists(st.integers(0, 70000), min_size=1, max_size=5).filter(lambda s: math.prod(s) < 2**40),
    dtype=st.sampled_from(["uint8", "int16", "float32", "float64", "complex128"]),
)
def test_default_chunks_hold_1_to_4_mib_or_the_whole_array(shape: list[int], dtype: str) -> None:
    chunks = default_chunks(shape, dtype)
    itemsize = np.dtype(dtype).itemsize
    assert len(chunks) == len(shape)
    assert all(1 <= chunk <= max(1, size) for chunk, size in zip(chunks, shape, strict=True))
    chunk_bytes = math.prod(chunks) * itemsize
    assert chunk_bytes <= 4 * MiB
    # Empty dimensions get chunks of 1, so count them as length 1.
    if math.prod(max(1, size) for size in shape) * itemsize >= 4 * MiB:
        assert chunk_bytes >= MiB
    else:
        assert chunks == tuple(max(1, size) for size in shape)


def test_save_without_chunks_uses_default_chunks(backend: ZarrBackend) -> None:
    backend.create_array("big.zarr", (16384, 16384), "float32", None)
    assert backend.stat("big.zarr")["chunks"] == (1024, 1024)
    backend.save(np.zeros((3000, 700), "float64"), "mid.zarr")
    assert backend.stat("mid.zarr")["chunks"] == default_chunks((3000, 700), "float64")


# -- load ------------------------------------------------------------------------------
def test_load_region_returns_that_slice(backend: ZarrBackend) -> None:
    data = sample((50, 40))
    backend.save(data, "r.zarr", chunks=(10, 10))
    for region in [(slice(5, 27), slice(0, 40)), (slice(None), slice(3, 4)), (7,), (slice(-5, None), 2), slice(0, 3)]:
        np.testing.assert_array_equal(backend.load("r.zarr", region=region), data[region])


def test_load_region_of_wrong_type_raises_type_error(backend: ZarrBackend) -> None:
    backend.save(sample(), "r.zarr")
    with pytest.raises(TypeError, match="region"):
        backend.load("r.zarr", region=([1, 2],))


# -- create_array and region writes ------------------------------------------------------
def test_create_array_is_filled_with_fill_value_and_returns_the_zarr_array(
    backend: ZarrBackend, tmp_path: Path
) -> None:
    created = backend.create_array("empty.zarr", (30, 20), "int32", (10, 10), fill_value=-1, attributes={"k": 1})
    assert isinstance(created, zarr.Array)
    assert Path(str(created.store.root)) == tmp_path / "empty.zarr"
    np.testing.assert_array_equal(backend.load("empty.zarr"), np.full((30, 20), -1, "int32"))
    assert dict(created.attrs) == {"k": 1}


def test_region_writes_fill_a_created_array(backend: ZarrBackend, tmp_path: Path) -> None:
    data = sample((30, 20), "int32")
    backend.create_array("blocks.zarr", data.shape, data.dtype, (10, 10))
    for i in range(0, 30, 10):
        for j in range(0, 20, 10):
            backend.save(data[i:i + 10, j:j + 10], "blocks.zarr", region=(slice(i, i + 10), slice(j, j + 10)))
    np.testing.assert_array_equal(backend.load("blocks.zarr"), data)
    np.testing.assert_array_equal(da.from_zarr(str(tmp_path / "blocks.zarr")).compute(), data)


def test_region_write_may_cast_within_a_kind_and_omit_trailing_dimensions(backend: ZarrBackend) -> None:
    backend.create_array("cast.zarr", (4, 6), "float32", (2, 6))
    backend.save(np.ones((2, 6), "float64"), "cast.zarr", region=(slice(2, 4),))
    expected = np.zeros((4, 6), "float32")
    expected[2:] = 1
    np.testing.assert_array_equal(backend.load("cast.zarr"), expected)


@pytest.mark.parametrize(
    ("block", "region", "error"),
    [
        (np.ones((10, 10), "int32"), (slice(25, 35), slice(0, 10)), ValueError),
        (np.ones((10, 10), "int32"), (slice(-10, None), slice(0, 10)), ValueError),
        (np.ones((10, 10), "int32"), (slice(0, 10), slice(0, 10), slice(0, 1)), ValueError),
        (np.ones((5, 10), "int32"), (slice(0, 10), slice(0, 10)), ValueError),
        (np.ones((10, 10), "float64"), (slice(0, 10), slice(0, 10)), TypeError),
        (np.ones((5, 10), "int32"), (slice(0, 10, 2), slice(0, 10)), TypeError),
        (np.ones((10, 10), "int32"), ([0, 1], slice(0, 10)), TypeError),
    ],
    ids=["past-the-end", "negative", "too-many-dims", "wrong-shape", "unsafe-dtype", "step", "fancy"],
)
def test_bad_region_write_raises_and_leaves_the_array_unchanged(
    backend: ZarrBackend, block: np.ndarray, region: tuple, error: type
) -> None:
    backend.create_array("guarded.zarr", (30, 20), "int32", (10, 10), fill_value=3)
    with pytest.raises(error):
        backend.save(block, "guarded.zarr", region=region)
    np.testing.assert_array_equal(backend.load("guarded.zarr"), np.full((30, 20), 3, "int32"))


def test_region_write_into_a_missing_array_raises_file_not_found_and_creates_nothing(backend: ZarrBackend) -> None:
    with pytest.raises(FileNotFoundError, match="absent.zarr"):
        backend.save(np.ones((2, 2)), "absent.zarr", region=(slice(0, 2), slice(0, 2)))
    assert backend.list_dir(".") == []


def test_region_write_refuses_creation_options(backend: ZarrBackend) -> None:
    backend.create_array("opts.zarr", (4, 4), "float64", (2, 2))
    with pytest.raises(TypeError, match="creating"):
        backend.save(np.ones((2, 2)), "opts.zarr", region=(slice(0, 2), slice(0, 2)), chunks=(2, 2))


def test_threads_writing_disjoint_chunk_aligned_regions_give_the_exact_array(backend: ZarrBackend) -> None:
    data = np.random.default_rng(1).random((64, 128), dtype="float32")
    backend.create_array("parallel.zarr", data.shape, data.dtype, (8, 16))
    blocks = [(slice(i, i + 8), slice(j, j + 16)) for i in range(0, 64, 8) for j in range(0, 128, 16)]
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(mine: list[tuple[slice, slice]]) -> None:
        start.wait()
        try:
            for region in mine:
                backend.save(data[region], "parallel.zarr", region=region)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(blocks[k::8],)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    np.testing.assert_array_equal(backend.load("parallel.zarr"), data)


# -- the tree: arrays are files ------------------------------------------------------------
def test_listings_show_arrays_never_chunk_files_or_metadata(backend: ZarrBackend, tmp_path: Path) -> None:
    backend.save(sample(), "d/a.zarr", chunks=(8, 8))
    backend.save(sample(), "d/sub/b.zarr")
    zarr.open_group(tmp_path / "d" / "group", mode="w").create_array("c", shape=(3,), dtype="int8")
    (tmp_path / "d" / ".polystore-tmp-left-behind").mkdir()
    assert backend.list_files("d") == ["d/a.zarr"]
    assert backend.list_files("d", recursive=True) == ["d/a.zarr", "d/group/c", "d/sub/b.zarr"]
    assert backend.list_dir("d") == ["a.zarr", "group", "sub"]
    assert backend.list_dir("d/group") == ["c"]
    assert backend.is_dir("d/group") and backend.is_file("d/group/c")
    np.testing.assert_array_equal(backend.load("d/group/c"), np.zeros(3, "int8"))


def test_paths_inside_an_array_do_not_exist_and_cannot_be_written(backend: ZarrBackend) -> None:
    backend.save(sample(), "a.zarr", chunks=(8, 8))
    for inner in ["a.zarr/zarr.json", "a.zarr/c", "a.zarr/c/0/0"]:
        assert (backend.exists(inner), backend.is_file(inner), backend.is_dir(inner)) == (False, False, False)
    with pytest.raises(NotADirectoryError):
        backend.save(sample(), "a.zarr/c/inner.zarr")
    with pytest.raises(NotADirectoryError):
        backend.ensure_directory("a.zarr/c/new")
    with pytest.raises(NotADirectoryError):
        backend.list_files("a.zarr")


def test_stat_of_an_array_gives_bytes_on_disk_and_its_layout(backend: ZarrBackend, tmp_path: Path) -> None:
    backend.save(sample((64, 64)), "s.zarr", chunks=(16, 32), compressor="gzip")
    on_disk = sum(f.stat().st_size for f in (tmp_path / "s.zarr").rglob("*") if f.is_file())
    info = backend.stat("s.zarr")
    assert info["type"] == "file" and info["size"] == on_disk
    assert (info["shape"], info["dtype"], info["chunks"], info["shards"], info["compressor"]) == (
        (64, 64), np.dtype("float32"), (16, 32), None, "gzip",
    )


def test_delete_of_an_array_removes_its_tree_without_recursive(backend: ZarrBackend, tmp_path: Path) -> None:
    backend.save(sample(), "gone.zarr", chunks=(8, 8))
    backend.delete("gone.zarr")
    assert not (tmp_path / "gone.zarr").exists()
    assert os.listdir(tmp_path) == []


def test_empty_zarr_group_directory_deletes_without_recursive(backend: ZarrBackend, tmp_path: Path) -> None:
    zarr.open_group(tmp_path / "grp", mode="w")
    assert backend.list_dir("grp") == []
    backend.delete("grp")
    assert not (tmp_path / "grp").exists()


def test_copy_is_an_independent_tree(backend: ZarrBackend) -> None:
    backend.save(sample((20, 20)), "src.zarr", chunks=(10, 10))
    backend.copy("src.zarr", "copies/dst.zarr")
    backend.save(np.zeros((10, 10), "float32"), "copies/dst.zarr", region=(slice(0, 10), slice(0, 10)))
    np.testing.assert_array_equal(backend.load("src.zarr"), sample((20, 20)))
    assert backend.load("copies/dst.zarr")[:10, :10].sum() == 0


def test_move_renames_and_overwrites_atomically(backend: ZarrBackend, tmp_path: Path) -> None:
    backend.save(sample(), "m1.zarr")
    backend.save(np.ones(3), "m2.zarr")
    backend.move("m1.zarr", "m2.zarr", overwrite=True)
    np.testing.assert_array_equal(backend.load("m2.zarr"), sample())
    assert sorted(os.listdir(tmp_path)) == ["m2.zarr"]


def test_directory_sources_and_foreign_files_are_refused(backend: ZarrBackend, tmp_path: Path) -> None:
    backend.ensure_directory("plain")
    (tmp_path / "notes.txt").write_text("not an array")
    with pytest.raises(IsADirectoryError):
        backend.copy("plain", "x.zarr")
    with pytest.raises(UnsupportedFormatError, match="'disk'"):
        backend.load("notes.txt")
    with pytest.raises(FileExistsError):
        backend.save(sample(), "notes.txt", overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "not an array"


# -- root confinement ------------------------------------------------------------------------
@pytest.mark.parametrize("escape", ["../outside.zarr", "a/../../outside.zarr", "/tmp/outside.zarr", "link/out.zarr"])
def test_paths_escaping_the_root_are_refused_before_any_io(tmp_path: Path, escape: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    backend = ZarrBackend(root=root)
    with pytest.raises(InvalidPathError):
        backend.save(sample(), escape)
    with pytest.raises(InvalidPathError):
        backend.exists(escape)
    assert sorted(os.listdir(tmp_path)) == ["root"]


def test_reserved_temporary_names_are_refused(backend: ZarrBackend) -> None:
    with pytest.raises(InvalidPathError, match="reserved"):
        backend.save(sample(), ".polystore-tmp-mine")


def test_without_root_relative_paths_follow_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ZarrBackend().save(sample(), "rel.zarr")
    assert json.loads((tmp_path / "rel.zarr" / "zarr.json").read_text())["node_type"] == "array"


def test_a_reused_opened_array_never_serves_a_replaced_or_recreated_one(backend: ZarrBackend) -> None:
    backend.save(sample((40, 30)), "reused.zarr", chunks=(10, 10))
    np.testing.assert_array_equal(backend.load("reused.zarr"), sample((40, 30)))
    replacement = np.arange(12, dtype="int16").reshape(3, 4)
    backend.save(replacement, "reused.zarr", overwrite=True)
    np.testing.assert_array_equal(backend.load("reused.zarr"), replacement)
    backend.delete("reused.zarr")
    with pytest.raises(FileNotFoundError):
        backend.load("reused.zarr")
    backend.save(sample((5, 5), "float64"), "reused.zarr")
    loaded = backend.load("reused.zarr")
    assert loaded.dtype == np.float64 and loaded.shape == (5, 5)
    backend.save(np.ones((5, 5)), "reused.zarr", region=(slice(0, 5), slice(0, 5)))
    np.testing.assert_array_equal(backend.load("reused.zarr"), np.ones((5, 5)))
