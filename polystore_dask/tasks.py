"""What runs on the workers: backend calls whose outcome is returned, not raised.

Each operation of :class:`~polystore_dask.DaskFileManager` is a task that
calls one backend method and returns an :class:`Outcome`; a second small task
(:func:`unwrap`) turns it into the value or exception the user's future
holds. Later operations on the same path wait for the first task, and since
it never fails, a failed operation does not fail the ones issued after it.
"""

from __future__ import annotations

import errno
import os
import posixpath
import socket
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from distributed import get_worker
from distributed.worker import Worker

from polystore.backend import StorageBackend
from polystore_dask.errors import LostPathError, lost_error, lost_shipment_error, portable
from polystore_dask.plugin import registry_of
from polystore_dask.shipping import Refusal
from polystore_dask.workers import Keeper, Owner

__all__ = [
    "Outcome",
    "attempt",
    "call",
    "check_items",
    "check_owner",
    "collect",
    "copy_tree_here",
    "delete_after",
    "delete_after_copies",
    "delete_here",
    "here",
    "hold",
    "is_rerun",
    "join_batches",
    "probe_kinds",
    "probe_listing",
    "probe_stat",
    "resolve",
    "same_data",
    "save_loaded",
    "save_loaded_batch",
    "settle",
    "settle_copies",
    "settle_deletes",
    "unwrap",
    "with_host",
]


class Outcome(NamedTuple):
    """What a task did: the value it produced, or the exception it raised."""

    value: Any = None
    error: BaseException | None = None

    def result(self) -> Any:
        """Return the value, or raise the exception."""
        if self.error is not None:
            raise self.error
        return self.value


def attempt(function: Callable[..., Any], *args: Any, after: Sequence[Any] = ()) -> Outcome:
    """Run ``function(*args)`` on this worker and return its outcome; ``after`` (outcomes waited for) is unused."""
    try:
        return Outcome(function(*args))
    except Exception as error:
        return Outcome(error=portable(error))


def unwrap(outcome: Outcome) -> Any:
    """The task behind a user's future: the value of ``outcome``, or its exception raised."""
    return outcome.result()


def resolve(path: Any, target: StorageBackend, origin: str | None) -> Any:
    """Take a relative filesystem path relative to ``origin`` (the client's directory).

    Only for a backend that spells paths as a filesystem and has no ``root``
    on this worker: with a root, relative paths belong to it, and keys have
    no working directory. Anything else is returned unchanged for the
    backend to judge.
    """
    spelling = target.path_spelling
    if origin is None or spelling.kind != "filesystem" or spelling.root is not None:
        return path
    if not isinstance(path, (str, os.PathLike)):
        return path
    text = os.fspath(path)
    if not isinstance(text, str) or not text or os.path.isabs(text):
        return path
    return os.path.join(origin, text)


def check_owner(owner: Keeper, worker: Worker, backend: str, paths: Sequence[Any]) -> None:
    """Raise ``FileNotFoundError`` unless this task runs where ``paths`` are kept (a process, or a host).

    Tasks for a per-process path are pinned to its owner's address (for a
    per-host path, to the workers on its host) with
    ``allow_other_workers=True``: the scheduler runs them elsewhere only when
    those workers have gone, and a restarted worker has a new id.
    """
    if not owner.is_here(worker):
        raise lost_error(backend, paths[0], owner, len(paths) - 1)


