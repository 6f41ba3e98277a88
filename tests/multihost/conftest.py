"""The multi-host tests' cluster: 4 isolated hosts (tests/_hosts.py), one harness per test module.

Skipped, with the exact reason, where the harness cannot run (not root, or
``unshare`` refused); CI runs as root, so they run there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from polystore_dask import DaskFileManager, PolystorePlugin
from tests._hosts import HOST_PATIENCE, Hosts, hosts_running, unavailable
from tests._seaweed import SeaweedServer

#: Hosts in every multi-host module.
HOSTS = 4


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer) -> Iterator[Hosts]:
    """4 hosts whose workers have the session's S3 server in their AWS environment, as cloud workers would."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    aws = {
        "AWS_ENDPOINT_URL": seaweed.endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": seaweed.access_key_id, "AWS_SECRET_ACCESS_KEY": seaweed.secret_access_key,
    }
    with hosts_running(tmp_path_factory.mktemp("hosts"), HOSTS, scratch_size="64m", environment=aws) as running:
        yield running


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory every host sees (the ordinary filesystem, outside the hosts' scratch)."""
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="module")
def plugin_options(hosts: Hosts, shared_root: Path, seaweed: SeaweedServer) -> dict[str, Any]:
    """disk on a shared root, scratch on each host's own tmpfs, s3 on the session's server; and two
    shared-declaring backends whose roots are each host's own scratch (not shared: the check must say so)."""
    return {
        "disk": {"root": str(shared_root / "disk")},
        "scratch": {"root": str(hosts.scratch)},
        "s3": seaweed.backend_options(prefix="multihost"),
        "zarr": {"root": str(hosts.scratch / "zarr")},
        "test_second_disk": {"root": str(hosts.scratch / "disk")},
    }


@pytest.fixture(scope="module")
def client(hosts: Hosts, plugin_options: dict[str, Any]) -> Iterator[Client]:
    with Client(hosts.address, timeout=HOST_PATIENCE) as client:
        client.wait_for_workers(HOSTS, timeout=HOST_PATIENCE)
        client.register_plugin(PolystorePlugin(options=plugin_options, imports=["tests._locality_backends"]))
        yield client


@pytest.fixture
def dfm(client: Client) -> DaskFileManager:
    """A manager on the hosts' cluster, once every host has a worker (a test before may have killed one)."""
    client.wait_for_workers(HOSTS, timeout=HOST_PATIENCE)
    return DaskFileManager(client)
