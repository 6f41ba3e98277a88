"""ZarrBackend: each path is a standard zarr v3 array directory on the local filesystem.

zarr is imported on first use, not when this module is imported.
"""

from __future__ import annotations

import difflib
import errno
import json
import math
import os
import posixpath
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from polystore.backend import PathLike, StorageBackend, check_batch_lengths, check_batch_paths
from polystore.backends.disk import TEMP_PREFIX
from polystore.backends.zarr.commits import COMMITS, clear_commits, read_commits, record_commit
from polystore.backends.zarr.create import (
    AUTO,
    array_layout,
    as_array,
    check_attributes,
    check_codec_pipeline,
    check_dimension_names,
    check_zarr_dtype,
    chosen_pipeline,
    codec_pipeline_in_force,
    compressor_name,
    compressors_for,
    create_zarr_array,
    import_zarr,
    os_error_of,
    stored_dtype,
)
from polystore.backends.zarr.regions import (
    check_selection_bounds,
    chunks_touched,
    find_unreadable_chunk,
    load_selection,
    region_writer,
    settle_pending_writes,
    write_slices,
)
from polystore.backends.zarr.swap import directory_identity, discard, tree_size
from polystore.backends.zarr.tree import ARRAY, DIRECTORY, OTHER, ArrayTree, check_not_metadata
from polystore.paths import PathSpelling, check_name_lengths, filter_names, sort_names

if TYPE_CHECKING:
    import zarr

__all__ = ["ZarrBackend"]

#: The attribute that marks an array whose writes have not all finished (see ``create_array``).
INCOMPLETE = "polystore.incomplete"


def is_bucket_url(root: object) -> bool:
    """Whether a zarr backend ``root`` names a bucket (``s3://...``) rather than a local directory."""
    return isinstance(root, str) and root.startswith("s3://")


def incomplete_error(path: PathLike) -> ValueError:
    """The error for reading an array marked incomplete."""
    return ValueError(
        f"zarr backend: the array at {os.fspath(path)!r} is incomplete: the save_array (or writes after "
        "create_array(..., incomplete=True)) that made it did not finish, so parts of it may hold only the "
        "fill value; write it again with overwrite=True, or finish it with save_array(..., resume=True)"
    )


#: How often a load starts again when the array is replaced while being read.
_READ_ATTEMPTS = 5
#: How many opened arrays a backend keeps for reuse (cleared when full).
_OPENED_LIMIT = 64
#: The options ``save`` takes besides ``overwrite``; any other is refused, naming these.
_SAVE_OPTIONS = ("chunks", "shards", "compressor", "attributes", "dimension_names", "region")
#: The options ``load`` takes.
_LOAD_OPTIONS = ("region",)


