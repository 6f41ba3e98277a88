"""polystore: one storage API over pluggable backends (memory, disk, zarr).

Importing polystore imports neither zarr nor dask: the zarr backend imports
zarr when it is first used.
"""

from __future__ import annotations

from polystore.backend import ReadOnlyBackend, StorageBackend
from polystore.backends.disk import DiskBackend
from polystore.backends.memory import MemoryBackend
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
    "StorageBackend",
    "UnsupportedFormatError",
    "ZarrBackend",
]
