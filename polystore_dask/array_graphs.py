"""The graphs of save_array and load_array, built on the client.

Two kinds of backend hold arrays. One that stores arrays by region
(``supports_regions``, as zarr) gets an array created first, then tasks
that each compute a block, or a group of small neighbouring blocks, and
write it as whole chunks (whole shards) into it (see
:mod:`~polystore_dask.array_writes`); one that keeps data
per process (or per host) gets each block kept on the worker (the host)
that computed it, with the array's layout beside the blocks. Every step that touches the stored array
before the graph runs (creating it, reading its layout, finding what
exists) is submitted through :class:`~polystore_dask.ordering.OrderedTasks`,
so it follows the unfinished operations on that path like any other.
"""

from __future__ import annotations

import errno
import itertools
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dask.array as da
import numpy as np
from dask.blockwise import blockwise
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.layers import ArraySliceDep
from dask.task_spec import List, Task, TaskRef

from polystore.backend import PathLike
from polystore.errors import UnsupportedFormatError
from polystore_dask.array_tasks import (
    LAYOUT,
    LAYOUT_FILE,
    METADATA,
    array_info,
    create_array,
    drop_here,
    finish_array,
    join_key,
    probe_array,
    read_block,
    read_kept_block,
    store_block,
    store_layout,
)
from polystore_dask.array_writes import blocks_of, plan_writes
from polystore_dask.errors import lost_error
from polystore_dask.ordering import OrderedTasks
from polystore_dask.owners import Owners
from polystore_dask.tasks import attempt
from polystore_dask.traits import BackendTraits, PathKey
from polystore_dask.workers import Keeper, Owner, run_everywhere

__all__ = ["load_blocks", "load_by_region", "save_blocks", "save_by_region"]


# -- backends that store arrays by region ------------------------------------
def save_by_region(
    tasks: OrderedTasks,
    traits: BackendTraits,
    x: Any,
    path: PathLike,
    key: PathKey,
    origin: str,
    options: dict[str, Any],
) -> Delayed | None:
    """Create the array at ``path``, then write ``x`` into it block by block on the workers holding the blocks."""
    if not traits.supports_regions:
        raise UnsupportedFormatError(
            f"save_array cannot write to the {traits.name} backend: {traits.type_name} does not store arrays "
            "by region (supports_regions is False: no create_array and region writes); use a backend that does, "
            "such as 'zarr', or a per-process one such as 'memory'"
        )
    x = _as_dask_array(x)
    chunks, shards, resume = options["chunks"], options["shards"], options["resume"]
    if resume and options["overwrite"]:
        raise ValueError(
            f"save_array of {str(path)!r}: resume=True finishes the incomplete array there and overwrite=True "
            "replaces it; pass one of them"
        )
    if chunks is None:
        chunks = _regular_chunks(x, shards)
    token = uuid.uuid4().hex
    labels = {"dimension_names": options["dimension_names"], "attributes": options["attributes"]}
    creating = tasks.start(
        f"polystore-save_array-create-{token}", attempt, create_array, traits.name, path, x.shape, x.dtype, chunks,
        shards, options["compressor"], options["overwrite"], origin, labels, resume, writes=[key],
    )
    # Where the layout is known here (and nothing is resumed), the writes are planned while the
    # array is being created: its round trip then costs no time of its own.
    planned = _sides(shards or chunks, x.ndim)
    writes = None if resume or planned is None else _writes(x, planned, None, traits.name, path, origin, token)
    created = creating.result().result()
    done = f"polystore-save_array-{token}"
    if created.get("complete"):  # resumed, and nothing is missing: nothing to compute
        nothing = HighLevelGraph.from_collections(done, {done: Task(done, _nothing)}, dependencies=())
        return Delayed(done, nothing) if not options["compute"] else None
    unit = created["shards"] or created["chunks"]
    if writes is None or planned != tuple(unit):
        committed = _committed_units(created.get("committed", []), unit, x.shape) if resume else None
        writes = _writes(x, unit, committed, traits.name, path, origin, token)
    layer, wanted = writes
    layer[done] = Task(done, finish_array, traits.name, path, origin, *(TaskRef(key) for key in wanted))
    delayed = Delayed(done, HighLevelGraph.from_collections(done, layer, dependencies=()))
    if not options["compute"]:
        return delayed
    future = tasks.client.compute(delayed)
    try:
        future.result()
    except BaseException:
        future.cancel()  # a failed save stops writing: what is recorded so far is what a resume keeps
        raise
    return None