def call(
    backend: str,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    path_args: tuple[int, ...] = (),
    origin: str | None = None,
    owner: Keeper | None = None,
    after: Sequence[Any] = (),
    checks: Sequence[Outcome] = (),
    replicas: bool = False,
) -> Outcome:
    """Call ``registry[backend].method(*args, **kwargs)`` on this worker.

    Parameters
    ----------
    path_args
        Positions in ``args`` holding a path or a list of paths, resolved
        against ``origin`` (see :func:`resolve`).
    owner
        For per-process paths: the worker that must run this call.
    after
        Outcomes of earlier operations this one waited for; unused.
    checks
        Outcomes of :func:`check_items` for the whole operation: if one
        failed, nothing is done and its error is the outcome.
    replicas
        The checks are of the replicas of the same items: a check that found
        its holder gone does not stop the others.
    """
    for check in checks:
        if check.error is not None and not (replicas and isinstance(check.error, LostPathError)):
            return check
    try:
        worker = get_worker()
        if owner is not None:
            check_owner(owner, worker, backend, _paths_in(args, path_args))
        if method in _SAVES:
            _check_shipped(backend, args[0], _paths_in(args, path_args), batch=method == "save_batch")
        target = registry_of(worker)[backend]
        resolved = list(args)
        for index in path_args:
            value = args[index]
            if isinstance(value, list):
                resolved[index] = [resolve(path, target, origin) for path in value]
            else:
                resolved[index] = resolve(value, target, origin)
        try:
            value = getattr(target, method)(*resolved, **kwargs)
        except FileExistsError:
            if method not in _SAVES or kwargs.get("overwrite") or not is_rerun(worker):
                raise
            _save_again(target, method, resolved, kwargs)
            value = None
        if method == "list_files" and resolved[0] is not args[0]:
            value = _relative_to(value, os.fspath(resolved[0]), os.fspath(args[0]))
        return Outcome(value)
    except Exception as error:
        return Outcome(error=portable(with_host(error)))


#: The errors of a full disk (or quota): they say which host's disk.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def with_host(error: Exception) -> Exception:
    """``error``, naming this worker's host if it says a disk is full (each node has its own disks)."""
    if not isinstance(error, OSError) or error.errno not in _FULL:
        return error
    host = socket.gethostname()
    full = type(error)(
        error.errno,
        f"{error.strerror} (on host {host}: its disk there is full; free space on that host, or save elsewhere)",
        error.filename,
    )
    full.__cause__ = error
    return full


def check_items(
    backend: str, data_list: list[Any] | Refusal, paths: list[Any], options: dict[str, Any], *,
    origin: str | None = None, owner: Keeper | None = None,
) -> Outcome:
    """Check on this worker that saving each item would succeed (``check_save``), writing nothing."""
    try:
        worker = get_worker()
        if owner is not None:
            check_owner(owner, worker, backend, paths)
        data_list = _check_shipped(backend, data_list, paths, batch=True)
        target = registry_of(worker)[backend]
        for data, path in zip(data_list, paths, strict=True):
            where = resolve(path, target, origin)
            try:
                target.check_save(data, where, **options)
            except FileExistsError:
                # Checked again after a worker died: the batch's own first attempt may have saved it.
                if options.get("overwrite") or not is_rerun(worker) or not same_data(target.load(where), data):
                    raise
        return Outcome()
    except Exception as error:
        return Outcome(error=portable(error))


def hold(value: Any) -> Any:
    """A task whose result is ``value``: data that several tasks use, sent once."""
    return value


#: The methods whose re-run after a worker died may find its own earlier writes.
_SAVES = frozenset({"save", "save_batch"})


def _check_shipped(backend: str, data: Any, paths: list[Any], *, batch: bool) -> Any:
    """Return the data of a save, or raise :func:`~polystore_dask.errors.lost_shipment_error` for the paths
    whose data the client could not ship again: all of them if ``data`` is a
    :class:`~polystore_dask.shipping.Refusal`, or in a ``batch`` those whose item is one (shipped on its own)."""
    if isinstance(data, Refusal):
        raise lost_shipment_error(backend, paths, data.reason)
    if batch:
        refused = [(path, item) for item, path in zip(data, paths, strict=True) if isinstance(item, Refusal)]
        if refused:
            raise lost_shipment_error(backend, [path for path, _ in refused], refused[0][1].reason)
    return data


def is_rerun(worker: Worker) -> bool:
    """Whether the task running here was sent to a worker before (one that died running it).

    distributed runs a task again when its worker dies (or when its result is
    lost with its worker), so a save can find what its own first attempt
    wrote. Asked only after such a conflict, so it costs nothing otherwise.
    """
    from distributed import get_client

    key = worker.get_current_task()
    return bool(get_client().run_on_scheduler(_times_sent_to_a_worker, key=key) > 1)


