"""Backends defined by the tests, the way a user of polystore would write them."""

from __future__ import annotations

import errno
import posixpath
from collections import Counter
from typing import Any

from polystore import MemoryBackend, ReadOnlyBackend, StorageBackend
from polystore.backend import PathLike
from polystore.paths import filter_names, normalize_key, sort_names


class CountingBackend(StorageBackend):
    """Counts every operation, then hands it to an in-memory store: instrumentation a user might add."""

    _backend_type = "test_counting"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._store = MemoryBackend()

    def _call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        self.calls[operation] += 1
        return getattr(self._store, operation)(*args, **kwargs)

    def save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        self._call("save", data, path, overwrite=overwrite, **kwargs)

    def check_save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        self._call("check_save", data, path, overwrite=overwrite, **kwargs)

    def ensure_directory(self, path: PathLike) -> None:
        self._call("ensure_directory", path)

    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        self._call("delete", path, recursive=recursive)

    def copy(self, src: PathLike, dst: PathLike, *, overwrite: bool = False, recursive: bool = False) -> None:
        self._call("copy", src, dst, overwrite=overwrite, recursive=recursive)

    def move(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        self._call("move", src, dst, overwrite=overwrite)

    def load(self, path: PathLike, **kwargs: Any) -> Any:
        return self._call("load", path, **kwargs)

    def exists(self, path: PathLike) -> bool:
        return self._call("exists", path)

    def is_file(self, path: PathLike) -> bool:
        return self._call("is_file", path)

    def is_dir(self, path: PathLike) -> bool:
        return self._call("is_dir", path)

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
        sort: str = "lexicographic",
    ) -> list[str]:
        return self._call(
            "list_files", directory, pattern=pattern, extensions=extensions, recursive=recursive, sort=sort
        )

    def list_dir(self, path: PathLike, sort: str = "lexicographic") -> list[str]:
        return self._call("list_dir", path, sort=sort)

    def stat(self, path: PathLike) -> dict[str, Any]:
        return self._call("stat", path)


class FrozenBackend(ReadOnlyBackend):
    """Serves a fixed set of bytes objects, given at construction, and refuses writes."""

    _backend_type = "test_frozen"

    def __init__(self, contents: dict[str, bytes] | None = None) -> None:
        self._files = {normalize_key(path, self.name): data for path, data in (contents or {}).items()}
        self._dirs = {""}
        for key in self._files:
            while key:
                key = posixpath.dirname(key)
                self._dirs.add(key)

    def load(self, path: PathLike, **kwargs: Any) -> Any:
        try:
            return self._files[normalize_key(path, self.name)]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "test_frozen backend: nothing is stored here", str(path)) from None

    def exists(self, path: PathLike) -> bool:
        return self.is_file(path) or self.is_dir(path)

    def is_file(self, path: PathLike) -> bool:
        return normalize_key(path, self.name) in self._files

    def is_dir(self, path: PathLike) -> bool:
        return normalize_key(path, self.name) in self._dirs

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
        sort: str = "lexicographic",
    ) -> list[str]:
        key = normalize_key(directory, self.name)
        if key not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "test_frozen backend: no such directory", str(directory))
        prefix = key + "/" if key else ""
        names = [name[len(prefix):] for name in self._files if name.startswith(prefix)]
        names = [name for name in names if recursive or "/" not in name]
        paths = [posixpath.join(str(directory), name) for name in filter_names(names, pattern, extensions)]
        return sort_names(paths, sort)

    def list_dir(self, path: PathLike, sort: str = "lexicographic") -> list[str]:
        key = normalize_key(path, self.name)
        prefix = key + "/" if key else ""
        entries = {
            name[len(prefix):].split("/")[0]
            for name in (*self._files, *self._dirs)
            if name.startswith(prefix) and name != key
        }
        return sort_names(entries, sort)

    def stat(self, path: PathLike) -> dict[str, Any]:
        if self.is_dir(path):
            return {"type": "directory", "size": 0}
        return {"type": "file", "size": len(self.load(path))}
