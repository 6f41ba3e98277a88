"""save_array and load_array: dask arrays written and read block by block on the workers.

The graph-building half runs on the client (called by
:class:`~polystore_dask.DaskFileManager`); the block functions run on the
workers, each through its worker's registry.
"""

from __future__ import annotations

import errno
import itertools
import os
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
from dask.blockwise import blockwise
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.layers import ArraySliceDep
from dask.task_spec import List, Task, TaskRef
from distributed import get_worker

from polystore.paths import normalize_key
from polystore.errors import UnsupportedFormatError
from polystore_dask.plugin import get_registry, registry_of
from polystore_dask.routing import Workers, run_everywhere
from polystore_dask.tasks import Owner, check_owner, is_rerun, lost_error, origin_of, resolve

if TYPE_CHECKING:
    from polystore_dask.manager import DaskFileManager

__all__ = ["load_array", "save_array"]

MEMORY = "memory"
#: Where a memory array keeps its layout, inside the array's directory.
LAYOUT = ".array"
#: The scheduler metadata entry noting which worker keeps each block of each memory array.
_METADATA = "polystore-memory-arrays"


# -- client side -----------------------------------------------------------
def save_array(
    manager: DaskFileManager,
    x: Any,
    path: str | os.PathLike[str],
    backend: str,
    *,
    chunks: tuple[int, ...] | None,
    shards: tuple[int, ...] | None,
    compressor: str | None,
    overwrite: bool,
    compute: bool,
) -> Delayed | None:
    """Build (and with ``compute``, run) the graph writing ``x``; see :meth:`DaskFileManager.save_array`."""
    x = _as_dask_array(x)
    if backend == MEMORY:
        # Blocks are kept as they are; ``chunks`` sets their shape, shards and compressor do not apply.
        return _save_to_memory(manager, x if chunks is None else x.rechunk(chunks), path, overwrite, compute)
    token = uuid.uuid4().hex
    origin = origin_of(backend)
    if chunks is None:
        chunks = _regular_chunks(x, shards)
    created = manager.client.submit(
        create_array, backend, path, x.shape, x.dtype, chunks, shards, compressor, overwrite, origin,
        key=f"polystore-save_array-create-{token}", pure=False,
    ).result()
    x = _aligned(x, created["shards"] or created["chunks"])
    name = f"polystore-save_array-write-{token}"
    layer: dict[Any, Any] = {}
    for index, region in _blocks(x.chunks):
        key = (name, *index)
        layer[key] = Task(key, write_block, TaskRef((x.name, *index)), backend, path, region, origin)
    done = f"polystore-save_array-{token}"
    layer[done] = Task(done, _nothing, List(*(TaskRef(key) for key in list(layer))))
    delayed = Delayed(done, HighLevelGraph.from_collections(done, layer, dependencies=[x]))
    if not compute:
        return delayed
    manager.client.compute(delayed).result()
    return None


def _save_to_memory(manager: DaskFileManager, x: da.Array, path: Any, overwrite: bool, compute: bool) -> Delayed | None:
    key = normalize_key(path, MEMORY)
    if key in manager._owners.locate([key]):
        if not overwrite:
            raise FileExistsError(
                errno.EEXIST, "memory backend: something exists at this path; pass overwrite=True to replace it", str(path)
            )
        run_everywhere(manager.client, drop_here, key)
        manager._owners.forget(key, None, inside=True)
    token = uuid.uuid4().hex
    name = f"polystore-save_array-store-{token}"
    layer: dict[Any, Any] = {}
    for index, _ in _blocks(x.chunks):
        block_key = (name, *index)
        layer[block_key] = Task(block_key, store_block, TaskRef((x.name, *index)), _block_path(key, index))
    layout = {"shape": list(x.shape), "dtype": x.dtype.str, "chunks": [list(sizes) for sizes in x.chunks]}
    owners_key = f"polystore-save_array-layout-{token}"
    layer[owners_key] = Task(
        owners_key, store_layout, List(*(TaskRef(block) for block in list(layer))), key, layout,
        [_block_path(key, index) for index, _ in _blocks(x.chunks)],
    )
    done = f"polystore-save_array-{token}"
    layer[done] = Task(done, _nothing, TaskRef(owners_key))
    graph = HighLevelGraph.from_collections(done, layer, dependencies=[x])
    if not compute:
        return Delayed(done, graph)
    owners = manager.client.compute(Delayed(owners_key, graph, layer=done)).result()
    for block_path, owner in owners.items():
        manager._owners.set(block_path, owner)
    return None


