"""The file formats of the file-like backends (disk, s3): what each suffix holds, encoded and decoded."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy_format

from polystore.backend import PathLike
from polystore.backends.fidelity import check_npy, check_tiff, tiff_payload
from polystore.errors import UnsupportedFormatError

__all__ = [
    "FORMATS",
    "NpyAssembler",
    "Payload",
    "decode",
    "encode",
    "read_npy",
    "read_npy_buffer",
    "read_npz",
    "read_tiff",
]

#: The format of each suffix (compared in lower case); any other suffix holds raw bytes.
FORMATS = {".npy": "npy", ".npz": "npz", ".json": "json", ".txt": "txt", ".tif": "tiff", ".tiff": "tiff"}

#: What a writer gets: buffers to write in order, or a function writing to a binary file.
Payload = list[Any] | Callable[[io.BufferedIOBase], None]

#: Bytes enough for a .npy file's magic string and header length field.
_NPY_PREFIX = npy_format.MAGIC_LEN + 4


def encode(data: Any, target: str, path: PathLike, options: dict[str, Any], backend: str = "disk") -> Payload:
    """Check ``data`` against the suffix of ``target`` and return what to write (messages name ``backend``)."""
    kind = FORMATS.get(os.path.splitext(target)[1].lower(), "bytes")
    if options and kind != "tiff":
        raise TypeError(
            f"{backend} backend: save of {str(path)!r} got unexpected options {sorted(options)}; "
            "only .tif/.tiff files take options (tifffile's)"
        )
    if kind == "bytes":
        if isinstance(data, (bytes, bytearray)):
            return [data]
        if isinstance(data, memoryview):
            return [data if data.c_contiguous else data.tobytes()]
        raise unsupported(data, path, "raw bytes (bytes, bytearray or memoryview)", backend)
    if kind == "txt":
        if isinstance(data, str):
            return [data.encode("utf-8")]
        raise unsupported(data, path, "a str", backend)
    if kind == "json":
        if not isinstance(data, (dict, list)):
            raise unsupported(data, path, "a dict or list", backend)
        try:
            return [json.dumps(data, ensure_ascii=False).encode("utf-8")]
        except (TypeError, ValueError) as error:
            raise UnsupportedFormatError(f"{backend} backend: cannot save {str(path)!r} as JSON: {error}") from error
    if kind == "npz":
        if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
            raise unsupported(data, path, "a dict of str keys to numpy arrays", backend)
        arrays = {key: checked_array(value, path, f"the value of {key!r}", backend) for key, value in data.items()}
        for key, value in arrays.items():
            check_npy(value, path, f"the value of {key!r}", backend, ".npz")
        return lambda stream: write_npz(stream, arrays)
    array = checked_array(data, path, "the data", backend)
    if kind == "tiff":
        suffix = os.path.splitext(target)[1]
        check_tiff(array, path, "the data", backend, suffix)
        return tiff_payload(import_tifffile(), array, options, path, backend, suffix)
    check_npy(array, path, "the data", backend)
    return npy_payload(array)


def unsupported(data: Any, path: PathLike, expected: str, backend: str = "disk") -> UnsupportedFormatError:
    suffix = os.path.splitext(os.fspath(path))[1] or "(no suffix)"
    return UnsupportedFormatError(
        f"{backend} backend: cannot save {type(data).__name__} to {str(path)!r}: {suffix} files hold {expected}. "
        "The suffix picks the format: arrays go to .npy, .npz or .tif, dicts to .json, "
        "str to .txt, bytes to any other suffix (such as .bin)"
    )


def checked_array(data: Any, path: PathLike, what: str, backend: str = "disk") -> np.ndarray:
    if isinstance(data, np.generic):
        data = np.asarray(data)
    if not isinstance(data, np.ndarray):
        raise unsupported(data, path, f"numpy arrays, and {what} is not one (convert it with np.asarray)", backend)
    if data.dtype.hasobject:
        raise UnsupportedFormatError(
            f"{backend} backend: cannot save an object array ({what}, dtype {data.dtype}) to {str(path)!r}: "
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


def read_npz(stream: IO[bytes], path: PathLike, backend: str = "disk") -> dict[str, np.ndarray]:
    try:
        with np.lib.npyio.NpzFile(stream, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{backend} backend: {str(path)!r} is not a readable .npz file: {error}") from error


def import_tifffile() -> Any:
    try:
        import tifffile
    except ImportError as error:
        raise ImportError(
            ".tif/.tiff files need the tifffile package; install it with "
            "'pip install polystore[tiff]'"
        ) from error
    return tifffile


def read_tiff(stream: IO[bytes], path: PathLike, options: dict[str, Any], backend: str = "disk") -> np.ndarray:
    tifffile = import_tifffile()
    try:
        return tifffile.imread(stream, **options)
    except ValueError as error:
        raise ValueError(f"{backend} backend: {str(path)!r} is not a readable TIFF file: {error}") from error


def decode(content: Any, target: str, path: PathLike, options: dict[str, Any], backend: str = "disk") -> Any:
    """Decode ``content`` (a bytes-like object holding a whole file) by the suffix of ``target``."""
    kind = FORMATS.get(os.path.splitext(target)[1].lower(), "bytes")
    if options and kind != "tiff":
        raise TypeError(
            f"{backend} backend: load of {str(path)!r} got unexpected options {sorted(options)}; "
            "only .tif/.tiff files take options (tifffile's)"
        )
    if kind == "npy":
        return read_npy_buffer(content, path, backend)
    if kind == "npz":
        return read_npz(io.BytesIO(content), path, backend)
    if kind == "tiff":
        return read_tiff(io.BytesIO(content), path, options, backend)
    if kind == "bytes":
        return bytes(content)
    try:
        return str(content, "utf-8") if kind == "txt" else json.loads(bytes(content))
    except ValueError as error:
        expected = "UTF-8 text" if kind == "txt" else "JSON"
        raise ValueError(f"{backend} backend: {str(path)!r} is not valid {expected}: {error}") from error


def read_npy_buffer(content: Any, path: PathLike, backend: str = "disk") -> np.ndarray:
    """Read a whole .npy file held in memory into a new, writable array (one copy of the data)."""
    assembler = NpyAssembler(path, backend)
    assembler.feed(content)
    return assembler.finish()


class NpyAssembler:
    """Builds the array of a .npy file that arrives in pieces (a download), copying each piece once.

    :meth:`feed` takes the file's bytes in order; :meth:`finish` returns the
    new, writable array. A malformed or truncated file raises ``ValueError``
    naming ``path`` and ``backend``.
    """

    def __init__(self, path: PathLike, backend: str = "disk") -> None:
        self._path = path
        self._backend = backend
        self._head = bytearray()  # the start of the file, while its header is incomplete
        self._array: np.ndarray | None = None
        self._flat: np.ndarray | None = None  # the array's bytes, filled in order
        self._filled = 0
        self._whole: bytearray | None = None  # a header version read by numpy's own reader

    def feed(self, piece: Any) -> None:
        """Add the next bytes of the file."""
        view = memoryview(piece).cast("B")
        try:
            if self._whole is not None:
                self._whole += view
                return
            if self._flat is None:
                if self._head:
                    self._head += view
                    view = memoryview(self._head)
                end = self._start(view)
                if end is None:
                    if not self._head:
                        self._head = bytearray(view)
                    return
                if self._whole is not None:
                    self._whole += view
                    return
                view = view[end:]
            assert self._flat is not None
            count = min(len(view), len(self._flat) - self._filled)  # bytes past the data are ignored, as np.load does
            self._flat[self._filled : self._filled + count] = np.frombuffer(view, np.uint8, count)
            self._filled += count
        except ValueError as error:
            raise self._unreadable(error) from error

    def _start(self, view: memoryview) -> int | None:
        """Make the array once ``view`` holds the whole header; return the header's length (None: too short yet)."""
        if len(view) < _NPY_PREFIX:
            return None
        version = npy_format.read_magic(io.BytesIO(view[: npy_format.MAGIC_LEN]))
        if version not in ((1, 0), (2, 0)):
            self._whole = bytearray()
            return 0
        width = 2 if version == (1, 0) else 4
        length = view[npy_format.MAGIC_LEN : npy_format.MAGIC_LEN + width]
        end = npy_format.MAGIC_LEN + width + int.from_bytes(length, "little")
        if len(view) < end:
            return None
        header = io.BytesIO(view[:end])
        npy_format.read_magic(header)
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(header)
        if dtype.hasobject:
            raise ValueError("it holds pickled Python objects, which polystore never loads")
        self._array = np.empty(shape[::-1], dtype).T if fortran_order else np.empty(shape, dtype)
        self._flat = (self._array.T if fortran_order else self._array).reshape(-1).view(np.uint8)
        return end

    def finish(self) -> np.ndarray:
        """Return the array, once every byte announced by the header has arrived."""
        try:
            if self._whole is not None:
                return npy_format.read_array(io.BytesIO(self._whole), allow_pickle=False)
            if self._array is None or self._flat is None:
                raise ValueError(f"it is truncated: {len(self._head)} bytes, not even a whole header")
            if self._filled < len(self._flat):
                raise ValueError(
                    f"it is truncated: the header announces {len(self._flat)} data bytes, the file holds {self._filled}"
                )
        except ValueError as error:
            raise self._unreadable(error) from error
        return self._array

    def _unreadable(self, error: ValueError) -> ValueError:
        return ValueError(f"{self._backend} backend: {str(self._path)!r} is not a readable .npy file: {error}")
