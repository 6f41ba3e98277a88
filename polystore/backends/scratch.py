"""The ``scratch`` backend: files on a node's own disk (an HPC node's NVMe), as ``disk`` keeps them."""

from __future__ import annotations

from typing import ClassVar

from polystore.backend import Locality
from polystore.backends.disk import DiskBackend

__all__ = ["ScratchBackend"]


class ScratchBackend(DiskBackend):
    """Files on node-local disk: :class:`DiskBackend` semantics, data kept on the host that wrote it.

    The same formats, atomic writes and root confinement as ``disk``, and the
    same options (``{"scratch": {"root": "/local/scratch"}}``). It declares
    ``locality = "host"``: each node has its own files at the root, and they
    outlive the worker process that wrote them. Through
    :class:`~polystore_dask.DaskFileManager` each path is served by a live
    worker on the host that wrote it (found by hostname), so a restarted
    worker there still serves it; a path whose host has no live worker left
    raises ``FileNotFoundError`` naming the path and the host. Listings show
    the union over hosts.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> scratch = ScratchBackend(root=tempfile.mkdtemp())
    >>> scratch.save(np.arange(3), "step1/a.npy")
    >>> scratch.load("step1/a.npy")
    array([0, 1, 2])
    """

    _backend_type = "scratch"
    locality: ClassVar[Locality] = "host"

    def __repr__(self) -> str:
        return f"ScratchBackend(root={None if self.root is None else str(self.root)!r}, fsync={self.fsync})"
