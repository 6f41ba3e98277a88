"""FileManager: one storage API that routes each call to a backend by name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from polystore.backend import PathLike, StorageBackend
from polystore.errors import BackendNotFoundError
from polystore.registry import BackendRegistry

__all__ = ["FileManager"]

#: Stands for "no registry given": ``FileManager()`` builds a default one, ``FileManager(None)`` is refused.
_DEFAULT_REGISTRY: Mapping[str, StorageBackend] = MappingProxyType({})


class FileManager:
    """Save, load and list data by path, on the backend named in each call.

    Parameters
    ----------
    registry
        Backends by name: a :class:`BackendRegistry` (left out, a new default
        one) or any ``Mapping[str, StorageBackend]``, such as a plain dict of
        instances. ``None`` or anything not a mapping raises ``TypeError``.

    Examples
    --------
    >>> import numpy as np
    >>> fm = FileManager()
    >>> fm.save(np.arange(3), "demo/a.npy", "memory")
    >>> fm.load("demo/a.npy", "memory")
    array([0, 1, 2])
    """

    def __init__(self, registry: Mapping[str, StorageBackend] = _DEFAULT_REGISTRY) -> None:
        if registry is _DEFAULT_REGISTRY:
            registry = BackendRegistry()
        elif not isinstance(registry, Mapping):
            # None included: a registry that was meant to be configured
            # (roots, credentials) must not silently become an unconfined one.
            raise TypeError(
                f"FileManager takes a BackendRegistry or a Mapping of names to backends, not "
                f"{type(registry).__name__} ({registry!r}); call FileManager() for a default registry, or "
                "FileManager(BackendRegistry({'disk': {'root': ...}})) to configure the backends"
            )
        self.registry: Mapping[str, StorageBackend] = registry

    def get_backend(self, backend: str) -> StorageBackend:
        """Return the backend instance registered as ``backend``.

        Raises
        ------
        BackendNotFoundError
            No backend has that name; the message lists the names that exist.
        """
        try:
            return self.registry[backend]
        except BackendNotFoundError:
            raise
        except KeyError:
            raise BackendNotFoundError(
                f"no storage backend named {backend!r}; available: {', '.join(sorted(self.registry))}"
            ) from None
        except TypeError:
            if isinstance(backend, str):
                raise
            raise TypeError(
                f"backend must be a backend name (str), not {type(backend).__name__} ({backend!r}); "
                "pass it right after the path, e.g. fm.load(path, 'disk')"
            ) from None

    def save(self, data: Any, path: PathLike, backend: str, *, overwrite: bool = False, **kwargs: Any) -> None:
        """Store ``data`` at ``path`` on ``backend``; see :meth:`StorageBackend.save`."""
        try:  # get_backend's lookup, inlined: a memory save costs well under a microsecond
            target = self.registry[backend]
        except (KeyError, TypeError):
            target = self.get_backend(backend)  # raises the error that says why
        if kwargs:
            target.save(data, path, overwrite=overwrite, **kwargs)
        else:  # passing an empty **kwargs on costs a sixth of a memory save
            target.save(data, path, overwrite=overwrite)

    def load(self, path: PathLike, backend: str, **kwargs: Any) -> Any:
        """Return what is stored at ``path`` on ``backend``; see :meth:`StorageBackend.load`."""
        try:  # as in save
            target = self.registry[backend]
        except (KeyError, TypeError):
            target = self.get_backend(backend)
        return target.load(path, **kwargs) if kwargs else target.load(path)

    def save_batch(
        self,
        data_list: Sequence[Any],
        paths: Sequence[PathLike],
        backend: str,
        *,
        overwrite: bool = False,
        **kwargs: Any,
    ) -> None:
        """Store each item of ``data_list`` at the matching path; lengths must match."""
        self.get_backend(backend).save_batch(data_list, paths, overwrite=overwrite, **kwargs)

    def load_batch(self, paths: Sequence[PathLike], backend: str, **kwargs: Any) -> list[Any]:
        """Return the objects stored at ``paths``, in order."""
        return self.get_backend(backend).load_batch(paths, **kwargs)

    def exists(self, path: PathLike, backend: str) -> bool:
        """Whether anything exists at ``path``."""
        return self.get_backend(backend).exists(path)

    def is_file(self, path: PathLike, backend: str) -> bool:
        """Whether ``path`` is a stored object."""
        return self.get_backend(backend).is_file(path)

    def is_dir(self, path: PathLike, backend: str) -> bool:
        """Whether ``path`` is a directory."""
        return self.get_backend(backend).is_dir(path)

    def list_files(
        self,
        directory: PathLike,
        backend: str,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
        sort: str = "lexicographic",
    ) -> list[str]:
        """Return the sorted file paths in ``directory``; see :meth:`StorageBackend.list_files`.

        ``sort="natural"`` orders digit runs by value (``img2`` before
        ``img10``); the default is ``"lexicographic"``.
        """
        return self.get_backend(backend).list_files(
            directory, pattern=pattern, extensions=extensions, recursive=recursive, sort=sort
        )

    def list_dir(self, path: PathLike, backend: str, sort: str = "lexicographic") -> list[str]:
        """Return the sorted entry names in the directory ``path``; ``sort`` as for :meth:`list_files`."""
        return self.get_backend(backend).list_dir(path, sort=sort)

    def ensure_directory(self, path: PathLike, backend: str) -> None:
        """Create the directory ``path`` and its parents (idempotent)."""
        self.get_backend(backend).ensure_directory(path)

    def delete(self, path: PathLike, backend: str, *, recursive: bool = False) -> None:
        """Delete a file or directory; see :meth:`StorageBackend.delete`."""
        self.get_backend(backend).delete(path, recursive=recursive)

    def copy(
        self, src: PathLike, dst: PathLike, backend: str, *, overwrite: bool = False, recursive: bool = False
    ) -> None:
        """Copy ``src`` to ``dst`` within ``backend`` (a tree with ``recursive``); see :meth:`StorageBackend.copy`."""
        self.get_backend(backend).copy(src, dst, overwrite=overwrite, recursive=recursive)

    def move(self, src: PathLike, dst: PathLike, backend: str, *, overwrite: bool = False) -> None:
        """Move ``src`` to ``dst`` within ``backend``."""
        self.get_backend(backend).move(src, dst, overwrite=overwrite)

    def stat(self, path: PathLike, backend: str) -> dict[str, Any]:
        """Return ``type`` and ``size`` (and backend extras) of ``path``."""
        return self.get_backend(backend).stat(path)