def _writes(
    x: da.Array, unit: Sequence[int], committed: Any, backend: str, path: PathLike, origin: str, token: str
) -> tuple[dict[Any, Any], list[Any]]:
    """The graph writing ``x`` (rechunked to whole ``unit``s) and its write keys; ``committed`` blocks are skipped."""
    return plan_writes(
        _aligned(x, unit), lambda region: committed is not None and _covers(committed, region, unit), backend, path,
        origin, f"polystore-save_array-write-{token}",
    )


def load_by_region(
    tasks: OrderedTasks, traits: BackendTraits, path: PathLike, key: PathKey, origin: str, chunks: Any
) -> da.Array:
    """A lazy array whose blocks are region reads of the array at ``path``, after the writes before it."""
    token = uuid.uuid4().hex
    info = tasks.submit(
        f"polystore-load_array-info-{token}", attempt, array_info, traits.name, path, origin,
        after=tasks.after(reads=[key]),
    ).result().result()
    shape, dtype = tuple(info["shape"]), np.dtype(info["dtype"])
    chunks = _blocks_to_read(chunks, info["chunks"], shape, dtype, path)
    name = f"polystore-load_array-{token}"
    # A Blockwise layer, like dask.array.from_zarr's: dask fuses it with what
    # follows (the chunk step of a sum) into one task per block.
    axes = tuple(range(len(shape)))
    layer = blockwise(
        read_block, name, axes, ArraySliceDep(chunks), axes, traits.name, None, path, None, origin, None,
        numblocks={}, _data_producer=True,
    )
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    return da.Array(graph, name, chunks, dtype=dtype, meta=np.empty((0,) * len(shape), dtype))


# -- backends that keep data per process (or per host) ------------------------
def _kept_names(traits: BackendTraits) -> tuple[str, str]:
    """The layout's name and the blocks' suffix: files (``.npy``, ``.json``) where paths are files."""
    return (LAYOUT_FILE, ".npy") if traits.spelling.kind == "filesystem" else (LAYOUT, "")


def save_blocks(
    tasks: OrderedTasks,
    owners: Owners,
    traits: BackendTraits,
    x: Any,
    path: PathLike,
    key: PathKey,
    options: dict[str, Any],
    kept_by: Callable[[dict[str, Owner]], None] | None = None,
) -> Delayed | None:
    """Keep each block of ``x`` where it is computed, at ``<path>/<i>.<j>...``, the layout beside them.

    Where: on the worker that computes it, or for a per-host backend on its host.
    ``kept_by`` is told who keeps each block (and the layout) once all are kept.
    """
    x = _as_dask_array(x)
    layout_name, suffix = _kept_names(traits)
    backend, canonical = key
    refused = [name for name in ("resume", "dimension_names", "attributes") if options[name]]
    if refused:
        raise ValueError(
            f"{backend} backend: save_array to {str(path)!r} cannot take {', '.join(refused)}: a per-process "
            "backend keeps the blocks only (no dimension names or attributes, and nothing of a failed run to "
            "resume); save to 'zarr' to keep them, or pass the plain dask array (a DataArray's .data)"
        )
    if options["chunks"] is not None:
        # Blocks are kept as they are; ``chunks`` sets their shape, shards and compressor do not apply.
        x = x.rechunk(_block_shape(options["chunks"], x, backend, path))
    client = tasks.client
    tasks.settle_before(writes=[key])
    if canonical in owners.locate([canonical]):
        if not options["overwrite"]:
            raise FileExistsError(
                errno.EEXIST, f"{backend} backend: something exists at this path; pass overwrite=True to replace it",
                str(path),
            )
        run_everywhere(client, drop_here, backend, canonical)
        owners.forget(canonical, None, inside=True)
    token = uuid.uuid4().hex
    name = f"polystore-save_array-store-{token}"
    layer: dict[Any, Any] = {}
    block_paths = [_block_path(canonical, index, suffix) for index, _ in blocks_of(x.chunks)]
    for (index, _), block_path in zip(blocks_of(x.chunks), block_paths, strict=True):
        block_key = (name, *index)
        layer[block_key] = Task(block_key, store_block, TaskRef((x.name, *index)), backend, block_path, x.dtype.str)
    layout = {"shape": list(x.shape), "dtype": x.dtype.str, "chunks": [list(sizes) for sizes in x.chunks]}
    owners_key = f"polystore-save_array-layout-{token}"
    layer[owners_key] = Task(
        owners_key, store_layout, List(*(TaskRef(block) for block in list(layer))), backend, canonical, layout,
        block_paths, layout_name,
    )
    done = f"polystore-save_array-{token}"
    layer[done] = Task(done, _nothing, TaskRef(owners_key))
    graph = HighLevelGraph.from_collections(done, layer, dependencies=[x])
    if not options["compute"]:
        return Delayed(done, graph)
    kept = client.compute(Delayed(owners_key, graph, layer=done)).result()
    for block_path, owner in kept.items():
        owners.set(block_path, owner)
    if kept_by is not None:
        kept_by(kept)
    return None


