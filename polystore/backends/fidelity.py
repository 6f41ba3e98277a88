"""What the array file formats (.npy, .npz, .tif) keep of an array, checked before anything is written.

An array saved to a file either comes back exactly (dtype with its byte
order, shape, every bit of every value) or its save is refused with
:class:`UnsupportedFormatError` naming the dtype, the format and what to use
instead. The README's dtype table states the same rules; a test checks the
one against the other.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from polystore.backend import PathLike
from polystore.errors import UnsupportedFormatError

__all__ = ["check_npy", "check_tiff", "tiff_payload"]

#: Advice for an array no other format keeps.
_USE_NPY = "save it as .npy, which keeps every dtype but object"
#: The kinds of dtype TIFF holds: bool, signed and unsigned integers, floats, complex.
_TIFF_KINDS = "biufc"


def _refusal(
    array: np.ndarray, path: PathLike, what: str, backend: str, fmt: str, reason: str, instead: str
) -> UnsupportedFormatError:
    return UnsupportedFormatError(
        f"{backend} backend: cannot save {what} (dtype {array.dtype}, shape {array.shape}) to {str(path)!r} "
        f"as {fmt}: {reason}; {instead}"
    )


def _masked_refusal(array: np.ndarray, path: PathLike, what: str, backend: str, fmt: str) -> UnsupportedFormatError:
    return _refusal(
        array, path, what, backend, fmt, f"{fmt} keeps no mask, so the masked values would come back unmasked",
        "save np.ma.getdata(a) and np.ma.getmaskarray(a) as two arrays (an .npz holds both), "
        "or use the 'memory' backend, which keeps the mask",
    )


def check_npy(array: np.ndarray, path: PathLike, what: str, backend: str, fmt: str = ".npy") -> None:
    """Refuse what .npy (and each array of an .npz) would not give back: a masked array's mask.

    Object arrays, StringDType included, are refused before this (pickles
    are never written); every other dtype and shape is kept.
    """
    if isinstance(array, np.ma.MaskedArray):
        raise _masked_refusal(array, path, what, backend, fmt)


def check_tiff(array: np.ndarray, path: PathLike, what: str, backend: str, fmt: str = ".tif") -> None:
    """Refuse a dtype TIFF would not give back: only numbers, of the sizes TIFF has, in native byte order."""
    if isinstance(array, np.ma.MaskedArray):
        raise _masked_refusal(array, path, what, backend, fmt)
    dtype = array.dtype
    if dtype.kind not in _TIFF_KINDS or dtype.fields is not None:
        raise _refusal(
            array, path, what, backend, fmt,
            "TIFF holds numbers only (bool, integers, floats, complex)", _USE_NPY + ", or use zarr",
        )
    if (dtype.kind == "f" and dtype.itemsize > 8) or (dtype.kind == "c" and dtype.itemsize > 16):
        raise _refusal(
            array, path, what, backend, fmt, f"TIFF has no {dtype.name}",
            f"convert it (to {'float64' if dtype.kind == 'f' else 'complex128'}, losing precision), or {_USE_NPY}",
        )
    native = "<" if sys.byteorder == "little" else ">"
    if dtype.byteorder not in ("=", "|", native):
        raise _refusal(
            array, path, what, backend, fmt, "TIFF files are read back in native byte order",
            f"save a.astype(a.dtype.newbyteorder('=')), or {_USE_NPY} (byte order included), or use zarr",
        )


def tiff_payload(
    tifffile: Any, array: np.ndarray, options: dict[str, Any], path: PathLike, backend: str, fmt: str
) -> Callable[[io.BufferedIOBase], None]:
    """The writer of ``array`` as a TIFF file; it refuses what tifffile would read back differently.

    tifffile writes some shapes it then cannot read (many length-1 or
    empty dimensions, 32 dimensions), and options such as ``imagej=True``
    can reshape the array. So the finished temporary file is read back
    (its header only) and refused before it is put in place, unless it
    gives the same shape and dtype.
    """

    def write(stream: io.BufferedIOBase) -> None:
        try:
            tifffile.imwrite(stream, array, **options)
        except OSError:
            raise  # the OS refused: the caller reports it as a failed write
        except Exception as error:  # tifffile refuses some shapes and options with IndexError, ValueError...
            raise _refusal(
                array, path, "the data", backend, fmt, f"tifffile cannot write it ({type(error).__name__}: {error})",
                f"{_USE_NPY} (every shape is kept there)" + (", or change the tifffile options" if options else ""),
            ) from error
        stream.flush()
        name = getattr(stream, "name", None)
        if isinstance(name, str):
            source: Any = name
        else:  # an in-memory stream, read from its start
            source = stream
            stream.seek(0)
        try:
            with tifffile.TiffFile(source) as written:
                series = written.series[0]
                shape, dtype = tuple(series.shape), series.dtype
        except Exception as error:  # tifffile fails in many ways on a file it cannot read back
            shape, dtype = None, f"nothing readable ({type(error).__name__}: {error})"
        finally:
            if source is stream:
                stream.seek(0, io.SEEK_END)
        if shape != array.shape or dtype != array.dtype:
            got = dtype if shape is None else f"{dtype} of shape {shape}"
            raise _refusal(
                array, path, "the data", backend, fmt, f"tifffile would read it back as {got}",
                f"{_USE_NPY} (every shape is kept there), or reshape it"
                + (" or leave out the tifffile options" if options else ""),
            )

    return write
