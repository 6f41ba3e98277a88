"""Placement for ``locality = "shared"`` backends: every worker sees the same data, so any worker may run a task."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from distributed import Future

from polystore.backend import PathLike
from polystore_dask import array_graphs
from polystore_dask.batching import group_items, holders, holders_of, items_per_task, must_ship, nbytes, ship_parts
from polystore_dask.placement import ArrayOptions, BatchPart, Placement
from polystore_dask.tasks import call
from polystore_dask.workers import Workers

if TYPE_CHECKING:
    import dask.array
    from dask.delayed import Delayed

    from polystore_dask.ordering import OrderedTasks
    from polystore_dask.traits import BackendTraits

__all__ = ["SharedPlacement"]


class SharedPlacement(Placement):
    """Tasks run on any worker, or where their data (a Future) already is."""

    def __init__(self, traits: BackendTraits, tasks: OrderedTasks) -> None:
        super().__init__(traits, tasks)
        self._turns = itertools.count()

    def save(self, data: Any, path: PathLike, options: dict[str, Any]) -> Future:
        pin = holders(self.client, data)
        if pin is None and must_ship(data):
            # Large data from the client goes to the next worker in turn, and is saved there.
            running = Workers(self.client).running()
            pin = [running[next(self._turns) % len(running)].address] if running else None
        return self.tasks.run(
            "save", call, self.name, "save", (self.shipped(data, pin), path), options,
            path_args=(1,), origin=self.origin(), writes=[self.key(path)], pin=pin,
        )

    def save_batch(self, data_list: Sequence[Any], paths: Sequence[PathLike], options: dict[str, Any]) -> Future:
        keys = self.keys(paths)
        workers = Workers(self.client)
        held = holders_of(self.client, data_list)
        places = [workers.at(held.get(index, "")) for index in range(len(keys))]
        groups = group_items(places, items_per_task(len(keys), len(workers)), [nbytes(data) for data in data_list])
        running = workers.running()
        pins = []
        for part, (owner, _) in enumerate(groups):
            # A part whose data is not on a worker yet goes to the next worker in turn: its
            # data, its check and its save then stay on that worker.
            place = owner or (running[part % len(running)] if running else None)
            pins.append(None if place is None else [place.address])
        shipped = ship_parts(self.client, [[data_list[index] for index in positions] for _, positions in groups], pins)
        parts = [
            BatchPart(positions, items, pin, None)
            for (_, positions), items, pin in zip(groups, shipped, pins, strict=True)
        ]
        return self.submit_batch(parts, paths, keys, options)

    def ensure_directory(self, path: PathLike) -> Future:
        return self.tasks.run(
            "ensure_directory", call, self.name, "ensure_directory", (path,), {},
            path_args=(0,), origin=self.origin(), writes=[self.key(path)],
        )

    def delete(self, path: PathLike, recursive: bool) -> Future:
        return self.tasks.run(
            "delete", call, self.name, "delete", (path,), {"recursive": recursive},
            path_args=(0,), origin=self.origin(), writes=[self.key(path)],
        )

    def transfer(
        self, operation: str, src: PathLike, dst: PathLike, overwrite: bool, recursive: bool,
        replicas: int | None = None,
    ) -> Future:
        self.check_replicas(replicas)
        source, target = self.key(src), self.key(dst)
        moving = operation == "move"
        options = {"overwrite": overwrite, **({"recursive": True} if recursive else {})}
        return self.tasks.run(
            operation, call, self.name, operation, (src, dst), options,
            path_args=(0, 1), origin=self.origin(), writes=[source, target] if moving else [target],
            reads=[] if moving else [source],
        )

    def load(self, path: PathLike, options: dict[str, Any]) -> Future:
        return self.tasks.run(
            "load", call, self.name, "load", (path,), options,
            path_args=(0,), origin=self.origin(), reads=[self.key(path)],
        )

    def load_batch(self, paths: Sequence[PathLike], options: dict[str, Any]) -> Future:
        keys = self.keys(paths)
        return self.submit_loads([None] * len(keys), paths, keys, options, Workers(self.client))

    def query(self, method: str, path: PathLike, options: dict[str, Any]) -> Any:
        outcome = self.tasks.submit(
            f"polystore-{method}-{uuid.uuid4().hex}", call, self.name, method, (path,), options,
            path_args=(0,), origin=self.origin(), after=self.tasks.after(reads=[self.key(path)]),
        )
        return outcome.result().result()

    def save_array(self, x: dask.array.Array, path: PathLike, options: ArrayOptions) -> Delayed | None:
        return array_graphs.save_by_region(self.tasks, self.traits, x, path, self.key(path), self.origin(), options)

    def load_array(self, path: PathLike, chunks: Any) -> dask.array.Array:
        return array_graphs.load_by_region(self.tasks, self.traits, path, self.key(path), self.origin(), chunks)
