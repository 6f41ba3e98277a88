"""Placement for ``locality = "host"`` backends: each path lives on the disk of the host that saved it.

The same routing as :mod:`polystore_dask.per_process`, with hosts as the
owners: a saved path is owned by its host (found by hostname), and later
operations on it run on any live worker there, so a restarted worker on
that host still serves it. A path whose host has no live worker left raises
``FileNotFoundError`` naming the path and the host. Directories, listings
and queries span every host; an operation meant for every host runs once
per host.
"""

from __future__ import annotations

from polystore_dask.per_process import ProcessPlacement
from polystore_dask.workers import HostWorkers, Workers

__all__ = ["HostPlacement"]


class HostPlacement(ProcessPlacement):
    """Tasks run on a live worker of the host that keeps their path, which the table of owners records."""

    #: The view of the cluster whose members own paths: here each host.
    workers_view: type[Workers] = HostWorkers
