"""What runs on the workers for save_array and load_array: creating, writing and reading blocks.

Each function reaches its backend through the registry of the worker it
runs on; :mod:`polystore_dask.array_graphs` builds the graphs that call them.
"""

from __future__ import annotations

import errno
import math
from typing import Any

import numpy as np
from distributed import get_worker

from polystore.errors import UnsupportedFormatError
from polystore_dask.errors import portable
from polystore_dask.plugin import get_registry, registry_of
from polystore_dask.tasks import check_owner, here, is_rerun, resolve, with_host
from polystore_dask.workers import Keeper, Owner

__all__ = [
    "LAYOUT",
    "LAYOUT_FILE",
    "METADATA",
    "array_info",
    "create_array",
    "drop_here",
    "finish_array",
    "join_key",
    "probe_array",
    "read_block",
    "read_kept_block",
    "store_block",
    "store_layout",
    "write_blocks",
]

#: Where an array kept per process keeps its layout, inside the array's directory.
LAYOUT = ".array"
#: The same on a backend that spells paths as files (``scratch``): its format follows the suffix.
LAYOUT_FILE = ".array.json"
#: The scheduler metadata entry noting which worker keeps each block of each array kept per process.
METADATA = "polystore-process-arrays"


# -- backends that store arrays by region ------------------------------------
def create_array(
    backend: str, path: Any, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...] | None,
    shards: tuple[int, ...] | None, compressor: str | None, overwrite: bool, origin: str | None,
    labels: dict[str, Any], resume: bool,
) -> dict[str, Any]:
    """Create the array on this worker's backend; return its chunks and shards.

    ``labels`` holds its ``dimension_names`` and ``attributes``. With
    ``resume``, an array already at ``path`` of this layout is kept: the
    result then also says whether it is ``complete`` and which regions of it
    are ``committed`` (as ``[start, stop]`` pairs).
    """
    target = get_registry()[backend]
    where = resolve(path, target, origin)
    if resume:
        kept = _resumable(target, where, path, backend, shape, dtype, chunks, shards, compressor, labels)
        if kept is not None:
            return kept
    try:
        array = target.create_array(  # type: ignore[attr-defined]  # declared by supports_regions
            where, shape, dtype, chunks, shards=shards, compressor=compressor, overwrite=overwrite, incomplete=True,
            **labels,
        )
    except FileExistsError:
        # Run again after its worker died: the first attempt's (empty) array will do.
        stat = target.stat(where) if is_rerun(get_worker()) else {}
        if stat.get("shape") != tuple(shape) or stat.get("dtype") != dtype:
            raise
        return {"chunks": tuple(stat["chunks"]), "shards": stat.get("shards")}
    return {"chunks": tuple(array.chunks), "shards": None if array.shards is None else tuple(array.shards)}


def _resumable(
    target: Any, where: Any, path: Any, backend: str, shape: tuple[int, ...], dtype: np.dtype,
    chunks: tuple[int, ...] | None, shards: tuple[int, ...] | None, compressor: str | None, labels: dict[str, Any],
) -> dict[str, Any] | None:
    """What ``save_array(..., resume=True)`` keeps of the array at ``where``: None if there is none to keep.

    Refuses, naming every difference, an array whose layout is not the one
    asked for; ``chunks`` None accepts the stored chunks.
    """
    try:
        stat = target.stat(where)
    except FileNotFoundError:
        return None
    if stat.get("type") != "file":
        return None  # creating it raises the error that says what is there
    names = labels.get("dimension_names")
    asked: dict[str, Any] = {
        "shape": tuple(shape),
        "dtype": np.dtype(dtype),
        "chunks": None if chunks is None else tuple(chunks),
        "shards": None if shards is None else tuple(shards),
        "compressor": compressor,
        "dimension_names": None if names is None else tuple(names),
    }
    if chunks is None:
        del asked["chunks"]
    differences = [
        f"{name} {value!r} (the stored array's: {stat.get(name)!r})"
        for name, value in asked.items()
        if stat.get(name) != value
    ]
    if differences:
        raise ValueError(
            f"{backend} backend: save_array(..., resume=True) cannot resume the array at {str(path)!r}: this call "
            f"asks for {', '.join(differences)}. Resume with the options of the run that made it, or write it anew "
            "with overwrite=True (without resume)"
        )
    found = {"chunks": tuple(stat["chunks"]), "shards": stat.get("shards"), "complete": not stat.get("incomplete")}
    if stat.get("incomplete"):
        regions = target.committed_regions(where)
        found["committed"] = [[(part.start, part.stop) for part in region] for region in regions]
    return found


def write_blocks(
    regions: list[tuple[slice, ...]], backend: str, path: Any, origin: str | None, *blocks: np.ndarray
) -> None:
    """Write neighbouring blocks (whole chunks or shards) into the array at ``path``, one per region.

    Blocks of one dtype whose regions tile a box are written as one region
    (one write, one commit record); others one by one.
    """
    target = get_registry()[backend]
    where = resolve(path, target, origin)
    try:
        for block, region in _assembled(regions, blocks):
            target.save(block, where, region=region)
    except Exception as error:
        raise portable(error) from None


