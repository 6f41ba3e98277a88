"""How the zarr backend makes arrays: codecs, default chunk sizes, array creation.

zarr is imported here on first use only, so ``import polystore`` stays light.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from polystore.backend import PathLike
from polystore.errors import UnsupportedFormatError

if TYPE_CHECKING:
    import zarr
    import zarr.abc.store

__all__ = [
    "AUTO",
    "CODEC_PIPELINES",
    "COMPRESSORS",
    "LARGE_CHUNK_BYTES",
    "array_layout",
    "as_array",
    "check_attributes",
    "check_codec_pipeline",
    "check_dimension_names",
    "check_zarr_dtype",
    "chosen_pipeline",
    "codec_pipeline_in_force",
    "compressor_name",
    "compressors_for",
    "create_zarr_array",
    "default_chunks",
    "import_zarr",
    "os_error_of",
    "stored_dtype",
]

#: The compressor names ``save`` and ``create_array`` accept (and ``None``).
COMPRESSORS = ("zstd", "blosc-lz4", "gzip")

#: The codec pipelines ``ZarrBackend(codec_pipeline=...)`` takes, with the zarr setting each puts in force:
#: ``"zarrs"``, the Rust pipeline of the zarrs package (zarr-python falls back to its own for what zarrs
#: does not support), or ``"zarr"``, whatever ``zarr.config`` names (zarr-python's own unless set).
CODEC_PIPELINES = {"zarrs": "zarrs.ZarrsCodecPipeline", "zarr": None}

#: What ``codec_pipeline`` also takes: ``"auto"``, one of :data:`CODEC_PIPELINES` chosen for each call by
#: what it reads or writes (see :func:`chosen_pipeline`).
AUTO = "auto"

#: From this many bytes in a chunk, ``"auto"`` may read or write it with zarr-python's pipeline
#: (see :func:`chosen_pipeline`).
LARGE_CHUNK_BYTES = 2 << 20

#: zarr's config is one dict for the whole process: our opens and creates take turns setting it, so
#: two threads' settings never interleave and the previous value is always the one put back.
_PIPELINE_LOCK = threading.RLock()

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


_OS_ERROR_NUMBER = re.compile(r"\(os error (\d+)\)")


def os_error_of(error: BaseException) -> OSError | None:
    """The OSError a failed chunk write stands for, or None.

    zarrs reports the OS refusing a write (disk full, file too large) as a
    RuntimeError ending ``(os error 27)``; callers expect the OSError that
    zarr-python's own pipeline raises.
    """
    if isinstance(error, RuntimeError):
        match = _OS_ERROR_NUMBER.search(str(error))
        if match:
            return OSError(int(match.group(1)), str(error))
    return None


def check_codec_pipeline(name: str) -> str:
    """Return ``name`` if it is ``"auto"`` or one of :data:`CODEC_PIPELINES`, else raise ValueError naming them."""
    if name != AUTO and name not in CODEC_PIPELINES:
        raise ValueError(
            f"zarr backend: unknown codec_pipeline {name!r}; use 'auto' (the default: the fastest measured for "
            "the work), 'zarrs' (the fast Rust pipeline) or 'zarr' (the one zarr.config names, zarr-python's own "
            "unless you set it)"
        )
    return name


def chosen_pipeline(name: str, one_chunk_bytes: int = 0, *, uncompressed_write: bool = False) -> str:
    """The pipeline of :data:`CODEC_PIPELINES` that ``codec_pipeline=name`` uses for a call on an array.

    ``one_chunk_bytes``: the call reads or writes a single chunk of an
    unsharded array, of that many bytes decoded; 0: any other call (one
    that creates the array, or touches several chunks or a shard).
    ``uncompressed_write``: the call writes that chunk uncompressed.

    ``"auto"`` is zarrs, but for a single chunk of :data:`LARGE_CHUNK_BYTES`
    or more, read or written compressed, in a process whose allocator hands
    every freed buffer back to the system at once: on Linux with
    ``MALLOC_TRIM_THRESHOLD_`` set, as Dask's nanny sets it for each worker.
    There every chunk is read into freshly mapped memory, which zarrs faults
    in more of than zarr-python's pipeline. Measured so on nanny workers and
    in a process with that setting: one chunk of 2 or 4 MiB was read 3 to
    17% slower with zarrs (one of 256 KiB 26% faster), and one zstd chunk of
    4 MiB written 5% slower; but a whole array of 4 MiB chunks loaded in one
    call was 4 to 11% faster with zarrs (it spreads the chunks over its
    threads), a whole 256 MiB zstd save 10% faster, and one uncompressed
    chunk of 2 MiB written 16% faster.
    """
    if name != AUTO:
        return name
    trimming = sys.platform == "linux" and "MALLOC_TRIM_THRESHOLD_" in os.environ
    large = one_chunk_bytes >= LARGE_CHUNK_BYTES
    return "zarr" if trimming and large and not uncompressed_write else "zarrs"


@contextlib.contextmanager
def codec_pipeline_in_force(name: str, directory: Path | str) -> Iterator[None]:
    """Put the codec pipeline ``name`` in force while the array at ``directory`` (or bucket key) is created or opened.

    ``"auto"`` puts zarrs in force (see :func:`chosen_pipeline`).

    zarr fixes an array's pipeline when it is created or opened, so only the
    arrays opened inside this block use it: zarr's setting is put back on
    exit, and arrays opened elsewhere in the process keep the user's own.
    zarrs takes only UTF-8 paths: an array at a path with undecodable bytes
    (``os.fsdecode``'s surrogates) keeps zarr's own pipeline.
    """
    path = CODEC_PIPELINES[chosen_pipeline(name)]
    if path is None or not _is_utf8(str(directory)):
        yield
        return
    zarr = import_zarr()
    # zarrs warns when it hands an array to zarr-python's pipeline (strings, bytes, structured dtypes):
    # polystore chose zarrs, not the user, and the data is the same either way, so that is no news to them.
    warnings.filterwarnings("ignore", "Array is unsupported by ZarrsCodecPipeline", UserWarning, "zarrs")
    # On an array in a bucket zarrs builds its own S3 client from the store's config, once per array
    # opened, and warns each time that it shares no connections: the cost is in the docstring of
    # ZarrBackend's codec_pipeline, and a warning per array opened would bury the user's own.
    warnings.filterwarnings("ignore", "Successfully reconstructed a store", RuntimeWarning, "zarrs")
    with _PIPELINE_LOCK, zarr.config.set({"codec_pipeline.path": path}):
        yield


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def as_array(data: Any, path: PathLike) -> np.ndarray:
    """``data`` as a numpy array (not copied if it is one) whose dtype zarr keeps exactly, or UnsupportedFormatError."""
    if isinstance(data, np.ma.MaskedArray):
        raise UnsupportedFormatError(
            f"zarr backend: cannot store the masked array at {str(path)!r}: zarr keeps no mask, which would be "
            "dropped; save np.ma.getdata(a) and np.ma.getmaskarray(a) as two arrays, or use the 'memory' "
            "backend, which keeps the mask"
        )
    if not isinstance(data, np.ndarray):
        if isinstance(data, (str, bytes, bytearray, memoryview, dict, list, tuple)) or not (
            isinstance(data, np.generic) or hasattr(data, "__array__")
        ):
            raise UnsupportedFormatError(
                f"zarr backend stores numpy arrays only, not {type(data).__name__} "
                f"(at {str(path)!r}); use the 'disk' or 'memory' backend for other data"
            )
        data = np.asarray(data)
    check_zarr_dtype(data.dtype, path)
    return data


def check_zarr_dtype(dtype: np.dtype[Any], path: PathLike) -> None:
    """Refuse, naming what to use instead, a dtype that zarr would not give back exactly.

    Kept: bool, integers, floats and complex of every size zarr has (not
    float128), in either byte order; datetime64 and timedelta64 with a unit;
    fixed-width bytes (``S``), str (``U``) and void (``V``); variable-width
    str (``StringDType`` without ``na_object``); structured dtypes of such
    fields, packed and in native byte order.
    """
    if dtype.hasobject and not isinstance(dtype, np.dtypes.StringDType):
        raise UnsupportedFormatError(
            f"zarr backend cannot store an object array at {str(path)!r}; polystore never stores pickled "
            "objects: convert it to a numeric or string dtype (np.dtypes.StringDType() for str of any length), "
            "or save plain Python values (a.tolist()) to a .json file with the 'disk' backend"
        )
    import_zarr()
    from zarr.core.dtype import get_data_type_from_native_dtype

    def refuse(reason: str, instead: str) -> UnsupportedFormatError:
        return UnsupportedFormatError(
            f"zarr backend: cannot store dtype {dtype} at {str(path)!r}: {reason}; {instead}"
        )

    npy = "or save it as .npy with the 'disk' backend, which keeps every dtype but object"
    if dtype.kind in "Mm" and np.datetime_data(dtype)[0] == "generic":
        raise refuse(
            f"a {dtype} without a unit has no zarr fill value",
            f"give it a unit, e.g. astype('{dtype.kind}8[s]'), {npy}",
        )
    try:
        stored = get_data_type_from_native_dtype(dtype).to_native_dtype()
    except (TypeError, ValueError):
        stored = None
    if stored is None:
        raise refuse("zarr has no data type for it", f"convert it (float128 to float64 loses precision), {npy}")
    if stored != dtype:
        raise refuse(f"zarr would give it back as {stored}", npy)
    if dtype.fields and _has_byte_order(dtype, ">" if sys.byteorder == "little" else "<"):
        raise refuse("zarr gives structured fields back in native byte order", f"convert the fields, {npy}")


def _has_byte_order(dtype: np.dtype[Any], order: str) -> bool:
    """Whether ``dtype`` or any of its (nested) fields is in byte ``order``."""
    if dtype.fields:
        return any(_has_byte_order(field[0], order) for field in dtype.fields.values())
    if dtype.subdtype is not None:
        return _has_byte_order(dtype.subdtype[0], order)
    return dtype.byteorder == order


def _endian(dtype: np.dtype[Any]) -> str | None:
    """``"big"`` or ``"little"`` for a dtype with a byte order, else None."""
    if dtype.byteorder == "|" or dtype.fields or dtype.kind == "T":
        return None
    if dtype.byteorder == "=":
        return sys.byteorder
    return "big" if dtype.byteorder == ">" else "little"


def stored_dtype(array: zarr.Array) -> np.dtype[Any]:
    """The dtype ``array`` was saved with: zarr gives every array in native byte order, whatever it stores."""
    dtype = array.dtype
    endian = getattr(getattr(array.serializer, "endian", None), "value", None)
    if endian is None or _endian(dtype) in (None, endian):
        return dtype
    return dtype.newbyteorder("<" if endian == "little" else ">")


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


def array_layout(
    shape: int | Sequence[int],
    dtype: Any,
    chunks: Any,
    shards: Any,
    path: PathLike,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...] | None]:
    """Check a requested layout and return ``(shape, chunks, shards)``, before anything is created.

    ``chunks`` and ``shards`` are None (the default) or one positive integer
    per dimension (an int for a 1-d array); shards must be whole multiples of
    the chunks. ``chunks=None`` picks :func:`default_chunks` (chunks dividing
    the shards when sharded).

    Raises
    ------
    TypeError
        A value that is not an integer (or sequence of them).
    ValueError
        A side that is not positive, or the wrong number of sides, or shards
        that chunks do not divide. Each message names the value, the array's
        shape and the path.
    """
    shape = _as_shape(shape, "shape", None, path)
    if shards is not None:
        shards = _as_shape(shards, "shards", shape, path)
    if chunks is None:
        chunks = default_chunks(shape, dtype) if shards is None else _chunks_inside_shards(shards, dtype)
    else:
        chunks = _as_shape(chunks, "chunks", shape, path)
    if shards is not None and any(shard % chunk for shard, chunk in zip(shards, chunks, strict=True)):
        raise ValueError(
            f"zarr backend: shards {shards} for the array at {str(path)!r} are not a whole multiple of the "
            f"chunks {chunks} in every dimension; give shards such as "
            f"{tuple(-(-shard // chunk) * chunk for shard, chunk in zip(shards, chunks, strict=True))}"
        )
    return shape, chunks, shards


def check_dimension_names(
    dimension_names: Any, shape: tuple[int, ...], path: PathLike
) -> tuple[str | None, ...] | None:
    """``dimension_names`` as a tuple with one str (or None) per dimension of ``shape``, or None if not given.

    Raises ``TypeError`` (not a sequence of str) or ``ValueError`` (not one
    per dimension), before anything is created.
    """
    if dimension_names is None:
        return None
    if isinstance(dimension_names, (str, bytes)) or not isinstance(dimension_names, Sequence) or not all(
        name is None or isinstance(name, str) for name in dimension_names
    ):
        raise TypeError(
            f"zarr backend: dimension_names {dimension_names!r} for the array at {str(path)!r} must be a sequence "
            "of str (or None), one per dimension, such as ('time', 'y', 'x')"
        )
    if len(dimension_names) != len(shape):
        raise ValueError(
            f"zarr backend: dimension_names {tuple(dimension_names)!r} for the array at {str(path)!r} must give "
            f"one name per dimension, and the array of shape {shape} has {len(shape)}"
        )
    return tuple(dimension_names)


def check_attributes(attributes: Any, path: PathLike) -> dict[str, Any] | None:
    """``attributes`` as a JSON-ready dict (numpy scalars and arrays become Python values), or None.

    Raises ``TypeError`` naming the first key whose value JSON cannot hold,
    before anything is created.
    """
    if attributes is None:
        return None
    if not isinstance(attributes, Mapping) or not all(isinstance(key, str) for key in attributes):
        raise TypeError(
            f"zarr backend: attributes for the array at {str(path)!r} must be a dict with str keys, "
            f"not {type(attributes).__name__}"
        )
    ready = {key: _json_ready(value) for key, value in attributes.items()}
    for key, value in ready.items():
        try:
            json.dumps(value, allow_nan=True)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"zarr backend: attribute {key!r} of the array at {str(path)!r} cannot be stored in its "
                f"zarr.json ({error}); give JSON values: str, numbers, bool, None, lists and dicts of them"
            ) from None
    return ready


def _json_ready(value: Any) -> Any:
    """``value`` with numpy scalars and arrays (as xarray attributes often hold) turned into Python values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Mapping):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


