"""A user-defined backend, used on one machine and across a Dask cluster.

``GzipNpyBackend`` stores numpy arrays as gzip-compressed ``.npy`` files
under a root directory: a small, complete backend written only against the
public contract. Defining the class registers it under ``"npygz"``, so every
``BackendRegistry`` made afterwards can create it by that name.

On a cluster the workers must define the class too, in their own processes:
``PolystorePlugin(imports=["custom_backend"])`` makes each worker import this
module (it must be importable there: here the examples directory is on the
workers' ``sys.path`` because LocalCluster's spawned workers inherit the
client's ``sys.path``; on a real cluster, install the module on the workers).

Run it with ``python examples/custom_backend.py``; it writes only into a
temporary directory, which it removes at the end.
"""

from __future__ import annotations

import sys

if __name__ in ("__main__", "__mp_main__"):
    # Run as a script, this file is the module ``__main__`` (and
    # ``__mp_main__`` in the workers LocalCluster spawns, which re-run the
    # script). The plugin then imports it again as ``custom_backend``, which
    # would define the backend class a second time under the same key:
    # alias the names so there is one module, and one class per key.
    sys.modules.setdefault("custom_backend", sys.modules[__name__])

import errno
import fnmatch
import gzip
import io
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from polystore import InvalidPathError, StorageBackend, UnsupportedFormatError
from polystore.backend import PathLike
from polystore.paths import names_a_directory, sort_names

__all__ = ["GzipNpyBackend"]

#: Temporary files start with this; listings never show them.
_TEMP_PREFIX = ".npygz-tmp-"


