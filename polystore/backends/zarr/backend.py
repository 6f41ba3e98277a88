"""ZarrBackend: each path is a standard zarr v3 array directory on the local filesystem.

zarr is imported on first use, not when this module is imported.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from polystore.backend import PathLike, StorageBackend
from polystore.backends.zarr.create import (
    as_array,
    compressor_name,
    compressors_for,
    create_zarr_array,
    import_zarr,
)
from polystore.backends.zarr.regions import (
    find_unreadable_chunk,
    load_selection,
    settle_pending_writes,
    write_region,
)
from polystore.backends.zarr.swap import directory_identity, discard, tree_size
from polystore.backends.zarr.tree import ARRAY, DIRECTORY, OTHER, ArrayTree
from polystore.paths import PathSpelling, filter_names

if TYPE_CHECKING:
    import zarr

__all__ = ["ZarrBackend"]

#: How often a load starts again when the array is replaced while being read.
_READ_ATTEMPTS = 5
#: How many opened arrays a backend keeps for reuse (cleared when full).
_OPENED_LIMIT = 64


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
    deleted; a load that overlapped the swap starts again, so it returns the
    old array or the new one, never a mix. Where ``renameat2`` is missing, a
    lock directory beside the target (``mkdir`` is exclusive) makes
    polystore's writers take turns, and an overwrite leaves the path missing
    for the moment between two renames.

    A killed writer can leave a temporary directory behind; listings hide it
    and :meth:`cleanup` removes it.

    Blocks written into an existing array (``save(block, path, region=...)``)
    go straight into its chunk files, each replaced atomically by zarr.
    Concurrent writers are safe when each owns whole chunks (whole shards
    when sharded).

    Parameters
    ----------
    root
        Confine every path to this directory: relative paths are taken
        relative to it, and ``..`` escapes, absolute paths outside it and
        symlinks pointing out of it raise :class:`InvalidPathError` before
        any I/O. Without it, relative paths resolve against the working
        directory.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> backend = ZarrBackend(root=tempfile.mkdtemp())
    >>> backend.save(np.zeros((2000, 3000), dtype="float32"), "run1/a.zarr")
    >>> backend.load("run1/a.zarr", region=(slice(0, 10), slice(0, 4))).shape
    (10, 4)
    >>> backend.list_files("run1")
    ['run1/a.zarr']
    """

    _backend_type = "zarr"
    stored_kinds: ClassVar[frozenset[str]] = frozenset({"array"})
    supports_regions: ClassVar[bool] = True

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root: Path | None = None if root is None else Path(os.path.realpath(root))
        self._tree = ArrayTree(self.root)
        # Opened arrays by (directory, mode, directory identity): opening reads
        # zarr.json, which costs as much as a tenth of reading a 4 MiB chunk.
        # An overwrite swaps the directory, so its identity changes with it.
        self._opened: dict[tuple[Path, str, Any], zarr.Array] = {}
        self._opened_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ZarrBackend(root={None if self.root is None else str(self.root)!r})"

    @property
    def path_spelling(self) -> PathSpelling:
        # docstring inherited
        return PathSpelling("filesystem", None if self.root is None else str(self.root))

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
        **kwargs: Any,
    ) -> None:
        """Store the array ``data`` as a zarr v3 array at ``path``, or write a block into one.

        Parameters
        ----------
        data
            A numpy array, or anything with ``__array__``; object arrays are refused.
        path
            The array directory to create (with ``region``: to write into).
        overwrite
            Replace an existing array (atomically where the OS allows).
        chunks
            Chunk shape; by default
            :func:`~polystore.backends.zarr.create.default_chunks` (1-4 MiB a
            chunk), or the largest such chunks that divide ``shards``.
        shards
            Shard shape, a multiple of the chunk shape: one file per shard.
        compressor
            ``"zstd"`` (level 0, zarr's default), ``"blosc-lz4"``, ``"gzip"``
            or ``None`` for no compression.
        attributes
            JSON-serializable metadata kept in the array's ``zarr.json``.
        region
            Write ``data`` into this region (a tuple of slices with step 1;
            missing trailing dimensions are whole) of the existing array at
            ``path`` instead of creating one. The block's shape must equal the
            region's, and its dtype must cast to the array's within its kind
            (float64 into float32 is fine, float into int is not).
            ``overwrite`` and ``compressor`` are ignored; ``chunks``,
            ``shards`` and ``attributes`` must not be given.

        Notes
        -----
        As zarr does by default, chunks that hold only the fill value are not
        stored (a region write deletes such a chunk); they read back the same.

        Raises
        ------
        FileExistsError
            Something is at ``path`` and ``overwrite`` is false.
        IsADirectoryError
            ``path`` is a directory that is not a zarr array.
        NotADirectoryError
            A parent of ``path`` is a file or a zarr array.
        UnsupportedFormatError
            ``data`` is not an array.
        ValueError
            Unknown compressor; with ``region``: a region outside the array or
            a block of another shape (the array is left unchanged).
        TypeError
            An option the zarr backend does not take; with ``region``: a
            dtype that does not cast safely (the array is left unchanged).
        """
        if kwargs:
            raise TypeError(f"zarr backend: save got unexpected options {sorted(kwargs)}")
        target = self._tree.resolve(path)
        array = as_array(data, path)
        if region is not None:
            if chunks is not None or shards is not None or attributes is not None:
                raise TypeError(
                    "zarr backend: chunks, shards and attributes apply when creating an array, "
                    "not to a region write into an existing one"
                )
            write_region(self._open(target, path, mode="r+"), array, region, str(path))
            return

        codecs = compressors_for(compressor)

        def write(temp: Path) -> None:
            created = create_zarr_array(
                temp, array.shape, array.dtype, chunks=chunks, shards=shards,
                compressors=codecs, fill_value=None, attributes=attributes,
            )
            if array.size:
                try:
                    created[...] = array
                except BaseException:
                    settle_pending_writes()
                    raise

        self._tree.build(target, path, overwrite, write)

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
        """Create an array at ``path`` whose every element is ``fill_value``, for writes of blocks.

        Fill it with ``save(block, path, region=...)`` from many threads,
        processes or Dask tasks at once, each writing whole chunks (whole
        shards when sharded); writes that share a chunk can lose updates.
        The parameters are those of :meth:`save`; ``chunks=None`` picks the
        default chunks.

        Returns
        -------
        zarr.Array
            The new array, opened for writing at ``path``; it pickles small
            and can be handed to ``dask.array.store``.

        Raises
        ------
        FileExistsError
            Something is at ``path`` and ``overwrite`` is false.
        """
        target = self._tree.resolve(path)
        codecs = compressors_for(compressor)
        self._tree.build(
            target,
            path,
            overwrite,
            lambda temp: create_zarr_array(
                temp, shape, dtype, chunks=chunks, shards=shards,
                compressors=codecs, fill_value=fill_value, attributes=attributes,
            ),
        )
        return self._open(target, path, mode="r+")

    def ensure_directory(self, path: PathLike) -> None:
        # docstring inherited
        target = self._tree.resolve(path)
        kind = self._tree.kind(target)
        if kind in (ARRAY, OTHER):
            what = "a zarr array" if kind == ARRAY else "a file"
            raise FileExistsError(errno.EEXIST, f"zarr backend: {what} exists at this path", str(path))
        self._tree.make_directories(target, path)

    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        """Delete an array (its whole directory), or a directory (with ``recursive`` if not empty)."""
        target = self._tree.resolve(path)
        kind = self._tree.kind(target)
        if kind is None:
            raise self._tree.missing(path)
        if kind == OTHER:
            raise self._tree.not_an_array(path)
        if kind == DIRECTORY:
            if target == (self.root or Path(target.anchor)):
                raise IsADirectoryError(errno.EISDIR, "zarr backend: cannot delete the root directory", str(path))
            if not recursive:
                if self._tree.entries(target):
                    raise OSError(
                        errno.ENOTEMPTY, "zarr backend: directory is not empty; pass recursive=True", str(path)
                    )
                (target / "zarr.json").unlink(missing_ok=True)  # a zarr group's own metadata
                target.rmdir()
                return
        discard(target)

    def copy(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        # docstring inherited
        source, target = self._tree.resolve(src), self._tree.resolve(dst)
        self._tree.require_array(source, src, "copy")
        self._tree.build(target, dst, overwrite, lambda temp: shutil.copytree(source, temp, symlinks=True))

    def move(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        # docstring inherited
        source, target = self._tree.resolve(src), self._tree.resolve(dst)
        self._tree.require_array(source, src, "move")
        if source == target:
            self._tree.raise_if_taken(ARRAY, dst, overwrite)
        else:
            self._tree.move(source, target, dst, overwrite)

    def cleanup(self, directory: PathLike | None = None, older_than: float = 0.0) -> list[str]:
        """Remove temporary directories that killed writers left behind.

        Parameters
        ----------
        directory
            Where to look, with all its subdirectories; by default the root.
        older_than
            Remove only those last changed at least this many seconds ago.
            The default 0 also removes those of writes still running: while
            other writers may be active, pass a margin such as 3600.

        Returns
        -------
        list of str
            The sorted absolute paths of the removed directories.
        """
        if directory is None:
            if self.root is None:
                raise TypeError("zarr backend: cleanup() needs a directory when the backend has no root")
            top = self.root
        else:
            top = self._tree.resolve(directory)
        return self._tree.cleanup(top, older_than)

    # -- reading ---------------------------------------------------------
    def _open(self, target: Path, path: PathLike, mode: str, identity: Any = None) -> zarr.Array:
        """Open the array at ``target`` (reusing one opened before), or raise the error that says why not.

        ``identity`` is :func:`directory_identity` of ``target`` when the
        caller has it already.
        """
        key = (target, mode, directory_identity(target) if identity is None else identity)
        array = self._opened.get(key)
        if array is None:
            array = self._open_anew(target, path, mode)
            with self._opened_lock:
                if len(self._opened) >= _OPENED_LIMIT:
                    self._opened.clear()
                self._opened[key] = array
        return array

    def _open_anew(self, target: Path, path: PathLike, mode: str) -> zarr.Array:
        zarr = import_zarr()
        from zarr.storage import LocalStore

        if mode != "r":
            # A writable LocalStore would create a missing directory.
            self._tree.require_array(target, path, "write into")
        try:
            return zarr.open_array(store=LocalStore(target, read_only=mode == "r"), mode=mode, zarr_format=3)
        except Exception:
            # Say why (missing, a directory, another file); an array that
            # fails to open keeps zarr's own error.
            self._tree.require_array(target, path, "load")
            raise

    def load(self, path: PathLike, *, region: Any = None, **kwargs: Any) -> np.ndarray:
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
        TypeError
            An option the zarr backend does not take.
        """
        if kwargs:
            raise TypeError(f"zarr backend: load got unexpected options {sorted(kwargs)}")
        target = self._tree.resolve(path)
        selection = load_selection(region)
        for attempt in range(_READ_ATTEMPTS):
            # An overwrite swaps the array directory: if that happened while
            # we read (chunk files are opened by name), read again.
            before = directory_identity(target)
            try:
                result = self._read(target, path, selection, before)
            except Exception:
                if directory_identity(target) == before or attempt == _READ_ATTEMPTS - 1:
                    raise
                continue
            if directory_identity(target) == before:
                return result
        raise OSError(
            errno.EAGAIN,
            f"zarr backend: the array was replaced {_READ_ATTEMPTS} times while being read; try again",
            str(path),
        )

    def _read(self, target: Path, path: PathLike, selection: Any, identity: Any) -> np.ndarray:
        array = self._open(target, path, mode="r", identity=identity)
        try:
            return np.asarray(array[selection])
        except OSError:
            raise
        except Exception as error:
            position = find_unreadable_chunk(array, selection)
            if position is None:
                raise
            chunk_file = target / array.metadata.encode_chunk_key(position)
            raise ValueError(
                f"zarr backend: cannot read chunk file {str(chunk_file)!r} of the array at "
                f"{str(path)!r}; it is truncated or corrupt ({type(error).__name__}: {error})"
            ) from error

    def exists(self, path: PathLike) -> bool:
        # docstring inherited
        return self._tree.kind(self._tree.resolve(path)) is not None

    def is_file(self, path: PathLike) -> bool:
        # docstring inherited
        return self._tree.kind(self._tree.resolve(path)) == ARRAY

    def is_dir(self, path: PathLike) -> bool:
        # docstring inherited
        return self._tree.kind(self._tree.resolve(path)) == DIRECTORY

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
    ) -> list[str]:
        # docstring inherited
        target = self._tree.resolve(directory)
        self._tree.require_directory(target, directory)
        names = self._tree.array_names(target, recursive)
        base = str(directory)
        return sorted(posixpath.join(base, name) for name in filter_names(names, pattern, extensions))

    def list_dir(self, path: PathLike) -> list[str]:
        # docstring inherited
        target = self._tree.resolve(path)
        self._tree.require_directory(target, path)
        return sorted(entry.name for entry in self._tree.entries(target))

    def stat(self, path: PathLike) -> dict[str, Any]:
        """Return ``type``, ``size`` and ``mtime``; for an array also its layout.

        An array's ``size`` is the bytes its files take (compressed chunks and
        metadata), its ``mtime`` that of its ``zarr.json``; it also has
        ``shape``, ``dtype``, ``chunks``, ``shards`` (None unless sharded) and
        ``compressor`` (a name :meth:`save` takes). A directory's ``size`` is
        0, as on every backend.
        """
        target = self._tree.resolve(path)
        kind = self._tree.kind(target)
        if kind is None:
            raise self._tree.missing(path)
        if kind == OTHER:
            raise self._tree.not_an_array(path)
        if kind == DIRECTORY:
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
            "compressor": compressor_name(array),
        }

