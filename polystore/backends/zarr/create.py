"""How the zarr backend makes arrays: codecs, default chunk sizes, array creation.

zarr is imported here on first use only, so ``import polystore`` stays light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from polystore.backend import PathLike
from polystore.errors import UnsupportedFormatError

if TYPE_CHECKING:
    import zarr

__all__ = [
    "COMPRESSORS",
    "as_array",
    "compressor_name",
    "compressors_for",
    "create_zarr_array",
    "default_chunks",
    "import_zarr",
]

#: The compressor names ``save`` and ``create_array`` accept (and ``None``).
COMPRESSORS = ("zstd", "blosc-lz4", "gzip")

#: What a default chunk aims to hold; evening chunks out can leave a quarter of it.
_TARGET_CHUNK_BYTES = 4 * 2**20


def import_zarr() -> ModuleType:
    """Import and return zarr, or raise ImportError with the install hint."""
    try:
        import zarr
    except ImportError as error:
        raise ImportError(
            "the zarr backend needs zarr>=3.1; install it with: pip install 'zarr>=3.1'"
        ) from error
    return zarr


def as_array(data: Any, path: PathLike) -> np.ndarray:
    """``data`` as a numpy array (not copied if it is one), or UnsupportedFormatError."""
    if not isinstance(data, np.ndarray):
        if isinstance(data, (str, bytes, bytearray, memoryview, dict, list, tuple)) or not (
            isinstance(data, np.generic) or hasattr(data, "__array__")
        ):
            raise UnsupportedFormatError(
                f"zarr backend stores numpy arrays only, not {type(data).__name__} "
                f"(at {str(path)!r}); use the 'disk' or 'memory' backend for other data"
            )
        data = np.asarray(data)
    if data.dtype.hasobject:
        raise UnsupportedFormatError(
            f"zarr backend cannot store an object array at {str(path)!r}; "
            "convert it to a numeric or string dtype, or use the 'disk' backend"
        )
    return data


def compressors_for(compressor: str | None) -> Any:
    """The zarr codec for a compressor name ``save`` takes; ValueError for an unknown one."""
    import_zarr()
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if compressor is None:
        return None
    if compressor == "zstd":
        return ZstdCodec(level=0)  # zarr's own default
    if compressor == "blosc-lz4":
        return BloscCodec(cname="lz4", shuffle="shuffle")
    if compressor == "gzip":
        return GzipCodec()
    raise ValueError(
        f"zarr backend: unknown compressor {compressor!r}; "
        f"use one of {', '.join(map(repr, COMPRESSORS))} or None"
    )


def compressor_name(array: zarr.Array) -> str | None:
    """The name :func:`create_zarr_array` takes for ``array``'s compressor (else the codec's class name)."""
    if not array.compressors:
        return None
    from zarr.codecs import BloscCodec

    codec = array.compressors[0]
    if isinstance(codec, BloscCodec):
        return f"blosc-{getattr(codec.cname, 'value', codec.cname)}"
    name = type(codec).__name__
    return {"ZstdCodec": "zstd", "GzipCodec": "gzip"}.get(name, name)


def default_chunks(shape: Sequence[int], dtype: Any) -> tuple[int, ...]:
    """Return a chunk shape of 1-4 MiB for an array (the whole array if smaller).

    Chunks grow square-ish over the last two dimensions first; an earlier
    dimension grows only once every later one is whole. An array smaller
    than the target is one chunk. Each chunk side is then evened out so the
    chunks along a dimension are close to equal (1000 rows in two chunks of
    500, not 524 and 476). Dimensions of length 0 get chunks of 1.

    Examples
    --------
    >>> default_chunks((16384, 16384), "float32")
    (1024, 1024)
    >>> default_chunks((100, 512, 512), "float32")
    (4, 512, 512)
    """
    shape = tuple(int(size) for size in shape)
    budget = max(1, _TARGET_CHUNK_BYTES // max(1, np.dtype(dtype).itemsize))
    chunks = [1] * len(shape)
    active = list(range(max(0, len(shape) - 2), len(shape)))
    while True:
        growable = [dim for dim in active if chunks[dim] < shape[dim]]
        if not growable:
            if len(active) == len(shape):
                break
            active.insert(0, len(shape) - len(active) - 1)
            continue
        # Grow the smallest side; on a tie the later (faster-varying) one.
        dim = min(reversed(growable), key=lambda d: chunks[d])
        others = math.prod(chunks) // chunks[dim]
        grown = min(2 * chunks[dim], shape[dim], budget // others)
        if grown <= chunks[dim]:
            break
        chunks[dim] = grown
    return tuple(
        -(-size // -(-size // chunk)) if size else 1 for size, chunk in zip(shape, chunks, strict=True)
    )


def _chunks_inside_shards(shards: Sequence[int], dtype: Any) -> tuple[int, ...]:
    """Default chunks that divide ``shards`` (zarr requires whole chunks per shard)."""
    chunks = []
    for shard, chunk in zip(shards, default_chunks(shards, dtype), strict=True):
        while shard % chunk:
            chunk -= 1
        chunks.append(chunk)
    return tuple(chunks)


def create_zarr_array(
    path: Path,
    shape: int | Sequence[int],
    dtype: Any,
    *,
    chunks: int | Sequence[int] | None,
    shards: int | Sequence[int] | None,
    compressors: Any,
    fill_value: Any,
    attributes: dict[str, Any] | None,
) -> zarr.Array:
    """Create a zarr v3 array in a local directory that must not exist yet.

    ``compressors`` is what :func:`compressors_for` returned.
    """
    zarr = import_zarr()
    from zarr.storage import LocalStore

    shape = _as_shape(shape)
    shards = None if shards is None else _as_shape(shards)
    if chunks is not None:
        chunks = _as_shape(chunks)
    else:
        chunks = default_chunks(shape, dtype) if shards is None else _chunks_inside_shards(shards, dtype)
    options: dict[str, Any] = {} if fill_value is None else {"fill_value": fill_value}
    return zarr.create_array(
        store=LocalStore(path),
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        shards=shards,
        compressors=compressors,
        attributes=attributes,
        zarr_format=3,
        **options,
    )


def _as_shape(value: int | Sequence[int]) -> tuple[int, ...]:
    return (int(value),) if isinstance(value, (int, np.integer)) else tuple(int(size) for size in value)
