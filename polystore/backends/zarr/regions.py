"""Parts of a zarr array: write regions, read selections, and naming an unreadable chunk."""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from polystore.backends.zarr.create import import_zarr

if TYPE_CHECKING:
    import zarr

__all__ = ["find_unreadable_chunk", "load_selection", "settle_pending_writes", "write_region"]


def settle_pending_writes() -> None:
    """Wait for chunk writes zarr left running after a failed write.

    zarr gathers a write's chunk tasks without cancelling the rest when one
    fails, so they keep writing in zarr's event loop after the error reaches
    us. Cleaning up the temporary directory before they end would let them
    recreate it. This also waits for other threads' zarr work then running
    (at most a minute): an error path, rarely taken.
    """
    import_zarr()
    from zarr.core.sync import sync

    async def wait_for_others() -> None:
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        if others:
            await asyncio.wait(others, timeout=60)

    sync(wait_for_others())


def _region_slices(region: Any, shape: tuple[int, ...], path: str) -> tuple[slice, ...]:
    """Return ``region`` as one ``slice(start, stop)`` per dimension, inside ``shape``."""
    items = region if isinstance(region, tuple) else (region,)
    if len(items) > len(shape):
        raise ValueError(
            f"zarr backend: region {region!r} has {len(items)} dimensions but the array "
            f"at {path!r} has {len(shape)}"
        )
    items = items + (slice(None),) * (len(shape) - len(items))
    slices = []
    for item, size in zip(items, shape, strict=True):
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise TypeError(
                f"zarr backend: a write region is a tuple of slices with step 1, got {region!r}"
            )
        start = 0 if item.start is None else item.start
        stop = size if item.stop is None else item.stop
        if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))) or not (
            0 <= start <= stop <= size
        ):
            raise ValueError(
                f"zarr backend: region {region!r} is outside the array at {path!r} of shape "
                f"{shape}; give 0 <= start <= stop <= size in every dimension"
            )
        slices.append(slice(int(start), int(stop)))
    return tuple(slices)


def write_region(target: zarr.Array, block: np.ndarray, region: Any, path: str) -> None:
    """Write ``block`` into ``region`` of ``target`` after checking bounds, shape and dtype."""
    slices = _region_slices(region, target.shape, path)
    expected = tuple(item.stop - item.start for item in slices)
    if block.shape != expected:
        raise ValueError(
            f"zarr backend: block of shape {block.shape} does not fit region {region!r} "
            f"of shape {expected} in the array at {path!r}"
        )
    if not np.can_cast(block.dtype, target.dtype, casting="same_kind"):
        raise TypeError(
            f"zarr backend: cannot write {block.dtype} data into the {target.dtype} array "
            f"at {path!r} without an unsafe cast; convert the block with astype first"
        )
    if block.size:
        target[slices] = block


def load_selection(region: Any) -> Any:
    """Return ``region`` as a zarr basic selection, checking its element types."""
    if region is None:
        return Ellipsis
    items = region if isinstance(region, tuple) else (region,)
    for item in items:
        if not isinstance(item, (slice, int, np.integer)) and item is not Ellipsis:
            raise TypeError(
                f"zarr backend: region must be slices and ints (a basic selection), got {region!r}"
            )
    return items


def _touched(selection: tuple[Any, ...], shape: tuple[int, ...]) -> list[range]:
    """For each dimension, the index range a basic selection reads."""
    if any(item is Ellipsis for item in selection):
        at = next(i for i, item in enumerate(selection) if item is Ellipsis)
        fill = (slice(None),) * (len(shape) - len(selection) + 1)
        selection = selection[:at] + fill + selection[at + 1:]
    selection = selection + (slice(None),) * (len(shape) - len(selection))
    ranges = []
    # Not strict: a selection with more dimensions than the array (which zarr
    # has refused already) is cut to the array's, so the caller finds no bad
    # chunk and re-raises zarr's own error.
    for item, size in zip(selection, shape, strict=False):
        if isinstance(item, slice):
            start, stop, step = item.indices(size)
            low, high = (start, stop) if step > 0 else (stop + 1, start + 1)
            ranges.append(range(low, max(low, high)))
        else:
            index = int(item) + size if item < 0 else int(item)
            ranges.append(range(index, index + 1))
    return ranges


def find_unreadable_chunk(array: zarr.Array, selection: Any) -> tuple[int, ...] | None:
    """Return the grid position of the first stored chunk (shard if sharded) that fails to read.

    Only called after a read failed, to name the file at fault.
    """
    unit = array.shards or array.chunks
    selection = selection if isinstance(selection, tuple) else (selection,)
    grid = [
        range(touched.start // side, -(-touched.stop // side)) if len(touched) else range(0)
        for touched, side in zip(_touched(selection, array.shape), unit, strict=True)
    ]
    for position in itertools.product(*grid):
        part = tuple(
            slice(index * side, min((index + 1) * side, size))
            for index, side, size in zip(position, unit, array.shape, strict=True)
        )
        try:
            array[part]
        except Exception:
            return position
    return None
