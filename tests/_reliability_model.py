"""A plain model of the storage contract, for the model-based tests.

:class:`ModelFilesystem` is a dict of files and a set of directories that
answers every call of the contract as the memory backend's semantics say,
errors included: a call that should fail raises :class:`Expected` naming the
builtin exception type (and errno) the real backend must raise. Files hold a
``(kind, token)`` pair; :func:`make_data` turns it into the object saved and
:func:`same_data` checks what a backend returns for it.
"""

from __future__ import annotations

import errno
import fnmatch
import posixpath
from typing import Any

import numpy as np

__all__ = ["Expected", "ManagerAdapter", "ModelFilesystem", "make_data", "same_data"]

_DTYPES = (np.int32, np.float64, np.uint8, np.int16)


class Expected(Exception):
    """The model's answer to a call that must fail: the exception type (and errno) to expect."""

    def __init__(self, kind: type[BaseException], code: int | None = None) -> None:
        super().__init__(kind.__name__ if code is None else f"{kind.__name__} errno {code}")
        self.kind = kind
        self.code = code

    def matches(self, error: BaseException) -> bool:
        """Whether ``error`` is what was expected: the same type exactly (and errno)."""
        if type(error) is not self.kind:
            return False
        return self.code is None or getattr(error, "errno", None) == self.code


def make_data(kind: str, token: int) -> Any:
    """The object saved for ``(kind, token)``: every token gives different, checkable data."""
    if kind == "array":
        shape = (token % 3 + 1, token % 4 + 2)
        dtype = _DTYPES[token % len(_DTYPES)]
        return (np.arange(int(np.prod(shape))).reshape(shape) + token).astype(dtype)
    if kind == "bytes":
        return f"payload {token} ".encode() * (token % 5 + 1)
    if kind == "str":
        return f"text {token} \u00e9" * (token % 3 + 1)
    if kind == "dict":
        return {"token": token, "values": list(range(token % 4)), "nested": {"even": token % 2 == 0}}
    raise ValueError(f"unknown kind {kind!r}")


def same_data(actual: Any, kind: str, token: int) -> bool:
    """Whether ``actual`` is exactly what was saved for ``(kind, token)``."""
    expected = make_data(kind, token)
    if kind == "array":
        return (
            isinstance(actual, np.ndarray)
            and actual.dtype == expected.dtype
            and actual.shape == expected.shape
            and bool(np.array_equal(actual, expected))
        )
    return type(actual) is type(expected) and actual == expected


def key_of(path: str) -> str:
    """The canonical key: ``a//b/``, ``/a/b`` and ``./a/b`` are all ``a/b``; the root is ``""``."""
    key = posixpath.normpath("/" + path).lstrip("/")
    return "" if key == "." else key