def create_zarr_array(
    path: Path | zarr.abc.store.Store,
    layout: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...] | None],
    dtype: Any,
    *,
    compressors: Any,
    fill_value: Any,
    attributes: dict[str, Any] | None,
    dimension_names: tuple[str | None, ...] | None = None,
    codec_pipeline: str = AUTO,
) -> zarr.Array:
    """Create a zarr v3 array in a local directory that holds no array yet (or at the root of a zarr store).

    ``layout`` is what :func:`array_layout` returned, ``compressors`` what
    :func:`compressors_for` returned, ``attributes`` and ``dimension_names``
    what :func:`check_attributes` and :func:`check_dimension_names`
    returned. Arrays in a bucket are made in a ``MemoryStore`` first, for
    their metadata (see :mod:`~polystore.backends.zarr.bucket`). The array returned uses
    ``codec_pipeline`` if it is in a local directory (see
    :func:`codec_pipeline_in_force`), zarr's own pipeline otherwise.
    """
    zarr = import_zarr()
    from zarr.storage import LocalStore

    shape, chunks, shards = layout
    options: dict[str, Any] = {} if fill_value is None else {"fill_value": fill_value}
    endian = _endian(np.dtype(dtype))
    if endian is not None and endian != "little":
        from zarr.codecs import BytesCodec

        options["serializer"] = BytesCodec(endian=endian)  # kept in the metadata, read back by stored_dtype
    if isinstance(path, Path):
        store: Any = LocalStore(path)
        in_force = codec_pipeline_in_force(codec_pipeline, path)
    else:
        store, in_force = path, codec_pipeline_in_force("zarr", Path())
    with in_force:
        return zarr.create_array(
            store=store,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            shards=shards,
            compressors=compressors,
            attributes=attributes,
            dimension_names=dimension_names,
            zarr_format=3,
            **options,
        )


