"""S3Backend: objects in an S3-compatible bucket, through obstore.

obstore is imported on first use only, so ``import polystore`` stays light.
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from polystore.backend import PathLike, StorageBackend, check_batch_lengths, check_batch_paths
from polystore.backends.formats import FORMATS, NpyAssembler, decode, encode
from polystore.backends.s3_client import NoSuchBucketError, S3Client, import_obstore, missing, taken, without_userinfo
from polystore.errors import InvalidPathError
from polystore.paths import filter_names, normalize_key, sort_names
from polystore.redaction import Secret

if TYPE_CHECKING:
    from obstore.store import S3Store

__all__ = ["DIRECTORY_MARKER", "S3Backend"]

#: The zero-byte object that keeps an empty directory in existence: S3 has
#: only keys, so a directory exists while some key lies below it. Listings
#: never show it, and no path may be named so.
DIRECTORY_MARKER = ".polystore-directory"

#: The smallest piece of a body handed over while an array downloads.
_PIECE = 256 << 10


class S3Backend(StorageBackend):
    """Objects in an S3-compatible bucket; the format follows the path's suffix, as on ``disk``.

    Each path is one object, written whole by one PUT, so a reader sees the
    old object or the new one, never a part. Without ``overwrite`` the PUT
    is conditional (``If-None-Match: *``): of several racing writers, in any
    processes or hosts, exactly one wins and the rest get
    :class:`FileExistsError`. Formats are those of :class:`DiskBackend`
    (``.npy``, ``.npz``, ``.json``, ``.txt``, ``.tif``; raw bytes otherwise).

    Directories are key prefixes: ``a/b.npy`` makes ``a`` a directory. An
    empty directory (from :meth:`ensure_directory`, or one whose last entry
    was deleted or moved away) is kept by a zero-byte object named
    ``.polystore-directory`` inside it, which listings hide.

    Parameters
    ----------
    bucket
        The bucket's name; it must exist.
    prefix
        A key prefix under which every path lives (``"runs/1"`` puts
        ``a.npy`` at the key ``runs/1/a.npy``).
    endpoint
        The server's URL, for S3-compatible servers other than AWS (such as
        ``"http://127.0.0.1:8333"``); AWS by default.
    region
        The bucket's region; by default from the AWS environment.
    access_key_id, secret_access_key
        Credentials; by default from the standard AWS environment variables
        (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
        ``AWS_SESSION_TOKEN``) or the instance, container or web-identity
        credentials that obstore finds, so nothing secret need be passed.
        They never appear in a repr, an error message or a log line.
    allow_http
        Allow an ``http://`` endpoint (unencrypted: for servers on loopback
        or a trusted network).
    retry_timeout
        Seconds within which a request that met a connection error or a
        server error (5xx) is retried, with backoff, before it fails with
        :class:`ConnectionError` (or :class:`OSError`).

    Notes
    -----
    One obstore client per backend instance (and process), made on first use
    and shared by all threads; the backend pickles without it. Batches run
    up to 16 requests at once, and check every item first (a taken path, a
    directory at a path, a file above one: nothing is written). An object is at most 5 GiB (one PUT). The
    checks that a save does not land on a directory or below a file are
    requests of their own before the PUT, so they do not exclude a
    concurrent writer making that directory or file in between. ``move`` is
    a copy, then a delete of the source. Names ending in ``/``, and keys
    written by other tools with empty path segments, are not addressable.

    Examples
    --------
    >>> s3 = S3Backend("my-bucket", prefix="run1", endpoint="http://127.0.0.1:8333", allow_http=True)  # doctest: +SKIP
    >>> s3.save(np.arange(3), "a/b.npy")  # doctest: +SKIP
    >>> s3.list_files("a")  # doctest: +SKIP
    ['a/b.npy']
    """

    _backend_type = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        allow_http: bool = False,
        *,
        retry_timeout: float = 60.0,
    ) -> None:
        if not isinstance(bucket, str) or not bucket or "/" in bucket:
            raise ValueError(
                f"s3 backend: bucket must be a bucket's name, not {bucket!r}; put any path inside it in prefix="
            )
        if endpoint is not None and urlsplit(endpoint).scheme == "http" and not allow_http:
            raise ValueError(
                f"s3 backend: the endpoint {without_userinfo(endpoint)!r} is plain http; "
                "pass allow_http=True to allow unencrypted connections, or use https"
            )
        self.bucket = bucket
        self.prefix = normalize_key(prefix, "s3") if prefix else ""
        self.endpoint = endpoint
        self.region = region
        self.allow_http = bool(allow_http)
        self.retry_timeout = float(retry_timeout)
        self._credentials_given = access_key_id is not None or secret_access_key is not None
        self._client = S3Client(
            bucket,
            self.prefix,
            endpoint,
            region,
            None if access_key_id is None else Secret(access_key_id),
            None if secret_access_key is None else Secret(secret_access_key),
            self.allow_http,
            self.retry_timeout,
        )

    def __repr__(self) -> str:
        endpoint = None if self.endpoint is None else without_userinfo(self.endpoint)
        credentials = "given" if self._credentials_given else "from the environment"
        return (
            f"S3Backend(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={endpoint!r}, "
            f"region={self.region!r}, allow_http={self.allow_http}, credentials={credentials!r})"
        )

    # -- keys and what lies at them ----------------------------------------
    def _key(self, path: PathLike) -> str:
        key = normalize_key(path, "s3")
        if posixpath.basename(key) == DIRECTORY_MARKER:
            raise InvalidPathError(
                f"s3 backend: the name {DIRECTORY_MARKER!r} is reserved for directory markers: {str(path)!r}"
            )
        return key

    def _file_key(self, path: PathLike) -> str:
        """The key of ``path`` as a file to write: a name that can only be a directory (the root, a last part
        ``.`` or ``..``) raises IsADirectoryError."""
        key = self._key(path)
        text = os.fspath(path).rstrip("/")  # a trailing slash is another spelling of the same path
        if not key or posixpath.basename(text) in (".", ".."):
            raise self._is_directory(path)
        return key

    def _is_directory(self, path: PathLike) -> IsADirectoryError:
        return IsADirectoryError(errno.EISDIR, "s3 backend: a directory exists at this path", str(path))

    def _parent_is_file(self, path: PathLike) -> NotADirectoryError:
        return NotADirectoryError(
            errno.ENOTDIR, "s3 backend: a parent of this path is a file, not a directory", str(path)
        )

    def _head(self, key: str, path: PathLike) -> dict[str, Any] | None:
        """The metadata of the object at ``key``, or None if there is none."""
        if not key:
            return None
        try:
            return self._client.request("read", path, import_obstore().head, key)
        except FileNotFoundError:
            return None

    def _entries_below(self, key: str, path: PathLike, limit: int = 1) -> list[str]:
        """Up to ``limit`` keys of objects below the directory ``key`` (one request)."""
        obstore = import_obstore()

        def first(store: S3Store) -> list[str]:
            # One more than asked: a server may list the directory's own entry (``key/``, seen as ``key``).
            chunk: Sequence[Any] = next(iter(obstore.list(store, key or None, chunk_size=limit + 1)), [])
            return [entry["path"] for entry in chunk if entry["path"] != key][:limit]

        return self._client.request("list", path, first)

    def _holds_objects(self, key: str, path: PathLike) -> bool:
        """Whether ``key`` is a directory: the root, or a prefix with some object below it."""
        return not key or bool(self._entries_below(key, path))

    def _check_writable(
        self,
        keys: Sequence[str],
        paths: Sequence[PathLike],
        meanwhile: Callable[[], object] | None = None,
        must_be_free: bool = False,
    ) -> None:
        """Raise unless each key may hold a file: no directory at it and no file at any of its parents.

        With ``must_be_free``, also unless each key is free. Each parent
        directory is listed once (with a delimiter) for the keys saved into
        it, and each ancestor is looked up once; ``meanwhile()`` (encoding,
        say) runs in this thread while the requests are out.
        """
        by_parent: dict[str, dict[str, PathLike]] = {}
        ancestors: dict[str, PathLike] = {}
        for key, path in zip(keys, paths, strict=True):
            parent = posixpath.dirname(key)
            by_parent.setdefault(parent, {})[posixpath.basename(key)] = path
            while parent and parent not in ancestors:
                ancestors[parent] = path
                parent = posixpath.dirname(parent)
        obstore = import_obstore()

        def check_ancestor(key: str) -> None:
            if self._head(key, ancestors[key]) is not None:
                raise self._parent_is_file(ancestors[key])

        def check_targets(parent: str) -> None:
            names = by_parent[parent]
            if len(names) == 1:
                candidates = list(names)
                (name, path), = names.items()
                files = [name] if must_be_free and self._head(posixpath.join(parent, name), path) else []
            else:
                # Many targets in one directory: one listing finds the files and subdirectories among them.
                listing = self._client.request("list", parent, obstore.list_with_delimiter, parent or None)
                candidates = [posixpath.basename(prefix) for prefix in listing["common_prefixes"]]
                files = [posixpath.basename(entry["path"]) for entry in listing["objects"]] if must_be_free else []
            for name in files:
                if name in names:
                    raise taken(names[name])
            for name in candidates:
                if name in names and self._holds_objects(posixpath.join(parent, name), names[name]):
                    raise self._is_directory(names[name])

        def check(task: tuple[Callable[[str], None], str]) -> None:
            task[0](task[1])

        tasks = [(check_ancestor, key) for key in ancestors] + [(check_targets, key) for key in by_parent]
        self._client.gather(check, tasks, meanwhile)

    # -- writing ---------------------------------------------------------
    def _body(self, data: Any, key: str, path: PathLike, options: dict[str, Any]) -> Any:
        """The whole object's bytes for ``data``, encoded by the suffix (one buffer, for one PUT)."""
        payload = encode(data, key, path, options, "s3")
        if callable(payload):
            stream = io.BytesIO()
            payload(stream)
            return stream.getbuffer()
        if len(payload) == 1:
            return memoryview(payload[0]).cast("B")
        return b"".join(payload)

    def _keep_parent(self, key: str, path: PathLike) -> None:
        """After ``key`` went away, mark its parent directory if nothing else keeps it (as on a filesystem)."""
        parent = posixpath.dirname(key)
        if parent and not self._entries_below(parent, path):
            self._client.put(posixpath.join(parent, DIRECTORY_MARKER), b"", path, overwrite=True)

    def save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        # docstring inherited
        key = self._file_key(path)
        bodies: list[Any] = []
        self._check_writable([key], [path], lambda: bodies.append(self._body(data, key, path, kwargs)))
        self._client.put(key, bodies[0], path, overwrite)

    def check_save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        # docstring inherited
        key = self._file_key(path)
        self._check_writable([key], [path], lambda: self._body(data, key, path, kwargs), must_be_free=not overwrite)

    def save_batch(
        self, data_list: Sequence[Any], paths: Sequence[PathLike], *, overwrite: bool = False, **kwargs: Any
    ) -> None:
        # docstring inherited
        # Every path and item is checked before the first object is written
        # (a path taken by then, without overwrite, too); the PUTs then run
        # concurrently, and all end before an error is raised.
        check_batch_lengths(data_list, paths, self.name)
        keys = [self._file_key(path) for path in paths]
        check_batch_paths(keys, paths, self.name, overwrite)
        bodies: list[Any] = []

        def encode_all() -> None:
            bodies.extend(self._body(*item, kwargs) for item in zip(data_list, keys, paths, strict=True))

        self._check_writable(keys, paths, encode_all, must_be_free=not overwrite and len(keys) > 1)
        # With overwrite, the last item for a path wins, as in a loop of saves.
        last = {key: index for index, key in enumerate(keys)}
        items = [item for index, item in enumerate(zip(keys, bodies, paths, strict=True)) if last[item[0]] == index]
        self._client.gather(lambda item: self._client.put(item[0], item[1], item[2], overwrite), items)

    def ensure_directory(self, path: PathLike) -> None:
        # docstring inherited
        key = self._key(path)
        if not key:
            return
        self._check_parents(key, path)
        if self._head(key, path) is not None:
            raise FileExistsError(errno.EEXIST, "s3 backend: a file exists at this path", str(path))
        if not self._entries_below(key, path):
            self._client.put(posixpath.join(key, DIRECTORY_MARKER), b"", path, overwrite=True)

    def _check_parents(self, key: str, path: PathLike) -> None:
        parents = []
        parent = posixpath.dirname(key)
        while parent:
            parents.append(parent)
            parent = posixpath.dirname(parent)
        if any(meta is not None for meta in self._client.gather(lambda parent: self._head(parent, path), parents)):
            raise self._parent_is_file(path)

    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        # docstring inherited
        key = self._key(path)
        obstore = import_obstore()
        if not key:
            raise IsADirectoryError(errno.EISDIR, "s3 backend: cannot delete the root directory", str(path))
        if self._head(key, path) is not None:
            self._client.request("delete", path, obstore.delete, key)
        elif recursive:
            listing = self._client.request("list", path, lambda store: obstore.list(store, key).collect())
            below = [entry["path"] for entry in listing]
            if not below:
                raise missing(path)
            self._client.request("delete", path, obstore.delete, below)
        else:
            below = self._entries_below(key, path, limit=2)
            if not below:
                raise missing(path)
            if below != [posixpath.join(key, DIRECTORY_MARKER)]:
                raise OSError(errno.ENOTEMPTY, "s3 backend: directory is not empty; pass recursive=True", str(path))
            self._client.request("delete", path, obstore.delete, below[0])
        self._keep_parent(key, path)

    def copy(self, src: PathLike, dst: PathLike, *, overwrite: bool = False, recursive: bool = False) -> None:
        # docstring inherited
        if recursive and self.is_dir(src):
            self.copy_tree(src, dst, overwrite=overwrite)
            return
        try:
            self._copy_object(src, dst, overwrite)
            return
        except IsADirectoryError:
            pass  # known only once the object copy finds a directory: one request fewer for files
        self.copy_directory(src, dst, overwrite=overwrite, recursive=False)

    def _copy_object(self, src: PathLike, dst: PathLike, overwrite: bool) -> None:
        source, target = self._key(src), self._file_key(dst)
        if source == target:
            if self._head(source, src) is None:
                raise self._not_a_file(source, src)
            if not overwrite:
                raise taken(dst)
            return
        if overwrite:
            # The server copies; the data never passes through this process.
            self._check_writable([target], [dst])
            try:
                self._client.request("copy", src, import_obstore().copy, source, target, overwrite=True)
            except FileNotFoundError:
                raise self._not_a_file(source, src) from None
            return
        # S3 has no exclusive server-side copy: read, then a conditional PUT.
        body = self._read_object(source, src)
        self._check_writable([target], [dst])
        self._client.put(target, body, dst, overwrite=False)

    def move(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        # docstring inherited
        source, target = self._key(src), self._file_key(dst)
        self._copy_object(src, dst, overwrite)
        if source != target:
            self._client.request("delete", src, import_obstore().delete, source)
            self._keep_parent(source, src)

    # -- reading ---------------------------------------------------------
    def _not_a_file(self, key: str, path: PathLike) -> OSError:
        """The error for reading ``key`` where no object is: a directory, or nothing at all."""
        if self._holds_objects(key, path):
            return IsADirectoryError(errno.EISDIR, "s3 backend: this path is a directory, not a file", str(path))
        return missing(path)

    def _get(self, key: str, path: PathLike) -> Any:
        """The GET response for the object at ``key``, its body not read yet."""
        if not key:
            raise self._not_a_file(key, path)
        try:
            return self._client.request("read", path, import_obstore().get, key)
        except NoSuchBucketError:
            raise
        except FileNotFoundError:
            raise self._not_a_file(key, path) from None

    def _read_object(self, key: str, path: PathLike) -> Any:
        """The bytes of the object at ``key`` (a buffer, not copied)."""
        response = self._get(key, path)
        return self._client.request("read", path, lambda _: response.bytes())

    def _load(self, key: str, path: PathLike, options: dict[str, Any]) -> Any:
        if options or FORMATS.get(posixpath.splitext(key)[1].lower()) != "npy":
            return decode(self._read_object(key, path), key, path, options, "s3")
        # An array is built as its body arrives: each piece is copied once, into the new array.
        assembler = NpyAssembler(path, "s3")
        response = self._get(key, path)
        try:
            for piece in response.stream(min_chunk_size=_PIECE):
                assembler.feed(piece)
        except ValueError:
            raise  # not a readable .npy file
        except Exception as error:
            raise self._client.failure(error, "read", path) from None
        return assembler.finish()

    def load(self, path: PathLike, **kwargs: Any) -> Any:
        # docstring inherited
        return self._load(self._key(path), path, kwargs)

    def load_batch(self, paths: Sequence[PathLike], **kwargs: Any) -> list[Any]:
        # docstring inherited
        items = [(self._key(path), path) for path in paths]
        return self._client.gather(lambda item: self._load(item[0], item[1], kwargs), items)

    def exists(self, path: PathLike) -> bool:
        # docstring inherited
        key = self._key(path)
        return self._head(key, path) is not None or self._holds_objects(key, path)

    def is_file(self, path: PathLike) -> bool:
        # docstring inherited
        key = self._key(path)
        return self._head(key, path) is not None

    def is_dir(self, path: PathLike) -> bool:
        # docstring inherited
        return self._holds_objects(self._key(path), path)

    def _no_directory(self, key: str, path: PathLike) -> OSError:
        """The error for listing ``key`` where no directory is: a file, or nothing at all."""
        if self._head(key, path) is not None:
            return NotADirectoryError(errno.ENOTDIR, "s3 backend: this path is a file, not a directory", str(path))
        return FileNotFoundError(errno.ENOENT, "s3 backend: no directory at this path", str(path))

    def _entries(self, key: str, path: PathLike, directories: bool) -> tuple[list[str], list[str]]:
        """The names of the files, and if asked of the subdirectories, in the directory ``key``.

        One delimiter listing. Servers that keep a directory tree (SeaweedFS)
        report a prefix for a while after its last object went, so a
        subdirectory is listed only once a listing below it finds an object.
        """
        listing = self._client.request("list", path, import_obstore().list_with_delimiter, key or None)
        # SeaweedFS (and a folder made in the AWS console) can list the directory's own key among its objects.
        names = [posixpath.basename(entry["path"]) for entry in listing["objects"] if entry["path"] != key]
        files = [name for name in names if name != DIRECTORY_MARKER]
        subdirectories: list[str] = []
        if directories:
            prefixes = list(listing["common_prefixes"])
            held = self._client.gather(lambda prefix: self._holds_objects(prefix, path), prefixes)
            subdirectories = [posixpath.basename(p) for p, holds in zip(prefixes, held, strict=True) if holds]
        if not names and not subdirectories and not self._holds_objects(key, path):
            raise self._no_directory(key, path)
        return files, subdirectories

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
        sort: str = "lexicographic",
    ) -> list[str]:
        # docstring inherited
        key = normalize_key(directory, "s3")
        if recursive:
            # One flat listing of the whole tree costs fewer requests than a walk.
            obstore = import_obstore()
            below = self._client.request("list", directory, lambda store: obstore.list(store, key or None).collect())
            if not below and key:
                raise self._no_directory(key, directory)
            start = len(key) + 1 if key else 0
            names = [entry["path"][start:] for entry in below]
            # The directory's own key, if a server lists it, leaves an empty name.
            names = [name for name in names if name and posixpath.basename(name) != DIRECTORY_MARKER]
        else:
            names = self._entries(key, directory, directories=False)[0]
        base = str(directory)
        return sort_names((posixpath.join(base, name) for name in filter_names(names, pattern, extensions)), sort)

    def list_dir(self, path: PathLike, sort: str = "lexicographic") -> list[str]:
        # docstring inherited
        files, directories = self._entries(normalize_key(path, "s3"), path, directories=True)
        return sort_names(files + directories, sort)

    def stat(self, path: PathLike) -> dict[str, Any]:
        """Return ``type``, ``size`` in bytes (0 for a directory, as on every backend) and, for a file, ``mtime``."""
        key = self._key(path)
        meta = self._head(key, path)
        if meta is not None:
            return {"type": "file", "size": int(meta["size"]), "mtime": meta["last_modified"].timestamp()}
        if self._holds_objects(key, path):
            return {"type": "directory", "size": 0}
        raise missing(path)

