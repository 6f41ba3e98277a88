"""The workers of a cluster as the manager sees them: who they are, where they run, and asking all of them."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from distributed import Client

from polystore.backend import Locality

__all__ = ["Holders", "HostWorkers", "Keeper", "Owner", "Workers", "hostnames", "run_everywhere", "worker_ids"]


class Owner(NamedTuple):
    """Where a path's data is kept: one worker process, or one host.

    Per process (``locality = "process"``): the worker's address and id (a
    restarted worker has a new id, and what the old one kept is gone). Per
    host (``locality = "host"``): only ``host`` is set, and any live worker
    on that host serves the path, a restarted one too.
    """

    address: str
    worker_id: str
    host: str = ""

    def __str__(self) -> str:
        return f"host {self.host}" if self.host else f"{self.address} (id {self.worker_id})"

    def is_here(self, worker: Any) -> bool:
        """Whether a task running on ``worker`` (a ``distributed.Worker``) runs where this owner keeps data."""
        return socket.gethostname() == self.host if self.host else bool(worker.id == self.worker_id)

    @classmethod
    def of(cls, worker: Any, locality: Locality) -> Owner:
        """The owner of what ``worker`` stores on a backend of ``locality``: itself, or its host."""
        return cls("", "", socket.gethostname()) if locality == "host" else cls(worker.address, worker.id)


class Holders(NamedTuple):
    """Where a replicated path's data is kept: every owner (worker or host) it was given to, live or not.

    A task for the path may run on any of them; the ones that have left stay
    named, so the error for a path whose last replica is lost names them all.
    """

    owners: tuple[Owner, ...]

    def __str__(self) -> str:
        return ", ".join(map(str, self.owners))

    def is_here(self, worker: Any) -> bool:
        """Whether a task running on ``worker`` runs where one of the replicas is kept."""
        return any(owner.is_here(worker) for owner in self.owners)


#: What a task of a kept path checks it runs on: one owner, or the holders of its replicas.
Keeper = Owner | Holders


def worker_ids(dask_scheduler: Any) -> dict[str, tuple[str, bool]]:
    """For ``client.run_on_scheduler``: each worker's id and whether it takes new tasks."""
    running = dask_scheduler.running
    return {address: (state.server_id, state in running) for address, state in dask_scheduler.workers.items()}


class Workers:
    """A snapshot of the cluster's workers, each worker process an owner: address -> (id, takes new tasks)."""

    def __init__(self, client: Client) -> None:
        self.members: dict[str, tuple[str, bool]] = client.run_on_scheduler(worker_ids)

    def __len__(self) -> int:
        return len(self.members)

    def owners(self) -> list[Owner]:
        """Every worker, sorted by address."""
        return [Owner(address, self.members[address][0]) for address in sorted(self.members)]

    def running(self) -> list[Owner]:
        """The workers that take new tasks (all of them if none does), sorted by address."""
        running = [owner for owner in self.owners() if self.members[owner.address][1]]
        return running or self.owners()

    def alive(self, owner: Keeper | None) -> bool:
        """Whether ``owner``'s process (one of the holders' processes) is still in the cluster."""
        if isinstance(owner, Holders):
            return any(self.alive(each) for each in owner.owners)
        return owner is not None and self.members.get(owner.address, (None,))[0] == owner.worker_id

    def live(self, holders: Holders) -> list[Owner]:
        """The holders still in the cluster, in their order."""
        return [owner for owner in holders.owners if self.alive(owner)]

    def pin(self, owner: Keeper | None) -> list[str] | None:
        """The ``workers=`` for a task of a path kept by ``owner``: its address, if it is still here.

        distributed runs a task pinned with ``allow_other_workers=True`` on
        another worker only if some worker is running when it is scheduled;
        one left in ``no-worker`` then stays there even after new workers
        join. So a task for a path whose owner has left is not pinned: it
        runs anywhere and reports the loss (see ``tasks.check_owner``).
        """
        if isinstance(owner, Holders):
            return sorted({address for each in owner.owners for address in self.pin(each) or ()}) or None
        return [owner.address] if owner is not None and self.alive(owner) else None

    def at(self, address: str) -> Owner | None:
        """The owner of what the worker at ``address`` stores, if it is in the cluster."""
        member = self.members.get(address)
        return None if member is None else Owner(address, member[0])


#: The hostname of every worker process asked so far, by worker id (ids are never reused).
_HOSTNAMES: dict[str, str] = {}
_HOSTNAMES_LOCK = threading.Lock()


def _hostname(dask_worker: Any) -> tuple[str, str]:
    return dask_worker.id, socket.gethostname()


def hostnames(client: Client, members: dict[str, tuple[str, bool]]) -> dict[str, str]:
    """The hostname of each worker of ``members`` (address -> (id, ...)) that can be reached, by address."""
    with _HOSTNAMES_LOCK:
        unknown = [address for address, (worker_id, _) in members.items() if worker_id not in _HOSTNAMES]
    if unknown:
        answers = client.run(_hostname, workers=unknown, on_error="return")
        with _HOSTNAMES_LOCK:
            for answer in answers.values():
                if isinstance(answer, tuple):
                    _HOSTNAMES[answer[0]] = answer[1]
    with _HOSTNAMES_LOCK:
        known = {address: _HOSTNAMES.get(worker_id) for address, (worker_id, _) in members.items()}
    return {address: host for address, host in known.items() if host is not None}


class HostWorkers(Workers):
    """The same snapshot by host: each owner is a host, served by any of its live workers.

    A worker's hostname is asked once (``socket.gethostname()`` on it) and
    remembered by its id; workers that cannot be reached are left out.
    """

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        #: The host of each worker.
        self.hosts: dict[str, str] = hostnames(client, self.members)
        self.members = {address: member for address, member in self.members.items() if address in self.hosts}

    def owners(self) -> list[Owner]:
        """Every host, sorted by name."""
        return [Owner("", "", host) for host in sorted(set(self.hosts.values()))]

    def running(self) -> list[Owner]:
        """The hosts with a worker that takes new tasks (all of them if none does), sorted by name."""
        running = {self.hosts[address] for address, (_, takes) in self.members.items() if takes}
        return [Owner("", "", host) for host in sorted(running)] or self.owners()

    def alive(self, owner: Keeper | None) -> bool:
        """Whether a worker runs on ``owner``'s host (on one of the holders' hosts)."""
        if isinstance(owner, Holders):
            return any(self.alive(each) for each in owner.owners)
        return owner is not None and owner.host in self.hosts.values()

    def pin(self, owner: Keeper | None) -> list[str] | None:
        """The live workers on ``owner``'s host (None if it has none left: see :meth:`Workers.pin`)."""
        if owner is None:
            return None
        if isinstance(owner, Holders):
            return sorted({address for each in owner.owners for address in self.pin(each) or ()}) or None
        return sorted(address for address, host in self.hosts.items() if host == owner.host) or None

    def at(self, address: str) -> Owner | None:
        """The host of the worker at ``address``, if it is in the cluster."""
        host = self.hosts.get(address)
        return None if host is None else Owner("", "", host)


def run_everywhere(client: Client, function: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """``client.run`` on every worker, skipping workers that cannot be reached.

    Errors raised by ``function`` itself (such as a worker without the
    plugin) are raised here.
    """
    results = client.run(function, *args, on_error="return")
    reached = {}
    for address, result in results.items():
        if isinstance(result, BaseException):
            if isinstance(result, OSError):
                continue  # the worker left while we asked
            raise result
        reached[address] = result
    return reached
