"""The zarr backend with an s3:// root, on a real SeaweedFS: the conformance kit, plus what a bucket involves."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import dask.array as da
import numpy as np
import obstore
import pytest
import zarr
from zarr.storage import ObjectStore

from polystore import BackendRegistry, FileManager, ZarrBackend
from polystore.backends.zarr.bucket import BucketZarrBackend
from polystore.backends.zarr.bucket_tree import CLAIM
from polystore.testing import BackendTests, assert_same_data
from tests._seaweed import SeaweedServer


def bucket_zarr(s3_options: dict[str, Any], **kwargs: Any) -> ZarrBackend:
    """A zarr backend on the prefix of ``s3_options`` (the same option names as S3Backend)."""
    options = dict(s3_options)
    root = f"s3://{options.pop('bucket')}/{options.pop('prefix')}"
    return ZarrBackend(root=root, store_options=options, **kwargs)


@pytest.fixture
def zb(s3_options: dict[str, Any]) -> ZarrBackend:
    return bucket_zarr(s3_options)


def raw_store(seaweed: SeaweedServer, backend: ZarrBackend) -> Any:
    """Plain obstore on the backend's prefix."""
    return seaweed.store(prefix=backend.prefix)  # type: ignore[attr-defined]


def raw_keys(seaweed: SeaweedServer, backend: ZarrBackend) -> list[str]:
    return sorted(entry["path"] for entry in obstore.list(raw_store(seaweed, backend)).collect())


class TestZarrInABucketConformance(BackendTests):
    suffixes = {"array": ".zarr"}

    @pytest.fixture
    def backend(self, zb: ZarrBackend) -> ZarrBackend:
        return zb


def test_an_s3_root_gives_a_zarr_backend_in_the_bucket_registered_as_zarr(s3_options: dict[str, Any]) -> None:
    options = dict(s3_options)
    root = f"s3://{options.pop('bucket')}/{options.pop('prefix')}"
    registry = BackendRegistry({"zarr": {"root": root, "store_options": options}})
    backend = registry["zarr"]
    assert isinstance(backend, ZarrBackend) and isinstance(backend, BucketZarrBackend)
    assert (backend.name, backend.locality, backend.supports_regions) == ("zarr", "shared", True)
    assert backend.canonical_path("/a//b.zarr") == backend.canonical_path("a/b.zarr") == "a/b.zarr"
    fm = FileManager(registry)
    fm.save(np.arange(6), "a/b.zarr", "zarr")
    assert_same_data(fm.load("a/b.zarr", "zarr"), np.arange(6))


def test_plain_zarr_and_dask_read_what_it_writes(zb: ZarrBackend, seaweed: SeaweedServer) -> None:
    data = np.arange(200 * 300, dtype=np.float32).reshape(200, 300)
    zb.save(data, "run/a.zarr", chunks=(64, 64), shards=(128, 128), compressor="blosc-lz4")
    store = ObjectStore(raw_store(seaweed, zb), read_only=True)
    plain = zarr.open_array(store=store, path="run/a.zarr", mode="r")
    assert (plain.chunks, plain.shards) == ((64, 64), (128, 128))
    np.testing.assert_array_equal(plain[...], data)
    np.testing.assert_array_equal(da.from_zarr(plain).compute(), data)
    assert zb.stat("run/a.zarr")["compressor"] == "blosc-lz4"


def test_arrays_are_zarr_json_and_chunks_under_the_prefix_and_directories_are_groups(
    zb: ZarrBackend, seaweed: SeaweedServer
) -> None:
    zb.save(np.zeros((4, 4)) + 1, "d/a.zarr", chunks=(2, 2))
    keys = raw_keys(seaweed, zb)
    assert keys == ["d/a.zarr/c/0/0", "d/a.zarr/c/0/1", "d/a.zarr/c/1/0", "d/a.zarr/c/1/1", "d/a.zarr/zarr.json",
                    "d/zarr.json"]
    group = zarr.open_group(store=ObjectStore(raw_store(seaweed, zb), read_only=True), path="d", mode="r")
    assert list(group.array_keys()) == ["a.zarr"]
    assert zb.list_files("d") == ["d/a.zarr"] and zb.list_dir(".") == ["d"]


