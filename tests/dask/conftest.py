"""The cluster the polystore_dask tests run on: one real LocalCluster per test module, always closed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from distributed import Client

from polystore_dask import DaskFileManager, PolystorePlugin
from tests._cluster import PATIENCE, cluster_client


@pytest.fixture(scope="module")
def polystore_plugin() -> PolystorePlugin:
    """The plugin registered on the module's cluster; a module overrides this fixture to register another."""
    return PolystorePlugin()


@pytest.fixture(scope="module")
def client(polystore_plugin: PolystorePlugin) -> Iterator[Client]:
    """A LocalCluster of 2 single-threaded worker processes (no dashboard) with ``polystore_plugin`` registered."""
    with cluster_client(2) as client:
        client.register_plugin(polystore_plugin)
        yield client


@pytest.fixture
def dfm(client: Client) -> DaskFileManager:
    """A DaskFileManager on the module's client, once both workers are up (a test before may have killed one)."""
    client.wait_for_workers(2, timeout=PATIENCE)
    return DaskFileManager(client)
