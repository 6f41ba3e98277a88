"""xarray for save_array and load_array: a DataArray's dims and attrs in, a DataArray out.

xarray stays optional: it is imported only to build a DataArray for
``load_array(..., as_dataarray=True)``; a DataArray given to ``save_array``
is recognised without importing anything.
"""

from __future__ import annotations

import posixpath
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from polystore.backend import PathLike

__all__ = ["import_xarray", "to_dataarray", "unlabelled"]


def import_xarray() -> ModuleType:
    """Import and return xarray, or raise ImportError with the install hint."""
    try:
        import xarray
    except ImportError as error:
        raise ImportError(
            "load_array(..., as_dataarray=True) needs xarray; install it with: pip install 'polystore[xarray]'"
        ) from error
    return xarray


def unlabelled(
    x: Any, dimension_names: Sequence[str | None] | None, attributes: dict[str, Any] | None
) -> tuple[Any, Sequence[str | None] | None, dict[str, Any] | None]:
    """``x``'s data with the dimension names and attributes to store: a DataArray's dims and attrs.

    Names and attributes given explicitly win over the DataArray's (the
    attributes are merged, the given ones replacing those of the same key).
    Anything that is not a DataArray is returned as it is.
    """
    xarray = sys.modules.get("xarray")  # given a DataArray, xarray is imported already
    if xarray is None:
        return x, dimension_names, attributes
    if isinstance(x, xarray.Dataset):
        raise TypeError(
            "save_array takes one array, not an xarray.Dataset; save each variable on its own path in one "
            "directory, e.g. for name, variable in ds.data_vars.items(): dfm.save_array(variable, f'{path}/{name}'), "
            "and xr.open_zarr(path) opens them as a Dataset"
        )
    if not isinstance(x, xarray.DataArray):
        return x, dimension_names, attributes
    names = tuple(str(dim) for dim in x.dims) if dimension_names is None else dimension_names
    return x.data, names, {**x.attrs, **(attributes or {})}


def to_dataarray(array: Any, path: PathLike, backend: str, stat: dict[str, Any]) -> Any:
    """``array`` as an ``xarray.DataArray`` named for the last part of ``path``, with the stored dims and attrs."""
    names = stat.get("dimension_names")
    if not names or any(name is None for name in names):
        raise ValueError(
            f"{backend} backend: load_array(..., as_dataarray=True) needs the dimension names of the array at "
            f"{str(path)!r}, and it has {'none' if not names else f'only some ({tuple(names)!r})'}; save it with "
            "save_array(..., dimension_names=(...)) or from an xarray.DataArray, or name them yourself: "
            "xr.DataArray(dfm.load_array(path), dims=(...))"
        )
    xarray = import_xarray()
    name = posixpath.basename(str(path).rstrip("/")) or None
    return xarray.DataArray(array, dims=tuple(names), attrs=dict(stat.get("attributes") or {}), name=name)
