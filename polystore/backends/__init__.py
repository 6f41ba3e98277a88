"""The backends shipped with polystore, one module (or subpackage) each.

``memory`` (:class:`MemoryBackend`), ``disk`` (:class:`DiskBackend`) and
``zarr`` (:class:`ZarrBackend`); :mod:`polystore.backends.formats` holds the
file formats (encode and decode by suffix) that file-like backends share.
"""

from __future__ import annotations

from polystore.backends.disk import DiskBackend
from polystore.backends.memory import MemoryBackend
from polystore.backends.zarr import ZarrBackend

__all__ = ["DiskBackend", "MemoryBackend", "ZarrBackend"]
