"""The zarr backend's codec pipelines: the faster one by default, either on request, the same data either way.

zarrs falls back to zarr-python's pipeline for what it does not support
(strings, bytes, structured dtypes...), so every dtype and every compressor
the backend offers must give back the same bytes whichever pipeline wrote
and whichever reads, and the files must be the same (gzip streams aside:
the two encoders pick their own deflate blocks and header time). The
pipeline is put in force only while the backend opens or creates an array:
a user's own zarr arrays in the same process keep zarr's setting.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from polystore import ZarrBackend
from polystore.backends.zarr.create import COMPRESSORS
from polystore.testing import dtype_samples, kept_exactly

ZARRS = "ZarrsCodecPipeline"
ZARR_OWN = "BatchedCodecPipeline"


def pipeline_of(array: zarr.Array) -> str:
    return type(array.async_array.codec_pipeline).__name__


def stored_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


# zarr warns that fixed-width str, bytes and structured dtypes have no v3 spec yet: expected here.
pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.UnstableSpecificationWarning")


@pytest.fixture
def both(tmp_path: Path) -> tuple[ZarrBackend, ZarrBackend]:
    (tmp_path / "zarrs").mkdir()
    (tmp_path / "zarr").mkdir()
    return (ZarrBackend(root=tmp_path / "zarrs", codec_pipeline="zarrs"),
            ZarrBackend(root=tmp_path / "zarr", codec_pipeline="zarr"))


def saved_or_refused(backend: ZarrBackend, data: Any, path: str, **options: Any) -> str | None:
    """Save; return the refusal's type name, or None when saved."""
    try:
        backend.save(data, path, **options)
    except Exception as error:
        return type(error).__name__
    return None


@pytest.mark.parametrize("compressor", [*COMPRESSORS, None])
def test_every_dtype_gives_the_same_bytes_whichever_pipeline_writes_and_reads(
    both: tuple[ZarrBackend, ZarrBackend], tmp_path: Path, compressor: str | None
) -> None:
    fast, own = both
    kept = 0
    for index, (name, data) in enumerate(dtype_samples().items()):
        path = f"{index}.zarr"
        refused = saved_or_refused(fast, data, path, compressor=compressor)
        assert refused == saved_or_refused(own, data, path, compressor=compressor), name
        if refused:
            continue
        kept += 1
        for writer in (fast, own):
            for reader in (fast, own):
                reader_view = ZarrBackend(root=writer.root, codec_pipeline=reader.codec_pipeline)
                assert kept_exactly(reader_view.load(path), data) is None, (name, writer, reader)
    assert kept > 30  # every number, datetime and string family of the samples was written
    fast_files, own_files = stored_files(tmp_path / "zarrs"), stored_files(tmp_path / "zarr")
    assert fast_files.keys() == own_files.keys()
    differ = [name for name in fast_files if fast_files[name] != own_files[name]]
    if compressor == "gzip":
        assert all("/c" in name for name in differ)  # chunk files only: metadata is the same
    else:
        assert differ == []


@pytest.mark.parametrize("compressor", [*COMPRESSORS, None])
@pytest.mark.parametrize("dtype", ["float32", ">i2", "complex64", "M8[s]", "U3", "bool"])
def test_region_writes_and_region_loads_of_sharded_arrays_agree_between_the_pipelines(
    both: tuple[ZarrBackend, ZarrBackend], dtype: str, compressor: str | None
) -> None:
    rng = np.random.default_rng(7)
    numbers = rng.integers(0, 1000, (12, 10))
    data = numbers.astype(str).astype(dtype) if dtype == "U3" else numbers.astype(dtype)
    for backend in both:
        backend.create_array("s.zarr", (12, 10), dtype, (2, 5), shards=(4, 10), compressor=compressor, fill_value=None)
        for start in range(0, 12, 4):
            backend.save(data[start:start + 4], "s.zarr", region=(slice(start, start + 4),))
    selections = [None, (slice(1, 7), slice(3, 9)), (5,), (-1, slice(None)), (slice(None), 4), (slice(0, 12, 3),)]
    for region in selections:
        loads = [backend.load("s.zarr", region=region) for backend in both]
        expected = data if region is None else data[region]
        for loaded in loads:
            assert kept_exactly(np.asarray(loaded), np.asarray(expected)) is None, region


