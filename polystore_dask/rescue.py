"""A scheduler plugin that frees memory tasks stranded by a worker that left, and keeps pinned ones in place."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distributed.diagnostics.plugin import SchedulerPlugin

if TYPE_CHECKING:
    from dask.typing import Key
    from distributed.scheduler import Scheduler

__all__ = ["StrandedTaskRescue"]


class StrandedTaskRescue(SchedulerPlugin):
    """Let polystore tasks pinned to a worker that has left run on a worker that joins.

    Memory tasks are pinned to the worker keeping their path, with
    ``allow_other_workers=True`` so that they still run (and report the loss)
    when that worker is gone. But distributed moves such a task to another
    worker only if one is running when the task is scheduled: if the pinned
    worker died while no other worker was running (a one-worker cluster, or
    every worker restarting), the task waits in ``no-worker`` and a worker
    that joins later never takes it. This plugin lifts the pin of such
    tasks when a worker joins; the task then runs there and raises
    ``FileNotFoundError`` naming the lost worker.

    It also keeps such tasks where they are pinned while that worker is
    there: distributed's work stealing honours a loose pin only when the
    pinned worker is among the idle ones, so under load it moved a memory
    task off the busy worker that keeps its paths, and the task then
    reported them lost though nothing was.
    """

    name = "polystore-stranded-tasks"
    idempotent = True

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        # Called before the scheduler offers its no-worker tasks to the new worker.
        for task in scheduler.unrunnable:
            pinned = task.worker_restrictions
            if (
                pinned
                and task.loose_restrictions
                and str(task.key).startswith("polystore-")
                and pinned.isdisjoint(scheduler.workers)
            ):
                task.worker_restrictions = None

    def transition(self, key: Key, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish != "processing" or not str(key).startswith("polystore-") or self._scheduler is None:
            return
        task = self._scheduler.tasks.get(key)
        stealing = self._scheduler.extensions.get("stealing")
        if task is not None and task.worker_restrictions and stealing is not None:
            # Called after work stealing's own hook (registered first) offered the task.
            stealing.remove_key_from_stealable(task)

    async def start(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    _scheduler: Scheduler | None = None
