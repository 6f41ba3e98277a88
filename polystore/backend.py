"""The abstract bases every storage backend subclasses.

Defining a concrete subclass with a ``_backend_type`` registers it (through
``AutoRegisterMeta`` from metaclass-registry), so a :class:`BackendRegistry`
made at any time afterwards can create it by that name.
"""

from __future__ import annotations

import errno
import os
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from metaclass_registry import AutoRegisterMeta, RegistryFamily

from polystore.errors import ReadOnlyError
from polystore.paths import PathSpelling

__all__ = ["Locality", "PathLike", "ReadOnlyBackend", "StorageBackend"]

PathLike = str | os.PathLike[str]

#: Where a backend's data lives, as seen from the workers of a cluster.
Locality = Literal["shared", "process", "host"]

#: Every class registered by defining it, keyed by ``_backend_type``.
#: A plain dict: metaclass-registry's discovery (and its on-disk cache, which
#: is unsafe across processes) is never used.
_REGISTERED: dict[str, type[StorageBackend]] = {}


class StorageBackend(ABC, metaclass=AutoRegisterMeta):
    """A place to save and load data by path.

    Subclasses set ``_backend_type`` and implement every abstract method;
    defining such a class registers it under that name. Every method must be
    safe to call from many threads at once.

    Examples
    --------
    >>> class NullBackend(StorageBackend):  # doctest: +SKIP
    ...     _backend_type = "null"
    ...     ...
    """

    __registry_family__ = RegistryFamily("_backend_type", skip_if_no_key=True, registry_name="storage backend")
    __registry__ = _REGISTERED

    #: The name the backend is registered and asked for under.
    _backend_type: ClassVar[str | None] = None
    #: The kinds of data the backend stores, a subset of
    #: ``{"array", "bytes", "str", "dict"}``; the conformance kit reads it.
    stored_kinds: ClassVar[frozenset[str]] = frozenset({"array", "bytes", "str", "dict"})
    #: Whether the backend accepts writes.
    supports_writes: ClassVar[bool] = True
    #: Where the data lives, one of ``"shared"`` (every worker of a cluster sees the
    #: same data: a shared filesystem, an object store), ``"process"`` (the
    #: process that wrote it: memory) or ``"host"`` (the node that wrote it,
    #: outliving the process: node-local scratch). ``polystore_dask`` routes
    #: every operation by it.
    locality: ClassVar[Locality] = "shared"
    #: Whether the backend stores arrays by region, with ``create_array(path,
    #: shape, dtype, chunks, ..., incomplete=False)``, ``complete_array(path)``,
    #: ``save(block, path, region=...)`` and ``load(path, region=...)``, with
    #: ``stat`` giving ``shape``, ``dtype``, ``chunks`` and ``incomplete`` (as
    #: zarr does). ``save_array`` writes such a backend block by block, into
    #: an array created incomplete and marked complete after its last block.
    supports_regions: ClassVar[bool] = False

    @property
    def name(self) -> str:
        """The name this backend is registered under."""
        return str(self._backend_type)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @property
    def path_spelling(self) -> PathSpelling:
        """How this backend spells paths canonically; by default as keys (``a/b`` is ``/a/b``).

        Filesystem-like backends return ``PathSpelling("filesystem", root=...)``.
        """
        return PathSpelling("key")

    def canonical_path(self, path: PathLike) -> str:
        """The one spelling of ``path`` that every other spelling of the same object shares."""
        return self.path_spelling.canonical(path, backend=self.name)

    # -- writing ---------------------------------------------------------
    @abstractmethod
    def save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        """Store ``data`` at ``path``, creating missing parent directories.

        Parameters
        ----------
        data
            What to store; which kinds a backend accepts is in ``stored_kinds``.
        path
            Where to store it.
        overwrite
            Replace an existing object. Without it an existing path raises
            :class:`FileExistsError`, and the check and the write are one
            exclusive step: of several racing writers exactly one wins.
        **kwargs
            Backend-specific options.

        Raises
        ------
        FileExistsError
            ``path`` exists and ``overwrite`` is false.
        IsADirectoryError
            A directory is at ``path``, or ``path`` can only name one (the
            root, or a last part ``.`` or ``..``; a trailing ``/`` is only
            another spelling of the same path).
        UnsupportedFormatError
            The backend cannot store this data at this path, or would not
            give it back exactly (a dtype, a mask); the message names the
            dtype and format and says what to use instead. Nothing is written.
        """
        ...

    def save_batch(
        self, data_list: Sequence[Any], paths: Sequence[PathLike], *, overwrite: bool = False, **kwargs: Any
    ) -> None:
        """Store each of ``data_list`` at the matching path of ``paths``: every item, or none.

        Every item is checked with :meth:`check_save` before the first is
        written, so a batch with one bad item (unstorable data, a bad path
        or option, a path taken without ``overwrite``) raises that item's
        error and writes nothing. Only what cannot be known before writing
        (a racing writer taking a path, a full disk) can stop a batch part-way.

        Raises
        ------
        ValueError
            The two sequences differ in length (nothing is written).
        FileExistsError
            Without ``overwrite``: a path is taken, or named twice in the batch
            (nothing is written).
        NotADirectoryError
            An item's path lies under another item's, or under a file (nothing
            is written).
        """
        check_batch_lengths(data_list, paths, self.name)
        for data, path in zip(data_list, paths, strict=True):
            self.check_save(data, path, overwrite=overwrite, **kwargs)
        check_batch_paths([self.canonical_path(path) for path in paths], paths, self.name, overwrite)
        for data, path in zip(data_list, paths, strict=True):
            self.save(data, path, overwrite=overwrite, **kwargs)

    def check_save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        """Raise what :meth:`save` with these arguments would raise, writing nothing.

        It checks what can be known before writing: the path, the data, the
        options and, as the store is now, whether the path is free (or is a
        directory, or lies under a file). :meth:`save_batch` calls it for
        every item first. The default checks nothing: a backend overrides it,
        and the conformance kit tests that a bad item stops a batch.
        """

    @abstractmethod
    def ensure_directory(self, path: PathLike) -> None:
        """Create the directory ``path`` and its parents; do nothing if it exists."""
        ...

    @abstractmethod
    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        """Delete a file or an empty directory (any directory with ``recursive``).

        Raises
        ------
        FileNotFoundError
            Nothing exists at ``path``.
        OSError
            ``path`` is a non-empty directory and ``recursive`` is false
            (``errno.ENOTEMPTY``).
        """
        ...

    @abstractmethod
    def copy(self, src: PathLike, dst: PathLike, *, overwrite: bool = False, recursive: bool = False) -> None:
        """Copy the file ``src`` to ``dst``, with the same overwrite rule as :meth:`save`.

        With ``recursive`` and a directory ``src``, copy the whole tree
        (files and empty subdirectories) to ``dst``, as :meth:`copy_tree`
        does: if ``dst`` exists, ``FileExistsError`` unless ``overwrite``,
        raised before anything is copied; with ``overwrite``, files at the
        same relative paths are replaced and everything else already at
        ``dst`` is kept. A file at ``dst`` is refused with
        ``NotADirectoryError``, with or without ``overwrite``.

        Raises
        ------
        IsADirectoryError
            ``src`` is a directory and ``recursive`` is false.
        ValueError
            ``recursive`` and ``dst`` is ``src`` or inside it (a copy into its own subtree).
        """
        ...

    @abstractmethod
    def move(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        """Move the file ``src`` to ``dst``, with the same overwrite rule as :meth:`save`."""
        ...

    def copy_directory(self, src: PathLike, dst: PathLike, *, overwrite: bool, recursive: bool) -> None:
        """The part of :meth:`copy` for a ``src`` that is a directory: :meth:`copy_tree` if ``recursive``.

        Without ``recursive`` it raises ``IsADirectoryError`` saying to pass it.
        """
        if not recursive:
            raise IsADirectoryError(
                errno.EISDIR,
                f"{self.name} backend: this path is a directory; pass recursive=True to copy a directory tree",
                os.fspath(src),
            )
        self.copy_tree(src, dst, overwrite=overwrite)

    def copy_tree(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        """Copy the directory ``src`` and everything in it to ``dst``: ``copy(src, dst, recursive=True)``.

        Built on :meth:`list_dir`, :meth:`is_dir`, :meth:`ensure_directory`
        and :meth:`copy` of single files, so every backend has it; a backend
        may override it for speed. What may refuse the copy (see
        :meth:`check_copy_tree`) is checked before anything is copied.
        """
        self.check_copy_tree(src, dst, overwrite=overwrite)
        directories, files = self._tree_below(src)
        source, target = os.fspath(src), os.fspath(dst)
        self.ensure_directory(dst)
        for relative in directories:
            self.ensure_directory(posixpath.join(target, relative))
        for relative in files:
            self.copy(posixpath.join(source, relative), posixpath.join(target, relative), overwrite=overwrite)

    def check_copy_tree(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        """Raise what :meth:`copy_tree` would refuse with, copying nothing.

        ``ValueError`` for a copy into its own subtree, ``NotADirectoryError``
        if ``dst`` is a file, ``FileExistsError`` if ``dst`` exists and
        ``overwrite`` is false.
        """
        source, target = self.canonical_path(src), self.canonical_path(dst)
        if target == source or target.startswith(source.rstrip("/") + "/"):
            raise ValueError(
                f"{self.name} backend: cannot copy the directory {os.fspath(src)!r} into its own subtree "
                f"({os.fspath(dst)!r}); choose a destination outside it"
            )
        if self.is_file(dst):
            raise NotADirectoryError(
                errno.ENOTDIR,
                f"{self.name} backend: a file exists at the destination of a directory copy; "
                "delete it or choose another destination",
                os.fspath(dst),
            )
        if not overwrite and self.exists(dst):
            raise FileExistsError(
                errno.EEXIST,
                f"{self.name} backend: destination exists; pass overwrite=True to copy into it",
                os.fspath(dst),
            )

    def _tree_below(self, directory: PathLike) -> tuple[list[str], list[str]]:
        """The subdirectories and files under ``directory``, as paths relative to it."""
        base = os.fspath(directory)
        directories: list[str] = []
        files: list[str] = []
        pending = [""]
        while pending:
            relative = pending.pop()
            for name in self.list_dir(posixpath.join(base, relative) if relative else directory):
                child = posixpath.join(relative, name) if relative else name
                if self.is_dir(posixpath.join(base, child)):
                    directories.append(child)
                    pending.append(child)
                else:
                    files.append(child)
        return sorted(directories), sorted(files)

    # -- reading ---------------------------------------------------------
    @abstractmethod
    def load(self, path: PathLike, **kwargs: Any) -> Any:
        """Return what was saved at ``path`` (same dtype, shape and values).

        Raises
        ------
        FileNotFoundError
            Nothing is stored at ``path``; the message names backend and path.
        """
        ...

    def load_batch(self, paths: Sequence[PathLike], **kwargs: Any) -> list[Any]:
        """Return the objects stored at ``paths``, in order."""
        return [self.load(path, **kwargs) for path in paths]

    @abstractmethod
    def exists(self, path: PathLike) -> bool:
        """Whether a file or directory exists at ``path``; never raises for a missing path."""
        ...

    @abstractmethod
    def is_file(self, path: PathLike) -> bool:
        """Whether ``path`` is a stored object (a zarr array counts as one)."""
        ...

    @abstractmethod
    def is_dir(self, path: PathLike) -> bool:
        """Whether ``path`` is a directory."""
        ...

    @abstractmethod
    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
        sort: str = "lexicographic",
    ) -> list[str]:
        """Return the sorted paths of the files in ``directory``.

        Parameters
        ----------
        directory
            Where to look. Each result is ``directory`` joined with the
            entry's relative name, so it can be passed straight to :meth:`load`.
        pattern
            A glob matched against the file's name (``fnmatch`` rules).
        extensions
            Name endings to keep: ``{".tif"}`` keeps ``a.tif`` and
            ``a.ome.tif``; ``{".ome.tif"}`` keeps only the latter.
        recursive
            Also look in subdirectories.
        sort
            ``"lexicographic"`` (the default: by code point, as ``sorted``)
            or ``"natural"`` (digit runs by value, so ``img2`` comes before
            ``img10``; see :func:`polystore.paths.natural_key`). Sort with
            :func:`polystore.paths.sort_names`, which also refuses any other
            value.

        Raises
        ------
        FileNotFoundError
            ``directory`` does not exist.
        NotADirectoryError
            ``directory`` is a file.
        ValueError
            ``sort`` is neither ``"lexicographic"`` nor ``"natural"``.
        """
        ...

    @abstractmethod
    def list_dir(self, path: PathLike, sort: str = "lexicographic") -> list[str]:
        """Return the sorted names of the entries (files and directories) in ``path``.

        ``sort`` is ``"lexicographic"`` (the default) or ``"natural"``, as
        for :meth:`list_files`.
        """
        ...

    @abstractmethod
    def stat(self, path: PathLike) -> dict[str, Any]:
        """Return a dict with at least ``type`` (``"file"``/``"directory"``) and ``size`` in bytes."""
        ...


class ReadOnlyBackend(StorageBackend):
    """A backend that can only be read: every write raises :class:`ReadOnlyError`.

    Subclasses implement the reading methods only.
    """

    supports_writes: ClassVar[bool] = False

    def _refuse(self, operation: str, path: PathLike) -> ReadOnlyError:
        return ReadOnlyError(
            f"{self.name} backend is read-only: cannot {operation} {os.fspath(path)!r}; "
            "use a writable backend such as 'disk'"
        )

    def save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        raise self._refuse("save", path)

    def save_batch(
        self, data_list: Sequence[Any], paths: Sequence[PathLike], *, overwrite: bool = False, **kwargs: Any
    ) -> None:
        raise self._refuse("save", paths[0] if paths else "")

    def check_save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        raise self._refuse("save", path)

    def ensure_directory(self, path: PathLike) -> None:
        raise self._refuse("create directory", path)

    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        raise self._refuse("delete", path)

    def copy(self, src: PathLike, dst: PathLike, *, overwrite: bool = False, recursive: bool = False) -> None:
        raise self._refuse("copy to", dst)

    def move(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        raise self._refuse("move", src)


def check_batch_lengths(data_list: Sequence[Any], paths: Sequence[PathLike], backend: str) -> None:
    """Raise ``ValueError`` unless ``data_list`` and ``paths`` have the same length."""
    if len(data_list) != len(paths):
        raise ValueError(
            f"{backend} backend: save_batch got {len(data_list)} data items "
            f"but {len(paths)} paths; pass one path per item"
        )


def check_batch_paths(keys: Sequence[str], paths: Sequence[PathLike], backend: str, overwrite: bool) -> None:
    """Refuse a batch whose paths clash among themselves, before anything is written.

    ``keys`` are the canonical spellings of ``paths``. Two items at one path
    without ``overwrite`` (the second could only fail) raise
    ``FileExistsError``; an item under another item's path (which would have
    to be a file and a directory) raises ``NotADirectoryError``.
    """
    seen: dict[str, PathLike] = {}
    for key, path in zip(keys, paths, strict=True):
        if key in seen and not overwrite:
            raise FileExistsError(
                errno.EEXIST,
                f"{backend} backend: save_batch names this path twice (also as {os.fspath(seen[key])!r}); "
                "give each item its own path, or pass overwrite=True",
                str(path),
            )
        seen.setdefault(key, path)
    for key, path in zip(keys, paths, strict=True):
        parent, above = posixpath.dirname(key), key
        while parent != above:
            if parent in seen:
                raise NotADirectoryError(
                    errno.ENOTDIR,
                    f"{backend} backend: save_batch saves a file at {os.fspath(seen[parent])!r} and another under it; "
                    "a path cannot be both a file and a directory",
                    str(path),
                )
            parent, above = posixpath.dirname(parent), parent


def registered_backends() -> dict[str, type[StorageBackend]]:
    """Return a snapshot of the backend classes registered in this process."""
    return dict(_REGISTERED)
