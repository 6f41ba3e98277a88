"""What the multi-host tests run on one host's worker (importable there: the hosts get PYTHONPATH), and how."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import numpy as np

from polystore_dask import get_registry
from tests._hosts import HOST_PATIENCE, Hosts


def run_on(client: Any, hosts: Hosts, host: str, function: Any, *args: Any) -> Any:
    """Run ``function(*args)`` as a task on the worker of ``host`` only, and return its result."""
    address = hosts.worker_address(client, host)
    return client.submit(function, *args, workers=[address], allow_other_workers=False, pure=False).result(
        timeout=HOST_PATIENCE
    )


def check_saves_are_read_everywhere(client: Any, hosts: Hosts, backend: str, directory: str, suffix: str) -> None:
    """Each host saves through its own registry; every host then reads every host's save."""
    names = hosts.names
    for writer in names:
        value, path = np.full(4, int(writer[1:])), f"{directory}/{writer}{suffix}"
        assert run_on(client, hosts, writer, save_here, backend, value, path) == writer
    for reader in names:
        for writer in names:
            loaded = run_on(client, hosts, reader, load_here, backend, f"{directory}/{writer}{suffix}")
            assert np.array_equal(loaded, np.full(4, int(writer[1:]))), (reader, writer)


def slow_block(block: np.ndarray, seconds: float) -> np.ndarray:
    """A block that takes ``seconds`` to compute (so a fault lands while a save is under way)."""
    time.sleep(seconds)
    return block


def save_here(backend: str, data: Any, path: str) -> str:
    """Save through this worker's own registry; return this host's name."""
    get_registry()[backend].save(data, path, overwrite=True)
    return socket.gethostname()


def load_here(backend: str, path: str) -> Any:
    """Load through this worker's own registry."""
    return get_registry()[backend].load(path)


def fill_disk(path: str, size: int) -> None:
    """Write ``size`` bytes of filler to ``path`` (to leave a host's scratch nearly full)."""
    with open(path, "wb") as filler:
        filler.write(b"\0" * size)


def remove(path: str) -> None:
    os.remove(path)


def kept_here(backend: str, paths: list[str], dask_worker: Any) -> tuple[str, list[str]]:
    """For ``client.run``: this worker's hostname and which of ``paths`` its ``backend`` keeps."""
    from polystore_dask.plugin import registry_of

    target = registry_of(dask_worker)[backend]
    return socket.gethostname(), [path for path in paths if target.is_file(path)]
