"""Functions the multi-host tests run as tasks on one host's worker (importable there: the hosts get PYTHONPATH)."""

from __future__ import annotations

import os
import socket
from typing import Any

from polystore_dask import get_registry


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