def test_creation_writes_chunks_first_and_zarr_json_last(zb: ZarrBackend, seaweed: SeaweedServer) -> None:
    seen: list[list[str]] = []
    store = raw_store(seaweed, zb)
    data = np.ones((64, 64), dtype=np.float32)

    original = zb._bucket.commit  # type: ignore[attr-defined]

    def look_then_commit(key: str, metadata: bytes, path: Any) -> None:
        seen.append(sorted(entry["path"] for entry in obstore.list(store, "x.zarr").collect()))
        assert not zb.exists("x.zarr")  # chunks written, no array yet for any reader
        with pytest.raises(FileNotFoundError):
            zarr.open_array(store=ObjectStore(store, read_only=True), path="x.zarr", mode="r")
        original(key, metadata, path)

    zb._bucket.commit = look_then_commit  # type: ignore[attr-defined]
    zb.save(data, "x.zarr", chunks=(32, 32))
    assert seen == [[f"x.zarr/{CLAIM}", "x.zarr/c/0/0", "x.zarr/c/0/1", "x.zarr/c/1/0", "x.zarr/c/1/1"]]
    assert_same_data(zb.load("x.zarr"), data)
    assert f"x.zarr/{CLAIM}" not in raw_keys(seaweed, zb)


def test_region_writes_fill_a_created_array_that_stays_incomplete_until_completed(zb: ZarrBackend) -> None:
    created = zb.create_array("big.zarr", (100, 60), "int32", (50, 30), incomplete=True)
    assert created.shape == (100, 60)
    assert zb.stat("big.zarr")["incomplete"] is True
    with pytest.raises(ValueError, match="incomplete"):
        zb.load("big.zarr")
    expected = np.arange(6000, dtype=np.int32).reshape(100, 60)

    def write(rows: slice, cols: slice) -> None:
        zb.save(expected[rows, cols], "big.zarr", region=(rows, cols))

    threads = [
        threading.Thread(target=write, args=(slice(r, r + 50), slice(c, c + 30))) for r in (0, 50) for c in (0, 30)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    zb.complete_array("big.zarr")
    assert zb.stat("big.zarr")["incomplete"] is False
    assert_same_data(zb.load("big.zarr"), expected)
    assert_same_data(zb.load("big.zarr", region=(slice(40, 60), slice(25, 35))), expected[40:60, 25:35])


def test_an_overwrite_is_never_read_as_a_mix_by_polystore(zb: ZarrBackend) -> None:
    zb.save(np.zeros((64, 64), dtype=np.int32), "o.zarr", chunks=(16, 16))
    assert_same_data(zb.load("o.zarr"), np.zeros((64, 64), dtype=np.int32))  # opened and kept
    zb.save(np.full((64, 64), 5, dtype=np.int32), "o.zarr", chunks=(16, 16), overwrite=True)
    # The same layout gives the same metadata, yet the kept array is not trusted: its zarr.json was rewritten.
    assert_same_data(zb.load("o.zarr"), np.full((64, 64), 5, dtype=np.int32))
    zb.save(np.arange(10, dtype=np.float64), "o.zarr", overwrite=True)
    assert_same_data(zb.load("o.zarr"), np.arange(10, dtype=np.float64))


def test_an_overwrite_leaves_no_chunk_of_the_old_array(zb: ZarrBackend, seaweed: SeaweedServer) -> None:
    zb.save(np.ones((64, 64)), "o.zarr", chunks=(16, 16))
    zb.save(np.zeros((64, 64)), "o.zarr", chunks=(32, 32), overwrite=True)  # all fill value: no chunk stored
    assert raw_keys(seaweed, zb) == ["o.zarr/zarr.json"]
    assert_same_data(zb.load("o.zarr"), np.zeros((64, 64)))


def test_a_held_write_claim_refuses_other_writers_and_cleanup_removes_an_abandoned_one(
    zb: ZarrBackend, seaweed: SeaweedServer
) -> None:
    store = raw_store(seaweed, zb)
    # What a writer killed mid-write leaves: its claim and some chunks, no zarr.json.
    obstore.put(store, f"dead.zarr/{CLAIM}", b"{}")
    obstore.put(store, "dead.zarr/c/0", b"partial")
    assert not zb.exists("dead.zarr") and zb.list_files(".") == []
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="another writer"):
            zb.save(np.arange(3), "dead.zarr", overwrite=overwrite)
    assert zb.cleanup() == []  # younger than the default hour: it may be a live writer's
    assert zb.cleanup(older_than=0) == ["dead.zarr"]
    assert raw_keys(seaweed, zb) == []
    zb.save(np.arange(3), "dead.zarr")
    assert_same_data(zb.load("dead.zarr"), np.arange(3))


