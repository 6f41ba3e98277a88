"""Replicas on four isolated hosts: each path's replicas land on distinct hosts, and survive a host's worker."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import numpy as np
import pytest

from tests._cluster import wait_until, worker_info
from tests._host_tasks import kept_here
from tests._hosts import HOST_PATIENCE
from tests.multihost.conftest import HOSTS

pytestmark = pytest.mark.multihost


def where(client: Any, backend: str, paths: list[str]) -> dict[str, set[str]]:
    """For each path: the hosts whose workers keep it."""
    found: dict[str, set[str]] = {path: set() for path in paths}
    for host, kept in client.run(kept_here, backend, paths).values():
        for path in kept:
            found[path].add(host)
    return found


@pytest.mark.parametrize("backend", ["memory", "scratch"])
def test_replicas_land_on_distinct_hosts(client, dfm, hosts, backend):
    directory = f"{hosts.scratch}/replicas-{uuid.uuid4().hex}" if backend == "scratch" else uuid.uuid4().hex
    paths = [f"{directory}/item{index}.npy" for index in range(16)]
    dfm.save_batch([np.full(4, index) for index in range(16)], paths, backend, replicas=2).result(
        timeout=HOST_PATIENCE
    )
    dfm.save(np.ones(2), f"{directory}/three.npy", backend, replicas=3).result(timeout=HOST_PATIENCE)
    kept = where(client, backend, [*paths, f"{directory}/three.npy"])
    assert all(len(kept[path]) == 2 for path in paths), kept
    assert len(kept[f"{directory}/three.npy"]) == 3
    assert len(set().union(*kept.values())) == HOSTS  # spread over every host, in turn
    loaded = dfm.load_batch(paths, backend).result(timeout=HOST_PATIENCE)
    assert [int(array[0]) for array in loaded] == list(range(16))


def test_a_memory_path_survives_its_first_holders_host_losing_its_worker_and_heals_to_another_host(client, dfm):
    directory = uuid.uuid4().hex
    paths = [f"{directory}/p{index}" for index in range(8)]
    dfm.save_batch([np.full(3, index) for index in range(8)], paths, "memory", replicas=2).result(
        timeout=HOST_PATIENCE
    )
    victim_host = sorted(where(client, "memory", paths)[paths[0]])[0]
    hostnames = client.run(socket.gethostname)
    (victim,) = [address for address, host in hostnames.items() if host == victim_host]
    client.run(os._exit, 1, workers=[victim], on_error="ignore")
    wait_until(lambda: victim not in worker_info(client), "the victim's worker to leave")
    loaded = dfm.load_batch(paths, "memory").result(timeout=HOST_PATIENCE)
    assert [int(array[0]) for array in loaded] == list(range(8))
    client.wait_for_workers(HOSTS, timeout=HOST_PATIENCE)
    # The restarted worker on the victim's host came back empty; every path is held on two hosts again.
    wait_until(lambda: all(len(kept) == 2 for kept in where(client, "memory", paths).values()), "healing")
