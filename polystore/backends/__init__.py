"""The backends shipped with polystore, one module (or subpackage) each.

``memory`` (:class:`MemoryBackend`), ``disk`` (:class:`DiskBackend`),
``zarr`` (:class:`ZarrBackend`), ``s3`` (:class:`S3Backend`) and ``scratch``
(:class:`ScratchBackend`, node-local disk); :mod:`polystore.backends.formats` holds the
file formats (encode and decode by suffix) that file-like backends share.
"""

from __future__ import annotations

from polystore.backends.disk import DiskBackend
from polystore.backends.memory import MemoryBackend
from polystore.backends.s3 import S3Backend
from polystore.backends.scratch import ScratchBackend
from polystore.backends.zarr import ZarrBackend

__all__ = ["DiskBackend", "MemoryBackend", "S3Backend", "ScratchBackend", "ZarrBackend"]
