"""MemoryBackend: objects kept in this process, in a tree of paths."""

from __future__ import annotations

import copy as copying
import errno
import json
import posixpath
import threading
from typing import Any, ClassVar

import numpy as np

from polystore.backend import Locality, PathLike, StorageBackend
from polystore.errors import UnsupportedFormatError
from polystore.paths import filter_names, normalize_key

__all__ = ["MemoryBackend"]

_STORABLE = (np.ndarray, np.generic, bytes, str, dict)


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
        key = normalize_key(path, "memory")
        if kwargs:
            raise TypeError(f"memory backend: save got unexpected options {sorted(kwargs)}")
        if isinstance(data, np.ndarray):
            if data.dtype.hasobject:
                raise UnsupportedFormatError(
                    f"memory backend: cannot store an object array at {str(path)!r}; convert it to a numeric dtype"
                )
            # Marking the array read-only is left to load: flipping the flag
            # costs more than the copy of a small array.
            stored: np.ndarray | np.generic | bytes | str | dict[str, Any] = data.copy() if copy else data
        elif isinstance(data, (bytearray, memoryview)):
            stored = bytes(data)
        elif isinstance(data, _STORABLE):
            stored = copying.deepcopy(data) if isinstance(data, dict) else data
        else:
            raise UnsupportedFormatError(
                f"memory backend: cannot store {type(data).__name__} at {str(path)!r}; "
                "it stores numpy arrays, bytes, str and dict"
            )
        with self._lock:
            if key in self._files:
                if not overwrite:
                    raise FileExistsError(
                        errno.EEXIST, "memory backend: path exists; pass overwrite=True to replace it", str(path)
                    )
            elif key in self._dirs:
                raise IsADirectoryError(errno.EISDIR, "memory backend: a directory exists at this path", str(path))
            else:
                parent = key.rpartition("/")[0]
                if parent not in self._dirs:
                    self._make_dirs(parent, path)
            self._files[key] = stored
            if not copy and isinstance(data, np.ndarray):
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

    def copy(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        # docstring inherited
        self._transfer(src, dst, overwrite=overwrite, keep_source=True)

    def move(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        # docstring inherited
        self._transfer(src, dst, overwrite=overwrite, keep_source=False)

    def _transfer(self, src: PathLike, dst: PathLike, *, overwrite: bool, keep_source: bool) -> None:
        source, target = normalize_key(src, "memory"), normalize_key(dst, "memory")
        with self._lock:
            if source not in self._files:
                if source in self._dirs:
                    raise IsADirectoryError(
                        errno.EISDIR, "memory backend: copy and move take files, not directories", str(src)
                    )
                raise self._missing(src)
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
        key = normalize_key(path, "memory")
        try:
            stored = self._files[key]
        except KeyError:
            if key in self._dirs:
                raise IsADirectoryError(errno.EISDIR, "memory backend: this path is a directory", str(path)) from None
            raise self._missing(path) from None
        if isinstance(stored, np.ndarray):
            view = stored.view()
            # Positional: a third of the keyword call's cost. numpy's stub makes
            # write keyword-only, but the method takes it positionally.
            view.setflags(False)  # type: ignore[call-arg]
            return view
        if isinstance(stored, dict):
            return copying.deepcopy(stored)
        return stored

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
        return sorted(posixpath.join(base, name) for name in names)

    def list_dir(self, path: PathLike) -> list[str]:
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
        return sorted(entries)

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


def _size_of(stored: Any) -> int:
    if isinstance(stored, (np.ndarray, np.generic)):
        return int(stored.nbytes)
    if isinstance(stored, bytes):
        return len(stored)
    if isinstance(stored, str):
        return len(stored.encode())
    return len(json.dumps(stored, default=str).encode())
