"""One order for every operation on a path: the pending operations of one manager, and how tasks join them.

Every operation the manager runs, single objects, batches, queries and
arrays alike, is submitted through :class:`OrderedTasks`: its task waits
for the unfinished operations on related paths that it must follow, and is
recorded so that later ones wait for it.
"""

from __future__ import annotations

import functools
import posixpath
import threading
import uuid
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, Future, wait

from polystore_dask.tasks import unwrap
from polystore_dask.traits import PathKey

__all__ = ["OrderedTasks", "PathChains"]


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
                        found[str(pending.write.key)] = pending.write
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
                    pending.reads[str(future.key)] = future
        future.add_done_callback(lambda done: self._finish(keys, str(done.key)))

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


class OrderedTasks:
    """Submits the tasks of one manager, each after the unfinished operations it must follow.

    A write waits for every unfinished operation on related paths, a read
    for their writes only (see :class:`PathChains`).
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.chains = PathChains()
        #: For each future handed to the user: the futures its result is computed from.
        self._inputs: weakref.WeakKeyDictionary[Future, tuple[Future, ...]] = weakref.WeakKeyDictionary()

    def submit(
        self, key: str, function: Callable[..., Any], *args: Any, pin: list[str] | None = None, **kwargs: Any
    ) -> Future:
        """Submit one task, unordered; ``pin`` names the workers it should run on."""
        return self.client.submit(
            function, *args, key=key, pure=False, workers=pin, allow_other_workers=pin is not None, **kwargs
        )

    def keep(self, future: Future, *inputs: Any) -> Future:
        """Hold the futures among ``inputs`` (also inside lists and tuples) for as long as ``future`` is held.

        A result lives on a worker: if that worker dies, distributed computes
        the result again from the task's inputs, but only from inputs it
        still has. Keeping them (the operation's task and any scattered data)
        lets a finished operation whose worker died afterwards give its
        result again instead of being cancelled.
        """
        self._inputs[future] = tuple(_futures_in(inputs))
        return future

    def after(self, writes: Sequence[PathKey] = (), reads: Sequence[PathKey] = ()) -> list[Future]:
        """The unfinished operations an operation writing ``writes`` and reading ``reads`` must follow."""
        found = {future.key: future for future in self.chains.waits(writes, write=True)}
        found.update((future.key, future) for future in self.chains.waits(reads, write=False))
        return list(found.values())

    def record(self, future: Future, writes: Sequence[PathKey] = (), reads: Sequence[PathKey] = ()) -> None:
        """Make ``future`` an operation that later ones on ``writes`` and ``reads`` follow."""
        self.chains.add(writes, future, write=True)
        self.chains.add(reads, future, write=False)

    def start(
        self,
        key: str,
        function: Callable[..., Any],
        *args: Any,
        writes: Sequence[PathKey] = (),
        reads: Sequence[PathKey] = (),
        pin: list[str] | None = None,
        **kwargs: Any,
    ) -> Future:
        """Submit the task of one operation (or batch part) after the ones it must follow, and record it."""
        outcome = self.submit(key, function, *args, after=self.after(writes, reads), pin=pin, **kwargs)
        self.record(outcome, writes, reads)
        return outcome

    def run(
        self, operation: str, function: Callable[..., Any], *args: Any, pin: list[str] | None = None, **kwargs: Any
    ) -> Future:
        """Start an operation's task, and return the future of its value (or error) for the user."""
        token = uuid.uuid4().hex
        outcome = self.start(f"polystore-{operation}-run-{token}", function, *args, pin=pin, **kwargs)
        return self.keep(self.submit(f"polystore-{operation}-{token}", unwrap, outcome, pin=pin), outcome, args)

    def settle_before(self, writes: Sequence[PathKey] = (), reads: Sequence[PathKey] = ()) -> None:
        """Block until the operations an operation on these paths must follow have finished."""
        wait(self.after(writes, reads))


def _futures_in(value: Any) -> Iterator[Future]:
    if isinstance(value, Future):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _futures_in(item)


def _ancestors(path: str) -> list[str]:
    """The directories above ``path`` (memory keys like ``a/b`` or absolute filesystem paths)."""
    parent = posixpath.dirname(path)
    if parent == path:
        return []
    return [parent, *_above(parent)] if parent else [parent]


@functools.lru_cache(maxsize=4096)
def _above(directory: str) -> tuple[str, ...]:
    """:func:`_ancestors` of a directory, kept: the paths of a batch mostly share their parents."""
    return tuple(_ancestors(directory))
