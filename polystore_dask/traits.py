"""What each backend declares, learned from the workers once per backend and kept by the manager.

The Dask layer never compares backend names: it asks a worker what the
backend class there declares (``locality``, ``supports_regions`` and its
path spelling) and routes by that. The same first look checks a promise a
``"shared"`` backend with a filesystem root makes: that every worker sees
one filesystem there (:mod:`polystore_dask.sharing`).
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from distributed import Client, get_worker

from polystore.backend import Locality, PathLike
from polystore.paths import PathSpelling
from polystore_dask.plugin import default_replicas, get_registry
from polystore_dask.sharing import Marker, check_shared, leave_marker

__all__ = ["BackendTraits", "KnownBackends", "PathKey", "describe", "learn"]

#: A path as the manager knows it: (backend name, canonical path).
PathKey = tuple[str, str]


@dataclass(frozen=True)
class BackendTraits:
    """What one backend declares, as the workers have it."""

    name: str
    locality: Locality
    supports_regions: bool
    spelling: PathSpelling
    type_name: str
    #: How many workers hold each path a save does not say ``replicas=`` for (the plugin's option).
    replicas: int = 1

    def key(self, path: PathLike, origin: str) -> PathKey:
        """The canonical identity of ``path``, the same on the client as on a worker.

        ``origin`` is the client's working directory, which relative paths of
        a filesystem backend without a root are taken from.
        """
        return self.name, self.spelling.canonical(path, base=origin, backend=self.name)


def describe(backend: str) -> BackendTraits:
    """Run on a worker: what the class of ``backend`` in its registry declares."""
    target = get_registry()[backend]
    locality = type(target).locality
    replicas = default_replicas(get_worker(), backend)
    if replicas > 1 and locality == "shared":
        raise ValueError(
            f"{backend} backend: the polystore plugin's option replicas={replicas} applies only to backends whose "
            f"data lives in a worker process or on a host (locality 'process' or 'host'); {type(target).__name__} "
            "declares locality 'shared': every worker sees its data already. Register the plugin without it"
        )
    return BackendTraits(
        name=backend,
        locality=locality,
        supports_regions=type(target).supports_regions,
        spelling=target.path_spelling,
        type_name=type(target).__name__,
        replicas=replicas,
    )


def learn(backend: str, origin: str) -> tuple[BackendTraits, Marker | None]:
    """Run on a worker: :func:`describe`, and for a shared filesystem a marker left where the others look."""
    return describe(backend), leave_marker(get_worker(), get_registry()[backend], origin)


class KnownBackends:
    """The traits of every backend one manager has used, each asked of a worker once.

    A shared filesystem backend is checked then (see
    :mod:`polystore_dask.sharing`), at its root or, without one, at the
    client's working directory, where its relative paths belong.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self._known: dict[str, BackendTraits] = {}
        self._lock = threading.Lock()

    def __getitem__(self, backend: str) -> BackendTraits:
        with self._lock:
            known = self._known.get(backend)
        if known is not None:
            return known
        future: Any = self.client.submit(
            learn, backend, os.getcwd(), key=f"polystore-describe-{uuid.uuid4().hex}", pure=False
        )
        learned: tuple[BackendTraits, Marker | None] = future.result()
        traits, marker = learned
        if marker is not None:
            check_shared(self.client, traits.name, traits.type_name, marker)
        with self._lock:
            return self._known.setdefault(backend, traits)