class GzipNpyBackend(StorageBackend):
    """Numpy arrays as gzip-compressed ``.npy`` files under ``root``.

    Relative paths are taken relative to ``root``; every path must resolve
    inside it. Writes go to a hidden temporary file, then are linked (new
    path, exclusive) or renamed (``overwrite=True``) into place, so a reader
    never sees a half-written file and of several racing writers one wins.

    Parameters
    ----------
    root
        The directory that holds every file (created if missing); the
        working directory by default.
    level
        The default gzip compression level, 0-9.
    """

    _backend_type = "npygz"
    stored_kinds: ClassVar[frozenset[str]] = frozenset({"array"})

    def __init__(self, root: PathLike | None = None, level: int = 6) -> None:
        self.root = Path(os.path.realpath(os.fspath(root) if root is not None else os.getcwd()))
        self.root.mkdir(parents=True, exist_ok=True)
        self.level = level

    def __repr__(self) -> str:
        return f"GzipNpyBackend(root={str(self.root)!r}, level={self.level})"

    def _resolve(self, path: PathLike) -> Path:
        """Return the absolute path of ``path``, refusing anything outside ``root``."""
        text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
        if not isinstance(text, str):
            raise TypeError(f"npygz backend: path must be a str or os.PathLike, not {type(path).__name__} ({path!r})")
        if not text or "\x00" in text:
            raise InvalidPathError(f"npygz backend: invalid path {text!r}; give a non-empty path without NUL bytes")
        full = Path(os.path.abspath(self.root / text))
        resolved = Path(os.path.realpath(full))
        if resolved != self.root and self.root not in resolved.parents:
            raise InvalidPathError(
                f"npygz backend: path {text!r} is outside the root {str(self.root)!r}; use a path inside it"
            )
        return full

    @staticmethod
    def _error(kind: type[OSError], code: int, what: str, path: PathLike) -> OSError:
        return kind(code, f"npygz backend: {what}", os.fspath(path))

    # -- writing ---------------------------------------------------------
    def save(
        self, data: Any, path: PathLike, *, overwrite: bool = False, level: int | None = None, **kwargs: Any
    ) -> None:
        # docstring inherited
        target = self._checked(data, path, kwargs)
        buffer = io.BytesIO()
        np.save(buffer, data, allow_pickle=False)
        payload = gzip.compress(buffer.getvalue(), compresslevel=self.level if level is None else level)
        self._write(payload, target, path, overwrite=overwrite)

    def check_save(
        self, data: Any, path: PathLike, *, overwrite: bool = False, level: int | None = None, **kwargs: Any
    ) -> None:
        # docstring inherited: save_batch checks every item with it before writing the first
        target = self._checked(data, path, kwargs)
        if target.is_dir():
            raise self._error(IsADirectoryError, errno.EISDIR, "a directory exists at this path", path)
        if not overwrite and os.path.lexists(target):
            raise self._error(FileExistsError, errno.EEXIST, "path exists; pass overwrite=True to replace it", path)
        if any(parent.is_file() for parent in target.parents):
            raise self._error(NotADirectoryError, errno.ENOTDIR, "a parent of this path is a file", path)

    def _checked(self, data: Any, path: PathLike, options: dict[str, Any]) -> Path:
        """Check a save's options, path and data without writing; return where the file goes."""
        if options:
            raise TypeError(f"npygz backend: save of {os.fspath(path)!r} got unexpected options {sorted(options)}")
        target = self._destination(path)
        if not isinstance(data, np.ndarray) or data.dtype.hasobject or isinstance(data, np.ma.MaskedArray):
            raise UnsupportedFormatError(
                f"npygz backend: cannot store {type(data).__name__} (dtype {getattr(data, 'dtype', None)}) at "
                f"{os.fspath(path)!r}; it stores numpy arrays only, without a mask or object dtype "
                "(use 'disk' for other data, 'memory' to keep a mask)"
            )
        return target

    def _destination(self, path: PathLike) -> Path:
        """Resolve a path a file is written at: one that can only name a directory (``.``, ``a/``) is refused."""
        target = self._resolve(path)
        if names_a_directory(os.fspath(path)) or target == self.root:
            raise self._error(IsADirectoryError, errno.EISDIR, "this path names a directory; give a file name", path)
        return target

    def _write(self, payload: bytes, target: Path, path: PathLike, *, overwrite: bool) -> None:
        if target.is_dir():
            raise self._error(IsADirectoryError, errno.EISDIR, "a directory exists at this path", path)
        self._make_parents(target.parent, path)
        fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(payload)
            self._place(Path(temp), target, path, overwrite=overwrite)
        finally:
            if os.path.lexists(temp):
                os.unlink(temp)

    def _place(self, source: Path, target: Path, path: PathLike, *, overwrite: bool) -> None:
        """Put the file ``source`` at ``target`` atomically; ``source`` stays (a hard link) unless renamed."""
        if overwrite:
            os.replace(source, target)
            return
        try:
            os.link(source, target)  # fails if target exists: the exclusive step
        except FileExistsError:
            raise self._error(
                FileExistsError, errno.EEXIST, "path exists; pass overwrite=True to replace it", path
            ) from None

    def _make_parents(self, directory: Path, path: PathLike) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise self._error(NotADirectoryError, errno.ENOTDIR, "a parent of this path is a file", path) from None

    def ensure_directory(self, path: PathLike) -> None:
        # docstring inherited
        target = self._resolve(path)
        if target.is_file():
            raise self._error(FileExistsError, errno.EEXIST, "a file exists at this path", path)
        self._make_parents(target, path)

    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        # docstring inherited
        target = self._resolve(path)
        if target.is_dir() and not target.is_symlink():
            if target == self.root:
                raise self._error(IsADirectoryError, errno.EISDIR, "refusing to delete the root directory", path)
            if recursive:
                shutil.rmtree(target)
            elif any(target.iterdir()):
                raise self._error(OSError, errno.ENOTEMPTY, "directory is not empty; pass recursive=True", path)
            else:
                target.rmdir()
        elif os.path.lexists(target):
            target.unlink()
        else:
            raise self._error(FileNotFoundError, errno.ENOENT, "nothing is stored at this path", path)

    def copy(self, src: PathLike, dst: PathLike, *, overwrite: bool = False, recursive: bool = False) -> None:
        # docstring inherited
        if self._resolve(src).is_dir():
            if not recursive:
                raise self._error(
                    IsADirectoryError, errno.EISDIR, "this path is a directory; pass recursive=True to copy it", src
                )
            self.copy_tree(src, dst, overwrite=overwrite)  # the base class's, built on the methods above
            return
        self._write(self._read(src), self._destination(dst), dst, overwrite=overwrite)

    def move(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        # docstring inherited
        source, target = self._resolve(src), self._destination(dst)
        self._read(src)  # the same errors as load for a missing source or a directory
        if target.is_dir():
            raise self._error(IsADirectoryError, errno.EISDIR, "a directory exists at the destination", dst)
        self._make_parents(target.parent, dst)
        self._place(source, target, dst, overwrite=overwrite)
        if not overwrite and source != target:
            source.unlink()

    # -- reading ---------------------------------------------------------
    def _read(self, path: PathLike) -> bytes:
        target = self._resolve(path)
        try:
            return target.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise self._error(FileNotFoundError, errno.ENOENT, "nothing is stored at this path", path) from None
        except IsADirectoryError:
            raise self._error(IsADirectoryError, errno.EISDIR, "this path is a directory", path) from None

    def load(self, path: PathLike, **kwargs: Any) -> Any:
        # docstring inherited
        if kwargs:
            raise TypeError(f"npygz backend: load got unexpected options {sorted(kwargs)}")
        return np.load(io.BytesIO(gzip.decompress(self._read(path))), allow_pickle=False)

    def exists(self, path: PathLike) -> bool:
        # docstring inherited
        return self._resolve(path).exists()

    def is_file(self, path: PathLike) -> bool:
        # docstring inherited
        return self._resolve(path).is_file()

    def is_dir(self, path: PathLike) -> bool:
        # docstring inherited
        return self._resolve(path).is_dir()

    def _directory(self, path: PathLike) -> Path:
        target = self._resolve(path)
        if target.is_file():
            raise self._error(NotADirectoryError, errno.ENOTDIR, "this path is a file, not a directory", path)
        if not target.is_dir():
            raise self._error(FileNotFoundError, errno.ENOENT, "no such directory", path)
        return target

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
        sort: str = "lexicographic",
    ) -> list[str]:
        # docstring inherited
        base = self._directory(directory)
        if recursive:
            names = [
                posixpath.join(Path(folder).relative_to(base).as_posix(), name)
                for folder, _, files in os.walk(base)
                for name in files
            ]
        else:
            names = [entry.name for entry in os.scandir(base) if entry.is_file()]
        endings = tuple(ext.lower() for ext in extensions or ())
        kept = [
            posixpath.normpath(name)
            for name in names
            if not posixpath.basename(name).startswith(_TEMP_PREFIX)
            and (pattern is None or fnmatch.fnmatchcase(posixpath.basename(name), pattern))
            and (not endings or name.lower().endswith(endings))
        ]
        return sort_names((posixpath.join(os.fspath(directory), name) for name in kept), sort)

    def list_dir(self, path: PathLike, sort: str = "lexicographic") -> list[str]:
        # docstring inherited
        names = [name for name in os.listdir(self._directory(path)) if not name.startswith(_TEMP_PREFIX)]
        return sort_names(names, sort)

    def stat(self, path: PathLike) -> dict[str, Any]:
        # docstring inherited
        target = self._resolve(path)
        try:
            info = target.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise self._error(FileNotFoundError, errno.ENOENT, "nothing is stored at this path", path) from None
        if target.is_dir():
            return {"type": "directory", "size": 0, "mtime": info.st_mtime}
        return {"type": "file", "size": info.st_size, "mtime": info.st_mtime}


