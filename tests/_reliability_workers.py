"""Code run in child processes by the racing-writer and write-fault tests.

Importable by name, so ``multiprocessing``'s spawn start method can run it.
Every saved array is :func:`token_data`: values that say which write made
them and where each element belongs, so :func:`identify` can tell a whole
object from a partial, mixed or misplaced one.
"""

from __future__ import annotations

import errno
import os
import queue
import resource
import signal
import time
from functools import lru_cache
from typing import Any

import numpy as np

from polystore import DiskBackend, ZarrBackend
from polystore.backend import StorageBackend

__all__ = [
    "drain", "identify", "make_backend", "racer", "read_until", "reader", "save_and_check", "save_once",
    "save_repeatedly", "save_with_file_size_limit", "token_data",
]

_SCALE = 10**9


def make_backend(name: str, root: str) -> StorageBackend:
    """A disk or zarr backend confined to ``root``."""
    return DiskBackend(root=root) if name == "disk" else ZarrBackend(root=root)


@lru_cache(maxsize=4)
def _positions(size: int) -> np.ndarray:
    positions = np.arange(size, dtype=np.int64)
    positions.flags.writeable = False
    return positions


def token_data(token: int, size: int) -> np.ndarray:
    """The array only the write of ``token`` (>= 1) ever saves: ``token * 1e9 + position``."""
    return _positions(size) + np.int64(token) * _SCALE


def identify(array: Any, size: int) -> int | None:
    """The token of ``array`` if it is one write's data, whole; None if partial, mixed or foreign."""
    if not isinstance(array, np.ndarray) or array.shape != (size,) or array.dtype != np.int64 or size == 0:
        return None
    token = int(array[0]) // _SCALE
    if token < 1 or not np.array_equal(array, token_data(token, size)):
        return None
    return token


def save_once(
    backend_name: str,
    root: str,
    path: str,
    token: int,
    size: int,
    overwrite: bool,
    options: dict[str, Any],
    started: Any,
) -> None:
    """Set ``started``, then save ``token_data(token, size)`` at ``path`` (the parent kills this process meanwhile)."""
    backend = make_backend(backend_name, root)
    data = token_data(token, size)
    started.set()
    backend.save(data, path, overwrite=overwrite, **options)


def save_with_file_size_limit(
    backend_name: str, root: str, path: str, token: int, size: int, limit: int, options: dict[str, Any], results: Any
) -> None:
    """Save with RLIMIT_FSIZE at ``limit`` bytes, so the OS refuses the rest (EFBIG); report the error."""
    backend = make_backend(backend_name, root)
    data = token_data(token, size)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get OSError(EFBIG) instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        backend.save(data, path, overwrite=True, **options)
    except BaseException as error:  # reported to the parent, which judges it
        results.put({
            "error": f"{type(error).__name__}: {error}",
            "oserror": isinstance(error, OSError),
            "efbig": _efbig_in_chain(error),
        })
    else:
        results.put({"error": None})


def _efbig_in_chain(error: BaseException | None) -> bool:
    while error is not None:
        if getattr(error, "errno", None) == errno.EFBIG:
            return True
        error = error.__cause__ or error.__context__
    return False


def racer(
    backend_name: str, root: str, size: int, options: dict[str, Any], start: Any, commands: Any, results: Any
) -> None:
    """A long-lived writer: for each ``(path, token, overwrite, repeats)`` command, wait at ``start``, then save.

    Saves ``repeats`` times (stopping at the first error) and puts ``(token,
    outcome, error type, message)`` on ``results``; a None command ends it.
    """
    backend = make_backend(backend_name, root)
    while True:
        command = commands.get()
        if command is None:
            return
        path, token, overwrite, repeats = command
        data = token_data(token, size)
        start.wait()
        results.put(save_repeatedly(backend, data, path, token, overwrite, repeats, options))


def save_repeatedly(
    backend: StorageBackend,
    data: np.ndarray,
    path: str,
    token: int,
    overwrite: bool,
    repeats: int,
    options: dict[str, Any],
) -> tuple[int, str, str | None, str | None]:
    """Save ``data`` ``repeats`` times; ``(token, "saved" or "error", error type, message)``."""
    try:
        for _ in range(repeats):
            backend.save(data, path, overwrite=overwrite, **options)
    except Exception as error:  # reported to the caller, which judges it
        return token, "error", type(error).__name__, str(error)
    return token, "saved", None, None