def load_array(manager: DaskFileManager, path: Any, backend: str, chunks: Any) -> da.Array:
    """Return the lazy array at ``path``; see :meth:`DaskFileManager.load_array`."""
    token = uuid.uuid4().hex
    if backend == MEMORY:
        return _load_from_memory(manager, path, chunks, token)
    origin = origin_of(backend)
    info = manager.client.submit(
        array_info, backend, path, origin, key=f"polystore-load_array-info-{token}", pure=False
    ).result()
    shape, dtype = tuple(info["shape"]), np.dtype(info["dtype"])
    chunks = da.core.normalize_chunks(info["chunks"] if chunks is None else chunks, shape, dtype=dtype)
    name = f"polystore-load_array-{token}"
    # A Blockwise layer, like dask.array.from_zarr's: dask fuses it with what
    # follows (the chunk step of a sum) into one task per block.
    axes = tuple(range(len(shape)))
    layer = blockwise(
        read_block, name, axes, ArraySliceDep(chunks), axes, backend, None, path, None, origin, None,
        numblocks={}, _data_producer=True,
    )
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    return da.Array(graph, name, chunks, dtype=dtype, meta=np.empty((0,) * len(shape), dtype))


def _load_from_memory(manager: DaskFileManager, path: Any, chunks: Any, token: str) -> da.Array:
    key = normalize_key(path, MEMORY)
    recorded = {
        kept: Owner(*owner) for kept, owner in manager.client.get_metadata([_METADATA, key], default={}).items()
    }
    workers = Workers(manager.client)
    layout, holders = None, {}
    for address, (worker_id, found, names) in sorted(run_everywhere(manager.client, probe_array, key).items()):
        layout = layout or found
        for block_name in names:
            holders.setdefault(block_name, Owner(address, worker_id))
    if layout is None:
        keeper = manager._owners.get(_join(key, LAYOUT)) or recorded.get(_join(key, LAYOUT))
        if keeper is not None and not workers.alive(keeper):
            raise lost_error(str(path), keeper)
        raise FileNotFoundError(
            errno.ENOENT, f"memory backend: no worker keeps an array saved by save_array here (no {LAYOUT!r} inside)", str(path)
        )
    stored = tuple(tuple(sizes) for sizes in layout["chunks"])
    dtype = np.dtype(layout["dtype"])
    # Each block is read now, by a task on the worker keeping it: the result
    # is a view of what that worker keeps, so nothing is copied. (Pinning lazy
    # tasks instead would not hold: dask's graph fusion drops annotations.)
    name = f"polystore-load_array-{token}"
    layer = {}
    for index, _ in _blocks(stored):
        block_path = _block_path(key, index)
        owner = holders.get(block_path) or manager._owners.get(block_path) or recorded.get(block_path)
        pin = workers.pin(owner)
        layer[(name, *index)] = manager.client.submit(
            read_memory_block, block_path, owner, key=f"{name}-{'.'.join(map(str, index))}", pure=False,
            workers=pin, allow_other_workers=pin is not None,
        )
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    array = da.Array(graph, name, stored, dtype=dtype, meta=np.empty((0,) * len(stored), dtype))
    return array if chunks is None else array.rechunk(chunks)


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
    if shards is not None and any(shard % size for shard, size in zip(shards, sizes)):
        return None
    return tuple(sizes)


def _aligned(x: da.Array, unit: Sequence[int]) -> da.Array:
    """``x`` rechunked, where needed, so every block is made of whole ``unit``s (chunks or shards)."""
    new = {}
    for axis, (axis_chunks, side) in enumerate(zip(x.chunks, unit)):
        edges = list(itertools.accumulate(axis_chunks))[:-1]
        if all(edge % side == 0 for edge in edges):
            continue
        typical = max(axis_chunks)
        new[axis] = max(1, round(typical / side)) * side
    return x.rechunk(new) if new else x