def _times_sent_to_a_worker(key: Any, dask_scheduler: Any) -> int:
    return sum(1 for event in dask_scheduler.story(key) if event[0] == key and event[2] == "processing")


def _save_again(target: StorageBackend, method: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Finish a re-run save: items already stored with the same data count as saved (by the first attempt)."""
    pairs = [(args[0], args[1])] if method == "save" else list(zip(args[0], args[1], strict=True))
    for data, path in pairs:
        try:
            target.save(data, path, **kwargs)
        except FileExistsError:
            if not same_data(target.load(path), data):
                raise


def same_data(stored: Any, data: Any) -> bool:
    """Whether ``stored`` (as loaded back) is ``data`` (same type, dtype, shape and values)."""
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if isinstance(data, (np.ndarray, np.generic)):
        data = np.asarray(data)
        return (
            isinstance(stored, np.ndarray)
            and stored.dtype == data.dtype
            and stored.shape == data.shape
            and np.array_equal(stored, data)
        )
    return type(stored) is type(data) and bool(stored == data)


def _paths_in(args: tuple[Any, ...], path_args: tuple[int, ...]) -> list[Any]:
    paths: list[Any] = []
    for index in path_args:
        value = args[index]
        paths.extend(value if isinstance(value, list) else [value])
    return paths


def _relative_to(listed: list[str], resolved: str, given: str) -> list[str]:
    """Rewrite paths listed under ``resolved`` as paths under the directory the user gave."""
    prefix = posixpath.join(resolved, "")
    return [posixpath.join(given, path[len(prefix):]) if path.startswith(prefix) else path for path in listed]


def settle(outcomes: Sequence[Outcome]) -> None:
    """Raise the first error among ``outcomes`` (in order), else return None."""
    for outcome in outcomes:
        outcome.result()


def join_batches(outcomes: Sequence[Outcome], positions: Sequence[Sequence[int]], count: int) -> list[Any]:
    """Put the values of batch parts back in input order, or raise the first part's error.

    When paths were lost with a worker, the error counts every lost path of
    the batch kept by that worker, not only those of the first part.
    """
    errors = [outcome.error for outcome in outcomes if outcome.error is not None]
    if errors:
        first = errors[0]
        if isinstance(first, LostPathError):
            same = [error for error in errors if isinstance(error, LostPathError) and error.owner == first.owner]
            total = sum(error.count for error in same)
            raise lost_error(first.backend, first.filename, first.keeper, total - 1)
        raise first
    values: list[Any] = [None] * count
    for outcome, where in zip(outcomes, positions, strict=True):
        if outcome.value is not None:
            for index, value in zip(where, outcome.value, strict=True):
                values[index] = value
    return values


def collect(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """One task standing for several: later operations wait for it alone."""
    return list(outcomes)


# -- per-process backends: one task or call per worker ------------------------
def save_loaded(
    loaded: Outcome, backend: str, path: str, overwrite: bool, owner: Owner, after: Sequence[Any] = ()
) -> Outcome:
    """Save what another worker loaded (a copy between owners), unless that failed."""
    if loaded.error is not None:
        return loaded
    return call(backend, "save", (loaded.value, path), {"overwrite": overwrite}, path_args=(1,), owner=owner)


def save_loaded_batch(
    loaded: Outcome, backend: str, paths: list[str], owner: Owner, after: Sequence[Any] = ()
) -> Outcome:
    """Save what another worker loaded by ``load_batch`` (a replica copied to a new holder), unless that failed."""
    if loaded.error is not None:
        return loaded
    return call(backend, "save_batch", (loaded.value, paths), {"overwrite": True}, path_args=(1,), owner=owner)


def delete_after(saved: Outcome, backend: str, path: str, owner: Owner) -> Outcome:
    """Delete the source of a move between owners once its copy is saved."""
    if saved.error is not None:
        return saved
    return call(backend, "delete", (path,), {}, path_args=(0,), owner=owner)


def delete_after_copies(copies: Sequence[Outcome], backend: str, path: str, owner: Owner) -> Outcome:
    """Delete one replica of the source of a move once a copy of it is saved (a missing one is no error)."""
    if not any(copy.error is None for copy in copies):
        return next(copy for copy in copies if copy.error is not None) if copies else Outcome()
    outcome = delete_here(backend, path, False, owner)
    return outcome if outcome.error is not None else Outcome()


def delete_here(backend: str, path: str, recursive: bool, owner: Owner, after: Sequence[Any] = ()) -> Outcome:
    """Delete ``path`` from this worker's backend: ``"deleted"``, ``"missing"`` or ``"gone"``.

    ``"gone"``: the task did not run where it was meant to (``owner``, a
    worker or a host), which has left, and with it whatever it kept.
    """
    try:
        worker = get_worker()
        if not owner.is_here(worker):
            return Outcome("gone")
        try:
            registry_of(worker)[backend].delete(path, recursive=recursive)
        except FileNotFoundError:
            return Outcome("missing")
        return Outcome("deleted")
    except Exception as error:
        return Outcome(error=portable(error))


def settle_deletes(outcomes: Sequence[Outcome], backend: str, path: str) -> None:
    """Raise the first error of a delete run on every worker, or ``FileNotFoundError`` if none had ``path``."""
    results = [outcome.result() for outcome in outcomes]
    if "deleted" not in results:
        raise FileNotFoundError(errno.ENOENT, f"{backend} backend: no worker keeps anything at this path", path)


def copy_tree_here(
    backend: str, src: str, dst: str, overwrite: bool, owner: Owner, after: Sequence[Any] = ()
) -> Outcome:
    """Copy this worker's part of the directory ``src`` to ``dst``: ``"copied"``, ``"missing"`` or ``"gone"``.

    ``"missing"``: this worker keeps no directory at ``src``; ``"gone"`` as for :func:`delete_here`.
    """
    try:
        worker = get_worker()
        if not owner.is_here(worker):
            return Outcome("gone")
        target = registry_of(worker)[backend]
        if not target.is_dir(src):
            return Outcome("missing")
        target.copy(src, dst, overwrite=overwrite, recursive=True)
        return Outcome("copied")
    except Exception as error:
        return Outcome(error=portable(error))


def settle_copies(outcomes: Sequence[Outcome], backend: str, path: str) -> None:
    """Raise the first error of a directory copy run on every worker, or ``FileNotFoundError`` if none had ``path``."""
    results = [outcome.result() for outcome in outcomes]
    if "copied" not in results:
        raise FileNotFoundError(errno.ENOENT, f"{backend} backend: no worker keeps a directory at this path", path)


def here(worker: Worker, target: StorageBackend) -> Owner:
    """The owner of what ``worker`` keeps on ``target``: the worker itself, or its host (``locality``)."""
    return Owner.of(worker, type(target).locality)


def probe_kinds(backend: str, keys: Sequence[str], *, dask_worker: Worker) -> tuple[Owner, dict[str, str | None]]:
    """For ``client.run``: the owner of what this worker keeps and, per key, ``"file"``, ``"dir"`` or None."""
    target = registry_of(dask_worker)[backend]
    kinds = {}
    for key in keys:
        path = key or "/"  # the root's key is "", which is not a valid path
        kinds[key] = "file" if target.is_file(path) else "dir" if target.is_dir(path) else None
    return here(dask_worker, target), kinds


def probe_stat(backend: str, path: str, *, dask_worker: Worker) -> tuple[Owner, dict[str, Any] | None]:
    """For ``client.run``: the owner of what this worker keeps and its stat of ``path`` (None if missing)."""
    target = registry_of(dask_worker)[backend]
    try:
        return here(dask_worker, target), target.stat(path or "/")
    except FileNotFoundError:
        return here(dask_worker, target), None


def probe_listing(
    backend: str, method: str, path: str, kwargs: dict[str, Any], *, dask_worker: Worker
) -> tuple[Owner, Outcome]:
    """For ``client.run``: the owner of what this worker keeps and the outcome of listing ``path``."""
    target = registry_of(dask_worker)[backend]
    try:
        return here(dask_worker, target), Outcome(getattr(target, method)(path, **kwargs))
    except (FileNotFoundError, NotADirectoryError) as error:
        return here(dask_worker, target), Outcome(error=portable(error))
