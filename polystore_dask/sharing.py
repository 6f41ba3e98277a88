"""Whether a ``"shared"`` filesystem backend is shared: a marker one worker writes and every other looks for.

A backend declaring ``locality = "shared"`` with a filesystem root (``disk``,
``zarr`` on local paths) promises that every worker sees the same files
there. On a cluster whose nodes have their own disks at that path, that is
false, and saves would land on one node and be missing on the others. So
the manager's first use of such a backend checks it once: one worker
leaves a hidden, empty marker file at the root (while it learns the
backend's traits), every worker looks for it in one ``client.run``, and
the writer removes it in another. Backends without a filesystem root (memory, s3,
zarr in a bucket) are not checked.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from typing import Any, NamedTuple

from distributed import Client

from polystore.backend import StorageBackend
from polystore.backends.disk import TEMP_PREFIX

__all__ = ["Marker", "check_shared", "leave_marker"]


class Marker(NamedTuple):
    """A marker file left at a backend's root by one worker."""

    root: str
    path: str
    host: str
    address: str


def leave_marker(worker: Any, target: StorageBackend, origin: str) -> Marker | None:
    """Leave a marker at ``target``'s filesystem root if it declares ``"shared"``; None if nothing to check.

    Without a configured root the root is ``origin``, the client's working
    directory, where relative paths are taken from. A root this worker
    cannot write to is not checked here: the backend's own calls report it.
    """
    spelling = target.path_spelling
    if type(target).locality != "shared" or spelling.kind != "filesystem":
        return None
    root = spelling.root or origin
    # The temporary-file prefix: listings hide the marker, and cleanup() removes one a crash left.
    path = os.path.join(root, f"{TEMP_PREFIX}shared-check-{uuid.uuid4().hex}")
    try:
        os.makedirs(root, exist_ok=True)
        with open(path, "x"):
            pass
    except OSError:
        return None
    return Marker(root, path, socket.gethostname(), worker.address)


def _look(path: str) -> tuple[str, bool]:
    return socket.gethostname(), os.path.exists(path)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def check_shared(client: Client, backend: str, type_name: str, marker: Marker) -> None:
    """Raise ``RuntimeError`` unless every worker sees ``marker``: saying which hosts differ and what to use.

    Workers that cannot be reached are not counted.
    """
    try:
        answers = client.run(_look, marker.path, on_error="return")
    finally:
        client.run(_remove, marker.path, workers=[marker.address], on_error="return")
    missing: dict[str, list[str]] = {}
    for address, answer in sorted(answers.items()):
        if isinstance(answer, tuple) and not answer[1]:
            missing.setdefault(answer[0], []).append(address)
    if not missing:
        return
    hosts = ", ".join(
        f"{host} ({', '.join(addresses)})" if host == marker.host else host
        for host, addresses in sorted(missing.items())
    )
    raise RuntimeError(
        f"{backend} backend ({type_name}) declares locality 'shared', but the workers do not share one "
        f"filesystem at its root {marker.root!r}: a file written there on host {marker.host} is missing on "
        f"{'host' if len(missing) == 1 else 'hosts'} {hosts}, so files saved there would be found on some "
        "workers and not others. Use a backend that keeps files per node (locality='host', such as the "
        "'scratch' backend), or the object store ('s3', or zarr with an s3:// root), or give this backend a "
        "root on a filesystem every worker mounts"
    )
