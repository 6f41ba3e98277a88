"""BucketZarrBackend: the zarr backend with an ``s3://`` root, each path a zarr v3 array in a bucket.

``ZarrBackend(root="s3://bucket/prefix", store_options={...})`` makes one.
zarr and obstore are imported on first use, not when this module is imported.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from polystore.backend import PathLike, check_batch_lengths, check_batch_paths
from polystore.backends.s3_client import S3Client, import_obstore, without_userinfo
from polystore.backends.zarr.backend import (
    _LOAD_OPTIONS,
    _OPENED_LIMIT,
    _READ_ATTEMPTS,
    _SAVE_OPTIONS,
    INCOMPLETE,
    ZarrBackend,
    _unexpected_options,
    incomplete_error,
)
from polystore.backends.zarr.bucket_tree import (
    ARRAY,
    CLAIM,
    DIRECTORY,
    METADATA,
    OTHER,
    PENDING,
    BucketTree,
    node_kind,
    with_nonce,
)
from polystore.backends.zarr.create import (
    AUTO,
    array_layout,
    as_array,
    check_attributes,
    check_codec_pipeline,
    check_dimension_names,
    check_zarr_dtype,
    codec_pipeline_in_force,
    compressor_name,
    compressors_for,
    create_zarr_array,
    import_zarr,
    stored_dtype,
)
from polystore.backends.zarr.regions import (
    check_selection_bounds,
    find_unreadable_chunk,
    load_selection,
    region_writer,
    settle_pending_writes,
)
from polystore.paths import PathSpelling, check_name_lengths, filter_names, names_a_directory, normalize_key, sort_names
from polystore.redaction import Secret

if TYPE_CHECKING:
    import zarr
    import zarr.storage

__all__ = ["STORE_OPTIONS", "BucketZarrBackend"]

#: The ``store_options`` an ``s3://`` root takes: those of :class:`~polystore.S3Backend` but bucket and prefix.
STORE_OPTIONS = ("endpoint", "region", "access_key_id", "secret_access_key", "allow_http", "retry_timeout")
#: How long ``cleanup`` leaves a write claim alone by default: a live writer's claim is younger.
_CLEANUP_AGE = 3600.0


class BucketZarrBackend(ZarrBackend):
    """The zarr backend with arrays in a bucket: what ``ZarrBackend(root="s3://bucket/prefix", ...)`` returns.

    Each path is a zarr v3 array under the prefix (``K/zarr.json`` and its
    chunks below ``K``), read and written through ``zarr.storage.ObjectStore``
    over one obstore client per backend and process, so plain
    ``zarr.open_array(store=ObjectStore(S3Store(bucket, prefix=...)), path=K)``
    and ``dask.array.from_zarr`` read it. Directories are key prefixes, and
    each one this backend makes is marked by a zarr v3 group ``zarr.json``
    (an empty directory is kept so, and the tree is a zarr hierarchy).

    What readers see (S3 has no rename, so an array of many objects cannot
    be swapped in one step):

    - **Creation is all or nothing.** The chunks are written first and
      ``zarr.json`` last, by an exclusive PUT (``If-None-Match: *``): until
      that PUT, every reader, plain zarr included, finds no array there.
    - **Writers take turns.** A writer first takes the path's write claim,
      the object ``K/.polystore-writing``, by an exclusive PUT, and deletes
      it when done. Of racing writers without ``overwrite`` exactly one wins
      and the rest get :class:`FileExistsError`; a writer that finds the
      claim held, with or without ``overwrite``, gets :class:`FileExistsError`
      saying another writer is at work, so two writers never mix their chunks.
    - **An overwrite is not atomic.** It deletes the old ``zarr.json``, then
      the old chunks, then writes the new chunks and commits the new
      ``zarr.json``. A reader that opens the path meanwhile finds nothing
      (:class:`FileNotFoundError`); before, the old array, after, the new
      one. polystore's ``load`` never returns a mix: it checks after reading
      that ``zarr.json`` is the one it read by (its ETag, unique to each
      write) and reads again otherwise. Each block of a ``load_array`` is
      such a load, but a graph that runs across an overwrite can combine
      whole blocks of both arrays. A *plain zarr reader that opened the old
      array before the overwrite* (a ``dask.array.from_zarr`` graph built
      before it) can read a mix of old chunks, fill values and new chunks:
      do not overwrite arrays that others are reading.
    - A writer killed mid-write leaves its claim and chunks but no
      ``zarr.json``: the path reads as missing, and saving there says
      another writer is at work until :meth:`cleanup` removes the leftovers.

    Region writes (``save(block, path, region=...)``) go straight into the
    chunks, each one whole-object PUT: concurrent writers are safe when each
    owns whole chunks (whole shards when sharded), as on disk.

    Parameters
    ----------
    root
        ``"s3://bucket"`` or ``"s3://bucket/prefix"``; the bucket must exist.
    store_options
        ``endpoint``, ``region``, ``access_key_id``, ``secret_access_key``,
        ``allow_http`` and ``retry_timeout``, as for
        :class:`~polystore.S3Backend`; credentials default to the standard AWS
        environment and never appear in a repr, an error or a log line.
    codec_pipeline
        ``"zarr"`` (the default here, and what ``"auto"`` means here): the
        pipeline ``zarr.config`` names, zarr-python's own unless you set another. ``"zarrs"``: the Rust
        pipeline of the zarrs package, which serves zarr's ``ObjectStore``
        (same objects, read by either) but builds its own S3 client from the
        store's configuration for each array it opens, so it shares none of
        the backend's connections; on a local SeaweedFS it was no faster for
        a 16 MiB array and slower for small ones. Fixed when an array is
        opened, for the arrays this backend opens only, as on a local root.
    """

    # Not registered under a name of its own: ZarrBackend(root="s3://...") makes it, as "zarr".
    _backend_type = None  # type: ignore[assignment]

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        store_options: dict[str, Any] | None = None,
        *,
        codec_pipeline: str = "zarr",
    ) -> None:
        url = urlsplit(os.fspath(root or ""))
        bucket = url.netloc
        if url.scheme != "s3" or not bucket or "@" in bucket or url.query or url.fragment:
            raise ValueError(
                f"zarr backend: root {without_userinfo(str(root))!r} must be 's3://bucket' or "
                "'s3://bucket/prefix'; give credentials in store_options, never in the URL"
            )
        options = dict(store_options or {})
        unknown = sorted(set(options) - set(STORE_OPTIONS))
        if unknown:
            where = " (the bucket and prefix come from the root URL)" if {"bucket", "prefix"} & set(unknown) else ""
            raise TypeError(
                f"zarr backend: unexpected store_options {', '.join(map(repr, unknown))}{where}; "
                f"it takes {', '.join(STORE_OPTIONS)}"
            )
        endpoint = options.get("endpoint")
        allow_http = bool(options.get("allow_http", False))
        if endpoint is not None and urlsplit(endpoint).scheme == "http" and not allow_http:
            raise ValueError(
                f"zarr backend: the endpoint {without_userinfo(endpoint)!r} is plain http; pass "
                "store_options={'allow_http': True} to allow unencrypted connections, or use https"
            )
        self.root = None
        # "auto" is the fastest measured: on a bucket, zarr-python's own (see above).
        self.codec_pipeline = "zarr" if check_codec_pipeline(codec_pipeline) == AUTO else codec_pipeline
        self.bucket = bucket
        self.prefix = normalize_key(url.path, "zarr") if url.path.strip("/") else ""
        self.endpoint = endpoint
        self.region = options.get("region")
        self.allow_http = allow_http
        key_id, secret = options.get("access_key_id"), options.get("secret_access_key")
        self._credentials_given = key_id is not None or secret is not None
        self._client = S3Client(
            bucket, self.prefix, endpoint, self.region,
            None if key_id is None else Secret(key_id), None if secret is None else Secret(secret),
            allow_http, float(options.get("retry_timeout", 60.0)), backend="zarr",
        )
        self._bucket = BucketTree(self._client)
        # Opened arrays by key, with the ETag of the zarr.json they were opened from.
        self._opened_arrays: dict[str, tuple[zarr.Array, str]] = {}
        self._opened_lock = threading.Lock()
        self._zarr_store: tuple[int, zarr.storage.ObjectStore] | None = None

    @property
    def name(self) -> str:
        return "zarr"

    @property
    def url(self) -> str:
        """The root as given: ``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def __repr__(self) -> str:
        endpoint = None if self.endpoint is None else without_userinfo(self.endpoint)
        credentials = "given" if self._credentials_given else "from the environment"
        return (
            f"ZarrBackend(root={self.url!r}, endpoint={endpoint!r}, region={self.region!r}, "
            f"allow_http={self.allow_http}, credentials={credentials!r}, codec_pipeline={self.codec_pipeline!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_opened_lock"]
        state["_opened_arrays"], state["_zarr_store"] = {}, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._opened_lock = threading.Lock()

    @property
    def path_spelling(self) -> PathSpelling:
        # docstring inherited
        return PathSpelling("key")

    def _key(self, path: PathLike) -> str:
        return self._bucket.check_key(normalize_key(path, "zarr"), path)

    def _new_key(self, path: PathLike) -> str:
        """The key of ``path`` for an array to create; a name that can only be a directory raises IsADirectoryError."""
        key = self._key(path)
        text = os.fspath(path)
        if not key or names_a_directory(text):
            raise IsADirectoryError(
                errno.EISDIR,
                "zarr backend: this path names a directory (the root, or a last part '.' or '..'); "
                "give the array its own name, such as 'images/a.zarr'",
                text,
            )
        check_name_lengths(text, "zarr")
        return key

    def store(self) -> zarr.storage.ObjectStore:
        """This process's ``zarr.storage.ObjectStore`` on the bucket prefix (over the backend's one obstore client)."""
        made = self._zarr_store
        if made is None or made[0] != os.getpid():
            import_zarr()
            from zarr.storage import ObjectStore

            made = (os.getpid(), ObjectStore(self._client.connection()[0]))
            self._zarr_store = made
        return made[1]

    def _array_at(self, key: str, metadata: Any) -> zarr.Array:
        """A zarr array on the bucket at ``key`` with ``metadata``, without reading or writing ``zarr.json``."""
        zarr = import_zarr()
        from zarr.core.array import AsyncArray
        from zarr.storage import StorePath

        # The array's codec pipeline is fixed here, from zarr's config.
        with codec_pipeline_in_force(self.codec_pipeline, key):
            return zarr.Array(AsyncArray(metadata, StorePath(self.store(), key)))

    # -- writing ---------------------------------------------------------
    def save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        # docstring inherited
        self._plan_bucket_save(data, path, overwrite, kwargs, check_state=False)()

    def check_save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        # docstring inherited
        self._plan_bucket_save(data, path, overwrite, kwargs, check_state=True)

    def save_batch(
        self, data_list: Sequence[Any], paths: Sequence[PathLike], *, overwrite: bool = False, **kwargs: Any
    ) -> None:
        # docstring inherited
        check_batch_lengths(data_list, paths, self.name)
        writes = [
            self._plan_bucket_save(data, path, overwrite, dict(kwargs), check_state=True)
            for data, path in zip(data_list, paths, strict=True)
        ]
        if kwargs.get("region") is None:
            check_batch_paths([self._key(path) for path in paths], paths, self.name, overwrite)
        # Small arrays are a few requests each: many at once, as the s3 backend's batches.
        self._client.gather(lambda write: write(), writes)

    def _plan_bucket_save(
        self, data: Any, path: PathLike, overwrite: bool, options: dict[str, Any], *, check_state: bool
    ) -> Callable[[], object]:
        """Check a save completely and return the function that writes it; nothing is written before that."""
        unknown = sorted(set(options) - set(_SAVE_OPTIONS))
        if unknown:
            raise _unexpected_options("save", unknown, path, _SAVE_OPTIONS)
        chunks, shards, attributes = options.get("chunks"), options.get("shards"), options.get("attributes")
        dimension_names, region = options.get("dimension_names"), options.get("region")
        if region is not None:
            key = self._key(path)
            array = as_array(data, path)
            if any(option is not None for option in (chunks, shards, attributes, dimension_names)):
                raise TypeError(
                    f"zarr backend: chunks, shards, attributes and dimension_names apply when creating an array, "
                    f"not to a region write into the existing one at {os.fspath(path)!r}; leave them out"
                )
            return region_writer(self._open_bucket_array(key, path, fresh=True), array, region, str(path))
        key = self._new_key(path)
        array = as_array(data, path)
        codecs = compressors_for(options.get("compressor", "zstd"))
        layout = array_layout(array.shape, array.dtype, chunks, shards, path)
        names = check_dimension_names(dimension_names, layout[0], path)
        attributes = check_attributes(attributes, path)
        if check_state:
            self._bucket.raise_if_taken(self._bucket.kind(key, path), path, overwrite)
            self._bucket.check_parents(key, path)

        def write(target: zarr.Array) -> None:
            if array.size:
                try:
                    target[...] = array
                except BaseException:
                    settle_pending_writes()
                    raise

        metadata = self._new_metadata(layout, array.dtype, codecs, None, attributes, names)
        return lambda: self._build(key, path, overwrite, metadata, write)

    @staticmethod
    def _new_metadata(
        layout: Any, dtype: Any, codecs: Any, fill_value: Any, attributes: Any, dimension_names: Any
    ) -> tuple[Any, bytes]:
        """The metadata of a new array, and its ``zarr.json``, made in memory by the local backend's own code."""
        import_zarr()
        from zarr.storage import MemoryStore

        memory = MemoryStore()
        made = create_zarr_array(
            memory, layout, dtype, compressors=codecs, fill_value=fill_value, attributes=attributes,
            dimension_names=dimension_names,
        )
        return made.metadata, memory._store_dict[METADATA].to_bytes()

    def _build(
        self, key: str, path: PathLike, overwrite: bool, metadata: tuple[Any, bytes],
        write: Callable[[zarr.Array], object],
    ) -> zarr.Array:
        """Write an array at ``key`` under the write claim: chunks by ``write``, then the exclusive commit."""
        bucket = self._bucket
        bucket.raise_if_taken(bucket.kind(key, path), path, overwrite)
        to_make = bucket.check_parents(key, path)
        claim = bucket.claim(key, path)
        started = committed = False
        try:
            # Under the claim no other writer changes the path: look again, then clear it if overwriting.
            kind = bucket.kind(key, path)
            if kind not in (None, PENDING):
                bucket.raise_if_taken(kind, path, overwrite)
            started = True
            bucket.make_groups(to_make, path)
            bucket.remove(key, path, keep=claim)
            target = self._array_at(key, metadata[0])
            try:
                write(target)
            except Exception as error:
                raise self._request_error(error, "write", path) from None
            bucket.commit(key, metadata[1], path)
            committed = True
            return target
        finally:
            try:
                if started and not committed:
                    bucket.remove(key, path, keep=claim)
            finally:
                bucket.release(claim, path)

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
        # docstring inherited
        key = self._new_key(path)
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
        metadata = self._new_metadata(layout, dtype, codecs, fill_value, attributes, names)
        return self._build(key, path, overwrite, metadata, lambda _: None)

    def complete_array(self, path: PathLike) -> None:
        """Mark the array at ``path``, made by ``create_array(..., incomplete=True)``, complete.

        Its ``zarr.json`` is rewritten without the mark by one whole-object
        PUT, so a reader sees it marked or not. An array already complete is
        left as it is.
        """
        key = self._key(path)
        found = self._bucket.metadata(key, path)
        kind = self._bucket.kind(key, path) if found is None else node_kind(found[0])
        self._bucket.require_array(kind, path, "complete")
        if found is None:
            raise self._bucket.missing(path)
        document = found[0]
        if INCOMPLETE not in document.get("attributes", {}):
            return
        del document["attributes"][INCOMPLETE]
        body = with_nonce(json.dumps(document, indent=2).encode())
        self._client.put(posixpath.join(key, METADATA), body, path, overwrite=True)

    def committed_regions(self, path: PathLike) -> list[tuple[slice, ...]]:
        """None: region writes into an array in a bucket are not recorded, so a resume there writes every block."""
        key = self._key(path)
        if self._bucket.kind(key, path) in (None, PENDING):
            raise self._bucket.missing(path)
        return []

    def ensure_directory(self, path: PathLike) -> None:
        # docstring inherited
        key = self._key(path)
        if not key:
            return
        check_name_lengths(os.fspath(path), "zarr")
        kind = self._bucket.kind(key, path)
        if kind in (ARRAY, OTHER, PENDING):
            what = "a file" if kind == OTHER else "a zarr array"
            raise FileExistsError(errno.EEXIST, f"zarr backend: {what} exists at this path", str(path))
        to_make = self._bucket.check_parents(key, path)
        self._bucket.make_groups(to_make + [key], path)

    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        """Delete an array (``zarr.json`` first, then its chunks), or a directory (with ``recursive`` if not empty)."""
        key = self._key(path)
        kind = self._bucket.kind(key, path)
        if kind in (None, PENDING):
            raise self._bucket.missing(path)
        if kind == OTHER:
            raise self._bucket.not_an_array(path)
        if kind == DIRECTORY:
            if not key:
                raise IsADirectoryError(errno.EISDIR, "zarr backend: cannot delete the root directory", str(path))
            if not recursive:
                own = posixpath.join(key, METADATA)
                if [name for name in self._bucket.first_below(key, path, limit=2) if name != own]:
                    raise OSError(
                        errno.ENOTEMPTY, "zarr backend: directory is not empty; pass recursive=True", str(path)
                    )
        self._bucket.remove(key, path)

    def copy(self, src: PathLike, dst: PathLike, *, overwrite: bool = False, recursive: bool = False) -> None:
        """Copy an array (server-side, chunk by chunk, ``zarr.json`` last), or a directory tree with ``recursive``."""
        source, target = self._key(src), self._new_key(dst)
        kind = self._bucket.kind(source, src)
        if kind == DIRECTORY:
            self.copy_directory(src, dst, overwrite=overwrite, recursive=recursive)
            return
        self._bucket.require_array(kind, src, "copy")
        if source == target:
            self._bucket.raise_if_taken(ARRAY, dst, overwrite)
            return
        found = self._bucket.metadata(source, src)
        if found is None:
            raise self._bucket.missing(src)
        document, etag = found
        obstore = import_obstore()

        def copy_chunks(_: zarr.Array) -> None:
            names = [
                entry["path"][len(source) + 1:]
                for entry in self._bucket.keys_below(source, src)
                if entry["path"][len(source) + 1:] not in (METADATA, CLAIM)
            ]
            self._client.gather(
                lambda name: self._client.request(
                    "copy", src, obstore.copy, f"{source}/{name}", f"{target}/{name}", overwrite=True
                ),
                names,
            )
            if self._bucket.etag(source, src) != etag:
                raise OSError(
                    errno.EAGAIN, "zarr backend: the source array was replaced while being copied; copy again", str(src)
                )

        import_zarr()
        from zarr.core.metadata.v3 import ArrayV3Metadata

        metadata = (ArrayV3Metadata.from_dict(dict(document)), json.dumps(document, indent=2).encode())
        self._build(target, dst, overwrite, metadata, copy_chunks)

    def move(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        """Move an array: a copy (server-side), then a delete of the source; not one atomic step."""
        source, target = self._key(src), self._new_key(dst)
        self._bucket.require_array(self._bucket.kind(source, src), src, "move")
        if source == target:
            self._bucket.raise_if_taken(ARRAY, dst, overwrite)
            return
        self.copy(src, dst, overwrite=overwrite)
        self._bucket.remove(source, src)

    def cleanup(self, directory: PathLike | None = None, older_than: float = _CLEANUP_AGE) -> list[str]:
        """Remove what writers that died left behind: write claims at least ``older_than`` seconds old.

        An unfinished array (a claim and chunks, no ``zarr.json``) is removed
        whole; a finished one keeps its array and loses only the claim. S3
        cannot tell a live writer from a dead one, so ``older_than`` (one
        hour by default) must exceed the longest write. Returns the paths
        cleaned, relative to the root, sorted.
        """
        top = "" if directory is None else self._key(directory)
        cleaned = []
        for key in self._bucket.abandoned(top, older_than):
            claim = posixpath.join(key, CLAIM)
            if self._bucket.etag(key, key) is None:
                self._bucket.remove(key, key)
            else:
                self._bucket.release(claim, key)
            cleaned.append(key)
        return cleaned

    # -- reading ---------------------------------------------------------
    def _open_bucket_array(self, key: str, path: PathLike, *, fresh: bool = False) -> zarr.Array:
        """The array at ``key`` (reusing one opened before: with ``fresh``, only if ``zarr.json`` is unchanged)."""
        cached = self._opened_arrays.get(key)
        if cached is not None and (not fresh or self._bucket.etag(key, path) == cached[1]):
            return cached[0]
        return self._open_bucket_array_anew(key, path)[0]

    def _open_bucket_array_anew(self, key: str, path: PathLike) -> tuple[zarr.Array, str]:
        found = self._bucket.metadata(key, path)
        kind = self._bucket.kind(key, path) if found is None else node_kind(found[0])
        self._bucket.require_array(kind, path, "load")
        if found is None:
            raise self._bucket.missing(path)  # written between the two requests: read it next time
        import_zarr()
        from zarr.core.metadata.v3 import ArrayV3Metadata

        array = self._array_at(key, ArrayV3Metadata.from_dict(dict(found[0])))
        with self._opened_lock:
            if len(self._opened_arrays) >= _OPENED_LIMIT:
                self._opened_arrays.clear()
            self._opened_arrays[key] = (array, found[1])
        return array, found[1]

    def load(self, path: PathLike, *, region: Any = None, **kwargs: Any) -> np.ndarray:
        # docstring inherited
        if kwargs:
            raise _unexpected_options("load", sorted(kwargs), path, _LOAD_OPTIONS)
        key = self._key(path)
        selection = load_selection(region)
        for attempt in range(_READ_ATTEMPTS):
            cached = self._opened_arrays.get(key)
            array, etag = cached if cached is not None else self._open_bucket_array_anew(key, path)
            try:
                result = self._read_bucket_array(array, key, path, selection, region)
            except Exception:
                if self._bucket.etag(key, path) == etag or attempt == _READ_ATTEMPTS - 1:
                    raise
                self._opened_arrays.pop(key, None)
                continue
            # The chunks read belong to this zarr.json only if it is still the one opened.
            now = self._bucket.etag(key, path)
            if now == etag:
                return result
            self._opened_arrays.pop(key, None)
            if now is None:
                raise self._bucket.missing(path)
        raise OSError(
            errno.EAGAIN,
            f"zarr backend: the array was replaced {_READ_ATTEMPTS} times while being read; try again",
            str(path),
        )

    def _read_bucket_array(
        self, array: zarr.Array, key: str, path: PathLike, selection: Any, region: Any
    ) -> np.ndarray:
        if array.attrs.get(INCOMPLETE):
            raise incomplete_error(path)
        check_selection_bounds(selection, array.shape, region, str(path))
        try:
            return np.asarray(array[selection], dtype=stored_dtype(array))
        except OSError:
            raise
        except Exception as error:
            if _from_obstore(error):
                raise self._request_error(error, "read", path) from None
            position = find_unreadable_chunk(array, selection)
            if position is None:
                raise
            chunk = f"{self.url}/{key}/{array.metadata.encode_chunk_key(position)}"
            raise ValueError(
                f"zarr backend: cannot read chunk {chunk!r} of the array at {str(path)!r}; it is truncated or "
                f"corrupt ({type(error).__name__}: {error})"
            ) from error

    def _request_error(self, error: Exception, action: str, path: PathLike) -> Exception:
        """A chunk request's obstore ``error`` as the builtin error naming ``path`` (others as they are)."""
        return self._client.failure(error, action, path) if _from_obstore(error) else error

    def load_batch(self, paths: Sequence[PathLike], **kwargs: Any) -> list[Any]:
        # docstring inherited
        return self._client.gather(lambda path: self.load(path, **kwargs), list(paths))

    def exists(self, path: PathLike) -> bool:
        # docstring inherited
        return self._bucket.kind(self._key(path), path) not in (None, PENDING)

    def is_file(self, path: PathLike) -> bool:
        # docstring inherited
        return self._bucket.kind(self._key(path), path) == ARRAY

    def is_dir(self, path: PathLike) -> bool:
        # docstring inherited
        return self._bucket.kind(self._key(path), path) == DIRECTORY

    def _entries(self, key: str, path: PathLike) -> tuple[list[str], list[str], list[str]]:
        """The arrays, the directories and the other objects directly in the directory ``key``."""
        self._bucket.require_directory(self._bucket.kind(key, path), path)
        objects, prefixes = self._bucket.children(key, path)
        kinds = self._client.gather(
            lambda name: self._bucket.kind(posixpath.join(key, name), path, as_prefix=True), prefixes
        )
        arrays = [name for name, kind in zip(prefixes, kinds, strict=True) if kind == ARRAY]
        directories = [name for name, kind in zip(prefixes, kinds, strict=True) if kind == DIRECTORY]
        others = [name for name in objects if name not in (METADATA, CLAIM)]
        return arrays, directories, others

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
        sort: str = "lexicographic",
    ) -> list[str]:
        # docstring inherited
        names: list[str] = []
        pending = [(normalize_key(directory, "zarr"), "")]
        while pending:
            key, relative = pending.pop()
            arrays, directories, _ = self._entries(key, directory)
            names += [relative + name for name in arrays]
            if recursive:
                pending += [(posixpath.join(key, name), f"{relative}{name}/") for name in directories]
        base = str(directory)
        return sort_names((posixpath.join(base, name) for name in filter_names(names, pattern, extensions)), sort)

    def list_dir(self, path: PathLike, sort: str = "lexicographic") -> list[str]:
        # docstring inherited
        arrays, directories, others = self._entries(normalize_key(path, "zarr"), path)
        return sort_names(arrays + directories + others, sort)

    def stat(self, path: PathLike) -> dict[str, Any]:
        """Return ``type``, ``size`` and, for an array, ``mtime`` and its layout, as the local zarr backend does.

        An array's ``size`` is the bytes of its objects (chunks and
        metadata), its ``mtime`` that of its ``zarr.json``.
        """
        key = self._key(path)
        kind = self._bucket.kind(key, path)
        if kind in (None, PENDING):
            raise self._bucket.missing(path)
        if kind == OTHER:
            raise self._bucket.not_an_array(path)
        if kind == DIRECTORY:
            return {"type": "directory", "size": 0}
        array = self._open_bucket_array(key, path, fresh=True)
        attributes = dict(array.attrs)
        incomplete = bool(attributes.pop(INCOMPLETE, False))
        names = getattr(array.metadata, "dimension_names", None)
        entries = self._bucket.keys_below(key, path)
        metadata = [entry for entry in entries if entry["path"] == f"{key}/{METADATA}"]
        return {
            "type": "file",
            "size": sum(int(entry["size"]) for entry in entries if posixpath.basename(entry["path"]) != CLAIM),
            "mtime": metadata[0]["last_modified"].timestamp() if metadata else None,
            "shape": array.shape,
            "dtype": stored_dtype(array),
            "chunks": array.chunks,
            "shards": array.shards,
            "compressor": compressor_name(array),
            "incomplete": incomplete,
            "dimension_names": None if names is None else tuple(names),
            "attributes": attributes,
        }


def _from_obstore(error: BaseException) -> bool:
    """Whether ``error`` is obstore's (a chunk request through zarr's ObjectStore that failed)."""
    return type(error).__module__.split(".", 1)[0] == "obstore"