def load_blocks(
    tasks: OrderedTasks, owners: Owners, traits: BackendTraits, path: PathLike, key: PathKey, chunks: Any
) -> da.Array:
    """The array at ``path``: each block read now, by a task on the worker (or the host) keeping it."""
    backend, canonical = key
    layout_name, suffix = _kept_names(traits)
    client = tasks.client
    tasks.settle_before(reads=[key])
    recorded = {
        kept: Owner(*owner) for kept, owner in client.get_metadata([METADATA, backend, canonical], default={}).items()
    }
    workers = owners.workers()
    layout: dict[str, Any] | None = None
    holders: dict[str, Owner] = {}
    probed = run_everywhere(client, probe_array, backend, canonical, layout_name)
    for _, (owner, found, names) in sorted(probed.items()):
        layout = layout or found
        for block_name in names:
            holders.setdefault(block_name, owner)
    if layout is None:
        keeper = owners.keeper(join_key(canonical, layout_name)) or recorded.get(join_key(canonical, layout_name))
        if keeper is not None and not workers.alive(keeper):
            raise lost_error(backend, str(path), keeper)
        raise FileNotFoundError(
            errno.ENOENT,
            f"{backend} backend: no worker keeps an array saved by save_array here (no {layout_name!r} inside); "
            "save one with save_array first",
            str(path),
        )
    stored = tuple(tuple(sizes) for sizes in layout["chunks"])
    dtype = np.dtype(layout["dtype"])
    blocks = _blocks_to_read(chunks, stored, tuple(map(sum, stored)), dtype, path)
    # Each block is read now, by a task on the worker keeping it: the result
    # is a view of what that worker keeps, so nothing is copied. (Pinning lazy
    # tasks instead would not hold: dask's graph fusion drops annotations.)
    token = uuid.uuid4().hex
    name = f"polystore-load_array-{token}"
    layer: dict[Any, Any] = {}
    for index, _ in blocks_of(stored):
        block_path = _block_path(canonical, index, suffix)
        # A replicated block is read on any live holder (the least busy), others where the probe found them.
        reader: Keeper | None = (
            owners.keeper(block_path) if owners.replicated(block_path) is not None
            else holders.get(block_path) or owners.keeper(block_path) or recorded.get(block_path)
        )
        layer[(name, *index)] = tasks.submit(
            f"{name}-{'.'.join(map(str, index))}", read_kept_block, backend, block_path, reader,
            pin=workers.pin(reader),
        )
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    array = da.Array(graph, name, stored, dtype=dtype, meta=np.empty((0,) * len(stored), dtype))
    return array if blocks == stored else array.rechunk(blocks)


def _blocks_to_read(
    chunks: Any, stored: Any, shape: tuple[int, ...], dtype: np.dtype, path: PathLike
) -> tuple[tuple[int, ...], ...]:
    """The blocks of ``load_array(path, chunks=chunks)``: the ``stored`` chunks unless ``chunks`` is given."""
    if chunks is None:
        return da.core.normalize_chunks(stored, shape, dtype=dtype)
    try:
        return da.core.normalize_chunks(chunks, shape, dtype=dtype)
    except (ValueError, TypeError, ZeroDivisionError) as error:
        # dask divides by a block size of 0 before it checks it.
        why = "a block size of 0 in a dimension that is not empty" if isinstance(error, ZeroDivisionError) else error
        example = tuple(max(1, sizes[0]) if sizes else 1 for sizes in da.core.normalize_chunks(stored, shape))
        raise ValueError(
            f"load_array of {str(path)!r}: chunks={chunks!r} do not fit the array there, of shape {shape} ({why}); "
            f"give one block size per dimension, such as {example} (-1 for a whole dimension), or leave chunks "
            "out to read the stored chunks"
        ) from None


