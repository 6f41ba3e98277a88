"""The write tasks of ``save_array`` to a backend that stores arrays by region, planned on the client.

Each write task computes a group of neighbouring blocks of ``x`` and writes
them into the array as one region: the tasks that compute the blocks (after
dask's own optimisation of ``x``, which fuses its Blockwise layers) are
inlined into the task that writes them, so a block never leaves the task
that made it and a small block costs no task of its own. A task costs about
1.5 ms of scheduling here, as much as writing a 256 KiB chunk: blocks
smaller than the group size (:data:`GROUP_BYTES_CONFIG`) are written
several to a task, one region write (and one commit record) per group.

Blocks whose tasks cannot be inlined (blocks held by futures, blocks other
tasks use as well) are written one per task, by a task that depends on
them, on the worker that holds them.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dask
import dask.array as da
from dask._task_spec import convert_legacy_graph
from dask.task_spec import Alias, GraphNode, Task, TaskRef

from polystore.backend import PathLike
from polystore_dask.array_tasks import write_blocks

__all__ = ["DEFAULT_GROUP_BYTES", "GROUP_BYTES_CONFIG", "blocks_of", "plan_writes"]

#: The dask config key of the bytes of blocks one write task may hold (0 writes each block on its own).
GROUP_BYTES_CONFIG = "polystore.save-array.group-bytes"
#: Its default: 16 blocks of 256 KiB to a task, a block of 4 MiB or more on its own (measured on 2 cores).
DEFAULT_GROUP_BYTES = 4 * 2**20

Block = tuple[tuple[int, ...], tuple[slice, ...]]


def plan_writes(
    x: da.Array, skip: Callable[[tuple[slice, ...]], bool], backend: str, path: PathLike, origin: str, name: str
) -> tuple[dict[Any, GraphNode], list[Any]]:
    """The graph that computes and writes ``x`` (its blocks aligned to whole chunks), and its write keys.

    Blocks whose region ``skip`` is true for (written by the run being
    resumed) are culled: they are never computed. Each write key is
    ``(name, *index)`` with the index of the first block it writes.
    """
    blocks = [block for block in blocks_of(x.chunks) if not skip(block[1])]
    wanted = [(x.name, *index) for index, _ in blocks]
    # (dask's optimisation gives task objects; with its fusion turned off, legacy tuples may remain.)
    graph = convert_legacy_graph(dict(x.__dask_optimize__(x.__dask_graph__(), wanted)))
    inlined = _inlineable(graph, wanted)
    budget = dask.config.get(GROUP_BYTES_CONFIG, DEFAULT_GROUP_BYTES)
    side = _group_side(x, budget) if len(inlined) == len(wanted) else (1,) * x.ndim
    kept = {index for index, _ in blocks}
    writes = []
    for members in _groups(x.chunks, side):
        todo = [block for block in members if block[0] in kept]
        # A group is written whole or, when the resumed run wrote part of it, block by block.
        for part in [todo] if len(todo) == len(members) else [[block] for block in todo]:
            key: Any = (name, *part[0][0])
            block_keys = [(x.name, *index) for index, _ in part]
            write = Task(
                key, write_blocks, [region for _, region in part], backend, path, origin,
                *(TaskRef(block_key) for block_key in block_keys),
            )
            pieces = [inlined[block_key] for block_key in block_keys if block_key in inlined]
            graph[key] = Task.fuse(*pieces, write, key=key) if pieces else write
            writes.append(key)
    for block_key in inlined:
        alias = graph.pop(block_key)
        if isinstance(alias, Alias):
            graph.pop(alias.target)
    return graph, writes


def _inlineable(graph: dict[Any, GraphNode], keys: Sequence[Any]) -> dict[Any, GraphNode]:
    """The tasks of ``keys`` a write task can run itself: in ``graph``, used by no other task, fusable.

    Linear fusion leaves an ``Alias`` at a block's key pointing to the
    fused task: that task is taken, under the block's key.
    """
    used = Counter(dependency for node in graph.values() for dependency in node.dependencies)
    found = {}
    for key in keys:
        node = graph.get(key)
        if isinstance(node, Alias):
            target = graph.get(node.target)
            if target is None or used[node.target] != 1:
                continue
            node = target.substitute({}, key=key)
        if node is None or used[key] or node.block_fusion:
            continue
        found[key] = node
    return found


def _group_side(x: da.Array, budget: int) -> tuple[int, ...]:
    """How many blocks a group spans along each axis: as many as ``budget`` bytes hold, last axes first."""
    block_bytes = x.dtype.itemsize * math.prod(max(sizes, default=0) for sizes in x.chunks)
    counts = [len(sizes) for sizes in x.chunks]
    side = [1] * x.ndim
    grown = True
    while grown:
        grown = False
        for axis in reversed(range(x.ndim)):
            wider = min(2 * side[axis], counts[axis])
            if wider > side[axis] and block_bytes * math.prod(side) // side[axis] * wider <= budget:
                side[axis] = wider
                grown = True
    return tuple(side)


def _groups(chunks: Sequence[Sequence[int]], side: Sequence[int]) -> Iterator[list[Block]]:
    """The blocks of each group of ``side`` blocks per axis (fewer at the array's far edges), in C order."""
    counts = [len(sizes) for sizes in chunks]
    by_index = dict(blocks_of(chunks))
    starts = [range(0, count, step) for count, step in zip(counts, side, strict=True)]
    for corner in itertools.product(*starts):
        spans = [
            range(start, min(start + step, count)) for start, step, count in zip(corner, side, counts, strict=True)
        ]
        yield [(index, by_index[index]) for index in itertools.product(*spans)]


def blocks_of(chunks: Sequence[Sequence[int]]) -> list[Block]:
    """Each block's index and region, for chunk sizes as in ``dask.array.Array.chunks``."""
    starts = [[0, *itertools.accumulate(sizes)] for sizes in chunks]
    return [
        (index, tuple(slice(starts[axis][i], starts[axis][i + 1]) for axis, i in enumerate(index)))
        for index in itertools.product(*(range(len(sizes)) for sizes in chunks))
    ]
