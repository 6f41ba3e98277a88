"""Where the tasks of a backend run: one placement policy per locality.

:class:`DaskFileManager` keeps one :class:`Placement` per backend it has
used, chosen by the ``locality`` that backend's class declares on the
workers: :class:`~polystore_dask.shared.SharedPlacement` for ``"shared"``
(any worker sees the data),
:class:`~polystore_dask.per_process.ProcessPlacement` for ``"process"``
(the data lives in the worker process that wrote it) and
:class:`~polystore_dask.per_host.HostPlacement` for ``"host"`` (on the
host that wrote it). All submit every
task through the manager's :class:`~polystore_dask.ordering.OrderedTasks`,
so every operation on one path keeps one order.
"""

from __future__ import annotations

import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from distributed import Future

from polystore.backend import PathLike, check_batch_paths
from polystore_dask.batching import group_items, items_per_task, must_ship
from polystore_dask.ordering import OrderedTasks
from polystore_dask.plugin import check_replicas
from polystore_dask.shipping import Shipment, Shipments, ShippedPart, take_shipped, take_shipped_item
from polystore_dask.tasks import call, check_items, hold, join_batches, settle
from polystore_dask.traits import BackendTraits, PathKey
from polystore_dask.workers import Keeper, Owner, Workers

if TYPE_CHECKING:
    import dask.array
    from dask.delayed import Delayed

__all__ = ["ArrayOptions", "BatchPart", "Placement"]

#: The options of ``save_array``: chunks, shards, compressor, overwrite, compute, resume, dimension_names, attributes.
ArrayOptions = dict[str, Any]


class BatchPart(NamedTuple):
    """The items of a batch that one task saves: their positions, their data, and where it runs."""

    positions: list[int]
    #: The items (each inline, a Future, or shipped alone), or the items shipped together.
    items: list[Any] | Shipment
    pin: list[str] | None
    owner: Owner | None