def test_copy_and_move_copy_on_the_server_and_keep_the_layout(zb: ZarrBackend) -> None:
    data = np.arange(400, dtype=np.uint16).reshape(20, 20)
    zb.save(data, "a.zarr", chunks=(5, 5), compressor="gzip", attributes={"k": 1})
    zb.copy("a.zarr", "b/c.zarr")
    zb.move("a.zarr", "m.zarr")
    assert not zb.exists("a.zarr")
    for path in ("b/c.zarr", "m.zarr"):
        assert_same_data(zb.load(path), data)
        stat = zb.stat(path)
        assert (stat["chunks"], stat["compressor"]) == ((5, 5), "gzip")


def test_paths_inside_an_array_do_not_exist_and_cannot_be_written(zb: ZarrBackend) -> None:
    zb.save(np.ones((4, 4)), "a.zarr", chunks=(2, 2))
    assert not zb.exists("a.zarr/c") and not zb.exists("a.zarr/c/0/0")
    with pytest.raises(NotADirectoryError):
        zb.save(np.ones(2), "a.zarr/inner.zarr")


def test_root_urls_and_store_options_are_checked(s3_options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="s3://bucket"):
        ZarrBackend(root="s3://")
    with pytest.raises(TypeError, match="come from the root URL"):
        ZarrBackend(root="s3://b/p", store_options={"bucket": "b"})
    with pytest.raises(ValueError, match="allow_http"):
        ZarrBackend(root="s3://b/p", store_options={"endpoint": "http://127.0.0.1:1"})
    with pytest.raises(ValueError, match="only s3://"):
        ZarrBackend(root="gs://b/p")
    with pytest.raises(TypeError, match="store_options are for an s3:// root"):
        ZarrBackend(root="/tmp", store_options={})


def test_a_missing_bucket_is_named(seaweed: SeaweedServer) -> None:
    options = seaweed.backend_options()
    options.pop("bucket"), options.pop("prefix")
    backend = ZarrBackend(root="s3://no-such-bucket-here/p", store_options={**options, "retry_timeout": 2})
    with pytest.raises(FileNotFoundError, match="no-such-bucket-here"):
        backend.save(np.arange(3), "a.zarr")


# -- the codec pipeline ----------------------------------------------------------------
def pipeline_of(backend: ZarrBackend, path: str) -> Any:
    """The codec pipeline of the array the backend opens at ``path``."""
    return backend._open_bucket_array(path, path).async_array.codec_pipeline  # type: ignore[attr-defined]


def test_an_s3_root_uses_zarr_pythons_pipeline_by_default(zb: ZarrBackend) -> None:
    zb.save(np.arange(6.0), "a.zarr")
    assert zb.codec_pipeline == "zarr"
    assert type(pipeline_of(zb, "a.zarr")).__name__ == "BatchedCodecPipeline"


