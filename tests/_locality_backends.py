"""Backends a user might write, each declaring its locality; the Dask layer must route them by it.

Imported on the workers through ``PolystorePlugin(imports=["tests._locality_backends"])``
(and in the test process, so the client side sees the same classes).
"""

from __future__ import annotations

from typing import Any, ClassVar

from polystore import DiskBackend, MemoryBackend, StorageBackend
from polystore.backend import Locality, PathLike
from polystore.paths import normalize_key


class RenamedMemoryBackend(MemoryBackend):
    """The memory backend under another name: per process, like ``memory``."""

    _backend_type = "test_renamed_memory"


class _Delegating(StorageBackend):
    """Hands every operation to another backend, after ``_path`` (abstract: not registered)."""

    def __init__(self, inner: StorageBackend) -> None:
        self._inner = inner

    def _path(self, path: PathLike) -> str:
        return normalize_key(path, self.name) or "/"

    def save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        self._inner.save(data, self._path(path), overwrite=overwrite, **kwargs)

    def ensure_directory(self, path: PathLike) -> None:
        self._inner.ensure_directory(self._path(path))

    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        self._inner.delete(self._path(path), recursive=recursive)

    def copy(self, src: PathLike, dst: PathLike, *, overwrite: bool = False, recursive: bool = False) -> None:
        self._inner.copy(self._path(src), self._path(dst), overwrite=overwrite, recursive=recursive)

    def move(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        self._inner.move(self._path(src), self._path(dst), overwrite=overwrite)

    def load(self, path: PathLike, **kwargs: Any) -> Any:
        return self._inner.load(self._path(path), **kwargs)

    def exists(self, path: PathLike) -> bool:
        return self._inner.exists(self._path(path))

    def is_file(self, path: PathLike) -> bool:
        return self._inner.is_file(self._path(path))

    def is_dir(self, path: PathLike) -> bool:
        return self._inner.is_dir(self._path(path))

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
        sort: str = "lexicographic",
    ) -> list[str]:
        inner = self._path(directory)
        listed = self._inner.list_files(inner, pattern=pattern, extensions=extensions, recursive=recursive, sort=sort)
        given = str(directory).rstrip("/")
        return [given + path[len(inner.rstrip("/")):] for path in listed]

    def list_dir(self, path: PathLike, sort: str = "lexicographic") -> list[str]:
        return self._inner.list_dir(self._path(path), sort=sort)

    def stat(self, path: PathLike) -> dict[str, Any]:
        return self._inner.stat(self._path(path))


class ProcessDictBackend(_Delegating):
    """A user's own backend whose data lives in the process that wrote it."""

    _backend_type = "test_process_dict"
    locality: ClassVar[Locality] = "process"

    def __init__(self) -> None:
        super().__init__(MemoryBackend())


class SharedFolderBackend(_Delegating):
    """A user's own shared backend: keys stored as files under ``root``, which every worker sees."""

    _backend_type = "test_shared_folder"

    def __init__(self, root: str) -> None:
        super().__init__(DiskBackend(root=root))

    def _path(self, path: PathLike) -> str:
        return normalize_key(path, self.name) or "."


class SecondDiskBackend(DiskBackend):
    """``disk`` under another name, so a test can give it a root of its own (shared, as disk declares)."""

    _backend_type = "test_second_disk"
