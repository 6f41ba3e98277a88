"""The s3 backend and zarr arrays in a bucket through DaskFileManager on a real LocalCluster and SeaweedFS.

Workers share no filesystem with each other here in spirit: every byte goes
through the bucket, and each worker builds its own obstore client (one per
backend, reused across tasks).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import Client
from zarr.storage import ObjectStore

from polystore import S3Backend, StorageBackend, ZarrBackend
from polystore.testing import BackendTests, assert_same_data
from polystore_dask import DaskFileManager, PolystorePlugin
from polystore_dask.plugin import registry_of
from tests._cluster import PATIENCE, cluster_client
from tests._seaweed import SeaweedServer
from tests.dask.test_conformance_through_dask import ThroughDask


def plugin_options(seaweed: SeaweedServer, name: str) -> dict[str, Any]:
    """Options for ``s3`` and an s3:// ``zarr`` in fresh prefixes of the session's bucket."""
    options = seaweed.backend_options(prefix=f"dask/{name}/s3")
    store_options = {key: value for key, value in options.items() if key not in ("bucket", "prefix")}
    return {
        "s3": options,
        "zarr": {"root": f"s3://{options['bucket']}/dask/{name}/zarr", "store_options": store_options},
    }


@pytest.fixture(scope="module")
def options(seaweed: SeaweedServer) -> dict[str, Any]:
    """The plugin options of the module's cluster."""
    return plugin_options(seaweed, uuid.uuid4().hex)


@pytest.fixture(scope="module")
def client(options: dict[str, Any]) -> Iterator[Client]:
    with cluster_client(2) as client:
        client.register_plugin(PolystorePlugin(options=options))
        yield client


@pytest.fixture
def dfm(client: Client) -> DaskFileManager:
    client.wait_for_workers(2, timeout=PATIENCE)
    return DaskFileManager(client)


def worker_stores(dask_worker: Any) -> tuple[int, int]:
    """The ids of this worker's obstore store of ``s3`` and zarr store of ``zarr`` (run by ``client.run``)."""
    registry = registry_of(dask_worker)
    return id(registry["s3"]._client.connection()[0]), id(registry["zarr"].store())  # type: ignore[attr-defined]


def test_save_load_batches_and_queries_of_objects_through_the_cluster(dfm: DaskFileManager) -> None:
    token = uuid.uuid4().hex
    arrays = [np.full((8, 8), i, dtype=np.int16) for i in range(40)]
    paths = [f"{token}/batch/{i:03d}.npy" for i in range(40)]
    dfm.save_batch(arrays, paths, "s3").result(timeout=PATIENCE)
    dfm.save({"a": 1}, f"{token}/meta.json", "s3").result(timeout=PATIENCE)
    loaded = dfm.load_batch(paths, "s3").result(timeout=PATIENCE)
    for got, expected in zip(loaded, arrays, strict=True):
        assert_same_data(got, expected)
    assert dfm.load(f"{token}/meta.json", "s3").result(timeout=PATIENCE) == {"a": 1}
    assert dfm.list_files(f"{token}/batch", "s3") == sorted(paths)
    assert dfm.list_dir(token, "s3") == ["batch", "meta.json"]
    assert dfm.is_dir(f"{token}/batch", "s3") and dfm.is_file(paths[0], "s3")
    assert dfm.stat(paths[0], "s3")["type"] == "file"
    dfm.delete(f"{token}/batch", "s3", recursive=True).result(timeout=PATIENCE)
    assert not dfm.exists(f"{token}/batch", "s3")


def test_save_array_writes_blocks_from_the_workers_that_plain_zarr_and_dask_read(
    dfm: DaskFileManager, options: dict[str, Any], seaweed: SeaweedServer
) -> None:
    x = da.random.default_rng(7).random((600, 400), chunks=(200, 200)).astype(np.float32)
    expected = x.compute()
    dfm.save_array(x, "run/x.zarr", "zarr")
    stat = dfm.stat("run/x.zarr", "zarr")
    assert (stat["shape"], stat["chunks"], stat["incomplete"]) == ((600, 400), (200, 200), False)
    loaded = dfm.load_array("run/x.zarr", "zarr")
    np.testing.assert_allclose(loaded.sum().compute(), expected.sum(), rtol=1e-5)
    np.testing.assert_array_equal(loaded.compute(), expected)
    bucket, _, prefix = options["zarr"]["root"].removeprefix("s3://").partition("/")
    store = ObjectStore(seaweed.store(bucket, prefix=prefix), read_only=True)
    plain = zarr.open_array(store=store, path="run/x.zarr", mode="r")
    np.testing.assert_array_equal(plain[...], expected)
    np.testing.assert_array_equal(da.from_zarr(plain).compute(), expected)