def _committed_units(regions: Sequence[Sequence[tuple[int, int]]], unit: Sequence[int], shape: Sequence[int]) -> Any:
    """A grid over the array's chunks (shards), true where a chunk lies wholly inside a committed region."""
    grid = tuple(-(-size // side) for size, side in zip(shape, unit, strict=True))
    committed = np.zeros(grid, dtype=bool)
    for region in regions:
        cells = []
        for (start, stop), side, size, count in zip(region, unit, shape, grid, strict=True):
            # Only chunks the region holds whole: a partly covered one is written again.
            cells.append(slice(-(-start // side), count if stop >= size else stop // side))
        committed[tuple(cells)] = True
    return committed


def _covers(committed: Any, region: tuple[slice, ...], unit: Sequence[int]) -> bool:
    """Whether every chunk (shard) of a block, aligned to them, is committed."""
    cells = tuple(
        slice(part.start // side, -(-part.stop // side)) for part, side in zip(region, unit, strict=True)
    )
    return bool(committed[cells].all()) if committed.size else False


# -- shapes ----------------------------------------------------------------
def _as_dask_array(x: Any) -> da.Array:
    if not isinstance(x, da.Array):
        x = da.asarray(x)
    if any(np.isnan(size) for sizes in x.chunks for size in sizes):
        raise ValueError("save_array needs known chunk sizes; call x.compute_chunk_sizes() first")
    return x


def _regular_chunks(x: da.Array, shards: Sequence[int] | None) -> tuple[int, ...] | None:
    """``x``'s block shape if every block but the last along each axis has it (and it divides ``shards``)."""
    sizes = []
    for axis_chunks in x.chunks:
        first = axis_chunks[0] if axis_chunks else 0
        if first == 0 or any(size != first for size in axis_chunks[:-1]) or axis_chunks[-1] > first:
            return None
        sizes.append(first)
    if shards is not None and any(shard % size for shard, size in zip(shards, sizes, strict=False)):
        return None
    return tuple(sizes)


def _sides(sides: Any, ndim: int) -> tuple[int, ...] | None:
    """``sides`` as a tuple if it is one positive int per dimension, else None (the backend judges it)."""
    if sides is None or isinstance(sides, (str, bytes)) or not isinstance(sides, Sequence) or len(sides) != ndim:
        return None
    if not all(isinstance(side, (int, np.integer)) and not isinstance(side, bool) and side > 0 for side in sides):
        return None
    return tuple(int(side) for side in sides)


def _aligned(x: da.Array, unit: Sequence[int]) -> da.Array:
    """``x`` rechunked, where needed, so every block is made of whole ``unit``s (chunks or shards)."""
    new = {}
    for axis, (axis_chunks, side) in enumerate(zip(x.chunks, unit, strict=True)):
        edges = list(itertools.accumulate(axis_chunks))[:-1]
        if all(edge % side == 0 for edge in edges):
            continue
        typical = max(axis_chunks)
        new[axis] = max(1, round(typical / side)) * side
    return x.rechunk(new) if new else x


def _block_shape(chunks: Any, x: da.Array, backend: str, path: PathLike) -> tuple[int, ...]:
    """``chunks`` as the shape of the kept blocks, or ``ValueError`` before anything is stored."""
    sizes = (chunks,) if isinstance(chunks, int) else tuple(chunks)
    if len(sizes) != x.ndim or not all(isinstance(size, (int, np.integer)) and size > 0 for size in sizes):
        raise ValueError(
            f"{backend} backend: save_array chunks={chunks!r} for {str(path)!r} must give one positive block "
            f"size per dimension of the array of shape {x.shape}, e.g. chunks={tuple(max(1, side) for side in x.shape)}"
        )
    return tuple(int(size) for size in sizes)


def _block_path(key: str, index: tuple[int, ...], suffix: str) -> str:
    # A 0-d array has one block, of index (): it is named "0" (never the array's own path).
    return join_key(key, (".".join(map(str, index)) or "0") + suffix)


def _nothing(*_: Any) -> None:
    return None
