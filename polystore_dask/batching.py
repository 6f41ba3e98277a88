"""How data travels to the workers: batch items grouped into tasks, and large inline data shipped."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any, TypeVar

import numpy as np
from distributed import Client, Future

from polystore_dask.shipping import Shipment, Shipments, changed_by_pickle

__all__ = [
    "BATCH_BYTES",
    "group_items",
    "holders",
    "holders_of",
    "items_per_task",
    "must_ship",
    "nbytes",
    "ship_parts",
]

#: At most this much inline data goes into one batch task.
BATCH_BYTES = 64 << 20

#: An inline item at least this big is shipped to its worker rather than
#: embedded in the task graph (which distributed warns about from 10 MiB).
SHIP_BYTES = 8 << 20

#: A batch part at least this big on the wire is shipped, straight to its worker: the task
#: graph then stays small, and the scheduler never holds (or unpickles) the data.
PART_SHIP_BYTES = 1 << 20

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


def must_ship(data: Any) -> bool:
    """Whether ``data``, an item given inline, travels shipped rather than in the task graph.

    It does when it is large, or when pickling would change it: numpy's
    pickle turns a big-endian datetime or timedelta array little-endian,
    while distributed's own array serialization, which shipped data travels
    by, keeps the dtype exactly.
    """
    return nbytes(data) >= SHIP_BYTES or changed_by_pickle(data)


def ship_parts(
    client: Client, parts: Sequence[list[Any]], pins: Sequence[list[str] | None]
) -> list[list[Any] | Shipment]:
    """Ship the items of each batch part to the worker that will save them, all parts at once.

    Returns, for each part, a :class:`~polystore_dask.shipping.Shipment`: the
    part shipped once, straight from the client to the first of its ``pins``
    (unless the client was made with ``direct_to_workers=False``), every
    worker's parts at the same time, and shipped again from the client
    should that copy be lost before the part is saved (see
    :mod:`polystore_dask.shipping`); or, for a small part, its items, which
    travel inline. A part with items that are Futures keeps them, and ships
    each of its inline items on its own (a Shipment in the list) that
    :func:`must_ship`, or all of them once they add up to
    :data:`SHIP_BYTES`.
    """
    sending: list[list[Any]] = []
    addresses: list[str | None] = []
    whole: dict[int, int] = {}  # part -> its shipment (an index in sending)
    alone: dict[tuple[int, int], int] = {}  # (part, position in it) -> the item's own shipment
    for index, items in enumerate(parts):
        address = pin[0] if (pin := pins[index]) else None
        if any(isinstance(item, Future) for item in items):
            # Its inline items stay out of the graph once they add up to SHIP_BYTES, as a single one does.
            heavy = sum(nbytes(item) for item in items if not isinstance(item, Future)) >= SHIP_BYTES
            for position, item in enumerate(items):
                if not isinstance(item, Future) and (must_ship(item) or (heavy and nbytes(item))):
                    alone[index, position] = len(sending)
                    sending.append([item])
                    addresses.append(address)
        elif sum(map(nbytes, items)) + ITEM_OVERHEAD * len(items) >= PART_SHIP_BYTES or any(
            map(changed_by_pickle, items)
        ):
            whole[index] = len(sending)
            sending.append(items)
            addresses.append(address)
    shipments = Shipments.of(client).ship(sending, addresses) if sending else []
    return [
        shipments[whole[index]] if index in whole else [
            shipments[alone[index, position]] if (index, position) in alone else item
            for position, item in enumerate(items)
        ]
        for index, items in enumerate(parts)
    ]
