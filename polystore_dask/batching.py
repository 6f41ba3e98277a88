"""How data travels to the workers: batch items grouped into tasks, and large inline data scattered."""

from __future__ import annotations

import math
import uuid
from collections.abc import Hashable, Sequence
from typing import Any, TypeVar

import numpy as np
from distributed import Client, Future

from polystore_dask.shipping import SHIPPED_PREFIX, Shipment, Shipments, changed_by_pickle

__all__ = [
    "BATCH_BYTES",
    "SHIPPED_PREFIX",
    "group_items",
    "holders",
    "holders_of",
    "items_per_task",
    "nbytes",
    "ship",
    "ship_parts",
]

#: At most this much inline data goes into one batch task.
BATCH_BYTES = 64 << 20

#: Inline data at least this big is scattered to its worker rather than
#: embedded in the task graph (which distributed warns about from 10 MiB).
SCATTER_BYTES = 8 << 20

#: A batch part at least this big on the wire travels scattered, straight to its worker: the task
#: graph then stays small, and the scheduler never holds (or unpickles) the data.
PART_SCATTER_BYTES = 1 << 20

#: What one small item adds to its part when serialised, beyond its bytes (a numpy array's header
#: and pickle framing): a part of many tiny items is big on the wire though its data is not.
ITEM_OVERHEAD = 128

Place = TypeVar("Place", bound=Hashable)


def nbytes(data: Any) -> int:
    """The bytes ``data`` adds to a task graph when sent inline (0 for anything else, e.g. a Future)."""
    if isinstance(data, np.ndarray):
        return int(data.nbytes)
    if isinstance(data, (bytes, bytearray, str)):
        return len(data)
    return 0


def items_per_task(count: int, workers: int) -> int:
    """About two tasks per worker: a task costs ~10 ms to schedule, a small item ~0.1 ms to store."""
    return max(1, math.ceil(count / (2 * max(1, workers))))


def group_items(places: Sequence[Place], per_task: int, sizes: Sequence[int]) -> list[tuple[Place, list[int]]]:
    """Group item positions by where they must run, in chunks of at most ``per_task`` items and :data:`BATCH_BYTES`.

    Groups come in the order of their first item, so errors are reported in
    input order.
    """
    by_place: dict[Place, list[int]] = {}
    for index, place in enumerate(places):
        by_place.setdefault(place, []).append(index)
    groups = []
    for place, positions in by_place.items():
        chunk: list[int] = []
        size = 0
        for index in positions:
            if chunk and (len(chunk) >= per_task or size + sizes[index] > BATCH_BYTES):
                groups.append((place, chunk))
                chunk, size = [], 0
            chunk.append(index)
            size += sizes[index]
        if chunk:
            groups.append((place, chunk))
    groups.sort(key=lambda group: group[1][0])
    return groups


def holders(client: Client, data: Any) -> list[str] | None:
    """The workers holding ``data`` if it is a finished Future (its task then runs there)."""
    if not isinstance(data, Future):
        return None
    return sorted(client.who_has([data]).get(data.key, ())) or None


def holders_of(client: Client, data_list: Sequence[Any]) -> dict[int, str]:
    """For each Future item of ``data_list`` whose data exists: one worker holding it."""
    futures = {index: data for index, data in enumerate(data_list) if isinstance(data, Future)}
    if not futures:
        return {}
    who_has = client.who_has(list(futures.values()))
    return {index: sorted(who_has[future.key])[0] for index, future in futures.items() if who_has.get(future.key)}


def ship(client: Client, data: Any, pin: list[str] | None) -> Any:
    """Scatter large inline data (to the pinned worker) instead of embedding it in the graph.

    A list of items (a batch part) is scattered as one object, so a part
    costs one key however many items it has. Arrays that pickling would
    change are scattered too, whatever their size: numpy's pickle turns a
    big-endian datetime or timedelta array little-endian, while
    distributed's own array serialization, which scattered data travels by,
    keeps the dtype exactly.

    Scattered data is held by two workers where there are two: data held
    by one only dies with it, and the task saving it could then neither
    finish nor run again elsewhere (distributed cancels it, naming nothing).
    """
    if isinstance(data, list):
        if sum(map(nbytes, data)) < SCATTER_BYTES and not any(map(changed_by_pickle, data)):
            return data
        if any(isinstance(item, Future) for item in data):
            shipped = [_scatter(client, item, pin) if nbytes(item) else item for item in data]
            _replicate(client, [item for item in shipped if isinstance(item, Future)])
            return shipped
        future = _scatter(client, [data], pin)
        _replicate(client, [future])
        return future
    if nbytes(data) < SCATTER_BYTES and not changed_by_pickle(data):
        return data
    future = _scatter(client, data, pin)
    _replicate(client, [future])
    return future


def ship_parts(
    client: Client, parts: Sequence[list[Any]], pins: Sequence[list[str] | None]
) -> list[list[Any] | Future | Shipment]:
    """Ship the items of each batch part to the worker that will save them, all parts at once.

    Returns, for each part, its items (small parts travel inline, as
    :func:`ship` decides), or a :class:`~polystore_dask.shipping.Shipment`:
    the part scattered once, straight from the client to the first of its
    ``pins`` (unless the client was made with ``direct_to_workers=False``),
    every worker's parts at the same time, and shipped again from the
    client should that copy be lost before the part is saved (see
    :mod:`polystore_dask.shipping`). Parts with items that are Futures go
    through :func:`ship`.
    """
    shipped: list[list[Any] | Future | Shipment] = list(parts)
    scattered: list[int] = []
    for index, items in enumerate(parts):
        if any(isinstance(item, Future) for item in items):
            shipped[index] = ship(client, items, pins[index])
        elif sum(map(nbytes, items)) + ITEM_OVERHEAD * len(items) >= PART_SCATTER_BYTES or any(
            map(changed_by_pickle, items)
        ):
            scattered.append(index)
    if scattered:
        addresses = [pin[0] if (pin := pins[index]) else None for index in scattered]
        shipments = Shipments.of(client).ship([parts[index] for index in scattered], addresses)
        for index, shipment in zip(scattered, shipments, strict=True):
            shipped[index] = shipment
    return shipped


def _scatter(client: Client, data: Any, pin: list[str] | None) -> Future:
    """One future holding ``data`` (a list given as ``[items]`` becomes one object, not one per item)."""
    (future,) = _scatter_named(client, data if isinstance(data, list) else [data], workers=pin, direct=None)
    return future


def _scatter_named(client: Client, data: list[Any], *, workers: list[str] | None, direct: bool | None) -> list[Future]:
    """Scatter each of ``data`` under a key named with :data:`SHIPPED_PREFIX`.

    The name lets the scheduler plugin keep both replicas of shipped data
    (:class:`~polystore_dask.rescue.StrandedTaskRescue`): distributed's
    memory manager would otherwise drop the second one within seconds, and
    a save whose only copy died with its worker is cancelled unnamed.
    """
    named = {f"{SHIPPED_PREFIX}{uuid.uuid4().hex}": item for item in data}
    futures = client.scatter(named, workers=workers, hash=False, direct=direct)
    return [futures[key] for key in named]


def _replicate(client: Client, futures: list[Future]) -> None:
    if futures and len(client.scheduler_info(n_workers=-1)["workers"]) > 1:
        client.replicate(futures, n=2)
