"""Where the paths of a per-process or per-host backend live: the table of owners, and asking every worker."""

from __future__ import annotations

import errno
import itertools
import posixpath
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from distributed import Client, Future

from polystore.paths import sort_names
from polystore_dask.errors import lost_error
from polystore_dask.tasks import probe_kinds, probe_listing, probe_stat
from polystore_dask.workers import Holders, Keeper, Owner, Workers, run_everywhere

__all__ = ["Owners", "Replicated"]


class Replicated(NamedTuple):
    """What the table knows of a replicated path: who holds its current version, how many should, which version."""

    #: Every owner given the current version (the first is the path's owner), live or not.
    holders: tuple[Owner, ...]
    wanted: int
    #: Changes with every save of the path, so a copy of an older version is never counted.
    version: int


class Owners:
    """The owner of each path of one per-process or per-host backend, saved or found through one manager.

    An owner (:class:`~polystore_dask.workers.Owner`) is a worker process
    for a per-process backend, a host for a per-host one: ``workers`` is the
    view of the cluster that names them (:class:`Workers` or
    :class:`~polystore_dask.workers.HostWorkers`). A path keeps its owner
    until a delete (or the source side of a move) succeeds, or until the
    owner leaves: tasks for it are pinned to the owner, which they verify
    where they run. Paths the table does not know are looked for on every
    worker (:meth:`locate`).
    """

    def __init__(self, client: Client, backend: str, workers: type[Workers] = Workers) -> None:
        self.client = client
        self.backend = backend
        self._workers = workers
        self._owners: dict[str, Owner] = {}
        #: For each directory: how many paths inside it each owner keeps.
        self._inside: dict[str, Counter[Owner]] = {}
        #: The holders of each replicated path (saved with replicas > 1).
        self._replicas: dict[str, Replicated] = {}
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._versions = itertools.count(1)

    def workers(self) -> Workers:
        """A snapshot of the cluster, naming owners as this table does."""
        return self._workers(self.client)

    def get(self, key: str) -> Owner | None:
        with self._lock:
            return self._owners.get(key)

    def set(self, key: str, owner: Owner) -> None:
        with self._lock:
            self._record(key, owner)

    def _record(self, key: str, owner: Owner) -> None:
        """Make ``owner`` the owner of ``key``, counted in the directories above (lock held)."""
        self._drop(key)
        self._owners[key] = owner
        for ancestor in _ancestors(key):
            self._inside.setdefault(ancestor, Counter())[owner] += 1

    def keeper(self, key: str) -> Keeper | None:
        """Where ``key`` is kept: the holders of its replicas, else its owner (None: not known)."""
        with self._lock:
            replicated = self._replicas.get(key)
            return Holders(replicated.holders) if replicated is not None else self._owners.get(key)

    def replicated(self, key: str) -> Replicated | None:
        with self._lock:
            return self._replicas.get(key)

    def replicated_paths(self) -> dict[str, Replicated]:
        """A snapshot of every replicated path's record."""
        with self._lock:
            return dict(self._replicas)

    def set_replicas(self, key: str, holders: Sequence[Owner], wanted: int) -> int:
        """Record a new version of ``key``, to be held by ``holders`` (``wanted`` of them); return its version."""
        with self._lock:
            self._record(key, holders[0])
            version = next(self._versions)
            self._replicas[key] = Replicated(tuple(holders), wanted, version)
            return version

    def settle_replicas(self, key: str, version: int, holders: Sequence[Owner], wanted: int | None = None) -> None:
        """Once a save of ``version`` of ``key`` finished: only ``holders`` hold it (none: forget the path).

        With ``wanted``, ``holders`` keep the version before it (the save
        failed there), which becomes the current one again. Nothing changes
        if ``key`` was saved again meanwhile.
        """
        with self._lock:
            replicated = self._replicas.get(key)
            if replicated is None or replicated.version != version:
                return
            if not holders:
                self._drop(key)
                return
            if self._owners.get(key) not in holders:
                self._record(key, holders[0])
            if wanted is None:
                self._replicas[key] = replicated._replace(holders=tuple(holders))
            else:
                self._replicas[key] = Replicated(tuple(holders), wanted, next(self._versions))

    def add_holder(self, key: str, version: int, owner: Owner) -> bool:
        """Count a copy of ``version`` of ``key`` on ``owner``; False if the path changed since (not counted)."""
        with self._lock:
            replicated = self._replicas.get(key)
            if replicated is None or replicated.version != version:
                return False
            if owner not in replicated.holders:
                self._replicas[key] = replicated._replace(holders=(*replicated.holders, owner))
            return True

    def forget(self, key: str, owner: Owner | None, *, inside: bool = False) -> None:
        """Drop ``key`` (and with ``inside`` every key under it) if still owned by ``owner``."""
        with self._lock:
            if owner is None or self._owners.get(key) == owner:
                self._drop(key)
            if inside and key in self._inside:
                # Only a directory has paths inside: a file's delete stays as cheap however many paths are known.
                prefix = key + "/" if key else ""
                for other in [other for other in self._owners if other.startswith(prefix)]:
                    self._drop(other)

    def _drop(self, key: str) -> None:
        """Remove ``key``'s owner and its counts in the directories above (lock held)."""
        self._replicas.pop(key, None)
        owner = self._owners.pop(key, None)
        if owner is None:
            return
        for ancestor in _ancestors(key):
            counts = self._inside[ancestor]
            counts[owner] -= 1
            if counts[owner] <= 0:
                del counts[owner]
            if not counts:
                del self._inside[ancestor]

    def copy_inside(self, source: str, target: str) -> None:
        """After a directory copy: each known path under ``target`` gets the owner of its path under ``source``."""
        prefix = source + "/" if source else ""
        with self._lock:
            copied = [
                (posixpath.join(target, key[len(prefix):]), owner, self._replicas.get(key))
                for key, owner in self._owners.items()
                if key.startswith(prefix)
            ]
            for key, owner, replicated in copied:
                self._record(key, owner)
                if replicated is not None:
                    self._replicas[key] = replicated._replace(version=next(self._versions))

    def keepers_inside(self, key: str) -> list[Owner]:
        """The workers keeping paths inside ``key`` (for which ``key`` is a directory)."""
        with self._lock:
            return sorted(self._inside.get(key, ()))

    def live(self, key: str, workers: Workers) -> Owner | None:
        """The owner of ``key`` if its process is still in the cluster."""
        owner = self.get(key)
        return owner if workers.alive(owner) else None

    def next_worker(self, workers: Workers) -> Owner:
        """A worker in turn, for paths that have no owner yet."""
        running = workers.running()
        if not running:
            raise RuntimeError(f"the cluster has no workers; start some before saving to the {self.backend} backend")
        return running[next(self._turn) % len(running)]

    def choose(self, key: str, workers: Workers, data: Any = None) -> Owner:
        """The worker a new path goes to.

        If ``key`` is a directory on some worker, or one of its ancestors a
        file, that worker, so that the save fails there as it should;
        else where its data (a Future) already is; else the next worker in turn.
        """
        for keeper in self.keepers_inside(key):
            if workers.alive(keeper):
                return keeper
        owner = self.keeper_of_ancestor(key, workers)
        if owner is not None:
            return owner
        if isinstance(data, Future):
            holder = self.holder(data, workers)
            if holder is not None:
                return holder
        return self.next_worker(workers)

    def keeper_of_ancestor(self, key: str, workers: Workers) -> Owner | None:
        """The live worker keeping a file at a directory above ``key``, if any."""
        with self._lock:
            for ancestor in _ancestors(key):
                owner = self._owners.get(ancestor)
                if workers.alive(owner):
                    return owner
        return None

    def holder(self, data: Future, workers: Workers) -> Owner | None:
        """A worker holding the result of ``data`` (None while it is being computed)."""
        for address in sorted(self.client.who_has([data]).get(data.key, ())):
            owner = workers.at(address)
            if owner is not None:
                return owner
        return None

    def locate(self, keys: Sequence[str]) -> dict[str, tuple[Owner, str]]:
        """Ask every worker: the worker keeping each key (a file, else a directory) and which."""
        found: dict[str, tuple[Owner, str]] = {}
        answers = run_everywhere(self.client, probe_kinds, self.backend, list(keys))
        for _, (owner, kinds) in sorted(answers.items()):
            for key, kind in kinds.items():
                if kind is not None and (key not in found or (kind == "file" and found[key][1] != "file")):
                    found[key] = (owner, kind)
        with self._lock:
            for key, (owner, kind) in found.items():
                if kind == "file":
                    self._record(key, owner)
        return found

    def kinds(self, key: str) -> list[str | None]:
        """What each worker has at ``key``: ``"file"``, ``"dir"`` or None."""
        return [kinds[key] for _, kinds in run_everywhere(self.client, probe_kinds, self.backend, [key]).values()]

    def listing(self, method: str, path: Any, options: dict[str, Any]) -> list[str]:
        """``list_files`` or ``list_dir`` of ``path``: the union over the workers that have it."""
        reached = run_everywhere(self.client, probe_listing, self.backend, method, path, options)
        answers = [outcome for _, outcome in reached.values()]
        listed = [outcome.value for outcome in answers if outcome.error is None]
        if listed:
            return sort_names(set().union(*listed), options.get("sort", "lexicographic"))
        errors = [outcome.error for outcome in answers]
        for error in errors:
            if isinstance(error, NotADirectoryError):
                raise error
        if errors:
            raise errors[0]
        raise FileNotFoundError(
            errno.ENOENT, f"{self.backend} backend: no worker keeps a directory at this path", str(path)
        )

    def stat(self, key: str, path: str) -> dict[str, Any]:
        """The stat of ``key``: from its owner, else from any worker that has it.

        Raises ``FileNotFoundError`` naming the owner if it has left and no
        other worker has the path.
        """
        answers = [answer for _, answer in sorted(run_everywhere(self.client, probe_stat, self.backend, key).items())]
        owner = self.get(key)
        owner_alive = owner is not None and any(here == owner for here, _ in answers)
        for here, kept in answers:
            if owner is not None and here == owner and kept is not None:
                return kept
        found = [stat for _, stat in answers if stat is not None]
        for kind in ("file", "directory"):
            for stat in found:
                if stat["type"] == kind:
                    return stat
        if owner is not None and not owner_alive:
            raise lost_error(self.backend, path, self.keeper(key) or owner)
        raise FileNotFoundError(errno.ENOENT, f"{self.backend} backend: no worker keeps anything at this path", path)


def _ancestors(key: str) -> Iterable[str]:
    """The directories above ``key``: a memory key (``a/b``: ``a``, then ``""``) or a path (``/a/b``: ``/a``, ``/``)."""
    while key:
        parent = posixpath.dirname(key)
        if parent == key:
            return
        yield parent
        key = parent
