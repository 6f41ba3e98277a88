"""Replicated paths of per-process and per-host backends: k holders per path, reads from any, healing after a loss.

A path saved with ``replicas=k`` is written on k distinct owners (workers,
or hosts for a per-host backend), each replica a part of the same batch
written side by side. The manager's table of owners records who holds the
path's current version; it switches to a new version once that save
finished, and counts only the holders whose write succeeded (a holder that
died meanwhile is not counted). A load runs on any live holder (the
scheduler picks the least busy of them).

Healing: a :class:`Healer` thread of the manager looks at the cluster twice
a second while replicated paths exist. When a holder has left (a worker id
that is gone: a restarted worker comes back empty, with a new id), it
copies each path that has fewer live holders than wanted from a live holder
to another running owner, in tasks of at most :data:`HEAL_PATHS_PER_TASK`
paths and at most :data:`HEAL_PATHS_PER_PASS` paths a pass, ordered with
the user's operations on those paths like any write. A copy counts only if
the path was not saved again meanwhile. No user call waits for it. With
fewer running owners than wanted, the paths keep the holders they have and
one log line says so; they are healed when owners join.
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from distributed import Future, wait

from polystore.backend import PathLike
from polystore_dask.batching import group_items, holders_of, items_per_task, nbytes, ship_parts
from polystore_dask.errors import LostPathError, lost_error
from polystore_dask.owners import Owners
from polystore_dask.placement import BatchPart
from polystore_dask.plugin import check_replicas
from polystore_dask.tasks import Outcome, call, collect, delete_after_copies, save_loaded, save_loaded_batch
from polystore_dask.traits import PathKey
from polystore_dask.workers import Holders, HostWorkers, Owner, Workers, hostnames

if TYPE_CHECKING:
    from polystore_dask.per_process import ProcessPlacement

__all__ = ["HEAL_PATHS_PER_PASS", "HEAL_PATHS_PER_TASK", "Healer", "Replication", "fill", "settle_replicas"]

logger = logging.getLogger(__name__)

#: How often (seconds) the healer looks at the cluster while replicated paths exist.
HEAL_INTERVAL = 0.5
#: At most this many paths are copied in one healing pass (the next pass takes the rest).
HEAL_PATHS_PER_PASS = 20_000
#: At most this many paths are copied by one pair of tasks (a load on the source, a save on the target).
HEAL_PATHS_PER_TASK = 2_000
#: How long (seconds) a healing pass waits for its copies before it looks again.
HEAL_WAIT = 120.0


def fill(
    live: Sequence[Owner], running: Sequence[Owner], wanted: int, host_of: Callable[[Owner], str] = str
) -> list[Owner]:
    """``live``, then running owners after the last of them in turn, until ``wanted`` distinct ones (or no more).

    Owners on a host (``host_of``) that holds none of the chosen yet come first.
    """
    chosen = list(dict.fromkeys(live))
    if not running:
        return chosen
    start = running.index(chosen[-1]) + 1 if chosen and chosen[-1] in running else 0
    in_turn = [running[(start + step) % len(running)] for step in range(len(running))]
    hosts = {host_of(owner) for owner in chosen}
    for spread in (True, False):
        for owner in in_turn:
            if len(chosen) >= wanted:
                return chosen
            if owner not in chosen and not (spread and host_of(owner) in hosts):
                chosen.append(owner)
                hosts.add(host_of(owner))
    return chosen


def settle_replicas(
    outcomes: Sequence[Outcome], positions: Sequence[Sequence[int]], paths: Sequence[str], holders: Sequence[Holders],
    backend: str, then: Sequence[Outcome] = (),
) -> None:
    """Raise the first error of a replicated save, else None; an item is saved once one of its replicas is.

    A replica lost with its worker does not fail the save; an item none of
    whose replicas was saved raises the error naming every holder. ``then``:
    the outcomes of what followed the save (a move's deletes of its source).
    """
    saved = [False] * len(paths)
    for outcome, where in zip(outcomes, positions, strict=True):
        if outcome.error is None:
            for index in where:
                saved[index] = True
        elif not isinstance(outcome.error, LostPathError):
            raise outcome.error
    lost = [index for index, done in enumerate(saved) if not done]
    if lost:
        raise lost_error(backend, paths[lost[0]], holders[lost[0]], len(lost) - 1)
    for outcome in then:
        outcome.result()


class Replication:
    """The replicated writes of one per-process or per-host placement, and the healer that keeps them whole."""

    def __init__(self, placement: ProcessPlacement) -> None:
        self.placement = placement
        self.owners: Owners = placement.owners
        self.tasks = placement.tasks
        self.client = placement.client
        self.healer = Healer(self)

    @property
    def name(self) -> str:
        return self.placement.name

    def wanted(self, key: str, requested: int | None) -> int:
        """How many holders a save of ``key`` wants: as asked, else as the path has, else the backend's default."""
        if requested is not None:
            return check_replicas(requested, self.name)
        replicated = self.owners.replicated(key)
        return replicated.wanted if replicated is not None else self.placement.traits.replicas

    def host_of(self, workers: Workers) -> Callable[[Owner], str]:
        """The host of each owner of ``workers``: replicas go to distinct hosts where there are enough."""
        if isinstance(workers, HostWorkers):
            return lambda owner: owner.host
        hosts = hostnames(self.client, workers.members)
        return lambda owner: hosts.get(owner.address, owner.address)

    def holders_for(
        self, key: str, wanted: int, workers: Workers, first: Owner | None, host_of: Callable[[Owner], str]
    ) -> tuple[Owner, ...]:
        """Who holds a new version of ``key``: its live holders (or ``first``), and more in turn up to ``wanted``."""
        replicated = self.owners.replicated(key)
        live = [] if replicated is None else workers.live(Holders(replicated.holders))
        if not live:
            live = [self.owners.live(key, workers) or first or self.owners.choose(key, workers)]
        return tuple(fill(live, workers.running(), max(wanted, len(live)), host_of))

    def save_batch(
        self, data_list: Sequence[Any], paths: Sequence[PathLike], keys: Sequence[PathKey], options: dict[str, Any],
        wanted: Sequence[int],
    ) -> Future:
        """Save each item on its holders, every replica a part of one batch: see :func:`settle_replicas`."""
        workers = self.owners.workers()
        held = holders_of(self.client, data_list)
        host_of = self.host_of(workers)
        chosen = [
            self.holders_for(key[1], count, workers, workers.at(held.get(index, "")), host_of)
            for index, (key, count) in enumerate(zip(keys, wanted, strict=True))
        ]
        short = sum(1 for holders, count in zip(chosen, wanted, strict=True) if len(holders) < count)
        if short:
            logger.warning(
                "%s backend: %d of %d paths are saved on fewer workers than the replicas asked (%d running); "
                "they are kept where they are and copied to more workers when some join",
                self.name, short, len(keys), len(workers.running()),
            )
        previous = [self.owners.replicated(key[1]) for key in keys]
        versions = [
            self.owners.set_replicas(key[1], holders, count)
            for key, holders, count in zip(keys, chosen, wanted, strict=True)
        ]
        token = uuid.uuid4().hex
        # About two tasks per worker in all, as without replicas: each part is written k times.
        per_task = items_per_task(sum(map(len, chosen)), len(workers))
        groups = group_items(chosen, per_task, [nbytes(data) for data in data_list])
        # Each replica's items travel to its own holder, every holder's at once (ship_parts), so a
        # frozen holder holds up no other replica's data.
        replicas = [(holder, positions) for holders, positions in groups for holder in holders]
        shipped = ship_parts(
            self.client, [[data_list[position] for position in positions] for _, positions in replicas],
            [workers.pin(holder) for holder, _ in replicas],
        )
        parts = [
            BatchPart(positions, items, workers.pin(holder), holder)
            for (holder, positions), items in zip(replicas, shipped, strict=True)
        ]
        saves, checks, sent = self.placement.submit_parts(token, parts, paths, keys, options, replicas=True)
        barrier = self.tasks.submit(f"polystore-save_batch-replicas-{token}", collect, saves)

        def record(done: Future) -> None:
            if done.status != "finished":
                return
            outcomes: list[Outcome] = done.result()
            written: list[list[Owner]] = [[] for _ in keys]
            refused = [False] * len(keys)
            for part, outcome in zip(parts, outcomes, strict=True):
                for index in part.positions:
                    if outcome.error is None and part.owner is not None:
                        written[index].append(part.owner)
                    elif not isinstance(outcome.error, LostPathError):
                        refused[index] = True
            for index, key in enumerate(keys):
                ok, failed = written[index], refused[index]
                old = previous[index]
                kept = [] if old is None or not failed else [holder for holder in old.holders if holder not in ok]
                if kept and old is not None:
                    # The save failed: the old version stays readable where the new one was not written.
                    self.owners.settle_replicas(key[1], versions[index], kept, old.wanted)
                else:
                    # Every replica lost with its worker: the holders stay named for the error.
                    self.owners.settle_replicas(key[1], versions[index], ok or ([] if failed else chosen[index]))
            self.healer.wake()

        barrier.add_done_callback(record)
        future = self.tasks.submit(
            f"polystore-save_batch-{token}", settle_replicas, barrier, [part.positions for part in parts],
            [str(path) for path in paths], [Holders(holders) for holders in chosen], self.name,
        )
        self.healer.wake()
        return self.tasks.keep(future, saves, checks, sent, barrier)

    def replicate(self, kept: dict[str, Owner], wanted: int) -> None:
        """Copy paths kept once (blocks of an array, by ``kept``) to ``wanted`` holders each, now."""
        for key, owner in kept.items():
            self.owners.set_replicas(key, (owner,), wanted)
        self.healer.heal(force=True)

    def copy(
        self, operation: str, src: PathLike, dst: PathLike, overwrite: bool, wanted: int, source: Any
    ) -> Future:
        """Copy (or move) ``src``, kept by ``source`` (an owner or holders), onto ``wanted`` holders of ``dst``."""
        source_key, target = self.placement.key(src), self.placement.key(dst)
        moving = operation == "move"
        workers = self.owners.workers()
        if isinstance(source, Holders):
            live = workers.live(source)
        else:
            live = [source] if source is not None and workers.alive(source) else []
        first = live[0] if live else None
        holders = self.holders_for(target[1], wanted, workers, first, self.host_of(workers))
        previous = self.owners.replicated(target[1])
        version = self.owners.set_replicas(target[1], holders, wanted)
        token = uuid.uuid4().hex
        after_source = self.tasks.after(**{"writes" if moving else "reads": [source_key]})
        loaded = self.tasks.submit(
            f"polystore-{operation}-run-{token}-load", call, self.name, "load", (src,), {},
            path_args=(0,), owner=source, after=after_source, pin=workers.pin(source),
        )
        after_target = self.tasks.after(writes=[target])
        saves = [
            self.tasks.submit(
                f"polystore-{operation}-run-{token}-save-{index}", save_loaded, loaded, self.name, str(dst), overwrite,
                holder, after=after_target, pin=workers.pin(holder),
            )
            for index, holder in enumerate(holders)
        ]
        for save in saves:
            self.tasks.record(save, writes=[target])
        barrier = self.tasks.submit(f"polystore-{operation}-run-{token}", collect, saves)
        deletes = []
        if moving:
            deletes = [
                self.tasks.submit(
                    f"polystore-{operation}-run-{token}-delete-{index}", delete_after_copies, barrier, self.name,
                    str(src), holder, pin=workers.pin(holder),
                )
                for index, holder in enumerate(live)
            ]
            for delete in deletes:
                self.tasks.record(delete, writes=[source_key])
        else:
            self.tasks.record(loaded, reads=[source_key])

        def record(done: Future) -> None:
            if done.status != "finished":
                return
            outcomes: list[Outcome] = done.result()
            ok = [holder for holder, outcome in zip(holders, outcomes, strict=True) if outcome.error is None]
            lost = all(isinstance(outcome.error, LostPathError) for outcome in outcomes)
            if ok or lost:
                self.owners.settle_replicas(target[1], version, ok or holders)
            elif previous is not None:
                self.owners.settle_replicas(target[1], version, previous.holders, previous.wanted)
            else:
                self.owners.settle_replicas(target[1], version, [])
            self.healer.wake()

        barrier.add_done_callback(record)
        future = self.tasks.submit(
            f"polystore-{operation}-{token}", settle_replicas, barrier, [[0]] * len(holders), [str(dst)],
            [Holders(holders)], self.name, deletes,
        )
        if moving:
            source_version = self.owners.replicated(source_key[1])

            def forget(done: Future) -> None:
                if done.status == "finished" and self.owners.replicated(source_key[1]) == source_version:
                    self.owners.forget(source_key[1], None)

            future.add_done_callback(forget)
        self.healer.wake()
        return self.tasks.keep(future, loaded, saves, barrier, deletes)


class Healer:
    """A thread of the manager that copies under-replicated paths back to their wanted count (see the module)."""

    def __init__(self, replication: Replication) -> None:
        self.replication = replication
        self._wake = threading.Event()
        self._lock = threading.Lock()
        #: One pass at a time (the thread's, or a save_array's own).
        self._passing = threading.Lock()
        self._thread: threading.Thread | None = None
        self._shortage = 0
        self._seen: dict[str, tuple[str, bool]] | None = None
        #: Set when paths were saved: the next pass looks at every record even if no worker left.
        self._dirty = False

    def wake(self) -> None:
        """Look at the cluster soon (starting the thread on first use)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_keep_healing, args=(weakref.ref(self), self._wake, self.replication.client),
                    name=f"polystore-healer-{self.replication.name}", daemon=True,
                )
                self._thread.start()
            self._dirty = True
        self._wake.set()


    def heal(self, force: bool = False) -> int:
        """One pass: copy under-replicated paths (at most :data:`HEAL_PATHS_PER_PASS`); return how many were copied.

        Without ``force``, only if a worker left or joined, or paths were saved, since the last pass.
        """
        with self._passing:
            return self._heal(force)

    def _heal(self, force: bool) -> int:
        replication = self.replication
        owners = replication.owners
        records = owners.replicated_paths()
        if not records:
            return 0
        workers = owners.workers()
        with self._lock:
            dirty, self._dirty = self._dirty, False
        if workers.members == self._seen and not dirty and not force:
            return 0
        self._seen = dict(workers.members)
        running = workers.running()
        host_of = replication.host_of(workers)
        plans: dict[tuple[Owner, Owner], list[tuple[str, int]]] = {}
        short = turn = planned = 0
        for key, record in records.items():
            live = workers.live(Holders(record.holders))
            if not live or len(live) >= record.wanted:
                continue
            others = [owner for owner in running if owner not in live]
            # In turn, so the copies spread over the workers; on hosts holding none yet first.
            shift = turn % len(others) if others else 0
            targets = fill(live, others[shift:] + others[:shift], record.wanted, host_of)[len(live):]
            if len(live) + len(targets) < record.wanted:
                short += 1
            for target in targets:
                plans.setdefault((live[0], target), []).append((key, record.version))
                planned += 1
            turn += 1
            if planned >= HEAL_PATHS_PER_PASS:
                break
        if short and short != self._shortage:
            logger.warning(
                "%s backend: %d replicated paths have fewer live replicas than wanted and too few workers "
                "(%d running) to copy them to; they are kept where they are and healed when workers join",
                replication.name, short, len(running),
            )
        self._shortage = short
        copies = []
        for (source, target), paths in plans.items():
            for start in range(0, len(paths), HEAL_PATHS_PER_TASK):
                chunk = paths[start:start + HEAL_PATHS_PER_TASK]
                copies.append((target, chunk, self._copy(source, target, [key for key, _ in chunk], workers)))
        if not copies:
            return 0
        wait([future for _, _, future in copies], timeout=HEAL_WAIT)
        healed = 0
        for target, chunk, future in copies:
            if future.status != "finished" or future.result().error is not None:
                self._seen = None  # look again next pass
                continue
            for key, version in chunk:
                healed += owners.add_holder(key, version, target)
        if healed:
            logger.info("%s backend: healed %d replicas", replication.name, healed)
        return healed

    def _copy(self, source: Owner, target: Owner, keys: list[str], workers: Workers) -> Future:
        """Copy ``keys`` from ``source`` to ``target``: a load there, a save here, ordered as a read and a write."""
        replication = self.replication
        tasks, name = replication.tasks, replication.name
        paths = [key or "/" for key in keys]
        path_keys = [(name, key) for key in keys]
        token = uuid.uuid4().hex
        loaded = tasks.start(
            f"polystore-heal-run-{token}-load", call, name, "load_batch", (paths,), {}, owner=source,
            reads=path_keys, pin=workers.pin(source),
        )
        # The copy is ordered as a read: it follows the writes before it, and the writes after it
        # (a delete, an overwrite) follow it, but reads of the path do not wait for it.
        return tasks.start(
            f"polystore-heal-run-{token}-save", save_loaded_batch, loaded, name, paths, target,
            reads=path_keys, pin=workers.pin(target),
        )


def _keep_healing(healer: weakref.ref[Healer], wake: threading.Event, client: Any) -> None:
    """The healer's thread: a pass when woken or every :data:`HEAL_INTERVAL`, until its manager or client is gone."""
    while client.status not in ("closing", "closed"):
        wake.wait(HEAL_INTERVAL)
        wake.clear()
        alive = healer()
        if alive is None:
            return
        try:
            alive.heal()
        except Exception as error:
            if client.status in ("closing", "closed"):
                return
            logger.warning("%s backend: a healing pass failed (%s); trying again", alive.replication.name, error)
        del alive
