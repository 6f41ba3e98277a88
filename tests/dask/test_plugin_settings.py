"""A plugin with other settings is never ignored without a word; the same one again keeps worker memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from polystore_dask import DaskFileManager, PolystorePlugin, get_registry
from tests._cluster import PATIENCE, cluster_client, worker_addresses


@pytest.fixture(scope="module")
def one_worker() -> Iterator[Client]:
    with cluster_client(1) as client:
        yield client


@pytest.fixture
def client(one_worker: Client) -> Iterator[Client]:
    """The module's cluster, with no polystore plugin before and after the test."""
    yield one_worker
    if "polystore" in one_worker.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins)):
        one_worker.unregister_worker_plugin("polystore")


def test_registering_the_same_plugin_again_keeps_worker_memory(client, tmp_path: Path):
    options = {"disk": {"root": str(tmp_path)}}
    client.register_plugin(PolystorePlugin(options=options))
    dfm = DaskFileManager(client)
    dfm.save(b"kept", "again/a.bin", "memory").result()
    client.register_plugin(PolystorePlugin(options={"disk": {"root": str(tmp_path)}}))
    assert dfm.load("again/a.bin", "memory").result() == b"kept"


@pytest.mark.parametrize("change", ["options", "imports"])
def test_a_plugin_with_other_settings_raises_naming_both_and_the_first_stays(client, tmp_path: Path, change):
    first, second = tmp_path / "first", tmp_path / "second"
    client.register_plugin(PolystorePlugin(options={"disk": {"root": str(first)}}))
    other = (
        PolystorePlugin(options={"disk": {"root": str(second)}})
        if change == "options"
        else PolystorePlugin(options={"disk": {"root": str(first)}}, imports=["json"])
    )
    with pytest.raises(ValueError, match="different settings") as caught:
        client.register_plugin(other)
    message = str(caught.value)
    assert str(first) in message
    assert (str(second) if change == "options" else "'json'") in message
    assert 'unregister_worker_plugin("polystore")' in message
    DaskFileManager(client).save(np.arange(3), "where.npy", "disk").result(timeout=PATIENCE)
    assert (first / "where.npy").exists() and not (second / "where.npy").exists()


def test_after_unregistering_a_plugin_with_other_settings_is_taken(client, tmp_path: Path):
    client.register_plugin(PolystorePlugin(options={"disk": {"root": str(tmp_path / "old")}}))
    client.unregister_worker_plugin("polystore")
    client.register_plugin(PolystorePlugin(options={"disk": {"root": str(tmp_path / "new")}}))
    DaskFileManager(client).save(np.arange(3), "where.npy", "disk").result(timeout=PATIENCE)
    assert (tmp_path / "new" / "where.npy").exists()


def test_credentials_in_plugin_options_are_never_shown(client):
    secret = "wJalrXUtnFEMI-not-a-real-secret"
    options = {"s3": {"bucket": "b", "secret_access_key": secret, "access_key_id": "AKIDEXAMPLE"}}
    assert secret not in repr(PolystorePlugin(options=options))
    client.register_plugin(PolystorePlugin(options={"disk": {}}))
    with pytest.raises(ValueError) as caught:
        client.register_plugin(PolystorePlugin(options=options))
    assert secret not in str(caught.value) and "AKIDEXAMPLE" not in str(caught.value)


def _pipelines_on_the_worker(path: str) -> tuple[str, str, str, str]:
    """On a worker: the pipeline of an array its zarr backend creates, of one it loads (with small chunks, and
    for a read of one chunk of 2 MiB), and zarr's setting."""
    import zarr

    def pipeline_of(array: zarr.Array) -> str:
        return type(array.async_array.codec_pipeline).__name__

    backend = get_registry()["zarr"]
    made = backend.create_array(path, (4,), "int16", (2,), overwrite=True)
    backend.save(np.arange(4, dtype="int16"), path, region=(slice(0, 4),))
    assert backend.load(path).tolist() == [0, 1, 2, 3]
    backend.save(np.ones((1024, 1024), "float32"), f"{path}-large", chunks=(1024, 512), overwrite=True)
    assert backend.load(f"{path}-large", region=(0, 0)) == 1
    opened = backend._open(backend._tree.resolve(path), path, mode="r")
    one_chunk = (slice(0, 1024), slice(0, 512))
    large = backend._open(backend._tree.resolve(f"{path}-large"), f"{path}-large", mode="r", touching=one_chunk)
    return pipeline_of(made), pipeline_of(opened), pipeline_of(large), zarr.config.get("codec_pipeline.path")


def _every_worker(client: Client, path: Path) -> dict[str, tuple[str, str, str, str]]:
    return {
        address: client.submit(_pipelines_on_the_worker, str(path / f"{index}.zarr"), workers=[address],
                               pure=False).result(timeout=PATIENCE)
        for index, address in enumerate(worker_addresses(client))
    }


ZARRS, ZARR_OWN = "ZarrsCodecPipeline", "BatchedCodecPipeline"


# The default, "auto": zarrs, but zarr-python's pipeline reads one chunk of 2 MiB (the nanny trims the allocator).
@pytest.mark.parametrize(("options", "chosen"), [({}, (ZARRS, ZARRS, ZARR_OWN)),
                                                 ({"zarr": {"codec_pipeline": "zarrs"}}, (ZARRS,) * 3),
                                                 ({"zarr": {"codec_pipeline": "zarr"}}, (ZARR_OWN,) * 3)])
def test_every_worker_uses_the_chosen_codec_pipeline_also_after_joining_late_or_restarting(
    client, tmp_path: Path, options, chosen
):
    client.register_plugin(PolystorePlugin(options=options))
    expected = {(*chosen, "zarr.core.codec_pipeline.BatchedCodecPipeline")}
    assert set(_every_worker(client, tmp_path / "first").values()) == expected
    client.restart_workers(worker_addresses(client), timeout=PATIENCE)
    client.wait_for_workers(1, timeout=PATIENCE)
    assert set(_every_worker(client, tmp_path / "restarted").values()) == expected
    # A worker that joins late (left in the module's cluster: scaling down races distributed's own bookkeeping).
    client.cluster.scale(2)
    client.wait_for_workers(2, timeout=PATIENCE)
    assert set(_every_worker(client, tmp_path / "late").values()) == expected