def _blocks(chunks: Sequence[Sequence[int]]) -> list[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """Each block's index and region, for chunk sizes as in ``dask.array.Array.chunks``."""
    starts = [[0, *itertools.accumulate(sizes)] for sizes in chunks]
    return [
        (index, tuple(slice(starts[axis][i], starts[axis][i + 1]) for axis, i in enumerate(index)))
        for index in itertools.product(*(range(len(sizes)) for sizes in chunks))
    ]


def _block_path(key: str, index: tuple[int, ...]) -> str:
    return f"{key}/{'.'.join(map(str, index))}" if key else ".".join(map(str, index))


def _nothing(*_: Any) -> None:
    return None


# -- worker side -----------------------------------------------------------
def create_array(
    backend: str, path: Any, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...] | None,
    shards: tuple[int, ...] | None, compressor: str | None, overwrite: bool, origin: str | None,
) -> dict[str, Any]:
    """Create the array on this worker's backend; return its chunks and shards."""
    registry = get_registry()
    target = registry[backend]
    if not hasattr(target, "create_array"):
        raise UnsupportedFormatError(
            f"save_array cannot write to the {backend!r} backend: it has no create_array for "
            "chunk-by-chunk writes; use 'zarr' or 'memory'"
        )
    where = resolve(path, backend, registry, origin)
    try:
        array = target.create_array(where, shape, dtype, chunks, shards=shards, compressor=compressor, overwrite=overwrite)
    except FileExistsError:
        # Run again after its worker died: the first attempt's (empty) array will do.
        stat = target.stat(where) if is_rerun(get_worker()) else {}
        if stat.get("shape") != tuple(shape) or stat.get("dtype") != dtype:
            raise
        return {"chunks": tuple(stat["chunks"]), "shards": stat.get("shards")}
    return {"chunks": tuple(array.chunks), "shards": None if array.shards is None else tuple(array.shards)}


def write_block(block: np.ndarray, backend: str, path: Any, region: tuple[slice, ...], origin: str | None) -> None:
    """Write one block (whole chunks or shards) into the array at ``path``."""
    registry = get_registry()
    registry[backend].save(block, resolve(path, backend, registry, origin), region=region)


def array_info(backend: str, path: Any, origin: str | None) -> dict[str, Any]:
    """The shape, dtype and chunks of the array at ``path``."""
    registry = get_registry()
    stat = registry[backend].stat(resolve(path, backend, registry, origin))
    if not {"shape", "dtype", "chunks"} <= stat.keys():
        raise UnsupportedFormatError(
            f"load_array cannot read {str(path)!r} from the {backend!r} backend: its stat gives no "
            "shape, dtype and chunks; use 'zarr' or 'memory'"
        )
    return {"shape": stat["shape"], "dtype": np.dtype(stat["dtype"]), "chunks": stat["chunks"]}


def read_block(region: tuple[slice, ...], backend: str, path: Any, origin: str | None) -> np.ndarray:
    """Read one block of the array at ``path``.

    The zarr backend keeps the arrays it opened, so reading many blocks of
    one array reads its ``zarr.json`` once per worker, as
    ``dask.array.from_zarr`` does once per graph.
    """
    registry = get_registry()
    return registry[backend].load(resolve(path, backend, registry, origin), region=region)


def store_block(block: np.ndarray, block_path: str) -> Owner:
    """Keep ``block`` in this worker's memory at ``block_path``; return this worker."""
    worker = get_worker()
    registry_of(worker)[MEMORY].save(block, block_path, overwrite=True)
    return Owner(worker.address, worker.id)


def store_layout(owners: list[Owner], key: str, layout: dict[str, Any], block_paths: list[str]) -> dict[str, Owner]:
    """Keep the array's layout beside its blocks; return which worker keeps each block and the layout.

    The same is noted in the scheduler's metadata, which outlives any worker:
    a later load names the worker that kept a block that is gone.
    """
    from distributed import get_client

    worker = get_worker()
    registry_of(worker)[MEMORY].save(layout, _join(key, LAYOUT), overwrite=True)
    kept = {**dict(zip(block_paths, owners)), _join(key, LAYOUT): Owner(worker.address, worker.id)}
    get_client().set_metadata([_METADATA, key], {path: list(owner) for path, owner in kept.items()})
    return kept


def read_memory_block(block_path: str, owner: Owner | None) -> np.ndarray:
    """Return one block of a memory array, from the worker that keeps it."""
    worker = get_worker()
    if owner is not None:
        check_owner(owner, worker, [block_path])
    return registry_of(worker)[MEMORY].load(block_path)


def probe_array(key: str, *, dask_worker: Any) -> tuple[str, dict[str, Any] | None, list[str]]:
    """For ``client.run``: this worker's id, the array's layout if kept here, and its blocks kept here."""
    backend = registry_of(dask_worker)[MEMORY]
    directory = key or "/"
    if not backend.is_dir(directory):
        return dask_worker.id, None, []
    layout_path = _join(key, LAYOUT)
    layout = backend.load(layout_path) if backend.is_file(layout_path) else None
    names = [name for name in backend.list_dir(directory) if name != LAYOUT]
    return dask_worker.id, layout, [_join(key, name) for name in names]


def drop_here(key: str, *, dask_worker: Any) -> None:
    """For ``client.run``: delete ``key`` and everything under it from this worker's memory."""
    try:
        registry_of(dask_worker)[MEMORY].delete(key or "/", recursive=True)
    except FileNotFoundError:
        pass


def _join(key: str, name: str) -> str:
    return f"{key}/{name}" if key else name
