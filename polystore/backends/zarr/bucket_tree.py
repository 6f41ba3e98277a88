"""The zarr backend's view of a bucket: arrays are ``zarr.json`` keys, directories prefixes, writes claimed.

:class:`BucketTree` knows the keys of one bucket prefix through
:class:`~polystore.backends.s3_client.S3Client` (one obstore store per
process): what lies at a key, array metadata and its commit, group markers
for directories, and the claim that makes writers of one path take turns.
It knows nothing of zarr beyond the ``zarr.json`` that marks a node.

Layout of an array at key ``K``: ``K/zarr.json`` (the metadata, written last)
and its chunks below ``K``; while a writer works on ``K`` it holds the claim
object ``K/.polystore-writing`` (exclusively created, deleted when done).
A directory is a prefix, made explicit by a zarr v3 group ``K/zarr.json``.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import posixpath
import secrets
import socket
import time
from collections.abc import Sequence
from typing import Any

from polystore.backend import PathLike
from polystore.backends.s3_client import S3Client, import_obstore
from polystore.backends.zarr.tree import ARRAY, DIRECTORY, OTHER, ArrayTree
from polystore.errors import InvalidPathError, UnsupportedFormatError

__all__ = ["ARRAY", "CLAIM", "DIRECTORY", "METADATA", "OTHER", "PENDING", "BucketTree", "node_kind", "with_nonce"]

#: What :meth:`BucketTree.kind` finds at a key: a zarr array, a directory
#: (a group or a bare prefix), an array being written (claimed, no metadata
#: yet), or another object (one this backend did not write).
PENDING = "pending"
#: A node's metadata, and the object a writer holds while it writes an array.
METADATA = "zarr.json"
CLAIM = ".polystore-writing"
#: The metadata of the group that marks a directory (zarr v3).
GROUP = b'{\n  "zarr_format": 3,\n  "node_type": "group",\n  "attributes": {}\n}'


def with_nonce(metadata: bytes) -> bytes:
    """``metadata`` ending in 64 random whitespace characters, which JSON ignores.

    Every write of a ``zarr.json`` then has its own ETag, even when the
    metadata is the same, so a reader tells an overwritten array from the one
    it opened by the ETag alone, without an attribute every zarr reader would see.
    """
    bits = secrets.randbits(64)
    return metadata.rstrip() + b"\n" + bytes(b" \t"[(bits >> i) & 1] for i in range(64))


def node_kind(metadata: dict[str, Any]) -> str:
    """What a node with this ``zarr.json`` is: :data:`ARRAY` (zarr v3), :data:`DIRECTORY` (a group) or :data:`OTHER`."""
    if metadata.get("zarr_format") != 3:
        return OTHER
    return {"array": ARRAY, "group": DIRECTORY}.get(metadata.get("node_type"), OTHER)  # type: ignore[arg-type]


class BucketTree:
    """Keys of the zarr backend below one bucket prefix, through ``client``."""

    def __init__(self, client: S3Client) -> None:
        self.client = client

    # -- keys ------------------------------------------------------------
    @staticmethod
    def check_key(key: str, path: PathLike) -> str:
        """``key``, or InvalidPathError for a name this backend keeps for itself."""
        for part in key.split("/"):
            if part in (METADATA, CLAIM):
                raise InvalidPathError(
                    f"zarr backend: the name {part!r} is reserved for zarr metadata and write claims: "
                    f"{os.fspath(path)!r}"
                )
        return key

    @staticmethod
    def ancestors(key: str) -> list[str]:
        """The keys of the directories above ``key``, nearest first, the root left out."""
        found = []
        parent = posixpath.dirname(key)
        while parent:
            found.append(parent)
            parent = posixpath.dirname(parent)
        return found

    # -- what lies at a key ----------------------------------------------
    def metadata(self, key: str, path: PathLike) -> tuple[dict[str, Any], str] | None:
        """The parsed ``zarr.json`` of the node at ``key`` and its ETag, or None if it has none."""
        obstore = import_obstore()
        try:
            response = self.client.request("read", path, obstore.get, posixpath.join(key, METADATA))
            body = self.client.request("read", path, lambda _: bytes(response.bytes()))
        except FileNotFoundError:
            return None
        try:
            document = json.loads(body)
        except ValueError:
            return {}, str(response.meta["e_tag"])
        return (document if isinstance(document, dict) else {}), str(response.meta["e_tag"])

    def etag(self, key: str, path: PathLike) -> str | None:
        """The ETag of the ``zarr.json`` at ``key`` now (one HEAD), or None if there is none."""
        try:
            meta = self.client.request("read", path, import_obstore().head, posixpath.join(key, METADATA))
        except FileNotFoundError:
            return None
        return str(meta["e_tag"])

    def first_below(self, key: str, path: PathLike, limit: int = 1) -> list[str]:
        """Up to ``limit`` keys of objects below ``key``, in key order (one request)."""
        obstore = import_obstore()

        def first(store: Any) -> list[str]:
            # One more than asked: a server may list the prefix's own entry (``key/``, seen as ``key``).
            chunk: Sequence[Any] = next(iter(obstore.list(store, key or None, chunk_size=limit + 1)), [])
            return [entry["path"] for entry in chunk if entry["path"] != key][:limit]

        return self.client.request("list", path, first)

    def kind(self, key: str, path: PathLike, *, as_prefix: bool = False) -> str | None:
        """:data:`ARRAY`, :data:`DIRECTORY`, :data:`PENDING`, :data:`OTHER` or None if nothing is there.

        With ``as_prefix`` (a prefix a listing found), an object at the key
        itself is not looked for. Keys inside an array are not looked into
        here; :meth:`check_parents` refuses them.
        """
        if not key:
            return DIRECTORY
        found = self.metadata(key, path)
        if found is not None:
            return node_kind(found[0])
        if self._inside_array(key, path):
            return None  # a chunk of an array, or a prefix of chunks
        # The claim sorts before a chunk key ("." before "c"), so one short listing tells.
        below = self.first_below(key, path)
        if below:
            return PENDING if below[0] == posixpath.join(key, CLAIM) else DIRECTORY
        if not as_prefix and self._object_at(key, path):
            return OTHER
        return None

    def _inside_array(self, key: str, path: PathLike) -> bool:
        for parent in self.ancestors(key):
            found = self.metadata(parent, path)
            if found is not None:
                return found[0].get("node_type") == "array"
        return False

    def _object_at(self, key: str, path: PathLike) -> bool:
        try:
            self.client.request("read", path, import_obstore().head, key)
        except FileNotFoundError:
            return False
        return True

    def keys_below(self, key: str, path: PathLike) -> list[dict[str, Any]]:
        """Every object below ``key`` (one flat listing, paged)."""
        obstore = import_obstore()
        listing = self.client.request("list", path, lambda store: obstore.list(store, key or None).collect())
        return [entry for entry in listing if entry["path"] != key]

    def children(self, key: str, path: PathLike) -> tuple[list[str], list[str]]:
        """The names of the objects directly in ``key`` and of its sub-prefixes (one delimiter listing)."""
        listing = self.client.request("list", path, import_obstore().list_with_delimiter, key or None)
        objects = [posixpath.basename(entry["path"]) for entry in listing["objects"] if entry["path"] != key]
        return objects, [posixpath.basename(prefix) for prefix in listing["common_prefixes"]]

    # -- errors ----------------------------------------------------------
    @staticmethod
    def missing(path: PathLike) -> FileNotFoundError:
        return FileNotFoundError(errno.ENOENT, "zarr backend: no zarr array or directory at this path", str(path))

    @staticmethod
    def not_an_array(path: PathLike) -> UnsupportedFormatError:
        return UnsupportedFormatError(
            f"zarr backend: {str(path)!r} is an object that is not a zarr array; use the 's3' backend for other files"
        )

    @staticmethod
    def being_written(path: PathLike) -> FileExistsError:
        return FileExistsError(
            errno.EEXIST,
            "zarr backend: another writer is writing an array at this path now (it holds the write claim "
            f"{CLAIM!r}); try again once it has finished, and if it died, cleanup() removes what it left",
            str(path),
        )

    def require_array(self, kind: str | None, path: PathLike, operation: str) -> None:
        """Raise the error that says why ``kind`` is not an array, if it is not."""
        if kind == ARRAY:
            return
        if kind in (None, PENDING):
            raise self.missing(path)
        if kind == DIRECTORY:
            raise IsADirectoryError(
                errno.EISDIR, f"zarr backend: cannot {operation} a directory (it has no array zarr.json)", str(path)
            )
        raise self.not_an_array(path)

    def require_directory(self, kind: str | None, path: PathLike) -> None:
        if kind in (None, PENDING):
            raise self.missing(path)
        if kind != DIRECTORY:
            raise NotADirectoryError(errno.ENOTDIR, "zarr backend: this path is not a directory", str(path))

    @staticmethod
    def raise_if_taken(kind: str | None, path: PathLike, overwrite: bool) -> None:
        """Refuse to put an array where ``kind`` is, unless it is an array to overwrite."""
        if kind == OTHER:
            raise FileExistsError(
                errno.EEXIST,
                "zarr backend: an object that is not a zarr array is at this path; remove it with the 's3' backend",
                str(path),
            )
        if kind == PENDING:
            raise BucketTree.being_written(path)
        ArrayTree.raise_if_taken(kind, path, overwrite)  # a directory, or an array without overwrite

    def check_parents(self, key: str, path: PathLike) -> list[str]:
        """Raise unless every directory above ``key`` is one or may be made; return those to make, outermost first."""
        parents = self.ancestors(key)
        kinds = [self.kind(parent, path) for parent in parents]
        for kind in kinds:
            if kind in (ARRAY, PENDING):
                raise NotADirectoryError(
                    errno.ENOTDIR, "zarr backend: a parent of this path is a zarr array", str(path)
                )
            if kind == OTHER:
                raise NotADirectoryError(errno.ENOTDIR, "zarr backend: a parent of this path is a file", str(path))
        return [parent for parent, kind in zip(parents, kinds, strict=True) if kind is None][::-1]

    # -- writing ---------------------------------------------------------
    def make_groups(self, keys: Sequence[str], path: PathLike) -> None:
        """Mark each of ``keys`` a directory with a zarr v3 group, unless a node is there already."""
        for key in keys:
            try:
                self.client.put(posixpath.join(key, METADATA), GROUP, path, overwrite=False)
            except FileExistsError:
                pass  # made meanwhile, by another writer

    def claim(self, key: str, path: PathLike) -> str:
        """Take the write claim of ``key`` (an exclusive PUT), or FileExistsError if another writer holds it."""
        claim = posixpath.join(key, CLAIM)
        note = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        try:
            self.client.put(claim, json.dumps(note).encode(), path, overwrite=False)
        except FileExistsError:
            raise self.being_written(path) from None
        return claim

    def release(self, claim: str, path: PathLike) -> None:
        self.client.request("delete", path, import_obstore().delete, claim)

    def commit(self, key: str, metadata: bytes, path: PathLike) -> None:
        """Write the ``zarr.json`` that makes the array at ``key`` appear: an exclusive PUT."""
        self.client.put(posixpath.join(key, METADATA), with_nonce(metadata), path, overwrite=False)

    def remove(self, key: str, path: PathLike, *, keep: str | None = None) -> None:
        """Delete the node at ``key`` and all below it, metadata first (so it disappears at once), but ``keep``."""
        obstore = import_obstore()
        below = [entry["path"] for entry in self.keys_below(key, path) if entry["path"] != keep]
        metadata = [name for name in below if posixpath.basename(name) == METADATA]
        rest = [name for name in below if posixpath.basename(name) != METADATA]
        for batch in (metadata, rest):
            if batch:
                self.client.request("delete", path, obstore.delete, batch)

    def abandoned(self, key: str, older_than: float) -> list[str]:
        """The keys below ``key`` whose write claim is at least ``older_than`` seconds old."""
        deadline = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=older_than)
        return sorted(
            posixpath.dirname(entry["path"])
            for entry in self.keys_below(key, key)
            if posixpath.basename(entry["path"]) == CLAIM and entry["last_modified"] <= deadline
        )
