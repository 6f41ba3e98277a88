"""Batch parts shipped once from the client to the worker that saves them, and shipped again if it is lost.

The client scatters every part straight to its worker, all workers at
once, and keeps a reference to the part's items (the caller's own objects,
not a copy). On that worker a small task takes the part out of the
worker's memory (:func:`take_shipped`), and the part's check and save read
its result: distributed computes that result again if it is lost with its
worker, like any other. Run anywhere the part is not (its worker died
before the part was taken, or the result was lost with it), the task asks
the client for the part, and the client sends it again to where the task
runs; at most :data:`RESENDS` times per part, and the task waits at most
:data:`RESEND_SECONDS` for it. A part that cannot come again makes the save
fail, naming its paths (:func:`~polystore_dask.errors.lost_shipment_error`),
and never stops later operations.

So shipped data has one copy on the workers, where the client used to keep
a second with ``client.replicate`` (64 MB more over loopback and an extra
round trip before the first save could start).
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from distributed import Client, Future, get_worker

__all__ = [
    "RESENDS",
    "RESEND_SECONDS",
    "SHIPPED_PREFIX",
    "Items",
    "Refusal",
    "Shipment",
    "Shipments",
    "ShippedPart",
    "changed_by_pickle",
    "take_shipped",
    "take_shipped_item",
]

#: How many times the client sends one part again after the workers it was sent to were lost.
RESENDS = 3

#: How long a task waits for the client to send its part again.
RESEND_SECONDS = 60.0

#: How the keys of data shipped from the client to the workers begin.
SHIPPED_PREFIX = "polystore-data-"


class ShippedPart(NamedTuple):
    """What a worker task needs to find a shipped part: its key, and the client's topic to ask for it again."""

    key: str
    topic: str


class Refusal(NamedTuple):
    """Sent instead of a part the client cannot send again: why not."""

    reason: str


class Items:
    """A part's items as they travel: one object, pickled whole.

    distributed serialises a list item by item, each with a header of its
    own; one object pickled whole (each array's buffer still out of band)
    shipped 250 arrays of 64 KiB about 1.4x faster here. Parts with an array
    that pickling would change (:func:`changed_by_pickle`) travel as lists.
    """

    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __reduce__(self) -> tuple[type[Items], tuple[list[Any]]]:
        return Items, (self.items,)


def changed_by_pickle(data: Any) -> bool:
    """Whether pickling changes ``data``: numpy's pickle turns a big-endian datetime or timedelta array little-endian.

    distributed's own array serialization, which the items of a list
    travel by, keeps the dtype exactly.
    """
    return isinstance(data, np.ndarray) and data.dtype.kind in "mM" and not data.dtype.isnative


def _travelling(items: list[Any]) -> Any:
    return items if any(map(changed_by_pickle, items)) else Items(items)


class Shipment:
    """The client's side of one shipped part: its items, and the futures holding its copies on the workers."""

    def __init__(self, part: ShippedPart, items: list[Any], address: str | None) -> None:
        self.part = part
        self.items = items
        #: The worker the part was first sent to (None: any worker distributed chose).
        self.address = address
        self.resent = 0
        self.copies: list[Future] = []

    def release(self) -> None:
        """Let the workers drop the part's scattered copies (once its task has taken one)."""
        self.copies.clear()


