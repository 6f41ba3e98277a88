"""The workers of a cluster as the manager sees them: who they are, and asking all of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from distributed import Client

__all__ = ["Owner", "Workers", "run_everywhere", "worker_ids"]


class Owner(NamedTuple):
    """One worker process: its address and its id (a restarted worker has a new id)."""

    address: str
    worker_id: str

    def __str__(self) -> str:
        return f"{self.address} (id {self.worker_id})"


def worker_ids(dask_scheduler: Any) -> dict[str, tuple[str, bool]]:
    """For ``client.run_on_scheduler``: each worker's id and whether it takes new tasks."""
    running = dask_scheduler.running
    return {address: (state.server_id, state in running) for address, state in dask_scheduler.workers.items()}


class Workers:
    """A snapshot of the cluster's workers: address -> (id, takes new tasks)."""

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

    def alive(self, owner: Owner | None) -> bool:
        """Whether ``owner``'s process is still in the cluster."""
        return owner is not None and self.members.get(owner.address, (None,))[0] == owner.worker_id

    def pin(self, owner: Owner | None) -> list[str] | None:
        """The ``workers=`` for a task of a path kept by ``owner``: its address, if it is still here.

        distributed runs a task pinned with ``allow_other_workers=True`` on
        another worker only if some worker is running when it is scheduled;
        one left in ``no-worker`` then stays there even after new workers
        join. So a task for a path whose owner has left is not pinned: it
        runs anywhere and reports the loss (see ``tasks.check_owner``).
        """
        return [owner.address] if owner is not None and self.alive(owner) else None

    def at(self, address: str) -> Owner | None:
        """The worker at ``address``, if it is in the cluster."""
        member = self.members.get(address)
        return None if member is None else Owner(address, member[0])


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
