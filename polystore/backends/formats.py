"""The file formats of the disk backend: what each suffix holds, encoded and decoded."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from polystore.backend import PathLike
from polystore.backends.fidelity import check_npy, check_tiff, tiff_payload
from polystore.errors import UnsupportedFormatError

__all__ = ["FORMATS", "Payload", "encode", "read_npy", "read_npz", "read_tiff"]

#: The format of each suffix (compared in lower case); any other suffix holds raw bytes.
FORMATS = {".npy": "npy", ".npz": "npz", ".json": "json", ".txt": "txt", ".tif": "tiff", ".tiff": "tiff"}

#: What a writer gets: buffers to write in order, or a function writing to a binary file.
Payload = list[Any] | Callable[[io.BufferedIOBase], None]


def encode(data: Any, target: str, path: PathLike, options: dict[str, Any]) -> Payload:
    """Check ``data`` against the suffix of ``target`` and return what to write."""
    kind = FORMATS.get(os.path.splitext(target)[1].lower(), "bytes")
    if options and kind != "tiff":
        raise TypeError(f"disk backend: save got unexpected options {sorted(options)}; only .tif/.tiff files take options")
    if kind == "bytes":
        if isinstance(data, (bytes, bytearray)):
            return [data]
        if isinstance(data, memoryview):
            return [data if data.c_contiguous else data.tobytes()]
        raise unsupported(data, path, "raw bytes (bytes, bytearray or memoryview)")
    if kind == "txt":
        if isinstance(data, str):
            return [data.encode("utf-8")]
        raise unsupported(data, path, "a str")
    if kind == "json":
        if not isinstance(data, (dict, list)):
            raise unsupported(data, path, "a dict or list")
        try:
            return [json.dumps(data, ensure_ascii=False).encode("utf-8")]
        except (TypeError, ValueError) as error:
            raise UnsupportedFormatError(f"disk backend: cannot save {str(path)!r} as JSON: {error}") from error
    if kind == "npz":
        if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
            raise unsupported(data, path, "a dict of str keys to numpy arrays")
        arrays = {key: checked_array(value, path, f"the value of {key!r}") for key, value in data.items()}
        for key, value in arrays.items():
            check_npy(value, path, f"the value of {key!r}", "disk", ".npz")
        return lambda stream: write_npz(stream, arrays)
    array = checked_array(data, path, "the data")
    if kind == "tiff":
        suffix = os.path.splitext(target)[1]
        check_tiff(array, path, "the data", "disk", suffix)
        return tiff_payload(import_tifffile(), array, options, path, "disk", suffix)
    check_npy(array, path, "the data", "disk")
    return npy_payload(array)


def unsupported(data: Any, path: PathLike, expected: str) -> UnsupportedFormatError:
    suffix = os.path.splitext(os.fspath(path))[1] or "(no suffix)"
    return UnsupportedFormatError(
        f"disk backend: cannot save {type(data).__name__} to {str(path)!r}: {suffix} files hold {expected}. "
        "The suffix picks the format: arrays go to .npy, .npz or .tif, dicts to .json, "
        "str to .txt, bytes to any other suffix (such as .bin)"
    )


def checked_array(data: Any, path: PathLike, what: str) -> np.ndarray:
    if isinstance(data, np.generic):
        data = np.asarray(data)
    if not isinstance(data, np.ndarray):
        raise unsupported(data, path, f"numpy arrays, and {what} is not one (convert it with np.asarray)")
    if data.dtype.hasobject:
        raise UnsupportedFormatError(
            f"disk backend: cannot save an object array ({what}, dtype {data.dtype}) to {str(path)!r}: "
            "pickles are never written; convert it to a numeric, bytes or fixed-width str dtype"
        )
    return data


def npy_payload(array: np.ndarray) -> Payload:
    """The .npy header and the raw data of ``array``, without copying it.

    Written with one ``writev``, which costs less than numpy's writer and
    reports the OS's errors with their errno. Other arrays (non-contiguous,
    or with a header too large for format 1.0) go through numpy's writer.
    """
    header = npy_format.header_data_from_array_1_0(array)
    contiguous = array.flags.c_contiguous or array.flags.f_contiguous
    if contiguous and array.itemsize:
        prefix = io.BytesIO()
        try:
            npy_format.write_array_header_1_0(prefix, header)
        except ValueError:
            pass  # a header too large for format 1.0; numpy picks the version below
        else:
            flat = (array.T if header["fortran_order"] else array).reshape(-1)
            return [prefix.getvalue(), flat.view(np.uint8)]
    return lambda stream: npy_format.write_array(stream, array, allow_pickle=False)


def write_npz(stream: io.BufferedIOBase, arrays: dict[str, np.ndarray]) -> None:
    # What np.savez does, minus its keyword arguments (a key named "file"
    # or "allow_pickle" would collide with them).
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, array in arrays.items():
            with archive.open(key + ".npy", "w", force_zip64=True) as member:
                npy_format.write_array(member, array, allow_pickle=False)


def read_npy(stream: io.BufferedReader, path: PathLike) -> np.ndarray:
    """Read a .npy file straight into a new array (``readinto``, no extra copy)."""
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(stream)
        else:
            stream.seek(0)
            return npy_format.read_array(stream, allow_pickle=False)
        if dtype.hasobject:
            raise ValueError("it holds pickled Python objects, which polystore never loads")
        size = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        available = os.fstat(stream.fileno()).st_size - stream.tell()
        if available < size:
            raise ValueError(f"it is truncated: the header announces {size} data bytes, the file holds {available}")
        if fortran_order:
            array = np.empty(shape[::-1], dtype).T
            flat = array.T.reshape(-1)
        else:
            array = np.empty(shape, dtype)
            flat = array.reshape(-1)
        if size and stream.readinto(flat.view(np.uint8).data) != size:
            raise ValueError("it changed while being read")
    except ValueError as error:
        raise ValueError(f"disk backend: {str(path)!r} is not a readable .npy file: {error}") from error
    return array


def read_npz(stream: io.BufferedReader, path: PathLike) -> dict[str, np.ndarray]:
    try:
        with np.lib.npyio.NpzFile(stream, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"disk backend: {str(path)!r} is not a readable .npz file: {error}") from error


def import_tifffile() -> Any:
    try:
        import tifffile
    except ImportError as error:
        raise ImportError(
            "disk backend: .tif/.tiff files need the tifffile package; install it with "
            "'pip install polystore[tiff]'"
        ) from error
    return tifffile


def read_tiff(stream: io.BufferedReader, path: PathLike, options: dict[str, Any]) -> np.ndarray:
    tifffile = import_tifffile()
    try:
        return tifffile.imread(stream, **options)
    except ValueError as error:
        raise ValueError(f"disk backend: {str(path)!r} is not a readable TIFF file: {error}") from error