class ModelFilesystem:
    """Files (key -> ``(kind, token)``) and directories (keys; the root is ``""``)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, int]] = {}
        self.dirs: set[str] = {""}

    # -- helpers ---------------------------------------------------------
    def _file_ancestor(self, key: str) -> bool:
        """Whether some proper ancestor of ``key`` is a file."""
        parent = posixpath.dirname(key)
        while parent:
            if parent in self.files:
                return True
            parent = posixpath.dirname(parent)
        return False

    def _make_dirs(self, key: str) -> None:
        if self._file_ancestor(key) or key in self.files:
            raise Expected(NotADirectoryError)
        while key not in self.dirs:
            self.dirs.add(key)
            key = posixpath.dirname(key)

    def _check_directory(self, key: str) -> None:
        if key in self.files:
            raise Expected(NotADirectoryError)
        if key not in self.dirs:
            raise Expected(FileNotFoundError)

    # -- the contract ----------------------------------------------------
    def save(self, kind: str, token: int, path: str, overwrite: bool) -> None:
        key = key_of(path)
        if key in self.dirs:
            raise Expected(IsADirectoryError)
        if key in self.files and not overwrite:
            raise Expected(FileExistsError)
        self._make_dirs(posixpath.dirname(key))
        self.files[key] = (kind, token)

    def load(self, path: str) -> tuple[str, int]:
        key = key_of(path)
        if key in self.files:
            return self.files[key]
        if key in self.dirs:
            raise Expected(IsADirectoryError)
        raise Expected(FileNotFoundError)

    def exists(self, path: str) -> bool:
        key = key_of(path)
        return key in self.files or key in self.dirs

    def is_file(self, path: str) -> bool:
        return key_of(path) in self.files

    def is_dir(self, path: str) -> bool:
        return key_of(path) in self.dirs

    def ensure_directory(self, path: str) -> None:
        key = key_of(path)
        if key in self.files:
            raise Expected(FileExistsError)
        self._make_dirs(key)

    def delete(self, path: str, recursive: bool) -> None:
        key = key_of(path)
        if key in self.files:
            del self.files[key]
            return
        if key not in self.dirs:
            raise Expected(FileNotFoundError)
        if not key:
            raise Expected(IsADirectoryError)
        prefix = key + "/"
        inside_files = [name for name in self.files if name.startswith(prefix)]
        inside_dirs = [name for name in self.dirs if name.startswith(prefix)]
        if (inside_files or inside_dirs) and not recursive:
            raise Expected(OSError, errno.ENOTEMPTY)
        for name in inside_files:
            del self.files[name]
        self.dirs.difference_update(inside_dirs)
        self.dirs.discard(key)

    def transfer(self, src: str, dst: str, overwrite: bool, keep_source: bool) -> None:
        source, target = key_of(src), key_of(dst)
        if source not in self.files:
            raise Expected(IsADirectoryError if source in self.dirs else FileNotFoundError)
        if target in self.dirs:
            raise Expected(IsADirectoryError)
        if target in self.files and not overwrite:
            raise Expected(FileExistsError)
        self._make_dirs(posixpath.dirname(target))
        self.files[target] = self.files[source]
        if not keep_source and source != target:
            del self.files[source]

    def list_files(
        self, directory: str, pattern: str | None, extensions: set[str] | None, recursive: bool
    ) -> list[str]:
        key = key_of(directory)
        self._check_directory(key)
        prefix = key + "/" if key else ""
        names = [name[len(prefix):] for name in self.files if name.startswith(prefix)]
        if not recursive:
            names = [name for name in names if "/" not in name]
        if pattern is not None:
            names = [name for name in names if fnmatch.fnmatchcase(posixpath.basename(name), pattern)]
        if extensions:
            names = [name for name in names if posixpath.basename(name).lower().endswith(tuple(extensions))]
        return sorted(posixpath.join(directory, name) for name in names)

    def list_dir(self, path: str) -> list[str]:
        key = key_of(path)
        self._check_directory(key)
        prefix = key + "/" if key else ""
        return sorted({
            name[len(prefix):].split("/", 1)[0]
            for name in (*self.files, *self.dirs)
            if name.startswith(prefix) and name != key
        })

    def stat_type(self, path: str) -> str:
        key = key_of(path)
        if key in self.dirs:
            return "directory"
        if key in self.files:
            return "file"
        raise Expected(FileNotFoundError)


class ManagerAdapter:
    """A :class:`polystore_dask.DaskFileManager` seen through the backend methods.

    Every call names ``backend``; calls that return futures wait for them, so
    errors raised on the workers surface here with their own types.
    """

    def __init__(self, manager: Any, backend: str) -> None:
        self.manager = manager
        self.backend = backend

    def save(self, data: Any, path: str, *, overwrite: bool = False) -> None:
        self.manager.save(data, path, self.backend, overwrite=overwrite).result()

    def load(self, path: str) -> Any:
        return self.manager.load(path, self.backend).result()

    def exists(self, path: str) -> bool:
        return self.manager.exists(path, self.backend)

    def is_file(self, path: str) -> bool:
        return self.manager.is_file(path, self.backend)

    def is_dir(self, path: str) -> bool:
        return self.manager.is_dir(path, self.backend)

    def ensure_directory(self, path: str) -> None:
        self.manager.ensure_directory(path, self.backend).result()

    def delete(self, path: str, *, recursive: bool = False) -> None:
        self.manager.delete(path, self.backend, recursive=recursive).result()

    def copy(self, src: str, dst: str, *, overwrite: bool = False) -> None:
        self.manager.copy(src, dst, self.backend, overwrite=overwrite).result()

    def move(self, src: str, dst: str, *, overwrite: bool = False) -> None:
        self.manager.move(src, dst, self.backend, overwrite=overwrite).result()

    def list_files(
        self, directory: str, pattern: str | None = None, extensions: set[str] | None = None, recursive: bool = False
    ) -> list[str]:
        return self.manager.list_files(
            directory, self.backend, pattern=pattern, extensions=extensions, recursive=recursive
        )

    def list_dir(self, path: str) -> list[str]:
        return self.manager.list_dir(path, self.backend)

    def stat(self, path: str) -> dict[str, Any]:
        return self.manager.stat(path, self.backend)
