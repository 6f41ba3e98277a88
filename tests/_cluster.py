"""A real LocalCluster for the polystore_dask tests: worker processes, no dashboard."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from distributed import Client, LocalCluster

#: Generous bound for waits on the cluster (worker restarts); never a timing assertion.
PATIENCE = 60.0


@contextmanager
def cluster_client(n_workers: int = 2) -> Iterator[Client]:
    """A LocalCluster of ``n_workers`` single-threaded worker processes and its client, closed after."""
    with LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(n_workers, timeout=PATIENCE)
        yield client


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    """Poll ``condition`` until it returns something true; fail after :data:`PATIENCE` seconds."""
    deadline = time.monotonic() + PATIENCE
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def kill_worker(client: Client, address: str) -> None:
    """Kill the worker process at ``address`` (its nanny starts a new one at a new address)."""
    client.run(os._exit, 1, workers=[address], on_error="ignore")
    wait_until(lambda: address not in worker_info(client), f"worker {address} to leave")


def worker_info(client: Client) -> dict[str, Any]:
    """The scheduler's record of each worker, by address, fetched afresh.

    Not ``client.scheduler_info()["workers"]``: that returns the client's cached copy, which the client's
    periodic refresh (every 2 s, fetched without workers) can overwrite between the fetch and the read, so
    now and then it says the cluster has no workers.
    """
    return dict(client.sync(client.scheduler.identity, n_workers=-1)["workers"])


def worker_addresses(client: Client) -> list[str]:
    return sorted(worker_info(client))
