"""Four isolated hosts (own hostname, own scratch disk): routing by host, the shared-filesystem check, s3 everywhere."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from distributed import Client

from polystore import S3Backend, UnsupportedFormatError, ZarrBackend
from polystore_dask import DaskFileManager, PolystorePlugin
from tests._cluster import wait_until, worker_info
from tests._host_tasks import check_saves_are_read_everywhere, run_on
from tests._hosts import HOST_PATIENCE
from tests.multihost.conftest import HOSTS

pytestmark = pytest.mark.multihost

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def hostnames(client: Client) -> dict[str, str]:
    """Each worker's hostname, by address."""
    return client.run(socket.gethostname)


def hosts_having(client: Client, path: str) -> list[str]:
    """The hosts on whose own disk ``path`` exists."""
    names = hostnames(client)
    return sorted({names[address] for address, found in client.run(os.path.exists, path).items() if found})


# -- the harness itself ----------------------------------------------------------
def test_every_host_has_its_own_hostname_and_its_own_scratch(client, hosts):
    assert sorted(hostnames(client).values()) == [f"h{index}" for index in range(1, HOSTS + 1)]
    marker = str(hosts.scratch / f"only-on-h1-{uuid.uuid4().hex}")
    run_on(client, hosts, "h1", lambda: open(marker, "x").close())
    assert hosts_having(client, marker) == ["h1"]
    assert not os.path.exists(marker), "the test process sees the ordinary filesystem, not a host's scratch"


# -- memory and host routing across hosts ------------------------------------------
def test_memory_paths_stay_on_their_worker_across_hosts(client, dfm):
    directory = f"mem-{uuid.uuid4().hex}"
    paths = [f"{directory}/item{index}" for index in range(8)]
    values = [np.full(5, index) for index in range(8)]
    dfm.save_batch(values, paths, "memory").result()
    loaded = dfm.load_batch(paths, "memory").result()
    assert all(np.array_equal(got, want) for got, want in zip(loaded, values, strict=True))
    assert dfm.list_files(directory, "memory") == sorted(paths)


def test_scratch_paths_stay_on_the_host_that_saved_them_and_are_read_there(client, dfm, hosts):
    directory = str(hosts.scratch / f"batch-{uuid.uuid4().hex}")
    paths = [f"{directory}/item{index}.npy" for index in range(12)]
    values = [np.arange(index, index + 50) for index in range(12)]
    dfm.save_batch(values, paths, "scratch").result()
    where = {path: hosts_having(client, path) for path in paths}
    assert all(len(found) == 1 for found in where.values()), where
    assert len({found[0] for found in where.values()}) >= 2, "a batch on 4 hosts should use several"
    loaded = dfm.load_batch(paths, "scratch").result()
    assert all(np.array_equal(got, want) for got, want in zip(loaded, values, strict=True))
    for path, value in zip(paths[:4], values[:4], strict=True):
        assert np.array_equal(dfm.load(path, "scratch").result(), value)
        assert dfm.is_file(path, "scratch") and dfm.stat(path, "scratch")["type"] == "file"


def test_listings_of_scratch_are_the_union_over_hosts(client, dfm, hosts):
    directory = str(hosts.scratch / f"union-{uuid.uuid4().hex}")
    names = [f"run{index}.npy" for index in range(8)]
    dfm.save_batch([np.zeros(3)] * 8, [f"{directory}/{name}" for name in names], "scratch").result()
    assert len({host for name in names for host in hosts_having(client, f"{directory}/{name}")}) >= 2
    assert dfm.list_dir(directory, "scratch") == sorted(names)
    assert dfm.list_files(directory, "scratch") == sorted(f"{directory}/{name}" for name in names)
    assert dfm.is_dir(directory, "scratch") and not dfm.is_dir(f"{directory}/run0.npy", "scratch")


def test_a_restarted_worker_on_the_same_host_still_serves_its_scratch_paths(client, dfm, hosts):
    path = str(hosts.scratch / f"survivor-{uuid.uuid4().hex}.npy")
    dfm.save(np.arange(7), path, "scratch").result()
    (host,) = hosts_having(client, path)
    old = hosts.worker_address(client, host)
    client.run(os._exit, 1, workers=[old], on_error="ignore")
    wait_until(lambda: old not in worker_info(client), f"worker {old} to leave")
    client.wait_for_workers(HOSTS, timeout=HOST_PATIENCE)
    assert hosts.worker_address(client, host) != old
    assert np.array_equal(dfm.load(path, "scratch").result(timeout=HOST_PATIENCE), np.arange(7))