def test_codec_pipeline_zarr_is_taken_with_an_s3_root_as_plugin_options_give_it(s3_options: dict[str, Any]) -> None:
    options = dict(s3_options)
    root = f"s3://{options.pop('bucket')}/{options.pop('prefix')}"
    registry = BackendRegistry({"zarr": {"root": root, "store_options": options, "codec_pipeline": "zarr"}})
    backend = registry["zarr"]
    assert isinstance(backend, BucketZarrBackend) and "codec_pipeline='zarr'" in repr(backend)
    fm = FileManager(registry)
    fm.save(np.arange(12, dtype=np.int16).reshape(3, 4), "a.zarr", "zarr", chunks=(2, 2))
    assert_same_data(fm.load("a.zarr", "zarr"), np.arange(12, dtype=np.int16).reshape(3, 4))
    assert type(pipeline_of(backend, "a.zarr")).__name__ == "BatchedCodecPipeline"


@pytest.mark.parametrize("compressor", [None, "zstd"])
def test_codec_pipeline_zarrs_with_an_s3_root_reads_and_writes_through_zarrs_what_zarr_reads(
    s3_options: dict[str, Any], seaweed: SeaweedServer, compressor: str | None
) -> None:
    fast, own = bucket_zarr(s3_options, codec_pipeline="zarrs"), bucket_zarr(s3_options, codec_pipeline="zarr")
    data = np.random.default_rng(3).random((300, 200)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast.save(data, "fast.zarr", chunks=(64, 64), compressor=compressor)
        own.save(data, "own.zarr", chunks=(64, 64), compressor=compressor)
        pipeline = pipeline_of(fast, "fast.zarr")
        # zarrs itself does the I/O (no fallback to zarr-python's pipeline), on the same objects.
        assert type(pipeline).__name__ == "ZarrsCodecPipeline" and pipeline.impl is not None
        assert_same_data(own.load("fast.zarr"), data)
        assert_same_data(fast.load("own.zarr"), data)
        assert_same_data(fast.load("fast.zarr", region=(slice(10, 250), slice(3, 199))), data[10:250, 3:199])
        fast.create_array("blocks.zarr", (128, 128), np.float32, (64, 64), compressor=compressor)
        fast.save(data[:64, :128], "blocks.zarr", region=(slice(0, 64), slice(0, 128)))
        fast.save(data[64:128, :128], "blocks.zarr", region=(slice(64, 128), slice(0, 128)))
        fast.complete_array("blocks.zarr")
        assert_same_data(own.load("blocks.zarr"), data[:128, :128])
    assert [str(warning.message) for warning in caught] == []
    if compressor is None:
        raw = raw_store(seaweed, fast)
        listed = obstore.list(raw, "fast.zarr/c").collect()
        chunks = sorted(entry["path"].removeprefix("fast.zarr/") for entry in listed)
        assert len(chunks) == 5 * 4
        for chunk in chunks:
            written = bytes(obstore.get(raw, f"fast.zarr/{chunk}").bytes())
            assert written == bytes(obstore.get(raw, f"own.zarr/{chunk}").bytes()), chunk


def test_an_unknown_codec_pipeline_with_an_s3_root_is_refused_naming_the_choices(s3_options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="unknown codec_pipeline 'rust'; use 'auto'.*'zarrs'.*or 'zarr'"):
        bucket_zarr(s3_options, codec_pipeline="rust")


def test_codec_pipeline_auto_with_an_s3_root_is_zarr_pythons_pipeline(s3_options: dict[str, Any]) -> None:
    # "auto" is the default of a local root; given with an s3:// root (e.g. one plugin option for both), it
    # means what is fastest there, zarr-python's own pipeline, for reads and writes alike.
    backend = bucket_zarr(s3_options, codec_pipeline="auto")
    backend.save(np.arange(6.0), "auto.zarr", chunks=(6,))
    assert backend.codec_pipeline == "zarr"
    assert type(pipeline_of(backend, "auto.zarr")).__name__ == "BatchedCodecPipeline"
    assert_same_data(backend.load("auto.zarr"), np.arange(6.0))