def test_save_array_with_shards_and_overwrite(dfm: DaskFileManager) -> None:
    x = da.arange(64 * 64, dtype=np.int32, chunks=32 * 64).reshape(64, 64).rechunk((32, 32))
    dfm.save_array(x, "sharded.zarr", "zarr", chunks=(16, 16), shards=(32, 32))
    assert dfm.stat("sharded.zarr", "zarr")["shards"] == (32, 32)
    with pytest.raises(FileExistsError):
        dfm.save_array(x, "sharded.zarr", "zarr")
    dfm.save_array(x + 1, "sharded.zarr", "zarr", chunks=(16, 16), shards=(32, 32), overwrite=True)
    np.testing.assert_array_equal(dfm.load_array("sharded.zarr", "zarr").compute(), (x + 1).compute())


def test_each_worker_keeps_one_store_per_backend_across_tasks(dfm: DaskFileManager, client: Client) -> None:
    dfm.save(np.arange(3), "one-store/a.npy", "s3").result(timeout=PATIENCE)
    dfm.save(np.arange(3), "one-store/a.zarr", "zarr").result(timeout=PATIENCE)
    before = client.run(worker_stores)
    for i in range(4):
        dfm.save(np.arange(3), f"one-store/{i}.npy", "s3").result(timeout=PATIENCE)
        dfm.save_array(da.ones((8, 8), chunks=4), f"one-store/{i}.zarr", "zarr")
        dfm.load_array(f"one-store/{i}.zarr", "zarr").sum().compute()
    assert client.run(worker_stores) == before


def test_task_keys_carry_no_credentials(dfm: DaskFileManager, seaweed: SeaweedServer) -> None:
    futures = [
        dfm.save(np.arange(3), "keys/a.npy", "s3"),
        dfm.save(np.arange(3), "keys/a.zarr", "zarr"),
        dfm.load("keys/a.zarr", "zarr"),
    ]
    delayed = dfm.save_array(da.ones((8, 8), chunks=4), "keys/b.zarr", "zarr", compute=False)
    lazy = dfm.load_array("keys/a.zarr", "zarr")
    keys = [str(future.key) for future in futures]
    keys += [str(key) for key in delayed.__dask_graph__()] + [str(key) for key in lazy.__dask_graph__()]
    for future in futures:
        future.result(timeout=PATIENCE)
    assert keys and all(key.startswith(("polystore-", "('polystore-", "(")) for key in keys)
    for key in keys:
        assert seaweed.access_key_id not in key and seaweed.secret_access_key not in key


# -- the conformance kit through the cluster -------------------------------------------
@pytest.fixture
def fresh_dfm(client: Client, seaweed: SeaweedServer) -> Iterator[DaskFileManager]:
    """A manager whose workers' s3 and zarr backends were just made, on fresh prefixes."""
    client.unregister_worker_plugin("polystore")
    client.register_plugin(PolystorePlugin(options=plugin_options(seaweed, uuid.uuid4().hex)))
    client.wait_for_workers(2, timeout=PATIENCE)
    yield DaskFileManager(client)


class TestS3ThroughDask(BackendTests):
    @pytest.fixture
    def backend(self, fresh_dfm: DaskFileManager) -> StorageBackend:
        return ThroughDask(fresh_dfm, "s3", S3Backend)


class TestZarrInABucketThroughDask(BackendTests):
    suffixes = {"array": ".zarr"}

    @pytest.fixture
    def backend(self, fresh_dfm: DaskFileManager) -> StorageBackend:
        return ThroughDask(fresh_dfm, "zarr", ZarrBackend)


# -- the codec pipeline a plugin chooses for zarr ----------------------------------------
def zarr_pipeline_on_worker(path: str, dask_worker: Any) -> tuple[str, str]:
    """The ``codec_pipeline`` of this worker's ``zarr`` backend and the pipeline class of its array at ``path``."""
    backend = registry_of(dask_worker)["zarr"]
    array = backend._open_bucket_array(path, path)  # type: ignore[attr-defined]
    return backend.codec_pipeline, type(array.async_array.codec_pipeline).__name__  # type: ignore[attr-defined]


@pytest.mark.parametrize(("pipeline", "expected"), [("zarr", "BatchedCodecPipeline"), ("zarrs", "ZarrsCodecPipeline")])
def test_a_plugin_choosing_the_codec_pipeline_of_an_s3_zarr_root_gets_it_on_every_worker(
    client: Client, seaweed: SeaweedServer, pipeline: str, expected: str
) -> None:
    options = plugin_options(seaweed, uuid.uuid4().hex)
    options["zarr"]["codec_pipeline"] = pipeline
    client.unregister_worker_plugin("polystore")
    client.register_plugin(PolystorePlugin(options=options))
    client.wait_for_workers(2, timeout=PATIENCE)
    dfm = DaskFileManager(client)
    x = da.random.default_rng(5).random((256, 128), chunks=(64, 128)).astype(np.float32)
    dfm.save_array(x, "chosen/x.zarr", "zarr")
    np.testing.assert_array_equal(dfm.load_array("chosen/x.zarr", "zarr").compute(), x.compute())
    assert set(client.run(zarr_pipeline_on_worker, "chosen/x.zarr").values()) == {(pipeline, expected)}