def _assembled(
    regions: list[tuple[slice, ...]], blocks: tuple[np.ndarray, ...]
) -> list[tuple[np.ndarray, tuple[slice, ...]]]:
    """The writes of ``blocks``: one of them all copied into their bounding box where they fill it, else each."""
    each = list(zip(blocks, regions, strict=True))
    if len(blocks) < 2 or not all(type(block) is np.ndarray and block.dtype == blocks[0].dtype for block in blocks):
        return each
    box = tuple(
        slice(min(region[axis].start for region in regions), max(region[axis].stop for region in regions))
        for axis in range(len(regions[0]))
    )
    if sum(block.size for block in blocks) != math.prod(part.stop - part.start for part in box):
        return each
    whole = np.empty(tuple(part.stop - part.start for part in box), dtype=blocks[0].dtype)
    for block, region in each:
        whole[tuple(slice(part.start - corner.start, part.stop - corner.start) for part, corner in zip(
            region, box, strict=True))] = block
    return [(whole, box)]


def finish_array(backend: str, path: Any, origin: str | None, *written: None) -> None:
    """Mark the array at ``path`` complete, once every block is ``written``."""
    target = get_registry()[backend]
    try:
        target.complete_array(resolve(path, target, origin))  # type: ignore[attr-defined]  # supports_regions
    except Exception as error:
        raise portable(error) from None


def array_info(backend: str, path: Any, origin: str | None) -> dict[str, Any]:
    """The shape, dtype and chunks of the array at ``path``."""
    target = get_registry()[backend]
    stat = target.stat(resolve(path, target, origin))
    if stat["type"] == "directory":
        raise IsADirectoryError(
            errno.EISDIR, f"{backend} backend: load_array needs an array, and this path is a directory", str(path)
        )
    if stat.get("incomplete"):
        raise ValueError(
            f"{backend} backend: load_array refuses the array at {str(path)!r}: it is incomplete (the save_array "
            "that made it did not finish, so parts of it may hold only the fill value); write it again with "
            "save_array(..., overwrite=True), or finish it with save_array(..., resume=True)"
        )
    if not {"shape", "dtype", "chunks"} <= stat.keys():
        raise UnsupportedFormatError(
            f"load_array cannot read {str(path)!r} from the {backend} backend: it is not an array "
            "(its stat gives no shape, dtype and chunks); save one there with save_array first"
        )
    return {"shape": stat["shape"], "dtype": np.dtype(stat["dtype"]), "chunks": stat["chunks"]}


def read_block(region: tuple[slice, ...], backend: str, path: Any, origin: str | None) -> np.ndarray:
    """Read one block of the array at ``path``.

    The zarr backend keeps the arrays it opened, so reading many blocks of
    one array reads its ``zarr.json`` once per worker, as
    ``dask.array.from_zarr`` does once per graph.
    """
    target = get_registry()[backend]
    try:
        block: np.ndarray = target.load(resolve(path, target, origin), region=region)
    except Exception as error:
        raise portable(error) from None
    return block


# -- backends that keep data per process -------------------------------------
def store_block(block: np.ndarray, backend: str, block_path: str, dtype: str) -> Owner:
    """Keep ``block`` in this worker's backend at ``block_path``, as the array's ``dtype``; return its owner.

    The owner is this worker, or for a per-host backend its host.

    The block may have come by pickle, which makes a big-endian datetime
    little-endian; it is kept in the array's own dtype.
    """
    if isinstance(block, np.ndarray) and block.dtype.str != dtype:
        block = block.astype(dtype)
    worker = get_worker()
    target = registry_of(worker)[backend]
    try:
        target.save(block, block_path, overwrite=True)
    except Exception as error:
        raise portable(with_host(error)) from None
    return here(worker, target)


def store_layout(
    owners: list[Owner], backend: str, key: str, layout: dict[str, Any], block_paths: list[str], layout_name: str
) -> dict[str, Owner]:
    """Keep the array's layout beside its blocks; return which worker keeps each block and the layout.

    The same is noted in the scheduler's metadata, which outlives any worker:
    a later load names the worker that kept a block that is gone.
    """
    from distributed import get_client

    worker = get_worker()
    target = registry_of(worker)[backend]
    target.save(layout, join_key(key, layout_name), overwrite=True)
    kept = {**dict(zip(block_paths, owners, strict=True)), join_key(key, layout_name): here(worker, target)}
    get_client().set_metadata([METADATA, backend, key], {path: list(owner) for path, owner in kept.items()})
    return kept


def read_kept_block(backend: str, block_path: str, owner: Keeper | None) -> np.ndarray:
    """Return one block of an array kept per process, from the worker that keeps it."""
    worker = get_worker()
    if owner is not None:
        check_owner(owner, worker, backend, [block_path])
    try:
        block: np.ndarray = registry_of(worker)[backend].load(block_path)
    except Exception as error:
        raise portable(error) from None
    return block


def probe_array(
    backend: str, key: str, layout_name: str, *, dask_worker: Any
) -> tuple[Owner, dict[str, Any] | None, list[str]]:
    """For ``client.run``: the owner of what this worker keeps, the array's layout if kept here, its blocks here."""
    target = registry_of(dask_worker)[backend]
    owner = here(dask_worker, target)
    directory = key or "/"
    if not target.is_dir(directory):
        return owner, None, []
    layout_path = join_key(key, layout_name)
    layout = target.load(layout_path) if target.is_file(layout_path) else None
    names = [name for name in target.list_dir(directory) if name != layout_name]
    return owner, layout, [join_key(key, name) for name in names]


def drop_here(backend: str, key: str, *, dask_worker: Any) -> None:
    """For ``client.run``: delete ``key`` and everything under it from this worker's backend."""
    try:
        registry_of(dask_worker)[backend].delete(key or "/", recursive=True)
    except FileNotFoundError:
        pass


def join_key(key: str, name: str) -> str:
    """``name`` inside the directory ``key`` (the root's key is ``""``)."""
    return f"{key}/{name}" if key else name
