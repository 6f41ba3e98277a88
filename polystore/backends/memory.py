"""MemoryBackend: objects kept in this process, in a tree of paths."""

from __future__ import annotations

import copy as copying
import errno
import json
import os
import posixpath
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from polystore.backend import Locality, PathLike, StorageBackend, check_batch_lengths, check_batch_paths
from polystore.errors import UnsupportedFormatError
from polystore.paths import filter_names, names_a_directory, normalize_key, sort_names

__all__ = ["MemoryBackend"]

_STORABLE = (np.ndarray, np.generic, bytes, str, dict)
#: ``np.ndarray`` as a module global: the fast paths test ``type(data) is _NDARRAY``, at half the cost.
_NDARRAY = np.ndarray

#: Keys of str paths a save accepted before (normalised, not naming a directory), so
#: the next save or load of one skips those checks: they would dominate a sub-microsecond call.
#: Only str paths are stored, but any path is looked up (a miss, or TypeError if unhashable).
_SAVE_KEYS: dict[PathLike, str] = {}
_SAVE_KEYS_LIMIT = 65536


class MemoryBackend(StorageBackend):
    """Arrays, bytes, str and dicts held in this process's memory.

    Each instance is its own tree, so each registry (and so each Dask worker)
    has its own. ``a/b`` and ``/a/b`` name the same object.

    Saving an array stores a read-only copy (``copy=False`` stores the caller's
    array itself, without copying); ``load`` returns a read-only view of it,
    so no reader can change what another reads. Call ``.copy()`` on the
    result to get an array you can modify.
    """

    _backend_type = "memory"
    locality: ClassVar[Locality] = "process"

    def __init__(self) -> None:
        self._files: dict[str, Any] = {}
        self._dirs: set[str] = {""}
        #: Keys of arrays stored with ``copy=False``: the caller's own buffer,
        #: which the caller may still change; a copy of one copies the data.
        self._borrowed: set[str] = set()
        self._lock = threading.Lock()

    def _missing(self, path: PathLike) -> FileNotFoundError:
        return FileNotFoundError(errno.ENOENT, "memory backend: nothing is stored at this path", str(path))

    # -- writing ---------------------------------------------------------
    def save(self, data: Any, path: PathLike, *, overwrite: bool = False, copy: bool = True, **kwargs: Any) -> None:
        # docstring inherited
        # The steps of _prepared and _put, inlined: a memory save costs well under a microsecond.
        if kwargs:
            self._prepared(data, path, False, kwargs)  # raises the error for the options, or the path
        try:  # a str path saved before has its checked key ready
            key = _SAVE_KEYS[path]
        except (KeyError, TypeError):
            key = _checked_key(path)
        if type(data) is _NDARRAY and not data.dtype.hasobject:
            stored = data.copy() if copy else data
        else:
            stored = self._stored(data, path, copy)
        files = self._files
        # acquire and try/finally rather than `with`: a third of the cost on CPython 3.11.
        self._lock.acquire()
        try:
            if key in files:
                if not overwrite:
                    raise FileExistsError(
                        errno.EEXIST, "memory backend: path exists; pass overwrite=True to replace it", str(path)
                    )
            else:
                self._check_free(key, path, overwrite)
                parent = key.rpartition("/")[0]
                if parent not in self._dirs:
                    self._make_dirs(parent, path)
            files[key] = stored
            if not copy and isinstance(data, np.ndarray):
                self._borrowed.add(key)
            elif self._borrowed:
                self._borrowed.discard(key)
        finally:
            self._lock.release()

    def check_save(
        self, data: Any, path: PathLike, *, overwrite: bool = False, copy: bool = True, **kwargs: Any
    ) -> None:
        # docstring inherited
        key, _ = self._prepared(data, path, False, kwargs)  # checking needs no copy
        with self._lock:
            self._check_free(key, path, overwrite)

    def save_batch(
        self,
        data_list: Sequence[Any],
        paths: Sequence[PathLike],
        *,
        overwrite: bool = False,
        copy: bool = True,
        **kwargs: Any,
    ) -> None:
        # docstring inherited
        # Checked, then stored under one hold of the lock: no reader sees part of the batch.
        check_batch_lengths(data_list, paths, self.name)
        items = [self._prepared(data, path, copy, kwargs) for data, path in zip(data_list, paths, strict=True)]
        check_batch_paths([key for key, _ in items], paths, self.name, overwrite)
        with self._lock:
            for (key, _), path in zip(items, paths, strict=True):
                self._check_free(key, path, overwrite)
            for (key, stored), data, path in zip(items, data_list, paths, strict=True):
                self._put(key, stored, path, borrowed=not copy and isinstance(data, np.ndarray))

    def _prepared(self, data: Any, path: PathLike, copy: bool, options: dict[str, Any]) -> tuple[str, Any]:
        """Check ``path``, ``data`` and ``options``; return the key and what to store (a copy unless told not to)."""
        key = normalize_key(path, "memory")
        self._check_name_and_options(path, options)
        return key, self._stored(data, path, copy)

    @staticmethod
    def _check_name_and_options(path: PathLike, options: dict[str, Any]) -> None:
        if names_a_directory(os.fspath(path)):
            raise IsADirectoryError(
                errno.EISDIR,
                "memory backend: this path names a directory (the root, or a last part '.' or '..'); "
                "give the object its own name, such as 'images/a.npy'",
                str(path),
            )
        if options:
            raise TypeError(
                f"memory backend: save of {str(path)!r} got unexpected options {sorted(options)}; it takes copy"
            )

    @staticmethod
    def _stored(data: Any, path: PathLike, copy: bool) -> Any:
        """What to keep for ``data``: a copy of an array (unless ``copy`` is false), bytes for a buffer."""
        if isinstance(data, np.ndarray):
            if data.dtype.hasobject and data.dtype.kind != "T":
                raise UnsupportedFormatError(
                    f"memory backend: cannot store an object array at {str(path)!r}; convert it to a numeric "
                    "or string dtype (np.dtypes.StringDType() for str of any length)"
                )
            # Marking the array read-only is left to load: flipping the flag
            # costs more than the copy of a small array.
            return data.copy() if copy else data
        if isinstance(data, (bytearray, memoryview)):
            return bytes(data)
        if isinstance(data, _STORABLE):
            return copying.deepcopy(data) if isinstance(data, dict) else data
        raise UnsupportedFormatError(
            f"memory backend: cannot store {type(data).__name__} at {str(path)!r}; "
            "it stores numpy arrays, bytes, str and dict"
        )

    def _check_free(self, key: str, path: PathLike, overwrite: bool) -> None:
        """Raise what storing at ``key`` would raise now (lock held)."""
        if key in self._files:
            if not overwrite:
                raise FileExistsError(
                    errno.EEXIST, "memory backend: path exists; pass overwrite=True to replace it", str(path)
                )
            return
        if key in self._dirs:
            raise IsADirectoryError(errno.EISDIR, "memory backend: a directory exists at this path", str(path))
        parent = key.rpartition("/")[0]
        while parent not in self._dirs:
            if parent in self._files:
                raise NotADirectoryError(
                    errno.ENOTDIR, f"memory backend: {parent!r} is a file, not a directory", str(path)
                )
            parent = posixpath.dirname(parent)

    def _put(self, key: str, stored: Any, path: PathLike, *, borrowed: bool) -> None:
        """Store at ``key``, which :meth:`_check_free` accepted (lock held)."""
        if key not in self._files:
            parent = key.rpartition("/")[0]
            if parent not in self._dirs:
                self._make_dirs(parent, path)
        self._files[key] = stored
        if borrowed:
            self._borrowed.add(key)
        elif self._borrowed:
            self._borrowed.discard(key)

    def _make_dirs(self, key: str, path: PathLike) -> None:
        """Add ``key`` and its missing ancestors to the directories (lock held)."""
        missing = []
        while key not in self._dirs:
            if key in self._files:
                raise NotADirectoryError(
                    errno.ENOTDIR, f"memory backend: {key!r} is a file, not a directory", str(path)
                )
            missing.append(key)
            key = posixpath.dirname(key)
        self._dirs.update(missing)

    def ensure_directory(self, path: PathLike) -> None:
        # docstring inherited
        key = normalize_key(path, "memory")
        with self._lock:
            if key in self._files:
                raise FileExistsError(errno.EEXIST, "memory backend: a file exists at this path", str(path))
            self._make_dirs(key, path)

    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        # docstring inherited
        key = normalize_key(path, "memory")
        with self._lock:
            if key in self._files:
                del self._files[key]
                self._borrowed.discard(key)
                return
            if key not in self._dirs:
                raise self._missing(path)
            if not key:
                raise IsADirectoryError(errno.EISDIR, "memory backend: cannot delete the root directory", str(path))
            prefix = key + "/"
            files = [name for name in self._files if name.startswith(prefix)]
            dirs = [name for name in self._dirs if name.startswith(prefix)]
            if (files or dirs) and not recursive:
                raise OSError(errno.ENOTEMPTY, "memory backend: directory is not empty; pass recursive=True", str(path))
            for name in files:
                del self._files[name]
            self._borrowed.difference_update(files)
            self._dirs.difference_update(dirs)
            self._dirs.discard(key)

    def copy(self, src: PathLike, dst: PathLike, *, overwrite: bool = False, recursive: bool = False) -> None:
        # docstring inherited
        if recursive and self.is_dir(src):
            self.copy_tree(src, dst, overwrite=overwrite)
            return
        self._transfer(src, dst, overwrite=overwrite, keep_source=True)

    def move(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        # docstring inherited
        self._transfer(src, dst, overwrite=overwrite, keep_source=False)

    def _transfer(self, src: PathLike, dst: PathLike, *, overwrite: bool, keep_source: bool) -> None:
        source, target = normalize_key(src, "memory"), normalize_key(dst, "memory")
        with self._lock:
            if source not in self._files:
                if source in self._dirs:
                    hint = "pass recursive=True to copy a directory tree" if keep_source else "move takes files"
                    raise IsADirectoryError(errno.EISDIR, f"memory backend: this path is a directory; {hint}", str(src))
                raise self._missing(src)
            self._check_name_and_options(dst, {})  # after the source: a missing one is reported first
            if target in self._dirs:
                raise IsADirectoryError(errno.EISDIR, "memory backend: a directory exists at the destination", str(dst))
            if target in self._files and not overwrite:
                raise FileExistsError(
                    errno.EEXIST, "memory backend: destination exists; pass overwrite=True to replace it", str(dst)
                )
            self._make_dirs(posixpath.dirname(target), dst)
            # Loads hand out read-only views and copies of dicts, so the
            # copy can share the stored object, unless it is the caller's
            # own buffer (saved with copy=False), which must not reach a copy.
            stored = self._files[source]
            borrowed = source in self._borrowed
            if borrowed and keep_source:
                stored, borrowed = stored.copy(), False
            self._files[target] = stored
            if borrowed:
                self._borrowed.add(target)
            else:
                self._borrowed.discard(target)
            if not keep_source and source != target:
                del self._files[source]
                self._borrowed.discard(source)

    # -- reading ---------------------------------------------------------
    def load(self, path: PathLike, **kwargs: Any) -> Any:
        # docstring inherited
        if kwargs:
            normalize_key(path, "memory")  # a bad path is reported before the options
            raise TypeError(
                f"memory backend: load of {str(path)!r} got unexpected options {sorted(kwargs)}; it takes none"
            )
        try:  # a path saved before has its key ready: the lookup is a tenth of a normalisation
            key = _SAVE_KEYS[path]
        except (KeyError, TypeError):
            key = normalize_key(path, "memory")
        try:
            stored = self._files[key]
        except KeyError:
            if key in self._dirs:
                raise IsADirectoryError(errno.EISDIR, "memory backend: this path is a directory", str(path)) from None
            raise self._missing(path) from None
        if type(stored) is _NDARRAY:
            view = stored.view()
            # Positional: a third of the keyword call's cost. numpy's stub makes
            # write keyword-only, but the method takes it positionally.
            view.setflags(False)  # type: ignore[call-arg]
            return view
        return _loaded(stored)

    def exists(self, path: PathLike) -> bool:
        # docstring inherited
        key = normalize_key(path, "memory")
        return key in self._files or key in self._dirs

    def is_file(self, path: PathLike) -> bool:
        # docstring inherited
        return normalize_key(path, "memory") in self._files

    def is_dir(self, path: PathLike) -> bool:
        # docstring inherited
        return normalize_key(path, "memory") in self._dirs

    def _check_directory(self, key: str, path: PathLike) -> None:
        if key in self._files:
            raise NotADirectoryError(errno.ENOTDIR, "memory backend: this path is a file, not a directory", str(path))
        if key not in self._dirs:
            raise self._missing(path)

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
        sort: str = "lexicographic",
    ) -> list[str]:
        # docstring inherited
        key = normalize_key(directory, "memory")
        prefix = key + "/" if key else ""
        with self._lock:
            self._check_directory(key, directory)
            names = [name[len(prefix):] for name in self._files if name.startswith(prefix)]
        if not recursive:
            names = [name for name in names if "/" not in name]
        names = filter_names(names, pattern, extensions)
        base = str(directory)
        return sort_names((posixpath.join(base, name) for name in names), sort)

    def list_dir(self, path: PathLike, sort: str = "lexicographic") -> list[str]:
        # docstring inherited
        key = normalize_key(path, "memory")
        prefix = key + "/" if key else ""
        with self._lock:
            self._check_directory(key, path)
            entries = {
                name[len(prefix):].split("/", 1)[0]
                for name in (*self._files, *self._dirs)
                if name.startswith(prefix) and name != key
            }
        return sort_names(entries, sort)

    def stat(self, path: PathLike) -> dict[str, Any]:
        # docstring inherited
        key = normalize_key(path, "memory")
        with self._lock:
            if key in self._dirs:
                return {"type": "directory", "size": 0}
            try:
                stored = self._files[key]
            except KeyError:
                raise self._missing(path) from None
        return {"type": "file", "size": _size_of(stored)}


