"""Functions run in child processes by tests/test_disk_faults.py (importable for spawn)."""

from __future__ import annotations

import multiprocessing.synchronize
from multiprocessing.queues import Queue

import numpy as np

from polystore import DiskBackend


def race_to_save(root: str, path: str, index: int, start: multiprocessing.synchronize.Barrier, results: Queue) -> None:
    """Wait for every racer, then try one exclusive save of an array full of ``index``."""
    data = np.full((256, 256), index, dtype=np.int32)
    backend = DiskBackend(root=root)
    start.wait()
    try:
        backend.save(data, path)
    except FileExistsError:
        results.put(("lost", index))
    else:
        results.put(("won", index))


def overwrite_forever(root: str, path: str, size: int) -> None:
    """Overwrite ``path`` again and again, alternating two arrays (values 2 and 3), until killed."""
    backend = DiskBackend(root=root)
    versions = [np.full(size, 2, dtype=np.float32), np.full(size, 3, dtype=np.float32)]
    while True:
        for data in versions:
            backend.save(data, path, overwrite=True)