def _as_shape(value: Any, what: str, shape: tuple[int, ...] | None, path: PathLike) -> tuple[int, ...]:
    """``value`` as a tuple of ints: sizes of a ``shape`` (>= 0), or sides of ``what`` (> 0, one per dimension)."""
    sides = (value,) if isinstance(value, (int, np.integer)) else value
    if isinstance(sides, (str, bytes)) or not isinstance(sides, Sequence) or not all(
        isinstance(side, (int, np.integer)) and not isinstance(side, (bool, np.bool_)) for side in sides
    ):
        raise TypeError(
            f"zarr backend: {what} {value!r} for the array at {str(path)!r} must be integers, "
            f"one per dimension, such as (256, 256)"
        )
    result = tuple(int(side) for side in sides)
    if shape is None:
        if any(side < 0 for side in result):
            raise ValueError(f"zarr backend: shape {result} for the array at {str(path)!r} has a negative size")
        return result
    if len(result) != len(shape):
        raise ValueError(
            f"zarr backend: {what} {value!r} for the array at {str(path)!r} must give one per dimension "
            f"(one side each), and the array of shape {shape} has {len(shape)} dimensions"
        )
    if any(side <= 0 for side in result):
        example = tuple(max(1, size) for size in shape)
        raise ValueError(
            f"zarr backend: {what} {value!r} for the array at {str(path)!r} (shape {shape}) must be positive "
            f"in every dimension, even where the array is empty; give e.g. {what}={example}"
        )
    return result