def _unexpected_options(operation: str, unknown: Sequence[str], path: PathLike, known: Sequence[str]) -> TypeError:
    hints = [
        f"did you mean {close[0]!r} for {name!r}?"
        for name in unknown
        if (close := difflib.get_close_matches(name, known, 1))
    ]
    return TypeError(
        f"zarr backend: {operation} of {os.fspath(path)!r} got unexpected options {', '.join(map(repr, unknown))}; "
        f"it takes {', '.join(known)}" + (f" ({' '.join(hints)})" if hints else "")
    )


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
        directory. An ``s3://bucket/prefix`` URL keeps the arrays in that
        bucket instead (see below).
    codec_pipeline
        How chunks of a local array are encoded and decoded: ``"zarrs"``, the
        Rust pipeline of the zarrs package, several times faster for
        uncompressed data and for reads in most processes; ``"zarr"``, the
        pipeline ``zarr.config`` names (zarr-python's own unless you set
        another); or ``"auto"`` (the default), the faster of the two as
        measured: zarrs, but zarr-python's for a call that reads, or writes
        compressed, a single chunk of 2 MiB or more (of an unsharded array)
        on a Dask worker started by a nanny. The nanny sets
        ``MALLOC_TRIM_THRESHOLD_``, so every chunk is read into freshly mapped
        memory, and zarrs, which faults in more of it, read one 4 MiB chunk
        10 to 15% slower there (one of 256 KiB faster); calls on several
        chunks stay on zarrs, which spreads them over its threads.
        The files are the same either way, and what zarrs does not
        support (some dtypes, codecs, selections) zarr-python does in its
        place. Only the arrays this backend opens use it: zarr's own setting
        stays as it was for every other array in the process. Arrays in a
        bucket (an ``s3://`` root) use ``"zarr"`` (``"auto"`` there too)
        unless you pass ``"zarrs"``, which works there too (zarrs reads and
        writes through zarr's ``ObjectStore``, the same objects), but builds
        its own S3 client for each array it opens, sharing no connections: on
        a local SeaweedFS it was no faster for large arrays and slower for
        small ones.
    store_options
        Only with an ``s3://`` root: the options of :class:`S3Backend` but
        the bucket and prefix (``endpoint``, ``region``, ``access_key_id``,
        ``secret_access_key``, ``allow_http``, ``retry_timeout``).

    Notes
    -----
    **Arrays in a bucket.** ``ZarrBackend(root="s3://bucket/prefix",
    store_options={...})`` gives a backend with the same methods and
    answers whose arrays are zarr v3 arrays under that prefix, read and
    written through ``zarr.storage.ObjectStore`` over one obstore client per
    backend and process; plain ``zarr.open_array(store=ObjectStore(...),
    path=...)`` and ``dask.array.from_zarr`` read them. S3 has no rename, so
    its guarantees differ: creation is all or nothing for readers (chunks
    first, ``zarr.json`` last by an exclusive PUT), but an overwrite removes
    the old array before writing the new one, and writers of one path take
    turns through a write claim. The README's guarantees section (and the
    docstring of ``polystore.backends.zarr.bucket.BucketZarrBackend``) say
    exactly what readers may see.

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

    def __new__(
        cls, root: str | os.PathLike[str] | None = None, store_options: dict[str, Any] | None = None, **kwargs: Any
    ) -> Any:
        # An s3:// root keeps the arrays in a bucket: that backend lives in its own module.
        if cls is ZarrBackend and is_bucket_url(root):
            from polystore.backends.zarr.bucket import BucketZarrBackend

            return super().__new__(BucketZarrBackend)
        return super().__new__(cls)

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        store_options: dict[str, Any] | None = None,
        *,
        codec_pipeline: str = AUTO,
    ) -> None:
        if store_options is not None:
            raise TypeError(
                f"zarr backend: store_options are for an s3:// root (arrays in a bucket), not the local root "
                f"{None if root is None else os.fspath(root)!r}; leave them out, or give root='s3://bucket/prefix'"
            )
        if isinstance(root, str) and "://" in root:
            raise ValueError(
                f"zarr backend: root {root!r} is a URL, and only s3:// URLs are supported (root='s3://bucket/prefix')"
            )
        self.root: Path | None = None if root is None else Path(os.path.realpath(root))
        self.codec_pipeline = check_codec_pipeline(codec_pipeline)
        self._tree = ArrayTree(self.root)
        # Opened arrays by (directory, mode, directory identity, pipeline), each with the pipeline
        # for a call on one of its chunks: opening reads zarr.json, which costs as much as a tenth of
        # reading a 4 MiB chunk. An overwrite swaps the directory, so its identity changes with it.
        self._opened: dict[tuple[Path, str, Any, str], tuple[zarr.Array, str]] = {}
        self._opened_lock = threading.Lock()

    def __repr__(self) -> str:
        root = None if self.root is None else str(self.root)
        return f"ZarrBackend(root={root!r}, codec_pipeline={self.codec_pipeline!r})"

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
        dimension_names: Sequence[str | None] | None = None,
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
            Metadata kept in the array's ``zarr.json``: a dict of JSON values
            (numpy scalars and arrays are stored as Python numbers and lists).
        dimension_names
            One name (str, or None) per dimension, kept in the array's v3
            metadata, where xarray reads its dimensions from.
        region
            Write ``data`` into this region (a tuple of slices with step 1;
            missing trailing dimensions are whole) of the existing array at
            ``path`` instead of creating one. The block's shape must equal the
            region's, and no value may change on the way in: integers must
            fit the array's integer dtype (70000 never becomes 4464 in an
            int16 array), floats may round within their kind (float64 into
            float32) but not overflow, and casts across kinds (float into
            int) are refused.
            ``overwrite`` and ``compressor`` are ignored; ``chunks``,
            ``shards``, ``attributes`` and ``dimension_names`` must not be
            given. A region write into an array marked incomplete is recorded
            once all its chunks are stored (see :meth:`committed_regions`).

        Notes
        -----
        As zarr does by default, chunks that hold only the fill value are not
        stored (a region write deletes such a chunk); they read back the same.

        Raises
        ------
        FileExistsError
            Something is at ``path`` and ``overwrite`` is false.
        IsADirectoryError
            ``path`` is a directory that is not a zarr array, or names one
            (the root, or a last part ``.`` or ``..``).
        NotADirectoryError
            A parent of ``path`` is a file or a zarr array.
        UnsupportedFormatError
            ``data`` is not an array, or has a dtype zarr would not give back
            exactly (float128, a datetime64 without unit, a masked array...);
            the message says what to use instead.
        InvalidPathError
            A name in ``path`` is longer than 255 bytes.
        ValueError
            Unknown compressor, chunks or shards that are not positive (one
            per dimension, shards a multiple of chunks), dimension_names not
            one per dimension; with ``region``: a
            region outside the array, a block of another shape or values that
            do not fit the array's dtype (the array is left unchanged).
        TypeError
            An option the zarr backend does not take, attributes JSON cannot
            hold; with ``region``: a cast across kinds (the array is left
            unchanged).
        """
        self._plan_save(
            data, path, overwrite,
            {"chunks": chunks, "shards": shards, "compressor": compressor, "attributes": attributes,
             "dimension_names": dimension_names, "region": region, **kwargs},
            check_state=False,
        )()

    def check_save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        # docstring inherited
        self._plan_save(data, path, overwrite, kwargs, check_state=True)

    def save_batch(
        self, data_list: Sequence[Any], paths: Sequence[PathLike], *, overwrite: bool = False, **kwargs: Any
    ) -> None:
        # docstring inherited
        check_batch_lengths(data_list, paths, self.name)
        writes = [
            self._plan_save(data, path, overwrite, dict(kwargs), check_state=True)
            for data, path in zip(data_list, paths, strict=True)
        ]
        if kwargs.get("region") is None:  # blocks of one batch may go into one array
            check_batch_paths([str(self._tree.resolve(path)) for path in paths], paths, self.name, overwrite)
        for write in writes:
            write()

    def _plan_save(
        self, data: Any, path: PathLike, overwrite: bool, options: dict[str, Any], *, check_state: bool
    ) -> Callable[[], None]:
        """Check a save completely and return the function that writes it; nothing is written before that.

        With ``check_state`` it also refuses what the store holds now (a path
        taken without ``overwrite``, a parent that is a file), as a batch
        needs; a single save leaves that to the exclusive write itself.
        """
        unknown = sorted(set(options) - set(_SAVE_OPTIONS))
        if unknown:
            raise _unexpected_options("save", unknown, path, _SAVE_OPTIONS)
        chunks, shards, attributes = options.get("chunks"), options.get("shards"), options.get("attributes")
        dimension_names, region = options.get("dimension_names"), options.get("region")
        target = self._tree.resolve(path)
        if region is not None:
            if any(option is not None for option in (chunks, shards, attributes, dimension_names)):
                raise TypeError(
                    f"zarr backend: chunks, shards, attributes and dimension_names apply when creating an array, "
                    f"not to a region write into the existing one at {os.fspath(path)!r}; leave them out"
                )
            return self._region_write(target, path, data, region)
        self._tree.check_new_name(target, path)
        array = as_array(data, path)
        codecs = compressors_for(options.get("compressor", "zstd"))
        layout = array_layout(array.shape, array.dtype, chunks, shards, path)
        names = check_dimension_names(dimension_names, layout[0], path)
        attributes = check_attributes(attributes, path)
        if check_state:
            self._tree.check_free(target, path, overwrite)

        def write(temp: Path) -> None:
            created = create_zarr_array(
                temp, layout, array.dtype, compressors=codecs, fill_value=None, attributes=attributes,
                dimension_names=names,
                codec_pipeline=self.codec_pipeline,
            )
            if array.size:
                try:
                    created[...] = array
                except BaseException as error:
                    settle_pending_writes()
                    refused = os_error_of(error)
                    if refused is not None:
                        raise refused from error
                    raise

        return lambda: self._tree.build(target, path, overwrite, write)

    def _region_write(self, target: Path, path: PathLike, data: Any, region: Any) -> Callable[[], None]:
        """The checked write of ``data`` into ``region`` of the array at ``target``, recorded if it is incomplete."""
        array = self._open(target, path, mode="r+", touching=region)
        # A plain block of the array's own dtype needs no dtype check: the array's was checked when it
        # was made (the check asks zarr's dtype registry, which costs a good part of a small block's write).
        plain = type(data) is np.ndarray and data.dtype == array.dtype
        block = data if plain else as_array(data, path)
        write = region_writer(array, block, region, str(path))
        if not array.attrs.get(INCOMPLETE):
            return write
        slices = write_slices(region, array.shape, str(path))

        def write_and_record() -> None:
            write()
            record_commit(target, slices)  # only once every chunk of the region is stored

        return write_and_record

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
        dimension_names: Sequence[str | None] | None = None,
        overwrite: bool = False,
        incomplete: bool = False,
    ) -> zarr.Array:
        """Create an array at ``path`` whose every element is ``fill_value``, for writes of blocks.

        Fill it with ``save(block, path, region=...)`` from many threads,
        processes or Dask tasks at once, each writing whole chunks (whole
        shards when sharded); writes that share a chunk can lose updates.
        The parameters are those of :meth:`save`; ``chunks=None`` picks the
        default chunks. With ``incomplete``, the array is marked incomplete
        (the attribute ``"polystore.incomplete"``): :meth:`load` refuses it
        and :meth:`stat` says so until :meth:`complete_array` is called, so
        an array whose writers did not all finish is never read as whole;
        each region write into it is recorded once finished
        (:meth:`committed_regions`), so a later run can write only the rest.

        Returns
        -------
        zarr.Array
            The new array, opened for writing at ``path``; it pickles small
            and can be handed to ``dask.array.store``.

        Raises
        ------
        FileExistsError
            Something is at ``path`` and ``overwrite`` is false.
        ValueError
            ``chunks`` or ``shards`` are not positive, one per dimension, or
            shards are not a multiple of the chunks; nothing is created.
        UnsupportedFormatError
            A dtype zarr would not give back exactly; nothing is created.
        """
        target = self._tree.resolve(path)
        self._tree.check_new_name(target, path)
        try:
            dtype = np.dtype(dtype)
        except TypeError as error:
            raise TypeError(f"zarr backend: dtype {dtype!r} for the array at {os.fspath(path)!r}: {error}") from None
        check_zarr_dtype(dtype, path)
        codecs = compressors_for(compressor)
        layout = array_layout(shape, dtype, chunks, shards, path)
        names = check_dimension_names(dimension_names, layout[0], path)
        attributes = check_attributes(attributes, path)
        if incomplete:
            attributes = {**(attributes or {}), INCOMPLETE: True}

        def write(temp: Path) -> None:
            create_zarr_array(
                temp, layout, dtype, compressors=codecs, fill_value=fill_value, attributes=attributes,
                dimension_names=names, codec_pipeline=self.codec_pipeline,
            )
            if incomplete:
                (temp / COMMITS).mkdir()  # here, so the first record does not change the array directory

        self._tree.build(target, path, overwrite, write)
        return self._open(target, path, mode="r+")

    def complete_array(self, path: PathLike) -> None:
        """Mark the array at ``path``, made by ``create_array(..., incomplete=True)``, complete.

        Its ``zarr.json`` is rewritten without the mark and renamed into
        place, so a reader sees it marked or not, never a torn file. An
        array already complete is left as it is.
        """
        target = self._tree.resolve(path)
        self._tree.require_array(target, path, "complete")
        metadata_path = target / "zarr.json"
        metadata = json.loads(metadata_path.read_text())
        if INCOMPLETE in metadata.get("attributes", {}):
            del metadata["attributes"][INCOMPLETE]
            temp = target / f"{TEMP_PREFIX}zarr.json-{uuid.uuid4().hex}"
            temp.write_text(json.dumps(metadata, indent=2))
            os.replace(temp, metadata_path)
        clear_commits(target)  # also those a complete_array killed right after the rename left

    def committed_regions(self, path: PathLike) -> list[tuple[slice, ...]]:
        """The regions of the incomplete array at ``path`` whose writes finished.

        A region write (``save(block, path, region=...)``) into an array
        made by ``create_array(..., incomplete=True)`` is recorded once all
        its chunks are stored; a write killed part-way leaves no record, even
        though some of its chunk files may be new. ``save_array(...,
        resume=True)`` writes only what these regions do not cover. A
        complete array has none.

        Returns
        -------
        list of tuple of slice
            One ``slice(start, stop)`` per dimension for each region.
        """
        target = self._tree.resolve(path)
        self._tree.require_array(target, path, "read the committed regions of")
        return read_commits(target)

    def ensure_directory(self, path: PathLike) -> None:
        """Create the directory ``path`` and its parents, each a zarr v3 group (idempotent).

        A directory already at ``path`` that is not a group (one made by
        another tool) is made one: its group ``zarr.json`` is added, which
        listings never show, so ``xr.open_zarr(path)`` opens the arrays in it.
        Existing parents are left as they are.
        """
        target = self._tree.resolve(path)
        check_not_metadata(os.fspath(path))
        check_name_lengths(os.fspath(path), "zarr")
        kind = self._tree.kind(target)
        if kind in (ARRAY, OTHER):
            what = "a zarr array" if kind == ARRAY else "a file"
            raise FileExistsError(errno.EEXIST, f"zarr backend: {what} exists at this path", str(path))
        self._tree.make_directories(target, path)
        self._tree.make_group(target)

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

    def copy(self, src: PathLike, dst: PathLike, *, overwrite: bool = False, recursive: bool = False) -> None:
        # docstring inherited
        source, target = self._tree.resolve(src), self._tree.resolve(dst)
        if self._tree.kind(source) == DIRECTORY:
            # Arrays are the files of the tree: each is copied whole and atomically, as below.
            self.copy_directory(src, dst, overwrite=overwrite, recursive=recursive)
            return
        self._tree.require_array(source, src, "copy")
        self._tree.check_new_name(target, dst)
        self._tree.build(
            target, dst, overwrite, lambda temp: shutil.copytree(source, temp, symlinks=True, dirs_exist_ok=True)
        )

    def move(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        # docstring inherited
        source, target = self._tree.resolve(src), self._tree.resolve(dst)
        self._tree.require_array(source, src, "move")
        self._tree.check_new_name(target, dst)
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
            Remove only those last changed at least this many seconds ago
            (by default any age).

        Returns
        -------
        list of str
            The sorted absolute paths of the removed directories.

        Notes
        -----
        Safe to run at any time, with any arguments, beside writers in any
        process: a writer claims its temporary directory (an exclusive
        ``flock``) until the array is in place, the OS drops the claim when
        the writer ends, killed or not, and only unclaimed directories are
        removed (see :mod:`polystore.backends.claims`).
        """
        if directory is None:
            if self.root is None:
                raise TypeError("zarr backend: cleanup() needs a directory when the backend has no root")
            top = self.root
        else:
            top = self._tree.resolve(directory)
        return self._tree.cleanup(top, older_than)

    # -- reading ---------------------------------------------------------
    def _open(
        self, target: Path, path: PathLike, mode: str, identity: Any = None, *, touching: Any = None
    ) -> zarr.Array:
        """Open the array at ``target`` (reusing one opened before), or raise the error that says why not.

        ``identity`` is :func:`directory_identity` of ``target`` when the
        caller has it already. ``touching``: the selection the caller reads
        (``mode="r"``) or writes, for the pipeline ``"auto"`` picks for that
        call (see :func:`chosen_pipeline`); None: the array's own.
        """
        identity = directory_identity(target) if identity is None else identity
        usual = chosen_pipeline(self.codec_pipeline)
        array, one_chunk = self._opened_with(usual, target, path, mode, identity)
        if touching is None or one_chunk == usual or chunks_touched(array, touching) != 1:
            return array
        return self._opened_with(one_chunk, target, path, mode, identity)[0]

    def _opened_with(
        self, pipeline: str, target: Path, path: PathLike, mode: str, identity: Any
    ) -> tuple[zarr.Array, str]:
        """The array opened with ``pipeline`` (cached), and the pipeline for a call on one of its chunks."""
        key = (target, mode, identity, pipeline)
        opened = self._opened.get(key)
        if opened is None:
            array = self._open_anew(pipeline, target, path, mode)
            if array.shards is None:
                chunk_bytes = math.prod(array.chunks) * array.dtype.itemsize
                raw = mode != "r" and not array.compressors
                opened = array, chosen_pipeline(self.codec_pipeline, chunk_bytes, uncompressed_write=raw)
            else:
                opened = array, chosen_pipeline(self.codec_pipeline)
            with self._opened_lock:
                if len(self._opened) >= _OPENED_LIMIT:
                    self._opened.clear()
                self._opened[key] = opened
        return opened

    def _open_anew(self, pipeline: str, target: Path, path: PathLike, mode: str) -> zarr.Array:
        zarr = import_zarr()
        from zarr.storage import LocalStore

        if mode != "r":
            # A writable LocalStore would create a missing directory.
            self._tree.require_array(target, path, "write into")
        try:
            with codec_pipeline_in_force(pipeline, target):
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
            A basic selection (a tuple of slices and ints, as in numpy, with
            negative indices counting from the end) inside the array; only
            the chunks it touches are read.

        Raises
        ------
        FileNotFoundError
            Nothing is at ``path``.
        IsADirectoryError
            ``path`` is a directory that is not a zarr array.
        UnsupportedFormatError
            ``path`` is a file that is not a zarr array.
        ValueError
            ``region`` reaches outside the array (it is never clipped to a
            shorter tile), or a chunk file is truncated or corrupt; the
            message names the region and shape, or the chunk file.
        TypeError
            An option the zarr backend does not take.
        """
        if kwargs:
            raise _unexpected_options("load", sorted(kwargs), path, _LOAD_OPTIONS)
        target = self._tree.resolve(path)
        selection = load_selection(region)
        for attempt in range(_READ_ATTEMPTS):
            # An overwrite swaps the array directory: if that happened while
            # we read (chunk files are opened by name), read again.
            before = directory_identity(target)
            try:
                result = self._read(target, path, selection, region, before)
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

    def _read(self, target: Path, path: PathLike, selection: Any, region: Any, identity: Any) -> np.ndarray:
        array = self._open(target, path, mode="r", identity=identity, touching=selection)
        if array.attrs.get(INCOMPLETE):
            raise incomplete_error(path)
        check_selection_bounds(selection, array.shape, region, str(path))
        try:
            # zarr gives a 0-d selection as a scalar (a bytes_ scalar loses its
            # width) and every array in native byte order: give back the dtype stored.
            return np.asarray(array[selection], dtype=stored_dtype(array))
        except OSError as error:
            if error.errno is not None:
                raise  # the filesystem's own error
            # zarrs reports an undecodable chunk as an OSError with no errno.
            position = find_unreadable_chunk(array, selection)
            if position is None:
                raise
            raise self._corrupt(target, path, array, position, error) from error
        except Exception as error:
            position = find_unreadable_chunk(array, selection)
            if position is None:
                raise
            raise self._corrupt(target, path, array, position, error) from error

    @staticmethod
    def _corrupt(
        target: Path, path: PathLike, array: zarr.Array, position: tuple[int, ...], error: Exception
    ) -> ValueError:
        chunk_file = target / array.metadata.encode_chunk_key(position)
        return ValueError(
            f"zarr backend: cannot read chunk file {str(chunk_file)!r} of the array at "
            f"{str(path)!r}; it is truncated or corrupt ({type(error).__name__}: {error})"
        )

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
        sort: str = "lexicographic",
    ) -> list[str]:
        # docstring inherited
        target = self._tree.resolve(directory)
        self._tree.require_directory(target, directory)
        names = self._tree.array_names(target, recursive)
        base = str(directory)
        return sort_names((posixpath.join(base, name) for name in filter_names(names, pattern, extensions)), sort)

    def list_dir(self, path: PathLike, sort: str = "lexicographic") -> list[str]:
        # docstring inherited
        target = self._tree.resolve(path)
        self._tree.require_directory(target, path)
        return sort_names((entry.name for entry in self._tree.entries(target)), sort)

    def stat(self, path: PathLike) -> dict[str, Any]:
        """Return ``type``, ``size`` and ``mtime``; for an array also its layout.

        An array's ``size`` is the bytes its files take (compressed chunks and
        metadata), its ``mtime`` that of its ``zarr.json``; it also has
        ``shape``, ``dtype``, ``chunks``, ``shards`` (None unless sharded),
        ``compressor`` (a name :meth:`save` takes), ``incomplete``,
        ``dimension_names`` (None if not stored) and ``attributes`` (without
        polystore's own incomplete mark). A directory's ``size`` is 0, as on
        every backend.
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
        attributes = dict(array.attrs)
        incomplete = bool(attributes.pop(INCOMPLETE, False))
        names = getattr(array.metadata, "dimension_names", None)  # v3 metadata (this backend writes no other)
        return {
            "type": "file",
            "size": tree_size(target),
            "mtime": os.stat(target / "zarr.json").st_mtime,
            "shape": array.shape,
            "dtype": stored_dtype(array),
            "chunks": array.chunks,
            "shards": array.shards,
            "compressor": compressor_name(array),
            "incomplete": incomplete,
            "dimension_names": None if names is None else tuple(names),
            "attributes": attributes,
        }

