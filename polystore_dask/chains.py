"""The pending operations of one manager, by path, so later ones can wait for them."""

from __future__ import annotations

import posixpath
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from distributed import Future

__all__ = ["PathChains", "PathKey"]

#: A path as the chains know it: (backend name, canonical path).
PathKey = tuple[str, str]


@dataclass
class _Pending:
    """The unfinished operations on one path: the last write and the reads since."""

    write: Future | None = None
    reads: dict[str, Future] = field(default_factory=dict)


class PathChains:
    """Unfinished operations per path, so that later operations on related paths depend on them.

    Two paths are related when they are equal or one lies inside the other
    (a directory and anything in it). A write waits for every unfinished
    operation on related paths; a read waits only for their writes, so
    reads of one path run side by side. An operation leaves the table when
    its task finishes, so the table holds only work in flight.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[PathKey, _Pending] = {}
        #: For each (backend, directory): the pending paths inside it, at any depth.
        self._inside: defaultdict[PathKey, set[str]] = defaultdict(set)

    def waits(self, keys: Iterable[PathKey], *, write: bool) -> list[Future]:
        """The futures an operation on ``keys`` must wait for."""
        found: dict[str, Future] = {}
        with self._lock:
            if not self._pending:
                return []
            for backend, path in keys:
                related = [path, *_ancestors(path), *self._inside.get((backend, path), ())]
                for other in related:
                    pending = self._pending.get((backend, other))
                    if pending is None:
                        continue
                    if pending.write is not None:
                        found[pending.write.key] = pending.write
                    if write:
                        found.update(pending.reads)
        return list(found.values())

    def add(self, keys: Iterable[PathKey], future: Future, *, write: bool) -> None:
        """Record ``future`` as the latest operation on ``keys`` until it finishes."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return
        with self._lock:
            for key in keys:
                pending = self._pending.get(key)
                if pending is None:
                    pending = self._pending[key] = _Pending()
                    backend, path = key
                    for ancestor in _ancestors(path):
                        self._inside[(backend, ancestor)].add(path)
                if write:
                    pending.write = future
                    pending.reads.clear()
                else:
                    pending.reads[future.key] = future
        future.add_done_callback(lambda done: self._finish(keys, done.key))

    def _finish(self, keys: list[PathKey], finished: str) -> None:
        with self._lock:
            for key in keys:
                pending = self._pending.get(key)
                if pending is None:
                    continue
                if pending.write is not None and pending.write.key == finished:
                    pending.write = None
                pending.reads.pop(finished, None)
                if pending.write is None and not pending.reads:
                    del self._pending[key]
                    backend, path = key
                    for ancestor in _ancestors(path):
                        inside = self._inside.get((backend, ancestor))
                        if inside is not None:
                            inside.discard(path)
                            if not inside:
                                del self._inside[(backend, ancestor)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


def _ancestors(path: str) -> list[str]:
    """The directories above ``path`` (memory keys like ``a/b`` or absolute filesystem paths)."""
    found = []
    while True:
        parent = posixpath.dirname(path)
        if parent == path:
            return found
        found.append(parent)
        path = parent
        if not path:
            return found