def _checked_key(path: PathLike) -> str:
    """The key of ``path`` after the checks a save makes of it, remembered for a str path."""
    key = normalize_key(path, "memory")
    MemoryBackend._check_name_and_options(path, {})
    if type(path) is str:
        if len(_SAVE_KEYS) >= _SAVE_KEYS_LIMIT:
            _SAVE_KEYS.clear()
        _SAVE_KEYS[path] = key
    return key


def _loaded(stored: Any) -> Any:
    """What a load returns for ``stored``, which is not a plain ndarray: readers get a read-only view or a copy."""
    if isinstance(stored, np.ndarray):  # a subclass, such as a masked array
        view = stored.view()
        view.setflags(write=False)
        if isinstance(view, np.ma.MaskedArray):
            mask = np.ma.getmask(view)
            if mask is not np.ma.nomask:
                mask.setflags(write=False)  # a reader must not unmask what another reads
        return view
    if isinstance(stored, dict):
        return copying.deepcopy(stored)
    return stored


def _size_of(stored: Any) -> int:
    if isinstance(stored, (np.ndarray, np.generic)):
        return int(stored.nbytes)
    if isinstance(stored, bytes):
        return len(stored)
    if isinstance(stored, str):
        return len(stored.encode())
    return len(json.dumps(stored, default=str).encode())