def test_the_backend_creates_and_opens_with_zarrs_and_leaves_zarrs_setting_as_it_was(tmp_path: Path) -> None:
    before = zarr.config.get("codec_pipeline.path")
    backend = ZarrBackend(root=tmp_path)
    made = backend.create_array("made.zarr", (4, 4), "int32", (2, 2))
    backend.save(np.arange(6), "saved.zarr")
    np.testing.assert_array_equal(backend.load("saved.zarr"), np.arange(6))
    assert pipeline_of(made) == ZARRS
    assert zarr.config.get("codec_pipeline.path") == before
    # A user's own zarr use in the same process keeps zarr's setting.
    assert pipeline_of(zarr.open_array(str(tmp_path / "saved.zarr"), mode="r")) == ZARR_OWN
    assert pipeline_of(zarr.create_array(str(tmp_path / "user.zarr"), shape=(3,), dtype="int8")) == ZARR_OWN


def _opened_for(backend: ZarrBackend, path: str, mode: str, touching: Any = None) -> str:
    return pipeline_of(backend._open(backend._tree.resolve(path), path, mode=mode, touching=touching))


def _pipelines_used(backend: ZarrBackend, path: str) -> set[str]:
    """The pipelines of the backend's cached arrays at ``path``: those its calls were served by."""
    return {key[3] for key in backend._opened if key[0] == backend._tree.resolve(path)}


#: One chunk of 2 MiB (LARGE_CHUNK_BYTES) of the arrays below, and two of them.
ONE, TWO = (slice(0, 1024), slice(0, 512)), (slice(0, 1024), slice(None))


@pytest.mark.skipif(sys.platform != "linux", reason="the allocator setting auto looks at is glibc's")
def test_auto_reads_and_writes_one_large_chunk_with_zarr_pythons_pipeline_where_the_allocator_trims(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    large = np.arange(1024 * 1024, dtype="float32").reshape(1024, 1024)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    plain = ZarrBackend(root=tmp_path)
    assert plain.codec_pipeline == "auto"
    plain.save(large, "zstd.zarr", chunks=(1024, 512))
    plain.save(large, "raw.zarr", chunks=(1024, 512), compressor=None)
    plain.save(large, "sharded.zarr", chunks=(1024, 512), shards=(1024, 1024))
    plain.save(large[:64, :64], "small.zarr", chunks=(32, 32))
    names, calls = ("zstd.zarr", "raw.zarr", "sharded.zarr", "small.zarr"), (None, ONE, TWO, (0, 0))
    assert {_opened_for(plain, name, mode, call) for name in names for mode in ("r", "r+") for call in calls} == {ZARRS}
    # As in a worker its nanny started: each freed buffer goes back to the system.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    trimming, forced = ZarrBackend(root=tmp_path), ZarrBackend(root=tmp_path, codec_pipeline="zarrs")
    # One large chunk, read or written compressed: zarr-python's pipeline.
    for call in (ONE, (5, slice(0, 100)), (7, 9), (slice(-10, None), slice(0, 5)), (Ellipsis, slice(600, 700))):
        assert _opened_for(trimming, "zstd.zarr", "r", call) == ZARR_OWN, call
    assert _opened_for(trimming, "zstd.zarr", "r+", ONE) == ZARR_OWN
    assert _opened_for(trimming, "raw.zarr", "r", ONE) == ZARR_OWN
    # Written uncompressed, several chunks, the whole array, small chunks, shards, an explicit choice: zarrs.
    assert _opened_for(trimming, "raw.zarr", "r+", ONE) == ZARRS
    for call in (None, TWO, Ellipsis, (slice(None), slice(500, 600)), (slice(0, 0), slice(None))):
        assert _opened_for(trimming, "zstd.zarr", "r", call) == ZARRS, call
    assert _opened_for(trimming, "small.zarr", "r", (slice(0, 32), slice(0, 32))) == ZARRS
    assert _opened_for(trimming, "sharded.zarr", "r", ONE) == ZARRS
    assert _opened_for(forced, "zstd.zarr", "r", ONE) == ZARRS
    assert pipeline_of(trimming.create_array("made.zarr", (1024, 1024), "float32", (1024, 512))) == ZARRS
    # The backend's own calls choose so: a one-chunk write and load open the array with zarr-python's
    # pipeline too (after zarrs, which read its metadata), a whole load does not.
    busy, whole = ZarrBackend(root=tmp_path), ZarrBackend(root=tmp_path)
    busy.save(large[:, :512] + 1, "made.zarr", region=ONE)
    np.testing.assert_array_equal(busy.load("raw.zarr", region=ONE), large[ONE])
    np.testing.assert_array_equal(whole.load("raw.zarr"), large)
    assert _pipelines_used(busy, "made.zarr") == _pipelines_used(busy, "raw.zarr") == {"zarr", "zarrs"}
    assert _pipelines_used(whole, "raw.zarr") == {"zarrs"}
    # Whichever pipeline wrote or reads them, the arrays hold the same data.
    busy.save(large[:, 512:] + 1, "made.zarr", region=(slice(None), slice(512, None)))
    for backend in (trimming, forced, plain):
        for name in names[:3]:
            np.testing.assert_array_equal(backend.load(name), large)
            np.testing.assert_array_equal(backend.load(name, region=ONE), large[ONE])
        np.testing.assert_array_equal(backend.load("made.zarr"), large + 1)
        np.testing.assert_array_equal(backend.load("small.zarr", region=(slice(2, 6), slice(None))), large[2:6, :64])


def test_codec_pipeline_zarr_uses_what_the_users_zarr_config_names(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path, codec_pipeline="zarr")
    assert pipeline_of(backend.create_array("own.zarr", (4,), "int8", (2,))) == ZARR_OWN
    with zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"}):
        assert pipeline_of(backend.create_array("set.zarr", (4,), "int8", (2,))) == ZARRS
    assert "codec_pipeline='zarr'" in repr(backend)


def test_a_user_setting_made_inside_the_process_is_put_back_after_the_backends_opens(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    with zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline",
                          "codec_pipeline.batch_size": 3}):
        assert pipeline_of(backend.create_array("a.zarr", (4,), "int8", (2,))) == ZARRS
        assert zarr.config.get("codec_pipeline.batch_size") == 3
        assert pipeline_of(zarr.open_array(str(tmp_path / "a.zarr"), mode="r")) == ZARR_OWN


