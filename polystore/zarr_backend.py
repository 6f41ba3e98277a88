"""ZarrBackend: each path is a standard zarr v3 array directory on the local filesystem.

zarr is imported on first use, not when this module is imported.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat as stat_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from polystore._paths import confine, filter_names
from polystore._zarr_format import (
    create_zarr_array,
    default_chunks,
    find_unreadable_chunk,
    import_zarr,
    load_selection,
    settle_pending_writes,
    write_region,
)
from polystore._zarr_fs import (
    TEMP_PREFIX,
    discard,
    is_array_dir,
    rename_exchange,
    rename_noreplace,
    temp_sibling,
    tree_size,
)
from polystore.backend import PathLike, StorageBackend
from polystore.errors import InvalidPathError, UnsupportedFormatError

if TYPE_CHECKING:
    import zarr

__all__ = ["ZarrBackend", "default_chunks"]

_ARRAY, _DIRECTORY, _OTHER = "array", "directory", "other"


class ZarrBackend(StorageBackend):
    """numpy arrays stored as zarr v3 arrays, one array directory per path.

    Every array is a plain zarr v3 directory that ``zarr.open_array(path)``
    and ``dask.array.from_zarr(path)`` read. An array counts as a file (it is
    listed by ``list_files``; its chunk files and ``zarr.json`` never are);
    the directories holding arrays, zarr groups included, are directories.

    A new array is written into a hidden sibling directory (``.polystore-tmp-``
    prefix, never listed) and then renamed into place, so a reader sees the
    whole array or nothing. Without ``overwrite`` the rename refuses an
    existing target in the same system call (Linux ``renameat2`` with
    ``RENAME_NOREPLACE``): of several threads or processes racing to create
    one path exactly one wins. With ``overwrite`` the new array is swapped
    with the old one atomically (``RENAME_EXCHANGE``) and the old one then
    deleted. Where ``renameat2`` is missing, a ``mkdir`` lock and two renames
    stand in, leaving a short window in which the path shows as an empty
    directory or is missing.

    Writes of blocks into an existing array (``save(block, path, region=...)``)
    go straight into its chunk files; each chunk file is replaced atomically,
    and concurrent writers are safe when each owns whole chunks (whole shards
    when sharded).

    Parameters
    ----------
    root
        Confine every path to this directory: relative paths are taken
        relative to it, and ``..`` escapes, absolute paths outside it and
        symlinks pointing out of it raise :class:`InvalidPathError` before
        any I/O. Without it, relative paths are relative to the working
        directory.

    Examples
    --------
    >>> backend = ZarrBackend(root="/scratch/run1")  # doctest: +SKIP
    >>> backend.save(np.zeros((4096, 4096)), "a.zarr", chunks=(1024, 1024))  # doctest: +SKIP
    >>> backend.load("a.zarr", region=(slice(0, 10), slice(0, 10))).shape  # doctest: +SKIP
    (10, 10)
    """

    _backend_type = "zarr"
    stored_kinds: ClassVar[frozenset[str]] = frozenset({"array"})

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._root = None if root is None else Path(os.path.realpath(root))

    def __repr__(self) -> str:
        return f"ZarrBackend(root={None if self._root is None else str(self._root)!r})"

    def _resolve(self, path: PathLike) -> Path:
        target = confine(path, self._root, "zarr")
        if target.name.startswith(TEMP_PREFIX):
            raise InvalidPathError(f"zarr backend: names starting with {TEMP_PREFIX!r} are reserved for temporary directories: {str(path)!r}")
        return target

    def _kind(self, target: Path) -> str | None:
        """``"array"``, ``"directory"``, ``"other"`` (a file zarr did not write) or None if missing.

        Paths inside an array (its chunk files) count as missing.
        """
        try:
            mode = os.stat(target).st_mode
        except (OSError, ValueError):
            return None
        if self._array_ancestor(target) is not None:
            return None
        if not stat_module.S_ISDIR(mode):
            return _OTHER
        return _ARRAY if is_array_dir(target) else _DIRECTORY

    def _array_ancestor(self, target: Path) -> Path | None:
        if target == self._root:
            return None
        for parent in target.parents:
            if parent == self._root:
                return None
            if is_array_dir(parent):
                return parent
        return None

    def _missing(self, path: PathLike) -> FileNotFoundError:
        return FileNotFoundError(errno.ENOENT, "zarr backend: no zarr array or directory at this path", str(path))

    def _not_ours(self, path: PathLike) -> UnsupportedFormatError:
        return UnsupportedFormatError(
            f"zarr backend: {str(path)!r} is a file, not a zarr array; "
            "use the 'disk' backend for other files"
        )

    def _require_array(self, target: Path, path: PathLike, operation: str) -> None:
        kind = self._kind(target)
        if kind == _ARRAY:
            return
        if kind is None:
            raise self._missing(path)
        if kind == _DIRECTORY:
            raise IsADirectoryError(
                errno.EISDIR, f"zarr backend: cannot {operation} a directory (no zarr.json with node_type 'array')", str(path)
            )
        raise self._not_ours(path)

    # -- writing ---------------------------------------------------------
    def save(
        self,
        data: Any,
        path: PathLike,
        *,
        overwrite: bool = False,
        chunks: tuple[int, ...] | None = None,
        shards: tuple[int, ...] | None = None,
        compressor: str | None = "zstd",
        attributes: dict[str, Any] | None = None,
        region: Any = None,
    ) -> None:
        """Store the array ``data`` as a zarr v3 array at ``path``, or write a block into one.

        Parameters
        ----------
        data
            A numpy array or anything ``numpy.asarray`` turns into one
            (an object with ``__array__``). Object arrays are refused.
        path
            The array directory to create (or, with ``region``, to write into).
        overwrite
            Replace an existing array, atomically where the OS allows.
        chunks
            Chunk shape; default from :func:`default_chunks` (about 1-4 MiB
            a chunk), or whole divisors of ``shards`` when sharding.
        shards
            Shard shape (a multiple of ``chunks``): one file per shard.
        compressor
            ``"zstd"`` (level 0, zarr's default), ``"blosc-lz4"``, ``"gzip"``
            or ``None`` for no compression.
        attributes
            JSON-serializable metadata stored in the array's ``zarr.json``.
        region
            Write ``data`` into this region (a tuple of slices with step 1)
            of the existing array at ``path`` instead of creating one; the
            block's shape must equal the region's and its dtype must cast
            safely (``same_kind``). ``overwrite`` has no effect then and the
            creation options must stay unset.

        Notes
        -----
        zarr does not write chunks that are all ``fill_value`` (and deletes
        such chunks on a region write); they read back as the fill value.

        Raises
        ------
        FileExistsError
            Something exists at ``path`` and ``overwrite`` is false.
        IsADirectoryError
            ``path`` is a directory that is not a zarr array.
        NotADirectoryError
            A parent of ``path`` is a file or a zarr array.
        UnsupportedFormatError
            ``data`` is not an array.
        ValueError, TypeError
            A region outside the array, a block of the wrong shape or a dtype
            that does not cast safely; the array is left unchanged.
        """
        target = self._resolve(path)
        array = self._as_array(data, path)
        if region is not None:
            if chunks is not None or shards is not None or attributes is not None:
                raise TypeError(
                    "zarr backend: chunks, shards and attributes apply when creating an array, "
                    "not to a region write into an existing one"
                )
            write_region(self._open(target, path, mode="r+"), array, region, str(path))
            return
        self._build(
            target,
            path,
            overwrite,
            lambda temp: self._write_new(temp, array, chunks, shards, compressor, attributes),
        )

    @staticmethod
    def _write_new(
        temp: Path,
        array: np.ndarray,
        chunks: tuple[int, ...] | None,
        shards: tuple[int, ...] | None,
        compressor: str | None,
        attributes: dict[str, Any] | None,
    ) -> None:
        created = create_zarr_array(
            temp,
            array.shape,
            array.dtype,
            chunks=chunks,
            shards=shards,
            compressor=compressor,
            fill_value=None,
            attributes=attributes,
        )
        if array.size:
            try:
                created[...] = array
            except BaseException:
                settle_pending_writes()
                raise

    def _as_array(self, data: Any, path: PathLike) -> np.ndarray:
        if not isinstance(data, np.ndarray):
            if isinstance(data, (str, bytes, bytearray, memoryview, dict, list, tuple)) or not (
                isinstance(data, np.generic) or hasattr(data, "__array__")
            ):
                raise UnsupportedFormatError(
                    f"zarr backend stores numpy arrays only, not {type(data).__name__} "
                    f"(at {str(path)!r}); use the 'disk' or 'memory' backend for other data"
                )
            data = np.asarray(data)
        if data.dtype.hasobject:
            raise UnsupportedFormatError(
                f"zarr backend cannot store an object array at {str(path)!r}; "
                "convert it to a numeric or string dtype, or use the 'disk' backend"
            )
        return data

    def create_array(
        self,
        path: PathLike,
        shape: tuple[int, ...],
        dtype: Any,
        chunks: tuple[int, ...] | None,
        *,
        shards: tuple[int, ...] | None = None,
        compressor: str | None = "zstd",
        fill_value: Any = 0,
        attributes: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> zarr.Array:
        """Create an empty array at ``path`` for later writes of blocks.

        Every element reads as ``fill_value`` until written. Fill it with
        ``save(block, path, region=...)`` from many threads, processes or
        Dask tasks at once, each writing whole chunks (whole shards when
        sharded); writes that share a chunk can lose updates.

        Parameters are as for :meth:`save`; ``chunks=None`` picks the
        default chunks.

        Returns
        -------
        zarr.Array
            The new array, opened for writing at ``path`` (picklable, so it
            can also be passed to ``dask.array.store``).

        Raises
        ------
        FileExistsError
            Something exists at ``path`` and ``overwrite`` is false.
        """
        target = self._resolve(path)
        self._build(
            target,
            path,
            overwrite,
            lambda temp: create_zarr_array(
                temp,
                shape,
                dtype,
                chunks=chunks,
                shards=shards,
                compressor=compressor,
                fill_value=fill_value,
                attributes=attributes,
            ),
        )
        return self._open(target, path, mode="r+")

    def _build(self, target: Path, path: PathLike, overwrite: bool, write: Any) -> None:
        """Run ``write(temp)`` into a hidden sibling of ``target``, then put it in place."""
        self._check_destination(target, path, overwrite)
        temp = temp_sibling(target)
        try:
            write(temp)
            self._install(temp, target, path, overwrite)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise

    def _check_destination(self, target: Path, path: PathLike, overwrite: bool) -> None:
        """Refuse early what :meth:`_install` would refuse, and create the parents."""
        self._raise_if_taken(self._kind(target), path, overwrite)
        if self._array_ancestor(target) is not None:
            raise NotADirectoryError(errno.ENOTDIR, "zarr backend: a parent of this path is a zarr array", str(path))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise NotADirectoryError(errno.ENOTDIR, "zarr backend: a parent of this path is a file", str(path)) from None

    def _raise_if_taken(self, kind: str | None, path: PathLike, overwrite: bool) -> None:
        if kind == _DIRECTORY:
            raise IsADirectoryError(errno.EISDIR, "zarr backend: a directory exists at this path", str(path))
        if kind == _OTHER:
            raise FileExistsError(
                errno.EEXIST, "zarr backend: a file that is not a zarr array is at this path; remove it with the 'disk' backend", str(path)
            )
        if kind == _ARRAY and not overwrite:
            raise FileExistsError(errno.EEXIST, "zarr backend: an array exists at this path; pass overwrite=True to replace it", str(path))

    def _install(self, temp: Path, target: Path, path: PathLike, overwrite: bool) -> None:
        """Rename the finished array ``temp`` to ``target`` (exclusive unless ``overwrite``)."""
        while True:
            try:
                rename_noreplace(temp, target)
                return
            except FileExistsError:
                kind = self._kind(target)
                if kind is None:
                    if os.path.lexists(target):  # a dangling symlink
                        raise
                    continue  # removed meanwhile: try again
                self._raise_if_taken(kind, path, overwrite)
            if rename_exchange(temp, target):
                shutil.rmtree(temp, ignore_errors=True)  # the old array, now at the temp name
                return
            # No atomic swap here: move the old array aside, then the new one in.
            try:
                discard(target)
            except FileNotFoundError:
                continue

    def ensure_directory(self, path: PathLike) -> None:
        # docstring inherited
        target = self._resolve(path)
        kind = self._kind(target)
        if kind in (_ARRAY, _OTHER):
            raise FileExistsError(errno.EEXIST, f"zarr backend: a {'zarr array' if kind == _ARRAY else 'file'} exists at this path", str(path))
        if self._array_ancestor(target) is not None:
            raise NotADirectoryError(errno.ENOTDIR, "zarr backend: a parent of this path is a zarr array", str(path))
        try:
            target.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise NotADirectoryError(errno.ENOTDIR, "zarr backend: a parent of this path is a file", str(path)) from None

    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        # docstring inherited
        target = self._resolve(path)
        kind = self._kind(target)
        if kind is None:
            raise self._missing(path)
        if kind == _OTHER:
            raise self._not_ours(path)
        if kind == _DIRECTORY:
            if target == (self._root or Path(target.anchor)):
                raise IsADirectoryError(errno.EISDIR, "zarr backend: cannot delete the root directory", str(path))
            if not recursive:
                if self._entries(target):
                    raise OSError(errno.ENOTEMPTY, "zarr backend: directory is not empty; pass recursive=True", str(path))
                # A zarr group's metadata belongs to the directory itself.
                (target / "zarr.json").unlink(missing_ok=True)
                target.rmdir()
                return
        discard(target)

    def copy(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        # docstring inherited
        source, target = self._resolve(src), self._resolve(dst)
        self._require_array(source, src, "copy")
        self._build(target, dst, overwrite, lambda temp: shutil.copytree(source, temp, symlinks=True))

    def move(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        # docstring inherited
        source, target = self._resolve(src), self._resolve(dst)
        self._require_array(source, src, "move")
        if source == target:
            self._raise_if_taken(_ARRAY, dst, overwrite)
            return
        self._check_destination(target, dst, overwrite)
        if not overwrite:
            try:
                rename_noreplace(source, target)
                return
            except FileExistsError:
                self._raise_if_taken(self._kind(target), dst, overwrite)
                raise
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
        # Take the source away first so the move is all or nothing.
        temp = temp_sibling(target)
        try:
            os.rename(source, temp)
            moved = True
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            shutil.copytree(source, temp, symlinks=True)
            moved = False
        try:
            self._install(temp, target, dst, overwrite)
        except BaseException:
            if moved:
                os.rename(temp, source)
            else:
                shutil.rmtree(temp, ignore_errors=True)
            raise
        if not moved:
            discard(source)

    # -- reading ---------------------------------------------------------
    def _open(self, target: Path, path: PathLike, mode: str) -> zarr.Array:
        """Open the array at ``target``, or raise the error that says why not."""
        zarr = import_zarr()
        from zarr.storage import LocalStore

        try:
            return zarr.open_array(store=LocalStore(target, read_only=mode == "r"), mode=mode, zarr_format=3)
        except Exception:
            # Say why (missing, a directory, another file); an array that
            # fails to open keeps zarr's own error.
            self._require_array(target, path, "load or write into")
            raise

    def load(self, path: PathLike, *, region: Any = None) -> np.ndarray:
        """Return the array at ``path``, or only ``region`` of it.

        Parameters
        ----------
        path
            The array directory.
        region
            A basic selection (a tuple of slices and ints, as in numpy);
            only the chunks it touches are read.

        Raises
        ------
        FileNotFoundError
            Nothing is at ``path``.
        IsADirectoryError
            ``path`` is a directory that is not a zarr array.
        UnsupportedFormatError
            ``path`` is a file that is not a zarr array.
        ValueError
            A chunk file is truncated or corrupt; the message names it.
        """
        target = self._resolve(path)
        array = self._open(target, path, mode="r")
        selection = load_selection(region)
        try:
            return np.asarray(array[selection])
        except OSError:
            raise
        except Exception as error:
            position = find_unreadable_chunk(array, selection)
            if position is None:
                raise
            key = array.metadata.encode_chunk_key(position)
            raise ValueError(
                f"zarr backend: cannot read chunk file {str(target / key)!r} of the array at "
                f"{str(path)!r}; it is truncated or corrupt ({type(error).__name__}: {error})"
            ) from error

    def exists(self, path: PathLike) -> bool:
        # docstring inherited
        return self._kind(self._resolve(path)) is not None

    def is_file(self, path: PathLike) -> bool:
        # docstring inherited
        return self._kind(self._resolve(path)) == _ARRAY

    def is_dir(self, path: PathLike) -> bool:
        # docstring inherited
        return self._kind(self._resolve(path)) == _DIRECTORY

    def _check_directory(self, target: Path, path: PathLike) -> None:
        kind = self._kind(target)
        if kind is None:
            raise self._missing(path)
        if kind != _DIRECTORY:
            raise NotADirectoryError(errno.ENOTDIR, "zarr backend: this path is not a directory", str(path))

    def _entries(self, directory: Path) -> list[os.DirEntry[str]]:
        """The entries of ``directory`` this backend shows: not temp dirs, not group metadata."""
        with os.scandir(directory) as entries:
            return [
                entry
                for entry in entries
                if not entry.name.startswith(TEMP_PREFIX) and not (entry.name == "zarr.json" and entry.is_file())
            ]

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
    ) -> list[str]:
        # docstring inherited
        target = self._resolve(directory)
        self._check_directory(target, directory)
        names: list[str] = []
        pending = [(target, "")]
        while pending:
            folder, prefix = pending.pop()
            for entry in self._entries(folder):
                if not entry.is_dir():
                    continue
                if is_array_dir(entry.path):
                    names.append(prefix + entry.name)
                elif recursive and not entry.is_symlink():
                    pending.append((Path(entry.path), f"{prefix}{entry.name}/"))
        base = str(directory)
        return sorted(posixpath.join(base, name) for name in filter_names(names, pattern, extensions))

    def list_dir(self, path: PathLike) -> list[str]:
        # docstring inherited
        target = self._resolve(path)
        self._check_directory(target, path)
        return sorted(entry.name for entry in self._entries(target))

    def stat(self, path: PathLike) -> dict[str, Any]:
        """Return ``type``, ``size`` and ``mtime``; for an array also its layout.

        An array's ``size`` is the bytes its files take (compressed, summed
        over its chunk files and metadata), its ``mtime`` that of its
        ``zarr.json``; it also has ``shape``, ``dtype``, ``chunks``,
        ``shards`` (None unless sharded) and ``compressor``. A directory's
        ``size`` is 0, as on every backend.
        """
        target = self._resolve(path)
        kind = self._kind(target)
        if kind is None:
            raise self._missing(path)
        if kind == _OTHER:
            raise self._not_ours(path)
        if kind == _DIRECTORY:
            return {"type": "directory", "size": 0, "mtime": os.stat(target).st_mtime}
        array = self._open(target, path, mode="r")
        return {
            "type": "file",
            "size": tree_size(target),
            "mtime": os.stat(target / "zarr.json").st_mtime,
            "shape": array.shape,
            "dtype": array.dtype,
            "chunks": array.chunks,
            "shards": array.shards,
            "compressor": _compressor_name(array),
        }


def _compressor_name(array: zarr.Array) -> str | None:
    """The name :meth:`ZarrBackend.save` takes for the array's compressor, or the codec's."""
    compressors = array.compressors
    if not compressors:
        return None
    codec = compressors[0]
    name = type(codec).__name__
    if name == "BloscCodec":
        return f"blosc-{getattr(codec.cname, 'value', codec.cname)}"
    return {"ZstdCodec": "zstd", "GzipCodec": "gzip"}.get(name, name)