def mean_frame(frames: list[np.ndarray]) -> np.ndarray:
    """The mean of ``frames``, pixel by pixel."""
    return np.mean(frames, axis=0, dtype=np.float32)


def main() -> None:
    """Save and load through the custom backend on the workers of a local cluster."""
    from distributed import Client, LocalCluster

    from polystore_dask import DaskFileManager, PolystorePlugin

    with tempfile.TemporaryDirectory(prefix="polystore-custom-") as scratch, LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, Client(cluster) as client:
        # Each worker imports this module (so the backend registers there) and
        # builds its own registry, with the backend's root set to scratch.
        client.register_plugin(
            PolystorePlugin(options={"npygz": {"root": scratch, "level": 1}}, imports=["custom_backend"])
        )
        dfm = DaskFileManager(client)

        rng = np.random.default_rng(0)
        frames = [np.clip(rng.normal(100, 10, (256, 256)), 0, None).astype(np.uint16) for _ in range(8)]
        paths = [f"frames/frame_{index:03d}.npy.gz" for index in range(len(frames))]
        dfm.save_batch(frames, paths, "npygz").result()
        assert all(np.array_equal(a, b) for a, b in zip(dfm.load_batch(paths, "npygz").result(), frames, strict=True))

        # Futures as inputs: the frames are loaded, averaged and saved on the
        # workers; only the final check brings data back to the client.
        mean = client.submit(mean_frame, dfm.load_batch(paths, "npygz"))
        dfm.save(mean, "summary/mean.npy.gz", "npygz").result()
        assert np.allclose(dfm.load("summary/mean.npy.gz", "npygz").result(), mean_frame(frames))

        print(f"backend 'npygz' on {len(client.nthreads())} workers, root {scratch}")
        for path in [*dfm.list_files("frames", "npygz", extensions={".npy.gz"}), *dfm.list_files("summary", "npygz")]:
            print(f"  {path:<26} {dfm.stat(path, 'npygz')['size']:>8} bytes")
        raw = sum(frame.nbytes for frame in frames)
        stored = sum(dfm.stat(path, "npygz")["size"] for path in paths)
        print(f"{len(frames)} frames: {raw} bytes as arrays, {stored} bytes on disk ({raw / stored:.1f}x smaller)")


if __name__ == "__main__":
    main()
