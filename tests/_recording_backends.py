"""A zarr backend that notes which Dask worker wrote each region, for tests of where writes run.

Imported on the workers only, through ``PolystorePlugin(imports=["tests._recording_backends"])``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distributed import get_worker

from polystore import ZarrBackend
from polystore.backend import PathLike


def writers_directory(path: PathLike) -> Path:
    """Where the writes into the array at ``path`` are recorded: a sibling directory."""
    return Path(os.path.realpath(os.fspath(path)) + ".writers")


def region_name(region: tuple[slice, ...]) -> str:
    """A file name for ``region``, e.g. ``0-200_250-500``."""
    return "_".join(f"{part.start}-{part.stop}" for part in region)


class RecordingZarrBackend(ZarrBackend):
    """The zarr backend, also appending the writing worker's address to one file per region written."""

    _backend_type = "test_recording_zarr"

    def save(self, data: Any, path: PathLike, *, region: Any = None, **kwargs: Any) -> None:
        super().save(data, path, region=region, **kwargs)
        if region is not None:
            directory = writers_directory(path)
            directory.mkdir(exist_ok=True)
            with open(directory / region_name(tuple(region)), "a") as record:
                record.write(get_worker().address + "\n")
