"""Filesystem steps of the zarr backend: array detection and atomic directory swaps.

A zarr array is a directory, so putting a finished one in place needs more
than ``os.replace``: ``os.rename`` of a directory fails onto a non-empty
directory but silently succeeds onto an empty one. Linux ``renameat2`` does
both steps the backend needs in one system call: ``RENAME_NOREPLACE`` (fail
if anything is at the target) and ``RENAME_EXCHANGE`` (swap two paths).
Where it is missing (other systems, some filesystems) a lock directory beside
the target (made with the exclusive ``mkdir``) makes polystore's own writers
take turns; an overwrite then leaves the target missing for the moment
between two renames.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from polystore.backends.claims import claim
from polystore.backends.disk import TEMP_PREFIX, temp_name_part

__all__ = [
    "TEMP_PREFIX",
    "claimed",
    "claimed_sibling",
    "directory_identity",
    "discard",
    "is_array_dir",
    "rename_noreplace",
    "swap_in",
    "temp_sibling",
    "tree_size",
]

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
# errno values meaning "this kernel or filesystem cannot do that flag".
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP}
#: Seconds to wait for another writer's lock (the fallback) before giving up.
_LOCK_TIMEOUT = 30.0


def _load_renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # no glibc >= 2.28
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def _try_renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Rename with ``flags``; False if the system cannot, OSError if the rename failed."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(src), None, str(dst))


@contextlib.contextmanager
def _renaming_lock(target: Path) -> Iterator[None]:
    """Hold the lock directory beside ``target`` (the fallback without ``renameat2``)."""
    lock = target.with_name(f"{TEMP_PREFIX}{temp_name_part(target.name, 100)}.lock")
    deadline = time.monotonic() + _LOCK_TIMEOUT
    while True:
        try:
            os.mkdir(lock)
        except FileExistsError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    errno.ETIMEDOUT,
                    f"zarr backend: lock held for over {_LOCK_TIMEOUT:.0f} s; if no writer is running, "
                    "a killed one left it: remove it with ZarrBackend.cleanup()",
                    str(lock),
                ) from None
            time.sleep(0.001)
            continue
        # Claimed, so cleanup() never takes a live writer's lock away; one that
        # removed it before the claim leaves it unlinked: then take it anew.
        try:
            descriptor = os.open(lock, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        if claim(descriptor):
            break
        os.close(descriptor)
    try:
        yield
    finally:
        os.rmdir(lock)
        os.close(descriptor)


@contextlib.contextmanager
def claimed(directory: Path) -> Iterator[None]:
    """Claim the existing ``directory`` while the block runs, so that renamed to a temporary name it is not cleaned up.

    Raises :class:`FileNotFoundError` if it is removed before the claim is taken.
    """
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if not claim(descriptor):
            raise FileNotFoundError(errno.ENOENT, "zarr backend: removed while being claimed", str(directory))
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def claimed_sibling(path: Path) -> Iterator[Path]:
    """Make a new, empty, hidden directory beside ``path``, claimed while the block runs (see claims.py)."""
    while True:
        temp = temp_sibling(path)
        os.mkdir(temp)
        try:
            descriptor = os.open(temp, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue  # a cleanup removed it before the claim: make another
        if claim(descriptor):
            break
        os.close(descriptor)
    try:
        yield temp
    finally:
        os.close(descriptor)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, raising :class:`FileExistsError` if anything is at ``dst``."""
    if _try_renameat2(src, dst, _RENAME_NOREPLACE):
        return
    with _renaming_lock(dst):
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
        os.rename(src, dst)


def swap_in(new: Path, target: Path) -> Path:
    """Put the directory ``new`` at the existing ``target``; return where the old one now is.

    Raises :class:`FileNotFoundError` if ``target`` is missing.
    """
    if _try_renameat2(new, target, _RENAME_EXCHANGE):
        return new
    with _renaming_lock(target):
        aside = temp_sibling(target)
        os.rename(target, aside)
        os.rename(new, target)
    return aside


def temp_sibling(path: Path) -> Path:
    """Return an unused hidden path in the directory of ``path``."""
    return path.with_name(f"{TEMP_PREFIX}{temp_name_part(path.name, 100)}-{uuid.uuid4().hex[:16]}")


def discard(path: Path) -> None:
    """Remove the tree at ``path``: renamed aside first, so it vanishes at once."""
    trash = temp_sibling(path)
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def directory_identity(path: Path) -> tuple[int, int, int] | None:
    """What changes when the directory at ``path`` is swapped for another (None if missing)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_ctime_ns


def is_array_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a ``zarr.json`` describing an array (not a group)."""
    try:
        with open(os.path.join(path, "zarr.json"), "rb") as file:
            metadata = json.load(file)
    except (OSError, ValueError):
        return False
    return isinstance(metadata, dict) and metadata.get("node_type") == "array"


def tree_size(path: Path) -> int:
    """Return the bytes of the regular files under ``path``."""
    total = 0
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                total += tree_size(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
    return total