def test_threads_saving_and_loading_at_once_leave_zarrs_setting_as_it_was(tmp_path: Path) -> None:
    before = zarr.config.get("codec_pipeline.path")
    backend = ZarrBackend(root=tmp_path)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for index in range(15):
                path = f"t{worker}/{index}.zarr"
                backend.save(np.full(5, worker * 100 + index), path)
                np.testing.assert_array_equal(backend.load(path), np.full(5, worker * 100 + index))
                assert pipeline_of(backend.create_array(f"t{worker}/m{index}.zarr", (2,), "int8", (2,))) == ZARRS
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert zarr.config.get("codec_pipeline.path") == before


def test_an_unknown_codec_pipeline_is_refused_naming_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown codec_pipeline 'tensorstore'.*'auto'.*'zarrs'.*'zarr'"):
        ZarrBackend(root=tmp_path, codec_pipeline="tensorstore")


def test_a_dtype_zarrs_leaves_to_zarr_python_gives_no_warning_about_the_pipeline(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend.save(np.array([b"ab", b"c"]), "bytes.zarr")
        assert backend.load("bytes.zarr").tolist() == [b"ab", b"c"]
    assert not [warning for warning in caught if "ZarrsCodecPipeline" in str(warning.message)]


@pytest.mark.parametrize("pipeline", ["zarrs", "zarr"])
def test_a_corrupt_chunk_is_named_whichever_pipeline_reads_it(tmp_path: Path, pipeline: str) -> None:
    backend = ZarrBackend(root=tmp_path, codec_pipeline=pipeline)
    backend.save(np.arange(64, dtype="int32").reshape(8, 8), "c.zarr", chunks=(4, 8))
    (tmp_path / "c.zarr" / "c" / "1" / "0").write_bytes(b"not zstd")
    with pytest.raises(ValueError, match=r"c\.zarr/c/1/0.*truncated or corrupt"):
        backend.load("c.zarr")
    np.testing.assert_array_equal(backend.load("c.zarr", region=(slice(0, 4),)), np.arange(32).reshape(4, 8))


def test_an_array_at_a_path_that_is_not_utf8_is_saved_and_loaded_by_zarrs_own_fallback(tmp_path: Path) -> None:
    backend = ZarrBackend(root=tmp_path)
    name = os.fsdecode(b"caf\xe9.zarr")  # Latin-1 bytes: a surrogate in the str
    made = backend.create_array(name, (4,), "int16", (2,))
    backend.save(np.arange(4, dtype="int16"), name, region=(slice(0, 4),))
    np.testing.assert_array_equal(backend.load(name), np.arange(4))
    assert pipeline_of(made) == ZARR_OWN