def reader(backend_name: str, root: str, size: int, commands: Any, stop: Any, ready: Any, results: Any) -> None:
    """A long-lived reader: for each ``path`` command, load it in a loop until ``stop`` is set.

    Puts its pid on ``ready`` when it starts looping, then a summary on
    ``results``: loads, misses before and after the first whole read, torn
    reads (with a description of the first), other errors, and the tokens
    seen. A None command ends it.
    """
    backend = make_backend(backend_name, root)
    while True:
        path = commands.get()
        if path is None:
            return
        results.put(read_until(backend, path, size, stop, ready))


def read_until(backend: StorageBackend, path: str, size: int, stop: Any, ready: Any = None) -> dict[str, Any]:
    """Load ``path`` until ``stop`` is set; classify every result (see :func:`reader`)."""
    summary: dict[str, Any] = {
        "loads": 0, "missing_before": 0, "missing_after": 0, "torn": 0, "first_torn": None,
        "errors": {}, "tokens": set(),
    }
    if ready is not None:
        ready.put(os.getpid())
    seen = False
    # Always at least one load after stop is set, so the final state is read too.
    while True:
        stopping = stop.is_set()
        summary["loads"] += 1
        try:
            loaded = backend.load(path)
        except FileNotFoundError:
            summary["missing_after" if seen else "missing_before"] += 1
        except Exception as error:  # counted, and judged by the test
            name = f"{type(error).__name__}: {error}"[:200]
            summary["errors"][name] = summary["errors"].get(name, 0) + 1
        else:
            token = identify(loaded, size)
            if token is None:
                summary["torn"] += 1
                if summary["first_torn"] is None:
                    summary["first_torn"] = _describe(loaded)
            else:
                seen = True
                summary["tokens"].add(token)
        if stopping:
            return summary
        time.sleep(0)


def _describe(loaded: Any) -> str:
    if not isinstance(loaded, np.ndarray):
        return f"{type(loaded).__name__}"
    head = loaded.reshape(-1)[:3].tolist() if loaded.size else []
    return f"array shape {loaded.shape} dtype {loaded.dtype} starting {head}"


def save_and_check(
    backend_name: str, root: str, prefix: str, first_token: int, rounds: int, size: int, options: dict[str, Any],
    results: Any = None,
) -> dict[str, Any]:
    """Save ``rounds`` new paths under ``prefix`` and overwrite one, loading each right after its save returns.

    Returns (and puts on ``results``, if given) the counts: saves that
    returned, saves that raised (with the first message), and saves that
    returned but whose object then loaded missing, unreadable or wrong.
    """
    backend = make_backend(backend_name, root)
    suffix = ".npy" if backend_name == "disk" else ".zarr"
    summary: dict[str, Any] = {"saved": 0, "failed": 0, "unreadable": 0, "first_problem": None}
    for round_ in range(rounds):
        token = first_token + round_
        for path, overwrite in ((f"{prefix}/new{round_}{suffix}", False), (f"{prefix}/same{suffix}", True)):
            try:
                backend.save(token_data(token, size), path, overwrite=overwrite, **options)
            except Exception as error:  # counted and reported: the test judges it
                summary["failed"] += 1
                summary["first_problem"] = summary["first_problem"] or f"save {path}: {type(error).__name__}: {error}"
                continue
            summary["saved"] += 1
            try:
                loaded = backend.load(path)
            except Exception as error:  # a save that returned must have stored a readable object
                loaded = f"{type(error).__name__}: {error}"
            if identify(loaded, size) != token:
                summary["unreadable"] += 1
                summary["first_problem"] = summary["first_problem"] or f"load {path} after its save: {loaded!r}"[:300]
    if results is not None:
        results.put(summary)
    return summary


def drain(results: Any, count: int, timeout: float) -> list[Any]:
    """Take ``count`` items from a queue, waiting at most ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    items = []
    while len(items) < count:
        try:
            items.append(results.get(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            raise TimeoutError(f"got {len(items)} of {count} results in {timeout} s") from None
    return items
