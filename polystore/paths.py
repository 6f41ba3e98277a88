"""Path helpers for backend authors: the checks every shipped backend uses.

Two kinds of path exist in polystore: *keys* (memory style, where ``a/b``
and ``/a/b`` are the same object) and *filesystem paths* (disk and zarr),
optionally confined to a root directory. A backend of your own uses these
so that it accepts, refuses and lists paths exactly as the shipped ones do.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from polystore.errors import InvalidPathError

__all__ = [
    "NAME_MAX",
    "SORT_ORDERS",
    "PathSpelling",
    "as_path_string",
    "check_name_lengths",
    "check_sort",
    "confine",
    "filter_names",
    "names_a_directory",
    "natural_key",
    "normalize_key",
    "sort_names",
]


def as_path_string(path: str | os.PathLike[str], backend: str) -> str:
    """Return ``path`` as a ``str`` after checking its type and content.

    Raises
    ------
    TypeError
        If ``path`` is neither ``str`` nor ``os.PathLike``.
    InvalidPathError
        If ``path`` is empty or contains a NUL byte.
    """
    if type(path) is not str:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                f"{backend} backend: path must be a str or os.PathLike, "
                f"not {type(path).__name__} ({path!r})"
            )
        path = os.fspath(path)
        if not isinstance(path, str):
            raise TypeError(f"{backend} backend: path must decode to str, got {path!r}")
    if not path:
        raise InvalidPathError(f"{backend} backend: the path is empty; give a file or directory path")
    if "\x00" in path:
        raise InvalidPathError(f"{backend} backend: path {path!r} contains a NUL byte")
    return path


def names_a_directory(path: str) -> bool:
    """Whether ``path`` can only name a directory: its last part is ``.`` or ``..``, or it is ``/``.

    Saving a file there is refused (``IsADirectoryError``) on every backend,
    before any I/O and whatever the data. Trailing slashes are ignored, as
    everywhere in polystore: ``a.npy/`` is another spelling of ``a.npy``.
    """
    return path.rstrip("/").rpartition("/")[2] in ("", ".", "..")


#: The longest file or directory name, in bytes, that common filesystems take (ext4, XFS, tmpfs, NFS, Lustre).
NAME_MAX = 255


def check_name_lengths(path: str, backend: str) -> None:
    """Raise :class:`InvalidPathError` if a part of ``path`` is longer than :data:`NAME_MAX` bytes (UTF-8).

    Checked before any I/O, so the error names the caller's path rather than
    a temporary file the OS refused.
    """
    if len(path) <= NAME_MAX // 4:  # no part can be too long: a character is at most 4 bytes
        return
    for part in path.split("/"):
        size = len(os.fsencode(part))
        if size > NAME_MAX:
            shown = part if len(part) <= 40 else part[:20] + "..." + part[-12:]
            raise InvalidPathError(
                f"{backend} backend: the name {shown!r} in path {path!r} is {size} bytes long; file and directory "
                f"names are limited to {NAME_MAX} bytes: use a shorter name"
            )


#: Canonical keys of recently seen str paths: memory-backend calls are
#: sub-microsecond, so normalising the same path again would dominate them.
_KEYS: dict[str, str] = {}
_KEYS_LIMIT = 65536


def normalize_key(path: str | os.PathLike[str], backend: str) -> str:
    """Return the canonical key of ``path``: no leading slash, no ``.``/``..``.

    ``"a/b"``, ``"/a/b"`` and ``"a//b/"`` all give ``"a/b"``; the root is
    ``""``. A ``..`` that climbs above the root is refused rather than clamped.
    """
    if type(path) is str:
        key = _KEYS.get(path)
        if key is not None:
            return key
    text = as_path_string(path, backend)
    if ".." in text.split("/") and _climbs_above_root(text):
        raise InvalidPathError(f"{backend} backend: path {text!r} climbs above the root with '..'")
    key = posixpath.normpath("/" + text).lstrip("/")
    if key == ".":
        key = ""
    if len(_KEYS) >= _KEYS_LIMIT:
        _KEYS.clear()
    _KEYS[text] = key
    return key


def _climbs_above_root(path: str) -> bool:
    depth = 0
    for part in path.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def confine(path: str | os.PathLike[str], root: Path | None, backend: str) -> Path:
    """Return the absolute filesystem path for ``path``, confined to ``root``.

    With ``root`` set, a relative path is taken relative to it, and the
    resolved path (symlinks followed) must stay inside it: ``..`` escapes,
    absolute paths elsewhere and symlinks pointing out all raise
    :class:`InvalidPathError` before any I/O. Without ``root`` the path is
    made absolute against the working directory, and nothing is refused.
    """
    text = as_path_string(path, backend)
    if root is None:
        return Path(os.path.abspath(text))
    candidate = Path(os.path.abspath(root / text))
    resolved = Path(os.path.realpath(candidate))
    if resolved != root and root not in resolved.parents:
        raise InvalidPathError(
            f"{backend} backend: path {text!r} resolves to {str(resolved)!r}, "
            f"outside the backend's root {str(root)!r}; use a path inside the root"
        )
    return candidate


def filter_names(names: list[str], pattern: str | None, extensions: set[str] | None) -> list[str]:
    """Keep the relative ``names`` whose last part matches ``pattern`` and ``extensions``.

    Shared by the backends so that every one filters listings alike.
    """
    if pattern is not None:
        names = [name for name in names if fnmatch.fnmatchcase(posixpath.basename(name), pattern)]
    if extensions:
        endings = tuple(ext.lower() for ext in extensions)
        names = [name for name in names if posixpath.basename(name).lower().endswith(endings)]
    return names


#: The orders a listing can come in: the values of ``sort=`` on ``list_files`` and ``list_dir``.
SORT_ORDERS = ("lexicographic", "natural")

_DIGIT_RUN = re.compile(r"([0-9]+)")


def check_sort(sort: str) -> None:
    """Raise ``ValueError`` unless ``sort`` is one of :data:`SORT_ORDERS`.

    Examples
    --------
    >>> check_sort("natural")
    >>> check_sort("numeric")
    Traceback (most recent call last):
    ...
    ValueError: sort must be 'lexicographic' (the default) or 'natural', not 'numeric'
    """
    if not isinstance(sort, str) or sort not in SORT_ORDERS:
        raise ValueError(f"sort must be 'lexicographic' (the default) or 'natural', not {sort!r}")


def natural_key(name: str) -> tuple[Any, ...]:
    """The key that sorts names and paths in natural order: ``img2`` before ``img10``.

    The rule, the same on every backend:

    - A run of ASCII digits ``0``-``9`` compares with another by its value,
      however long it is; against any other character it compares as a
      digit does (after space, ``-`` and ``.``; before letters and ``_``).
      Other digits (``²``, ``٣``) are ordinary characters.
    - Everything else compares by code point, as in the lexicographic
      order: case matters (``B`` before ``a``).
    - Runs of equal value but other spelling (``img02``, ``img2``) are
      ordered by the plain lexicographic order of the name, so ``img02``
      comes before ``img2`` and no two different names tie.
    - A path compares part by part, split at ``/``, so digit runs count in
      its directories too (``run2/a`` before ``run10/a``) and the files of
      one directory stay together.

    Examples
    --------
    >>> sorted(["img10.tif", "img2.tif", "img1.tif"], key=natural_key)
    ['img1.tif', 'img2.tif', 'img10.tif']
    >>> sorted(["img2", "img02", "img1"], key=natural_key)
    ['img1', 'img02', 'img2']
    >>> sorted(["run10/a", "run2/b", "run2/a"], key=natural_key)
    ['run2/a', 'run2/b', 'run10/a']
    """
    return tuple(_part_key(part) for part in name.split("/"))


def _part_key(part: str) -> tuple[tuple[Any, ...], str]:
    pieces = _DIGIT_RUN.split(part)  # text, digits, text, ..., text: digit runs at the odd places
    last = len(pieces) - 1
    key: list[Any] = []
    for index, piece in enumerate(pieces):
        if index % 2:
            value = piece.lstrip("0")
            key.append((len(value), value))  # by value, without int(): no limit on the run's length
        else:
            # Text that a digit run follows ends in a digit, so that the run compares with
            # the other name's next character as a digit would: "a.txt" < "a1.txt" < "ab.txt".
            key.append(piece + "0" if index < last else piece)
    return tuple(key), part


def sort_names(names: Iterable[str], sort: str = "lexicographic") -> list[str]:
    """Return ``names`` sorted as ``sort`` says: ``"lexicographic"`` (by code point) or ``"natural"``.

    Every backend sorts its listings with this, so that ``sort=`` means the
    same on all of them; see :func:`natural_key` for the natural order.

    Raises
    ------
    ValueError
        ``sort`` is neither ``"lexicographic"`` nor ``"natural"``.

    Examples
    --------
    >>> sort_names(["img10", "img2"])
    ['img10', 'img2']
    >>> sort_names(["img10", "img2"], "natural")
    ['img2', 'img10']
    """
    check_sort(sort)
    if sort == "natural":
        return sorted(names, key=natural_key)
    return sorted(names)


@dataclass(frozen=True)
class PathSpelling:
    """How a backend spells a path canonically: one string for every spelling of one object.

    It does no I/O and pickles small, so the Dask layer computes the same
    canonical path on the client as a worker would, to order operations on
    one path and to route them.

    Parameters
    ----------
    kind
        ``"key"``: ``a/b``, ``/a/b`` and ``a//b/`` are one object, spelled
        ``"a/b"`` (memory style; see :func:`normalize_key`). ``"filesystem"``:
        an absolute, normalised path; a relative path is taken relative to
        ``root``, or without one to the ``base`` given to :meth:`canonical`.
    root
        For ``"filesystem"``: the directory relative paths belong to.

    Examples
    --------
    >>> PathSpelling("key").canonical("/a//b/")
    'a/b'
    >>> PathSpelling("filesystem", root="/scratch").canonical("run/a.npy")
    '/scratch/run/a.npy'
    """

    kind: Literal["key", "filesystem"] = "key"
    root: str | None = None

    def canonical(self, path: str | os.PathLike[str], base: str | None = None, backend: str = "storage") -> str:
        """Return the canonical spelling of ``path``.

        ``base`` is the directory a relative filesystem path is taken from
        when there is no ``root`` (default: this process's working directory).
        """
        if self.kind == "key":
            return normalize_key(path, backend)
        text = as_path_string(path, backend)
        if not posixpath.isabs(text):
            text = posixpath.join(self.root or base or os.getcwd(), text)
        return posixpath.normpath(text)
