"""The zarr backend's view of a directory tree: arrays are files, the rest directories.

:class:`ArrayTree` resolves paths, tells arrays from directories, puts
finished array directories in place atomically and makes every directory it
creates a zarr v3 group; it knows nothing of zarr beyond the ``zarr.json``
that marks an array or a group.

A directory is created with its group ``zarr.json`` already inside: it is
filled under a hidden temporary name and renamed into place, so no reader
(and no killed writer) ever leaves a directory of polystore's without it.
Directories made by other tools are left as they are, unless
:meth:`ArrayTree.make_group` is asked to make one a group.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat as stat_module
import time
from collections.abc import Callable
from pathlib import Path

from polystore.backend import PathLike
from polystore.backends.claims import remove_if_unclaimed
from polystore.backends.zarr.swap import (
    TEMP_PREFIX,
    claimed,
    claimed_sibling,
    discard,
    is_array_dir,
    rename_noreplace,
    swap_in,
    temp_sibling,
)
from polystore.errors import InvalidPathError, UnsupportedFormatError
from polystore.paths import check_name_lengths, confine, names_a_directory

__all__ = ["ARRAY", "DIRECTORY", "GROUP_METADATA", "OTHER", "ArrayTree", "check_not_metadata"]

#: The ``zarr.json`` of a zarr v3 group with no attributes, as every directory the backend creates holds.
GROUP_METADATA = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}, indent=2)

#: What :meth:`ArrayTree.kind` finds at a path: a zarr array, a directory
#: (plain or a zarr group), or another file (one this backend did not write).
ARRAY, DIRECTORY, OTHER = "array", "directory", "other"


def check_not_metadata(path: str) -> None:
    """Refuse a path to create with a part named ``zarr.json``: that name is every group's and array's metadata."""
    if "zarr.json" in path.split("/"):
        raise InvalidPathError(
            "zarr backend: the name 'zarr.json' is reserved for the metadata of zarr arrays and groups (every "
            f"directory the backend creates is a group), so no array or directory can be made with it: {path!r}"
        )


class ArrayTree:
    """Paths of the zarr backend under an optional ``root`` (a realpath'd directory)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def resolve(self, path: PathLike) -> Path:
        """The absolute, confined path for ``path``; temporary names are refused."""
        target = confine(path, self.root, "zarr")
        if target.name.startswith(TEMP_PREFIX):
            raise InvalidPathError(
                f"zarr backend: names starting with {TEMP_PREFIX!r} are reserved for temporary "
                f"directories: {str(path)!r}"
            )
        return target

    def kind(self, target: Path) -> str | None:
        """:data:`ARRAY`, :data:`DIRECTORY`, :data:`OTHER` or None if missing.

        Paths inside an array (its chunk files) and a group's own
        ``zarr.json`` count as missing, as listings never show them.
        """
        try:
            mode = os.stat(target).st_mode
        except (OSError, ValueError):
            return None
        if self.array_ancestor(target) is not None:
            return None
        if not stat_module.S_ISDIR(mode):
            return None if target.name == "zarr.json" else OTHER
        return ARRAY if is_array_dir(target) else DIRECTORY

    def array_ancestor(self, target: Path) -> Path | None:
        """The array directory ``target`` lies inside, if any."""
        if target == self.root:
            return None
        for parent in target.parents:
            if parent == self.root:
                return None
            if is_array_dir(parent):
                return parent
        return None

    def entries(self, directory: Path) -> list[os.DirEntry[str]]:
        """The entries of ``directory`` to show: no temporary directories, no group metadata."""
        with os.scandir(directory) as found:
            return [
                entry
                for entry in found
                if not entry.name.startswith(TEMP_PREFIX) and not (entry.name == "zarr.json" and entry.is_file())
            ]

    def array_names(self, directory: Path, recursive: bool) -> list[str]:
        """The names, relative to ``directory``, of the arrays in it (and below it if ``recursive``).

        Symlinked directories are not walked into.
        """
        names: list[str] = []
        pending = [(directory, "")]
        while pending:
            folder, prefix = pending.pop()
            try:
                entries = self.entries(folder)
            except FileNotFoundError:
                continue  # deleted while we were listing
            for entry in entries:
                if not entry.is_dir():
                    continue
                if is_array_dir(entry.path):
                    names.append(prefix + entry.name)
                elif recursive and not entry.is_symlink():
                    pending.append((Path(entry.path), f"{prefix}{entry.name}/"))
        return names

    # -- errors ----------------------------------------------------------
    @staticmethod
    def missing(path: PathLike) -> FileNotFoundError:
        return FileNotFoundError(errno.ENOENT, "zarr backend: no zarr array or directory at this path", str(path))

    @staticmethod
    def not_an_array(path: PathLike) -> UnsupportedFormatError:
        return UnsupportedFormatError(
            f"zarr backend: {str(path)!r} is a file, not a zarr array; use the 'disk' backend for other files"
        )

    def require_array(self, target: Path, path: PathLike, operation: str) -> None:
        """Raise the error that says why ``target`` is not an array, if it is not."""
        kind = self.kind(target)
        if kind == ARRAY:
            return
        if kind is None:
            raise self.missing(path)
        if kind == DIRECTORY:
            raise IsADirectoryError(
                errno.EISDIR,
                f"zarr backend: cannot {operation} a directory (it has no readable zarr.json with node_type 'array')",
                str(path),
            )
        raise self.not_an_array(path)

    def require_directory(self, target: Path, path: PathLike) -> None:
        kind = self.kind(target)
        if kind is None:
            raise self.missing(path)
        if kind != DIRECTORY:
            raise NotADirectoryError(errno.ENOTDIR, "zarr backend: this path is not a directory", str(path))

    @staticmethod
    def raise_if_taken(kind: str | None, path: PathLike, overwrite: bool) -> None:
        """Refuse to put an array where ``kind`` is, unless it is an array to overwrite."""
        if kind == DIRECTORY:
            raise IsADirectoryError(errno.EISDIR, "zarr backend: a directory exists at this path", str(path))
        if kind == OTHER:
            raise FileExistsError(
                errno.EEXIST,
                "zarr backend: a file that is not a zarr array is at this path; remove it with the 'disk' backend",
                str(path),
            )
        if kind == ARRAY and not overwrite:
            raise FileExistsError(
                errno.EEXIST, "zarr backend: an array exists at this path; pass overwrite=True to replace it", str(path)
            )

    # -- checks before writing -------------------------------------------
    def check_new_name(self, target: Path, path: PathLike) -> None:
        """Refuse, before any I/O, a path no array can be made at: a directory's name, ``zarr.json``, a long name."""
        text = os.fspath(path)
        check_not_metadata(text)
        if names_a_directory(text) or target == self.root:
            raise IsADirectoryError(
                errno.EISDIR,
                "zarr backend: this path names a directory (the root, or a last part '.' or '..'); "
                "give the array its own name, such as 'images/a.zarr'",
                text,
            )
        check_name_lengths(text, "zarr")

    def check_free(self, target: Path, path: PathLike, overwrite: bool) -> None:
        """Raise what creating an array at ``target`` would raise, as the tree is now."""
        self.raise_if_taken(self.kind(target), path, overwrite)
        parent = target.parent
        if is_array_dir(parent) or self.array_ancestor(parent) is not None:
            raise NotADirectoryError(errno.ENOTDIR, "zarr backend: a parent of this path is a zarr array", str(path))
        try:
            is_directory = stat_module.S_ISDIR(os.stat(parent).st_mode)
        except FileNotFoundError:
            return
        except NotADirectoryError:
            is_directory = False
        if not is_directory:
            raise NotADirectoryError(errno.ENOTDIR, "zarr backend: a parent of this path is a file", str(path))

    # -- creating --------------------------------------------------------
    def make_directories(self, directory: Path, path: PathLike) -> None:
        """Create ``directory`` and its missing parents, each a zarr v3 group, refusing to do so inside an array.

        Directories that exist already are left as they are.
        """
        if is_array_dir(directory) or self.array_ancestor(directory) is not None:
            raise NotADirectoryError(errno.ENOTDIR, "zarr backend: a parent of this path is a zarr array", str(path))
        missing = []
        current = directory
        while True:
            try:
                is_directory = stat_module.S_ISDIR(os.stat(current).st_mode)
            except FileNotFoundError:
                missing.append(current)
                current = current.parent
                continue
            except NotADirectoryError:
                is_directory = False
            if not is_directory:
                raise NotADirectoryError(errno.ENOTDIR, "zarr backend: a parent of this path is a file", str(path))
            break
        for folder in reversed(missing):
            self._create_group(folder, path)

    @staticmethod
    def _create_group(folder: Path, path: PathLike) -> None:
        """Put a new group at ``folder``, its ``zarr.json`` in it from the start (one made meanwhile will do)."""
        with claimed_sibling(folder) as temp:  # claimed until in place: cleanup() leaves it alone
            try:
                (temp / "zarr.json").write_text(GROUP_METADATA)
                rename_noreplace(temp, folder)
            except FileExistsError:
                shutil.rmtree(temp, ignore_errors=True)
                if not os.path.isdir(folder):
                    raise NotADirectoryError(
                        errno.ENOTDIR, "zarr backend: a parent of this path is a file", str(path)
                    ) from None
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise

    @staticmethod
    def make_group(directory: Path) -> None:
        """Make the existing ``directory`` a zarr v3 group, if it has no ``zarr.json`` yet (one is never replaced)."""
        metadata = directory / "zarr.json"
        if os.path.lexists(metadata):
            return
        temp = directory / f"{TEMP_PREFIX}zarr.json-{os.getpid()}-{time.monotonic_ns()}"
        temp.write_text(GROUP_METADATA)
        try:
            rename_noreplace(temp, metadata)
        except FileExistsError:
            pass  # another writer made it a group meanwhile
        finally:
            temp.unlink(missing_ok=True)

    def build(self, target: Path, path: PathLike, overwrite: bool, write: Callable[[Path], object]) -> None:
        """Run ``write(temp)`` to fill a hidden sibling of ``target``, then put it in place.

        What would be refused at the end is refused before ``write`` runs; on
        any failure the temporary directory is removed.
        """
        self.raise_if_taken(self.kind(target), path, overwrite)
        self.make_directories(target.parent, path)
        with claimed_sibling(target) as temp:  # claimed until in place: cleanup() leaves it alone
            try:
                try:
                    write(temp)
                except OSError as error:
                    # The OS's error names a chunk file of the temporary array;
                    # name the path the caller asked for instead.
                    raise OSError(
                        error.errno, f"zarr backend: writing the array failed: {error.strerror or error}", str(path)
                    ) from error
                self.install(temp, target, path, overwrite)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise

    def install(self, temp: Path, target: Path, path: PathLike, overwrite: bool) -> None:
        """Rename the finished array ``temp`` to ``target``: exclusive, or swapping out the old array."""
        while True:
            try:
                rename_noreplace(temp, target)
                return
            except FileExistsError:
                kind = self.kind(target)
                if kind is None:
                    if os.path.lexists(target):  # a dangling symlink
                        raise
                    continue  # removed meanwhile: try again
                self.raise_if_taken(kind, path, overwrite)
            try:
                old = swap_in(temp, target)
            except FileNotFoundError:
                continue  # removed meanwhile: try again
            shutil.rmtree(old, ignore_errors=True)
            return

    def move(self, source: Path, target: Path, path: PathLike, overwrite: bool) -> None:
        """Move the array ``source`` to ``target`` as one step (copy and delete across filesystems)."""
        self.raise_if_taken(self.kind(target), path, overwrite)
        self.make_directories(target.parent, path)
        if not overwrite:
            try:
                rename_noreplace(source, target)
                return
            except FileExistsError:
                self.raise_if_taken(self.kind(target), path, overwrite)
                raise
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
        # Take the source away first, so that the move is all or nothing;
        # claimed, so that under its temporary name cleanup() leaves it alone.
        with claimed(source):
            temp = temp_sibling(target)
            try:
                os.rename(source, temp)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
            else:
                try:
                    self.install(temp, target, path, overwrite)
                except BaseException:
                    os.rename(temp, source)
                    raise
                return
        # Across filesystems: copy, put the copy in place, then delete the source.
        self.build(
            target, path, overwrite, lambda copy: shutil.copytree(source, copy, symlinks=True, dirs_exist_ok=True)
        )
        discard(source)

    def cleanup(self, top: Path, older_than: float) -> list[str]:
        """Remove temporary directories under ``top`` last changed ``older_than`` seconds ago or earlier."""
        deadline = time.time() - older_than
        removed = []
        for folder, subfolders, _ in os.walk(top):
            keep = []
            for name in subfolders:
                candidate = os.path.join(folder, name)
                if name.startswith(TEMP_PREFIX):
                    if remove_if_unclaimed(candidate, deadline, shutil.rmtree):  # not a live writer's (claims.py)
                        removed.append(candidate)
                elif not is_array_dir(candidate):
                    keep.append(name)
            subfolders[:] = keep
        return sorted(removed)
