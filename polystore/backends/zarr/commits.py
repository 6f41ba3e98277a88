"""Which regions of an incomplete zarr array are written: one record per finished region write.

A region write into an array marked incomplete (``create_array(...,
incomplete=True)``, as ``save_array`` makes it) leaves a record once all
its chunks are stored: an empty file named for the region in the
``.polystore-committed`` directory inside the array. A writer killed while
writing a region leaves no record for it, so a region whose chunks are only
partly new (each chunk file is replaced atomically, but a region spans many)
never counts as written. Chunk files alone could not tell: a chunk holding
only the fill value is never stored at all. ``complete_array`` removes the
records.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["COMMITS", "clear_commits", "read_commits", "record_commit"]

#: The directory, inside an incomplete array, of the records of its finished region writes.
COMMITS = ".polystore-committed"


def _name(region: tuple[slice, ...]) -> str:
    # "0-10_0-30" for rows 0-10, columns 0-30; a 0-d array's one region is "all".
    return "_".join(f"{part.start}-{part.stop}" for part in region) or "all"


def _region(name: str) -> tuple[slice, ...] | None:
    if name == "all":
        return ()
    try:
        bounds = [tuple(int(bound) for bound in part.split("-")) for part in name.split("_")]
    except ValueError:
        return None
    if not all(len(pair) == 2 for pair in bounds):
        return None
    return tuple(slice(start, stop) for start, stop in bounds)


def record_commit(array_dir: Path, region: tuple[slice, ...]) -> None:
    """Record that every chunk of ``region`` (``slice(start, stop)`` per dimension) is stored."""
    record = array_dir / COMMITS / _name(region)
    try:
        record.touch()
    except FileNotFoundError:  # an array marked incomplete by another tool: no records yet
        record.parent.mkdir(exist_ok=True)
        record.touch()


def read_commits(array_dir: Path) -> list[tuple[slice, ...]]:
    """The regions recorded in ``array_dir``, in name order (none for an array without records)."""
    try:
        names = sorted(os.listdir(array_dir / COMMITS))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [region for region in map(_region, names) if region is not None]


def clear_commits(array_dir: Path) -> None:
    """Remove the records (once the array is complete)."""
    shutil.rmtree(array_dir / COMMITS, ignore_errors=True)
