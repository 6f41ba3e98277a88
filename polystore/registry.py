"""BackendRegistry: a lazy, caching, read-only mapping of names to backends."""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from polystore.backend import StorageBackend, registered_backends
from polystore.errors import BackendNotFoundError
from polystore.redaction import redacted

__all__ = ["ENTRY_POINT_GROUP", "BackendRegistry"]

#: Installed distributions ship backends under this entry-point group:
#: the entry's name is the backend key, its value ``module:Class``.
ENTRY_POINT_GROUP = "polystore.backends"


class BackendRegistry(Mapping[str, StorageBackend]):
    """Backend instances by name, each created on first access and then cached.

    The registry sees every backend class defined in this process, including
    ones defined after it was made, and those shipped by installed packages
    through the ``polystore.backends`` entry-point group (imported only when
    first asked for). Two registries never share instances.

    Parameters
    ----------
    options
        Keyword arguments for each backend's constructor, by backend name,
        e.g. ``{"disk": {"root": "/scratch/run1"}}``.

    Examples
    --------
    >>> registry = BackendRegistry()
    >>> registry["memory"] is registry["memory"]
    True
    """

    def __init__(self, options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._options = {name: dict(kwargs) for name, kwargs in (options or {}).items()}
        self._instances: dict[str, StorageBackend] = {}
        self._lock = threading.Lock()
        self._entry_points_found: dict[str, importlib.metadata.EntryPoint] | None = None

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        # Scanned once per registry: installed distributions rarely change
        # within a process, and the scan costs milliseconds.
        if self._entry_points_found is None:
            found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
            self._entry_points_found = {ep.name: ep for ep in found}
        return self._entry_points_found

    @property
    def options(self) -> dict[str, dict[str, Any]]:
        """The constructor options this registry passes, by backend name.

        Printed (``repr``/``str``), options whose names mark them as secret
        (``secret_access_key``, ``password``, ``token``, ...) show as ``'***'``;
        the values themselves are unchanged.
        """
        return _PrintedRedacted({name: _PrintedRedacted(kwargs) for name, kwargs in self._options.items()})

    def __getitem__(self, name: str) -> StorageBackend:
        try:
            return self._instances[name]
        except (KeyError, TypeError):
            pass
        if not isinstance(name, str):
            raise TypeError(f"backend name must be a str, not {type(name).__name__} ({name!r})")
        with self._lock:
            if name not in self._instances:
                self._instances[name] = self._create(name)
            return self._instances[name]

    def _create(self, name: str) -> StorageBackend:
        cls = registered_backends().get(name)
        if cls is None:
            entry_point = self._entry_points().get(name)
            if entry_point is None:
                raise BackendNotFoundError(
                    f"no storage backend named {name!r}; available: {', '.join(sorted(self)) or 'none'}. "
                    "Define a StorageBackend subclass with _backend_type set, or install a package that ships one"
                )
            entry_point.load()  # importing the module registers the class
            cls = registered_backends().get(name)
            if cls is None:
                raise BackendNotFoundError(
                    f"entry point {entry_point.value!r} of group {ENTRY_POINT_GROUP!r} was imported "
                    f"but registered no backend named {name!r}; its class must set _backend_type = {name!r}"
                )
        kwargs = self._options.get(name, {})
        try:
            return cls(**kwargs)
        except TypeError as error:
            raise TypeError(
                f"cannot create the {name!r} backend with options {redacted(kwargs)!r}: {error}; "
                f"fix the options given for {name!r}"
            ) from error

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in registered_backends() or name in self._entry_points())

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(registered_backends().keys() | self._entry_points().keys()))

    def __len__(self) -> int:
        return len(registered_backends().keys() | self._entry_points().keys())

    def __repr__(self) -> str:
        created = sorted(self._instances)
        return f"BackendRegistry(available={list(self)}, created={created})"


class _PrintedRedacted(dict[str, Any]):
    """A dict that prints its secret options as ``'***'`` (see :func:`polystore.redaction.redacted`)."""

    def __repr__(self) -> str:
        return repr(redacted(self))

    __str__ = __repr__
