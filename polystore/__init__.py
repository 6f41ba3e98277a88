"""polystore: one storage API over pluggable backends (memory, disk, zarr, s3, scratch).

Importing polystore imports neither zarr, obstore nor dask: the zarr and s3
backends import theirs when first used.
"""

from __future__ import annotations

from polystore.backend import ReadOnlyBackend, StorageBackend
from polystore.backends.disk import DiskBackend
from polystore.backends.memory import MemoryBackend
from polystore.backends.s3 import S3Backend
from polystore.backends.scratch import ScratchBackend
from polystore.backends.zarr import ZarrBackend
from polystore.errors import (
    BackendNotFoundError,
    InvalidPathError,
    PolystoreError,
    ReadOnlyError,
    UnsupportedFormatError,
)
from polystore.manager import FileManager
from polystore.registry import BackendRegistry

__version__ = "0.1.0"

__all__ = [
    "BackendNotFoundError",
    "BackendRegistry",
    "DiskBackend",
    "FileManager",
    "InvalidPathError",
    "MemoryBackend",
    "PolystoreError",
    "ReadOnlyBackend",
    "ReadOnlyError",
    "S3Backend",
    "ScratchBackend",
    "StorageBackend",
    "UnsupportedFormatError",
    "ZarrBackend",
]
