"""Zarr arrays in a bucket on four isolated hosts: saves from every host read on every other, and faults.

The hosts share no filesystem; every byte goes through a SeaweedFS of this
module's own (so killing it touches no other module). Faults: a host's
worker SIGKILLed mid-save_array, and the S3 server killed and restarted on
the same data mid-save_array. Each ends with the array complete and right,
or refused as incomplete (never read torn), and the array stored before
intact; each is counted into the reliability report.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dask.array as da
import numpy as np
import pytest

from polystore_dask import DaskFileManager
from tests._host_tasks import check_saves_are_read_everywhere, slow_block
from tests._hosts import HOST_PATIENCE, Hosts
from tests._reliability_ledger import record
from tests._seaweed import SeaweedServer, seaweed_server
from tests.multihost.conftest import HOSTS

pytestmark = pytest.mark.multihost


@pytest.fixture(scope="module")
def bucket_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    with seaweed_server(tmp_path_factory.mktemp("seaweed-hosts")) as server:
        yield server


@pytest.fixture(scope="module")
def plugin_options(hosts: Hosts, bucket_server: SeaweedServer) -> dict[str, Any]:
    """``s3`` and zarr in the bucket of the module's server; requests retried for up to a minute."""
    s3 = {**bucket_server.backend_options(prefix="hosts/s3"), "retry_timeout": HOST_PATIENCE}
    store_options = {key: value for key, value in s3.items() if key not in ("bucket", "prefix")}
    return {"s3": s3, "zarr": {"root": f"s3://{s3['bucket']}/hosts/zarr", "store_options": store_options}}


def movie(seconds: float) -> da.Array:
    """24 blocks, each taking ``seconds`` to compute: the save is under way for a while on 4 hosts."""
    x = da.random.default_rng(11).random((96, 128), chunks=(16, 32)).astype(np.float32)
    return x.map_blocks(slow_block, seconds, dtype=np.float32)


def outcome_of_array(dfm: DaskFileManager, path: str, expected: np.ndarray) -> tuple[str, int]:
    """``("complete" | "refused", torn)``: the array is whole and right, or load_array refuses it as incomplete."""
    try:
        loaded = dfm.load_array(path, "zarr").compute()
    except ValueError as error:
        assert "incomplete" in str(error) and path in str(error), error
        return "refused", 0
    return "complete", int(not np.array_equal(loaded, expected))


def test_zarr_in_a_bucket_saves_from_every_host_are_read_on_every_other(client, dfm, hosts):
    assert dfm.exists("nothing-yet.zarr", "zarr") is False  # an s3:// root: no filesystem to check
    check_saves_are_read_everywhere(client, hosts, "zarr", f"everywhere-{uuid.uuid4().hex}", ".zarr")


def test_save_array_to_a_bucket_from_every_host_is_read_back_by_load_array(client, dfm):
    x = movie(0.0)
    path = f"arrays/{uuid.uuid4().hex}.zarr"
    dfm.save_array(x, path, "zarr")
    assert len(set(client.run(socket.gethostname).values())) == HOSTS
    assert outcome_of_array(dfm, path, x.compute()) == ("complete", 0)


def test_save_array_to_a_bucket_with_a_hosts_worker_sigkilled(client, dfm, hosts):
    before_path, path = f"before/{uuid.uuid4().hex}.zarr", f"killed/{uuid.uuid4().hex}.zarr"
    before = movie(0.0)
    dfm.save_array(before, before_path, "zarr")
    expected = movie(0.0).compute()
    victim = hosts.worker_pid(client, "h2")
    written = client.compute(dfm.save_array(movie(0.2), path, "zarr", compute=False))
    time.sleep(0.5)
    os.kill(victim, signal.SIGKILL)
    try:
        written.result(timeout=HOST_PATIENCE)
        finished = True
    except Exception:  # the outcome under test: Dask may give up (KilledWorker) on a task
        finished = False
    client.wait_for_workers(HOSTS, timeout=HOST_PATIENCE)
    dfm = DaskFileManager(client)
    state, torn = outcome_of_array(dfm, path, expected)
    kept, kept_torn = outcome_of_array(dfm, before_path, before.compute())
    lost = torn + kept_torn + int(kept != "complete") + int(finished and state != "complete")
    record("multihost: save_array zarr-in-bucket, worker SIGKILLed", operations=3, faults=1, lost_or_torn=lost)
    assert lost == 0, (finished, state, kept)


def test_the_s3_server_killed_and_restarted_mid_save_array(client, dfm, bucket_server):
    before_path, path = f"before/{uuid.uuid4().hex}.zarr", f"restarted/{uuid.uuid4().hex}.zarr"
    before = movie(0.0)
    dfm.save_array(before, before_path, "zarr")
    expected = movie(0.0).compute()
    written = client.compute(dfm.save_array(movie(0.2), path, "zarr", compute=False))
    time.sleep(0.5)
    bucket_server.kill()
    restart = threading.Timer(1.0, bucket_server.start)
    restart.start()
    try:
        written.result(timeout=HOST_PATIENCE)
        error: BaseException | None = None
    except Exception as raised:  # the outcome under test: completed, or a clear error
        error = raised
    finally:
        restart.join(timeout=HOST_PATIENCE)
        if bucket_server.process is None:
            bucket_server.start()
    if error is not None:
        assert path in str(error) or bucket_server.endpoint in str(error), f"unclear error: {error!r}"
    state, torn = outcome_of_array(dfm, path, expected)
    kept, kept_torn = outcome_of_array(dfm, before_path, before.compute())
    lost = torn + kept_torn + int(kept != "complete") + int(error is None and state != "complete")
    record("multihost: save_array zarr-in-bucket, S3 server killed and restarted", operations=3, faults=1,
           lost_or_torn=lost)
    assert lost == 0, (error, state, kept)
