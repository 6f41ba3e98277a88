"""Errors of polystore tasks as the caller gets them: with their own type and message, and lost data named.

distributed sends a task's exception to the client by pickle; :func:`portable`
makes sure what arrives is the error that was raised. :class:`LostPathError`
is the error for data kept by a worker that has gone (or on a host
with no worker left).
"""

from __future__ import annotations

import errno
import pickle
from typing import Any

import tblib.pickling_support  # type: ignore[import-untyped]  # no stubs; a dependency of distributed

from polystore_dask.workers import Holders, Owner

__all__ = ["LostPathError", "lost_error", "lost_shipment_error", "portable"]


class LostPathError(FileNotFoundError):
    """A path kept by a worker that has gone, or on a host with no worker left (``owner``); ``count`` paths in all."""

    owner: str
    backend: str
    count: int
    #: The owner (or the holders of the replicas) as the manager knows it.
    keeper: Owner | Holders | str


def lost_error(backend: str, path: Any, owner: Owner | Holders | str, more: int = 0) -> LostPathError:
    """The error for a path whose owner (a worker process, or a host; every replica's) is out of reach."""
    also = f" (and {more} more paths of this batch)" if more else ""
    if isinstance(owner, Holders) and all(each.host for each in owner.owners):
        message = (
            f"{backend} backend: this path{also} was kept on hosts {owner} (one replica each), and no worker "
            "on any of them was left to serve it; what they keep stays there: try again once a worker runs there"
        )
    elif isinstance(owner, Holders):
        message = (
            f"{backend} backend: this path{also} was kept in the memory of workers {owner} (one replica each), "
            "which have all left or restarted since; what they kept is lost, save it again"
        )
    elif isinstance(owner, Owner) and owner.host:
        message = (
            f"{backend} backend: this path{also} is kept on host {owner.host}, and no worker on that host was "
            "left to serve it (the worker it was sent to left or restarted); what it keeps stays on that host: "
            "try again once a worker runs there"
        )
    else:
        message = (
            f"{backend} backend: this path{also} was kept in the memory of worker {owner}, which has "
            "left or restarted since; what it kept is lost, save it again"
        )
    error = LostPathError(errno.ENOENT, message, str(path))
    error.owner, error.backend, error.count, error.keeper = str(owner), backend, 1 + more, owner
    return error


def lost_shipment_error(backend: str, paths: list[Any], reason: str) -> ConnectionError:
    """The error for batch items whose data was lost on its way from the client, before they were saved."""
    more = len(paths) - 1
    also = f" (and {more} more paths of this batch)" if more else ""
    return ConnectionError(
        errno.ECONNABORTED,
        f"{backend} backend: the data for this path{also} was lost with the worker it was shipped to before it "
        f"was saved, and the client could not ship it again: {reason}; these items were not saved, save them again",
        str(paths[0]),
    )


def portable(error: BaseException) -> BaseException:
    """``error``, made to reach the client with its own type and message.

    distributed pickles an exception together with its chain of causes
    (through tblib); a library's exception in that chain that cannot be
    rebuilt from its pickle (zarr's ``ArrayNotFoundError``, for one) turns
    the whole error into a bare ``Exception`` on the client. Such a chain is
    cut; an error that cannot travel itself becomes the nearest builtin type
    it derives from, with the same message.
    """
    if _travels(error):
        return error
    error.__cause__ = error.__context__ = None
    error.__suppress_context__ = True
    if _travels(error):
        return error
    builtin: type[BaseException] = next(
        kind for kind in type(error).__mro__ if kind.__module__ == "builtins" and issubclass(kind, BaseException)
    )
    replacement = builtin(*error.args) if issubclass(builtin, OSError) else builtin(str(error))
    return replacement.with_traceback(error.__traceback__)


def _travels(error: BaseException) -> bool:
    """Whether ``error`` survives the pickling distributed gives it on the way to the client."""
    links = [error]
    while (following := links[-1].__cause__ or links[-1].__context__) is not None and following not in links:
        links.append(following)
    tblib.pickling_support.install(*links)
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return False
    return True