class Shipments:
    """The parts one client has shipped, for as long as the operations saving them are held."""

    def __init__(self, client: Client) -> None:
        # Weakly: the registry of shipments by client would otherwise keep every client alive.
        self._client = weakref.ref(client)
        self.topic = f"polystore-resend-{client.id}"
        self._known: weakref.WeakValueDictionary[str, Shipment] = weakref.WeakValueDictionary()
        self._kept: weakref.WeakKeyDictionary[Future, list[Shipment]] = weakref.WeakKeyDictionary()
        #: Refusals sent, each kept for a while so that the task asking reads it before the scheduler drops it.
        self._refusals: set[Future] = set()
        client.subscribe_topic(self.topic, self._resend)

    @property
    def client(self) -> Client:
        client = self._client()
        if client is None:
            raise RuntimeError("polystore: the client that shipped these parts is gone")
        return client

    @classmethod
    def of(cls, client: Client) -> Shipments:
        """The shipments of ``client`` (made, and subscribed to its topic, on first use)."""
        found = _BY_CLIENT.get(client)
        if found is None:
            found = _BY_CLIENT[client] = cls(client)
        return found

    def ship(self, parts: Sequence[list[Any]], addresses: Sequence[str | None]) -> list[Shipment]:
        """Scatter each part to its worker (``addresses``), every worker's parts at once; one copy each.

        A worker that went away under the send gets nothing: the part's
        task then runs elsewhere and asks for the part there.
        """
        shipments = [
            Shipment(ShippedPart(f"{SHIPPED_PREFIX}{uuid.uuid4().hex}", self.topic), items, address)
            for items, address in zip(parts, addresses, strict=True)
        ]
        for shipment in shipments:
            self._known[shipment.part.key] = shipment
        by_address: dict[str | None, list[Shipment]] = {}
        for shipment in shipments:
            by_address.setdefault(shipment.address, []).append(shipment)
        direct = self.client.direct_to_workers is not False

        async def send(address: str | None, group: list[Shipment]) -> None:
            try:
                futures = await self.client.scatter(
                    {shipment.part.key: _travelling(shipment.items) for shipment in group},
                    workers=None if address is None else [address], hash=False, direct=direct, asynchronous=True,
                )
            except OSError:
                return
            for shipment in group:
                shipment.copies.append(futures[shipment.part.key])

        async def send_all() -> None:
            await asyncio.gather(*(send(address, group) for address, group in by_address.items()))

        self.client.sync(send_all)
        return shipments

    def keep(self, taken: Future, shipment: Shipment) -> None:
        """Keep ``shipment`` for as long as ``taken`` (the task taking it) is held; drop its copies once taken."""
        self._kept.setdefault(taken, []).append(shipment)
        taken.add_done_callback(lambda _: shipment.release())

    async def _resend(self, event: tuple[float, Any]) -> None:
        """Send a part again to the worker asking for it (a request from :func:`take_shipped`)."""
        _, request = event
        shipment = self._known.get(request["key"])
        data: Any
        if shipment is None:
            data = Refusal("the client no longer holds it (the operation saving it was released)")
        elif shipment.resent >= RESENDS:
            data = Refusal(f"it was sent again {RESENDS} times already, and each time its worker was lost")
        else:
            shipment.resent += 1
            data = _travelling(shipment.items)
        try:
            futures = await self.client.scatter(
                {request["as"]: data}, workers=[request["to"]], hash=False,
                direct=self.client.direct_to_workers is not False, asynchronous=True,
            )
        except OSError:
            return  # the asking worker is gone too: its task runs elsewhere and asks again
        (future,) = futures.values()
        if shipment is None or isinstance(data, Refusal):
            self._refusals.add(future)
            asyncio.get_running_loop().call_later(RESEND_SECONDS, self._refusals.discard, future)
        else:
            shipment.copies.append(future)


_BY_CLIENT: weakref.WeakKeyDictionary[Client, Shipments] = weakref.WeakKeyDictionary()


def take_shipped(part: ShippedPart) -> Any:
    """The task taking a shipped part on a worker: its items, or a :class:`Refusal` saying why they are lost.

    Where the part is not in this worker's memory, asks the client to send
    it here and waits for it (at most :data:`RESEND_SECONDS`).
    """
    try:
        worker = get_worker()
        try:
            return _arrived(worker.data[part.key])
        except KeyError:
            pass
        request = f"{part.key}-again-{uuid.uuid4().hex}"
        worker.log_event(part.topic, {"key": part.key, "to": worker.address, "as": request})
        deadline = time.monotonic() + RESEND_SECONDS
        while time.monotonic() < deadline:
            try:
                return _arrived(worker.data[request])
            except KeyError:
                time.sleep(0.01)
        return Refusal(f"the client did not send it again within {RESEND_SECONDS:g} s")
    except Exception as error:  # a failed task would fail every later operation on its paths
        return Refusal(f"taking it failed: {type(error).__name__}: {error}")


def take_shipped_item(part: ShippedPart) -> Any:
    """:func:`take_shipped` of a part of one item: the item, or the :class:`Refusal`."""
    taken = take_shipped(part)
    return taken if isinstance(taken, Refusal) else taken[0]


def _arrived(data: Any) -> Any:
    return data.items if isinstance(data, Items) else data
