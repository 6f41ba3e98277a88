"""How batch operations split their items into tasks."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any, TypeVar

import numpy as np

__all__ = ["BATCH_BYTES", "group_items", "items_per_task", "nbytes"]

#: At most this much inline data goes into one batch task.
BATCH_BYTES = 64 << 20

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
