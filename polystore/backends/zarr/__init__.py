"""The zarr backend: each path a standard zarr v3 array directory.

:mod:`~polystore.backends.zarr.backend` holds :class:`ZarrBackend`;
:mod:`~polystore.backends.zarr.create` the codecs, default chunks and array
creation; :mod:`~polystore.backends.zarr.regions` region writes and
selections; :mod:`~polystore.backends.zarr.tree` the directory tree (arrays
are files); :mod:`~polystore.backends.zarr.swap` the atomic directory swaps.
zarr itself is imported on first use only.
"""

from __future__ import annotations

from polystore.backends.zarr.backend import ZarrBackend

__all__ = ["ZarrBackend"]
