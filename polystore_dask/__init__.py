"""polystore_dask: the polystore API across a Dask cluster.

Register :class:`PolystorePlugin` once (``client.register_plugin(PolystorePlugin())``)
so that every worker, also ones that join or restart later, builds its own
:class:`~polystore.BackendRegistry`; then :class:`DaskFileManager` runs saves,
loads and listings as tasks on the workers, and :func:`get_registry` gives a
task its worker's registry.
"""

from __future__ import annotations

from polystore_dask.manager import DaskFileManager
from polystore_dask.plugin import PolystorePlugin, get_registry

__all__ = ["DaskFileManager", "PolystorePlugin", "get_registry"]