def test_save_array_to_scratch_keeps_each_block_on_its_host_and_load_array_reads_it(client, dfm, hosts):
    path = str(hosts.scratch / f"array-{uuid.uuid4().hex}")
    x = da.random.default_rng(7).random((64, 48), chunks=(16, 16))
    expected = x.compute()
    dfm.save_array(x, path, "scratch")
    blocks = {f"{path}/{i}.{j}.npy": hosts_having(client, f"{path}/{i}.{j}.npy") for i in range(4) for j in range(3)}
    assert all(len(found) == 1 for found in blocks.values()), blocks
    assert len({found[0] for found in blocks.values()}) >= 2, "blocks computed on several hosts stay on them"
    loaded = dfm.load_array(path, "scratch")
    assert loaded.chunks == x.chunks
    assert np.array_equal(loaded.compute(), expected)


# -- shared really means shared ---------------------------------------------------
@pytest.mark.parametrize("backend", ["test_second_disk", "zarr"])
def test_a_shared_backend_whose_root_differs_per_host_is_refused_naming_root_and_hosts(client, dfm, hosts, backend):
    with pytest.raises(RuntimeError) as caught:
        dfm.exists("anything", backend)
    message = str(caught.value)
    assert backend in message and "do not share one filesystem" in message
    assert str(hosts.scratch) in message
    assert sum(f"h{index}" in message for index in range(1, HOSTS + 1)) >= HOSTS - 1
    assert "locality='host'" in message and "'scratch'" in message and "'s3'" in message


def test_a_shared_root_passes_the_check_and_disk_saves_from_every_host_are_read_on_every_other(client, dfm, hosts):
    assert dfm.exists("nothing-yet.npy", "disk") is False  # the check ran and passed
    check_saves_are_read_everywhere(client, hosts, "disk", f"everywhere-{uuid.uuid4().hex}", ".npy")


def test_s3_saves_from_every_host_are_read_back_on_every_other(client, dfm, hosts):
    assert dfm.exists("nothing-yet.npy", "s3") is False  # s3 has no filesystem root: not checked
    check_saves_are_read_everywhere(client, hosts, "s3", f"everywhere-{uuid.uuid4().hex}", ".npy")


def test_save_array_to_the_s3_object_backend_is_refused_naming_backends_that_can(client, dfm):
    # s3 stores whole objects, not regions (zarr in a bucket will): save_array says so before writing.
    path = f"arrays-{uuid.uuid4().hex}"
    with pytest.raises(UnsupportedFormatError, match="does not store arrays by region.*'zarr'"):
        dfm.save_array(da.ones((8, 8), chunks=(4, 4)), path, "s3")
    assert not dfm.exists(path, "s3")


# -- the example, as a cloud user runs it ---------------------------------------------
def test_the_pipeline_example_runs_on_hosts_without_a_shared_filesystem(client, hosts, seaweed, plugin_options,
                                                                         tmp_path):
    prefix = f"pipeline-{uuid.uuid4().hex}"
    # The credentials are in the hosts' environment only (see conftest.py), as on a cloud cluster.
    command = [
        sys.executable, str(EXAMPLES / "pipeline.py"), "--scheduler", hosts.address, "--frames", "8", "--size", "128",
        "--storage", f"s3://{seaweed.buckets[0]}/{prefix}",
    ]
    try:
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        # The example registered its own plugin; the module's comes back for the tests after this one.
        client.unregister_worker_plugin("polystore")
        client.register_plugin(PolystorePlugin(options=plugin_options, imports=["tests._locality_backends"]))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "generate + write zarr" in result.stdout and "write results to s3" in result.stdout
    assert seaweed.secret_access_key not in result.stdout + result.stderr
    options = seaweed.backend_options(prefix=prefix)
    bucket = S3Backend(**options)
    assert bucket.load("results/max_projection.npy").shape == (128, 128)
    assert len(bucket.list_files("results/thumbnails")) == 8
    assert len(bucket.load("results/frame_stats.json")["per_frame"]) == 8
    store_options = {key: value for key, value in options.items() if key not in ("bucket", "prefix")}
    raw = ZarrBackend(root=f"s3://{options['bucket']}/{prefix}", store_options=store_options)
    assert raw.stat("raw/timelapse.zarr")["shape"] == (8, 128, 128)


# -- a host with no live worker left (last: it takes a host away) -------------------
def test_a_scratch_path_whose_host_has_no_worker_left_raises_naming_path_and_host(client, hosts):
    dfm = DaskFileManager(client)
    path = str(hosts.scratch / f"stranded-{uuid.uuid4().hex}.npy")
    dfm.save(np.arange(3), path, "scratch").result()
    (host,) = hosts_having(client, path)
    hosts.kill_host(host)
    wait_until(lambda: len(worker_info(client)) == HOSTS - 1, f"host {host} to leave")
    with pytest.raises(FileNotFoundError) as caught:
        dfm.load(path, "scratch").result(timeout=HOST_PATIENCE)
    assert path in str(caught.value) and f"host {host}" in str(caught.value)
    hosts.restart_host(host)
    client.wait_for_workers(HOSTS, timeout=HOST_PATIENCE)
