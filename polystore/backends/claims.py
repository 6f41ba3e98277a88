"""Claims on temporary files and directories: how ``cleanup()`` tells a live writer's from a killed one's.

A writer holds an exclusive advisory lock (``flock``) on its temporary file
or directory from just after creating it until the object is in place. The
OS drops the lock when the writer's process ends, however it ends (a
``SIGKILL`` included), so ``cleanup()`` removes only what no live process
holds: it takes the lock itself, without waiting, and deletes while holding
it. Whatever ``cleanup()`` is given (``older_than=0``, any directory), a live
writer's temporary file is never removed under it.

A writer creates its temporary entry before it can lock it; a ``cleanup()``
in that instant may take the lock first and remove the entry. The writer
then finds its entry unlinked once it holds the lock, and starts again
under a new name.

Locks are per open file description, so they also separate threads of one
process. (On NFS, Linux emulates ``flock`` with POSIX locks, which a process
does not take against itself: there, run ``cleanup()`` in a process that is
not writing.)
"""

from __future__ import annotations

import os
from collections.abc import Callable

try:
    import fcntl
except ImportError:  # Windows: no flock, so nothing is ever claimed, and cleanup() removes nothing
    fcntl = None  # type: ignore[assignment]

__all__ = ["claim", "remove_if_unclaimed", "try_claim"]


def claim(descriptor: int) -> bool:
    """Lock the file or directory open as ``descriptor`` for its writer, waiting while a cleanup holds it.

    Returns False if a cleanup removed it before the lock was taken: the
    writer must make another.
    """
    if fcntl is not None:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
    return os.fstat(descriptor).st_nlink > 0


def try_claim(path: str) -> int | None:
    """Open ``path`` and lock it without waiting: its descriptor, or None if a live writer holds it or it is gone.

    Symbolic links are never followed (nor claimed): polystore makes none.
    The caller removes the entry while holding the lock, then closes the
    descriptor.
    """
    if fcntl is None:
        return None
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # gone meanwhile, or a symbolic link
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def remove_if_unclaimed(path: str, deadline: float, remove: Callable[[str], None]) -> bool:
    """``remove(path)`` if no live writer holds it and it was last changed at ``deadline`` or earlier.

    The lock is held while removing, so a writer cannot claim the entry
    meanwhile. Returns whether it was removed.
    """
    descriptor = try_claim(path)
    if descriptor is None:
        return False  # a live writer's, or gone meanwhile
    try:
        if os.fstat(descriptor).st_mtime > deadline:
            return False
        remove(path)
        return True
    except FileNotFoundError:
        return False  # its writer finished or failed meanwhile
    finally:
        os.close(descriptor)
