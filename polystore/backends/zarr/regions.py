"""Parts of a zarr array: write regions, read selections, and naming an unreadable chunk."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from polystore.backends.zarr.create import import_zarr, os_error_of

if TYPE_CHECKING:
    import zarr

__all__ = [
    "check_selection_bounds",
    "check_values_fit",
    "chunks_touched",
    "find_unreadable_chunk",
    "load_selection",
    "region_writer",
    "settle_pending_writes",
    "write_slices",
]


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


def _outside(region: Any, shape: tuple[int, ...], path: str, detail: str) -> ValueError:
    return ValueError(
        f"zarr backend: region {region!r} is outside the array at {path!r} of shape {shape} ({detail}); "
        "give a region inside the array: a shorter tile is never returned or written in its place"
    )


def write_slices(region: Any, shape: tuple[int, ...], path: str) -> tuple[slice, ...]:
    """Return ``region`` as one ``slice(start, stop)`` per dimension, inside ``shape``."""
    items = region if isinstance(region, tuple) else (region,)
    if len(items) > len(shape):
        raise _outside(region, shape, path, f"it has {len(items)} dimensions, the array {len(shape)}")
    items = items + (slice(None),) * (len(shape) - len(items))
    slices = []
    for item, size in zip(items, shape, strict=True):
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise TypeError(
                f"zarr backend: a write region is a tuple of slices with step 1, got {region!r} "
                f"for the array at {path!r}"
            )
        start = 0 if item.start is None else item.start
        stop = size if item.stop is None else item.stop
        if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))):
            raise TypeError(f"zarr backend: region {region!r} for the array at {path!r} must have int bounds")
        if not 0 <= start <= stop <= size:
            raise _outside(region, shape, path, "a write needs 0 <= start <= stop <= size in every dimension")
        slices.append(slice(int(start), int(stop)))
    return tuple(slices)


def region_writer(target: zarr.Array, block: np.ndarray, region: Any, path: str) -> Callable[[], None]:
    """Check ``block`` against ``region`` of ``target`` (bounds, shape, values) and return the write to run.

    Nothing is written until the returned function is called, so a batch can
    check every block first.
    """
    slices = write_slices(region, target.shape, path)
    expected = tuple(item.stop - item.start for item in slices)
    if block.shape != expected:
        raise ValueError(
            f"zarr backend: block of shape {block.shape} does not fit region {region!r} "
            f"of shape {expected} in the array at {path!r}"
        )
    check_values_fit(block, target.dtype, path)

    def write() -> None:
        if block.size:
            try:
                target[slices] = block
            except RuntimeError as error:
                refused = os_error_of(error)
                if refused is not None:
                    raise refused from error
                raise

    return write


def check_values_fit(block: np.ndarray, dtype: np.dtype[Any], path: str) -> None:
    """Refuse a block whose values the array's ``dtype`` would change (a wrapped integer, an overflow, a cut string).

    Accepted: every cast numpy calls "safe"; integer (and bool) blocks into an
    integer array when every value lies in its range; casts within a kind
    (numpy's "same_kind", e.g. float64 into float32) that round floats to the
    nearest value but turn no finite value infinite, and change no datetime,
    timedelta or string value. Anything else raises: ``TypeError`` across
    kinds (float into int, complex into float, int into bool), ``ValueError``
    for values that do not fit.
    """
    source = block.dtype
    if source == dtype or (block.size == 0 and np.can_cast(source, dtype, "same_kind")):
        return
    if source.kind in "biu" and dtype.kind in "iu":
        low, high = (int(block.min()), int(block.max())) if block.size else (0, 0)
        limits = np.iinfo(dtype)
        if low < limits.min or high > limits.max:
            raise ValueError(
                f"zarr backend: cannot write the {source} block into the {dtype} array at {path!r}: its values "
                f"reach {low if low < limits.min else high}, outside {dtype}'s range {limits.min} to {limits.max}, "
                "and would wrap; nothing was written. Write values that fit, or create the array with a wider dtype"
            )
        return
    if np.can_cast(source, dtype, "safe") and source.kind not in "Mm":
        return
    if not np.can_cast(source, dtype, "same_kind"):
        raise TypeError(
            f"zarr backend: cannot write {source} data into the {dtype} array at {path!r}: the cast would change "
            f"values (numpy allows it only as an unsafe cast); nothing was written. Convert the block with "
            f"astype({str(dtype)!r}) yourself if that is what you mean"
        )
    with np.errstate(all="ignore"):
        converted = block.astype(dtype)
        if dtype.kind in "fc":
            changed = bool(np.any(np.isfinite(block) & ~np.isfinite(converted)))
            what = "finite values would become infinite"
        else:
            back = converted.astype(source)
            if source.kind in "Mm":
                changed = not np.array_equal(back.view(np.int64), block.view(np.int64))
            else:
                changed = not np.array_equal(back, block)
            what = "values would be cut or changed"
    if changed:
        raise ValueError(
            f"zarr backend: cannot write the {source} block into the {dtype} array at {path!r}: {what}; "
            "nothing was written. Write values that fit, or create the array with a wider dtype"
        )


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


def check_selection_bounds(selection: Any, shape: tuple[int, ...], region: Any, path: str) -> None:
    """Refuse a load region reaching outside ``shape``, as a region write is refused.

    numpy and zarr clip such slices, which would hand back a shorter tile
    than asked for. Negative indices count from the end, as in numpy.
    """
    if selection is Ellipsis:
        return
    items = [item for item in selection if item is not Ellipsis]
    if sum(item is Ellipsis for item in selection) > 1:
        raise TypeError(f"zarr backend: region {region!r} for the array at {path!r} has more than one Ellipsis")
    if len(items) > len(shape):
        raise _outside(region, shape, path, f"it has {len(items)} dimensions, the array {len(shape)}")
    at = next((i for i, item in enumerate(selection) if item is Ellipsis), len(selection))
    dims = list(range(at)) + list(range(len(shape) - (len(selection) - at - 1), len(shape)))
    for item, dim in zip(items, dims, strict=True):
        size = shape[dim]
        if isinstance(item, slice):
            for bound in (item.start, item.stop):
                if bound is not None and not -size <= bound <= size:
                    raise _outside(region, shape, path, f"{bound} is past dimension {dim} of size {size}")
        elif not -size <= item < size:
            raise _outside(region, shape, path, f"index {item} is past dimension {dim} of size {size}")


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


def _grid(array: zarr.Array, selection: Any) -> list[range]:
    """For each dimension, the positions of the stored chunks (shards if sharded) a basic selection touches."""
    unit = array.shards or array.chunks
    selection = () if selection is Ellipsis else selection if isinstance(selection, tuple) else (selection,)
    return [
        range(touched.start // side, -(-touched.stop // side)) if len(touched) else range(0)
        for touched, side in zip(_touched(selection, array.shape), unit, strict=True)
    ]


def chunks_touched(array: zarr.Array, selection: Any) -> int:
    """How many stored chunks (shards if sharded) of ``array`` a read or write of ``selection`` touches.

    A selection of other items than slices, ints and one Ellipsis counts as
    none here: zarr or the caller's checks refuse it.
    """
    items = selection if isinstance(selection, tuple) else (selection,)
    if not all(isinstance(item, (slice, int, np.integer)) or item is Ellipsis for item in items):
        return 0
    if sum(item is Ellipsis for item in items) > 1:
        return 0
    return math.prod(len(positions) for positions in _grid(array, selection))


def find_unreadable_chunk(array: zarr.Array, selection: Any) -> tuple[int, ...] | None:
    """Return the grid position of the first stored chunk (shard if sharded) that fails to read.

    Only called after a read failed, to name the file at fault.
    """
    unit = array.shards or array.chunks
    for position in itertools.product(*_grid(array, selection)):
        part = tuple(
            slice(index * side, min((index + 1) * side, size))
            for index, side, size in zip(position, unit, array.shape, strict=True)
        )
        try:
            array[part]
        except Exception:
            return position
    return None
