"""PolystorePlugin gives every Dask worker its own BackendRegistry; get_registry finds it."""

from __future__ import annotations

import importlib
import pickle
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from distributed import WorkerPlugin, get_worker
from distributed.worker import Worker

from polystore.registry import BackendRegistry

__all__ = [
    "PolystorePlugin", "backend_options", "check_replicas", "default_replicas", "get_registry", "registry_of", "shown"
]

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
    plugin again with the same options and imports is a no-op that keeps the
    workers' ``memory`` data; registering one whose options or imports differ
    from the plugin already on the cluster raises ``ValueError`` naming both
    (the cluster keeps the old one). To change options, call
    ``client.unregister_worker_plugin("polystore")`` (which drops worker
    memory) and register the new plugin.

    Parameters
    ----------
    options
        Constructor keyword arguments by backend name, as for
        :class:`~polystore.BackendRegistry`, e.g. ``{"disk": {"root": "/scratch"}}``.
        Each backend named here is created during setup, so invalid options
        fail at registration rather than in the first task. One option is
        the manager's, not the constructor's: ``replicas`` (a positive int,
        default 1), how many workers hold each path of a per-process or
        per-host backend that a save does not give ``replicas=`` for, e.g.
        ``{"memory": {"replicas": 2}}`` (see :class:`~polystore_dask.DaskFileManager`).
    imports
        Modules to import on each worker before the registry is built, so
        that the backends they define register there.

    Examples
    --------
    >>> client.register_plugin(PolystorePlugin(options={"disk": {"root": "/scratch"}}))  # doctest: +SKIP
    """

    name = "polystore"

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
        return f"PolystorePlugin(options={shown(self.options)!r}, imports={self.imports!r})"

    @property
    def idempotent(self) -> bool:  # type: ignore[override]
        """True: registering it again is a no-op, after checking it is the same plugin.

        ``Client.register_plugin`` reads this on the client just before it
        registers the plugin, and nothing else reads it, so it is where a
        plugin with other options is refused before it can be ignored.
        """
        _refuse_a_different_plugin(self)
        return True

    def setup(self, worker: Worker) -> None:
        """Import ``imports`` and build this worker's registry, creating each backend in ``options``."""
        self._address = worker.address
        try:
            for module in self.imports:
                importlib.import_module(module)
            registry = BackendRegistry(backend_options(self.options))
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


def _refuse_a_different_plugin(plugin: PolystorePlugin) -> None:
    """Raise ``ValueError`` if the cluster of the current client has a polystore plugin with other settings."""
    from distributed import get_client

    try:
        client = get_client()
    except ValueError:
        return  # no client in this process: nothing to compare with
    stored = client.run_on_scheduler(_registered_plugin, name=plugin.name)
    if stored is None:
        return
    current = pickle.loads(stored)
    if not isinstance(current, PolystorePlugin):
        return
    if (current.options, current.imports) != (plugin.options, plugin.imports):
        raise ValueError(
            f"this cluster already has a polystore plugin with different settings: it has "
            f"options={shown(current.options)!r}, imports={current.imports!r}, and this one has "
            f"options={shown(plugin.options)!r}, imports={plugin.imports!r}; the workers keep the first. "
            f"To replace it, {_HOW_TO_REPLACE} (this drops the workers' memory data)"
        )


#: Option names whose values are never shown (credentials).
_SECRET_WORDS = ("secret", "password", "token", "access_key", "credential")


def shown(options: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``options`` as they may be printed: values of credential options replaced by ``"***"``."""
    return {
        backend: {
            name: "***" if any(word in name.lower() for word in _SECRET_WORDS) and value is not None else value
            for name, value in kwargs.items()
        }
        for backend, kwargs in options.items()
    }


def _registered_plugin(name: str, dask_scheduler: Any) -> bytes | None:
    """For ``client.run_on_scheduler``: the pickled worker plugin registered under ``name``, if any."""
    stored: bytes | None = dask_scheduler.worker_plugins.get(name)
    return stored


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
        if "replicas" in kwargs:
            check_replicas(kwargs["replicas"], name)
    return checked


def backend_options(options: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``options`` as the backends' constructors take them: without ``replicas``, which the manager reads."""
    return {
        name: {key: value for key, value in kwargs.items() if key != "replicas"} for name, kwargs in options.items()
    }


def default_replicas(worker: Worker, backend: str) -> int:
    """The ``replicas`` the plugin on ``worker`` sets for ``backend`` (1 if none)."""
    plugin = worker.plugins.get(PolystorePlugin.name)
    options = plugin.options if isinstance(plugin, PolystorePlugin) else {}
    replicas: int = options.get(backend, {}).get("replicas", 1)
    return replicas


def check_replicas(replicas: Any, backend: str) -> int:
    """``replicas`` as a count of holders: a positive int, else ``ValueError`` (``TypeError``) saying so."""
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise TypeError(
            f"{backend} backend: replicas must be a positive int (how many workers hold each path), "
            f"not {type(replicas).__name__} ({replicas!r})"
        )
    if replicas < 1:
        raise ValueError(
            f"{backend} backend: replicas={replicas} must be at least 1 (how many workers hold each path; "
            "1 is one worker, as without replicas)"
        )
    return replicas


def _checked_imports(imports: Iterable[str]) -> tuple[str, ...]:
    if isinstance(imports, str):
        imports = (imports,)
    checked = tuple(imports)
    for module in checked:
        if not isinstance(module, str):
            raise TypeError(f"imports must be module names (str), not {type(module).__name__} ({module!r})")
    return checked
