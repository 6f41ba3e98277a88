"""PolystorePlugin gives every Dask worker its own BackendRegistry; get_registry finds it."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from distributed import WorkerPlugin, get_worker
from distributed.worker import Worker

from polystore.registry import BackendRegistry

__all__ = ["PolystorePlugin", "get_registry", "registry_of"]

#: How long a task waits for a setup that is still running on its worker.
_SETUP_WAIT_SECONDS = 60.0

_HOW_TO_REPLACE = (
    'call client.unregister_worker_plugin("polystore") and then '
    "client.register_plugin(PolystorePlugin(...)) with corrected options or imports"
)


class PolystorePlugin(WorkerPlugin):
    """Build a :class:`~polystore.BackendRegistry` in every worker process.

    Register it once per cluster; the scheduler keeps it and sets it up on
    every worker, also on workers that join or restart later. Tasks then reach
    their worker's registry with :func:`get_registry`.

    Only ``options`` and ``imports`` are pickled: the registry and its backends
    are built in :meth:`setup`, in the worker's own process. Registering the
    plugin again is a no-op that keeps the workers' ``memory`` data; to change
    options, call ``client.unregister_worker_plugin("polystore")`` (which drops
    worker memory) and register a new plugin.

    Parameters
    ----------
    options
        Constructor keyword arguments by backend name, as for
        :class:`~polystore.BackendRegistry`, e.g. ``{"disk": {"root": "/scratch"}}``.
        Each backend named here is created during setup, so invalid options
        fail at registration rather than in the first task.
    imports
        Modules to import on each worker before the registry is built, so
        that the backends they define register there.

    Examples
    --------
    >>> client.register_plugin(PolystorePlugin(options={"disk": {"root": "/scratch"}}))  # doctest: +SKIP
    """

    name = "polystore"
    idempotent = True

    def __init__(self, options: Mapping[str, Mapping[str, Any]] | None = None, imports: Iterable[str] = ()) -> None:
        self.options = _checked_options(options)
        self.imports = _checked_imports(imports)
        self._start()

    def _start(self) -> None:
        self._registry: BackendRegistry | None = None
        self._error: BaseException | None = None
        self._address = "this worker"
        self._settled = threading.Event()

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options, "imports": self.imports}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.options = state["options"]
        self.imports = state["imports"]
        self._start()

    def __repr__(self) -> str:
        return f"PolystorePlugin(options={self.options!r}, imports={self.imports!r})"

    def setup(self, worker: Worker) -> None:
        """Import ``imports`` and build this worker's registry, creating each backend in ``options``."""
        self._address = worker.address
        try:
            for module in self.imports:
                importlib.import_module(module)
            registry = BackendRegistry(self.options)
            for name in self.options:
                registry[name]
        except Exception as error:
            self._error = error
            raise
        else:
            self._registry = registry
        finally:
            self._settled.set()

    def teardown(self, worker: Worker) -> None:
        """Release the registry (and with it the worker's ``memory`` data)."""
        self._registry = None

    @property
    def registry(self) -> BackendRegistry:
        """This worker's registry; raises ``RuntimeError`` when setup failed or was undone."""
        if not self._settled.wait(_SETUP_WAIT_SECONDS):
            raise RuntimeError(
                f"polystore plugin setup on worker {self._address} has not finished after "
                f"{_SETUP_WAIT_SECONDS:.0f} s; check the worker's log"
            )
        if self._error is not None:
            raise RuntimeError(
                f"polystore plugin setup failed on worker {self._address}: "
                f"{type(self._error).__name__}: {self._error}; {_HOW_TO_REPLACE}"
            ) from self._error
        if self._registry is None:
            raise RuntimeError(
                f"the polystore plugin on worker {self._address} was torn down; "
                "register it again with client.register_plugin(PolystorePlugin())"
            )
        return self._registry


def get_registry() -> BackendRegistry:
    """Return the :class:`~polystore.BackendRegistry` of the worker running this task.

    Every task on one worker gets the same registry (and so the same backend
    instances, e.g. the same ``memory`` store).

    Raises
    ------
    RuntimeError
        Called outside a Dask task, on a worker without the plugin, or on a
        worker where the plugin's setup failed; the message says which and
        what to call.

    Examples
    --------
    >>> def task(path):  # doctest: +SKIP
    ...     return get_registry()["disk"].load(path)
    """
    try:
        worker = get_worker()
    except ValueError:
        raise RuntimeError(
            "get_registry() must be called inside a Dask task running on a worker "
            "(e.g. a function passed to client.submit); register the plugin first with "
            "client.register_plugin(PolystorePlugin())"
        ) from None
    return registry_of(worker)


def registry_of(worker: Worker) -> BackendRegistry:
    """Return ``worker``'s registry, with the same errors as :func:`get_registry`."""
    plugin = worker.plugins.get(PolystorePlugin.name)
    if not isinstance(plugin, PolystorePlugin):
        raise RuntimeError(
            f"worker {worker.address} has no polystore plugin; "
            "call client.register_plugin(PolystorePlugin()) before running polystore tasks"
        )
    return plugin.registry


def _checked_options(options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(
            f"options must map backend names to constructor keyword arguments, "
            f"e.g. {{'disk': {{'root': '/scratch'}}}}, not {type(options).__name__}"
        )
    checked = {}
    for name, kwargs in options.items():
        if not isinstance(name, str) or not isinstance(kwargs, Mapping):
            raise TypeError(
                f"options[{name!r}] must be a dict of keyword arguments for backend {name!r}, "
                f"not {type(kwargs).__name__}"
            )
        checked[name] = dict(kwargs)
    return checked


def _checked_imports(imports: Iterable[str]) -> tuple[str, ...]:
    if isinstance(imports, str):
        imports = (imports,)
    checked = tuple(imports)
    for module in checked:
        if not isinstance(module, str):
            raise TypeError(f"imports must be module names (str), not {type(module).__name__} ({module!r})")
    return checked