class Placement(ABC):
    """How the operations on one backend are placed on the workers.

    Each method has the meaning and signature of the
    :class:`~polystore_dask.DaskFileManager` method of the same name, without
    the backend argument.
    """

    #: Whether paths of this backend can be held by several workers (``replicas=k``).
    replicates = False

    def __init__(self, traits: BackendTraits, tasks: OrderedTasks) -> None:
        self.traits = traits
        self.tasks = tasks
        self.client = tasks.client

    @property
    def name(self) -> str:
        return self.traits.name

    @staticmethod
    def origin() -> str:
        """The client's working directory, which relative paths without a root are taken from."""
        return os.getcwd()

    def key(self, path: PathLike) -> PathKey:
        """The identity of ``path`` in the ordering (and, per process, in the table of owners)."""
        return self.traits.key(path, self.origin())

    def keys(self, paths: Sequence[PathLike]) -> list[PathKey]:
        """:meth:`key` of each of ``paths``, all taken from one working directory."""
        origin = self.origin()
        return [self.traits.key(path, origin) for path in paths]

    def submit_batch(
        self, parts: list[BatchPart], paths: Sequence[PathLike], keys: Sequence[PathKey], options: dict[str, Any]
    ) -> Future:
        """Save a batch split into ``parts``: every item or none, each part's items saved where the part runs.

        With several parts, each first checks its items where it will save
        them (``check_save``, on a task holding the part's data), and no part
        saves anything unless every check passed, so a bad item anywhere
        stops the whole batch before anything is written.
        """
        token = uuid.uuid4().hex
        saves, checks, held = self.submit_parts(token, parts, paths, keys, options)
        return self.tasks.keep(self.tasks.submit(f"polystore-save_batch-{token}", settle, saves), saves, checks, held)

    def submit_parts(
        self,
        token: str,
        parts: list[BatchPart],
        paths: Sequence[PathLike],
        keys: Sequence[PathKey],
        options: dict[str, Any],
        replicas: bool = False,
    ) -> tuple[list[Future], list[Future], list[Any]]:
        """The tasks of :meth:`submit_batch`: each part's save, the checks they wait for, and their data.

        With ``replicas``, parts with the same positions are replicas of the
        same items: they are written side by side, and a replica whose holder
        is gone does not stop the others.
        """
        check_batch_paths([key[1] for key in keys], paths, self.name, bool(options.get("overwrite")))
        origin = self.origin()
        held = [self._data_of(token, index, part, shared=len(parts) > 1) for index, part in enumerate(parts)]
        checks: list[Future] = []
        if len(parts) > 1:
            checks = [
                self.tasks.submit(
                    f"polystore-save_batch-check-{token}-{index}", check_items, self.name, data,
                    [paths[position] for position in part.positions], options, origin=origin, owner=part.owner,
                    pin=part.pin,
                )
                for index, (part, data) in enumerate(zip(parts, held, strict=True))
            ]
        saves = []
        # The replicas of the same items are parts with the same positions: they are written side by
        # side (each follows what came before the first of them), other parts one after another.
        afters: dict[tuple[int, ...], list[Future]] = {}
        for index, (part, data) in enumerate(zip(parts, held, strict=True)):
            writes = [keys[position] for position in part.positions]
            after = afters.setdefault(tuple(part.positions), self.tasks.after(writes=writes))
            save = self.tasks.submit(
                f"polystore-save_batch-run-{token}-{index}", call, self.name, "save_batch",
                (data, [paths[position] for position in part.positions]), options,
                path_args=(1,), origin=origin, owner=part.owner, checks=checks, after=after, pin=part.pin,
                replicas=replicas,
            )
            self.tasks.record(save, writes=writes)
            saves.append(save)
        return saves, checks, held

    def _data_of(self, token: str, index: int, part: BatchPart, *, shared: bool) -> Any:
        """What a part's check and save take as its items: a Future of them, or the items inline.

        A shipped part (or item) is taken out of its worker's memory by a task
        of its own, whose result distributed computes again if it is lost
        (see :mod:`polystore_dask.shipping`); inline items that both a check
        and the save use (``shared``) go into the graph once, in a task whose
        result they share.
        """
        key = f"polystore-save_batch-data-{token}-{index}"
        if isinstance(part.items, Shipment):
            return self._taken(key, part.items, part.pin, take_shipped)
        items = [
            self._taken(f"{key}-{position}", item, part.pin, take_shipped_item) if isinstance(item, Shipment) else item
            for position, item in enumerate(part.items)
        ]
        return self.tasks.submit(key, hold, items, pin=part.pin) if shared else items

    def shipped(self, data: Any, pin: list[str] | None) -> Any:
        """What the save of one item takes as its data: ``data`` itself, or a task taking it where it was shipped.

        An item that :func:`~polystore_dask.batching.must_ship` is shipped
        straight to the first of ``pin`` (see :mod:`polystore_dask.shipping`).
        """
        if isinstance(data, Future) or not must_ship(data):
            return data
        (shipment,) = Shipments.of(self.client).ship([[data]], [pin[0] if pin else None])
        return self._taken(f"polystore-save-data-{uuid.uuid4().hex}", shipment, pin, take_shipped_item)

    def _taken(self, key: str, shipment: Shipment, pin: list[str] | None, take: Callable[[ShippedPart], Any]) -> Future:
        """The task taking ``shipment`` on the worker it went to, kept by the client until that task is released."""
        taken = self.tasks.submit(key, take, shipment.part, pin=[shipment.address] if shipment.address else pin)
        Shipments.of(self.client).keep(taken, shipment)
        return taken

    def submit_loads(
        self,
        owners: Sequence[Keeper | None],
        paths: Sequence[PathLike],
        keys: Sequence[PathKey],
        options: dict[str, Any],
        workers: Workers,
    ) -> Future:
        """Load a batch in a few tasks, grouped by ``owners`` (the worker that must read each path, or None)."""
        groups = group_items(list(owners), items_per_task(len(keys), len(workers)), [0] * len(keys))
        token = uuid.uuid4().hex
        parts, positions = [], []
        for part, (owner, where) in enumerate(groups):
            parts.append(
                self.tasks.start(
                    f"polystore-load_batch-run-{token}-{part}", call, self.name, "load_batch",
                    ([paths[index] for index in where],), options, path_args=(0,), origin=self.origin(),
                    owner=owner, reads=[keys[index] for index in where], pin=workers.pin(owner),
                )
            )
            positions.append(where)
        return self.tasks.submit(f"polystore-load_batch-{token}", join_batches, parts, positions, len(keys))

    # -- writing ---------------------------------------------------------
    @abstractmethod
    def save(self, data: Any, path: PathLike, options: dict[str, Any]) -> Future: ...

    @abstractmethod
    def save_batch(self, data_list: Sequence[Any], paths: Sequence[PathLike], options: dict[str, Any]) -> Future: ...

    @abstractmethod
    def ensure_directory(self, path: PathLike) -> Future: ...

    @abstractmethod
    def delete(self, path: PathLike, recursive: bool) -> Future: ...

    @abstractmethod
    def transfer(
        self, operation: str, src: PathLike, dst: PathLike, overwrite: bool, recursive: bool,
        replicas: int | None = None,
    ) -> Future:
        """``copy`` or ``move`` (``operation``) of ``src`` to ``dst``; ``recursive`` copies a directory tree.

        ``replicas``: how many workers hold ``dst`` (None: as ``src``, or the backend's default).
        """

    def check_replicas(self, replicas: int | None) -> None:
        """Refuse ``replicas`` above 1 where paths are not kept per process or per host."""
        if replicas is None:
            return
        replicas = check_replicas(replicas, self.name)
        if replicas > 1 and not self.replicates:
            raise ValueError(
                f"{self.name} backend: replicas={replicas} applies only to backends whose data lives in a worker "
                f"process or on a host (locality 'process' or 'host', e.g. 'memory' or 'scratch'); "
                f"{self.traits.type_name} declares locality {self.traits.locality!r}: every worker sees its data "
                "already, and it outlives any worker. Leave replicas out for it"
            )

    # -- reading ---------------------------------------------------------
    @abstractmethod
    def load(self, path: PathLike, options: dict[str, Any]) -> Future: ...

    @abstractmethod
    def load_batch(self, paths: Sequence[PathLike], options: dict[str, Any]) -> Future: ...

    @abstractmethod
    def query(self, method: str, path: PathLike, options: dict[str, Any]) -> Any:
        """Answer ``exists``, ``is_file``, ``is_dir``, ``list_files``, ``list_dir`` or ``stat`` (``method``)."""

    # -- arrays ----------------------------------------------------------
    @abstractmethod
    def save_array(self, x: dask.array.Array, path: PathLike, options: ArrayOptions) -> Delayed | None: ...

    @abstractmethod
    def load_array(self, path: PathLike, chunks: Any) -> dask.array.Array: ...
