"""DiskBackend: files on the local filesystem, written atomically."""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import posixpath
import shutil
import stat as stat_module
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from polystore.backend import PathLike, StorageBackend, check_batch_lengths, check_batch_paths
from polystore.backends.claims import claim, remove_if_unclaimed
from polystore.backends.formats import FORMATS, Payload, encode, read_npy, read_npz, read_tiff
from polystore.errors import InvalidPathError
from polystore.paths import (
    PathSpelling,
    as_path_string,
    check_name_lengths,
    confine,
    filter_names,
    names_a_directory,
    sort_names,
)

__all__ = ["DiskBackend"]

#: Every temporary file starts with this; listings never show such names, and
#: :meth:`DiskBackend.cleanup` removes the ones a killed writer left behind.
TEMP_PREFIX = ".polystore-tmp-"


def temp_name_part(name: str, limit: int) -> str:
    """``name`` cut to at most ``limit`` bytes, to build a temporary name that stays within NAME_MAX.

    Cut by bytes, not characters: 100 characters can be 400 bytes.
    """
    return os.fsdecode(os.fsencode(name)[:limit])


#: Files of at least this many bytes are preallocated before writing; see _write_buffers.
_PREALLOCATE_FROM = 8 << 20
#: fallocate's mode: reserve the blocks without changing the file's size.
_FALLOC_FL_KEEP_SIZE = 1


class DiskBackend(StorageBackend):
    """Files on the local filesystem; the format follows the path's suffix.

    ========================  ==========================================  ===================
    suffix (any case)         saves                                       loads
    ========================  ==========================================  ===================
    ``.npy``                  a numpy array or scalar (no object arrays)  the array
    ``.npz``                  a dict of str to arrays                     a dict of arrays
    ``.json``                 a dict or list (JSON rules: tuples come     a dict or list
                              back as lists, keys as str)
    ``.txt``                  a str, as UTF-8                             the str
    ``.tif`` / ``.tiff``      an array, through ``tifffile`` (extra       the array
                              keywords go to ``tifffile.imwrite`` /
                              ``imread``)
    anything else             bytes, bytearray or memoryview              bytes
    ========================  ==========================================  ===================

    Data that does not fit the suffix (a str to ``.npy``, an object array,
    any unsupported type) raises :class:`UnsupportedFormatError` before
    anything is written; a wrongly typed *path* raises ``TypeError``.

    Every write goes to a hidden temporary sibling (named
    ``.polystore-tmp-<random>-<name>``) that is then renamed into place
    (``os.replace``), or, without ``overwrite``, hard-linked into place, which
    fails if the name exists: of several racing writers, in any processes,
    exactly one wins. A crash or kill leaves the old file or the new one,
    never a torn one; it can leave a temporary file, which listings hide and
    :meth:`cleanup` removes.

    Parameters
    ----------
    root
        Confine every path to this directory: relative paths are taken
        relative to it, and ``..`` escapes, absolute paths elsewhere and
        symlinks pointing out of it raise :class:`InvalidPathError` before
        any I/O. Without a root, relative paths resolve against the current
        working directory and nothing is refused.
    fsync
        Flush each file's data to stable storage before renaming it into
        place, and the directory after, so that even a power loss leaves the
        old file or the new one. Off by default: a crashed *process* never
        tears a file either way, and fsync costs time on real disks.

    Notes
    -----
    Names starting with ``.polystore-tmp-`` are reserved (refused as paths).
    Saving without ``overwrite`` needs a filesystem with hard links (local
    filesystems, NFS, Lustre, GPFS have them). A saved file gets the default
    permissions (umask), also when it replaces one. Confinement is checked
    when a call starts; it does not defend against another process swapping
    directories for symlinks while the call runs.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> disk = DiskBackend(root=tempfile.mkdtemp())
    >>> disk.save(np.arange(3), "run1/a.npy")
    >>> disk.load("run1/a.npy")
    array([0, 1, 2])
    >>> disk.list_files("run1")
    ['run1/a.npy']
    """

    _backend_type = "disk"

    def __init__(self, root: str | os.PathLike[str] | None = None, fsync: bool = False) -> None:
        self.root: Path | None = None if root is None else Path(os.path.realpath(root))
        self.fsync = fsync

    def __repr__(self) -> str:
        return f"DiskBackend(root={None if self.root is None else str(self.root)!r}, fsync={self.fsync})"

    @property
    def path_spelling(self) -> PathSpelling:
        # docstring inherited
        return PathSpelling("filesystem", None if self.root is None else str(self.root))

    def _resolve(self, path: PathLike) -> str:
        """Return the absolute filesystem path for ``path`` (confined to the root)."""
        target = os.fspath(confine(path, self.root, self.name))
        if os.path.basename(target).startswith(TEMP_PREFIX):
            raise InvalidPathError(
                f"{self.name} backend: names starting with {TEMP_PREFIX!r} are reserved for temporary files: "
                f"{str(path)!r}"
            )
        return target

    def _check_new_name(self, target: str, path: PathLike) -> None:
        """Refuse, before any I/O, a path no file can be written at: a directory's name, or a name too long."""
        text = os.fspath(path)
        if names_a_directory(text) or (self.root is not None and target == str(self.root)):
            raise IsADirectoryError(
                errno.EISDIR,
                f"{self.name} backend: this path names a directory (the root, or a last part '.' or '..'); "
                "give the file its own name, such as 'images/a.npy'",
                text,
            )
        check_name_lengths(text, self.name)

    def _resolve_all(self, paths: Sequence[PathLike]) -> list[str]:
        """:meth:`_resolve` each path, resolving each distinct parent directory once.

        Resolving symlinks costs an ``lstat`` per path component; in a batch,
        once a parent is known to resolve inside the root, a path in it needs
        only one ``lstat`` of its own name (to catch a symlink pointing out).
        """
        if self.root is None:
            return [self._resolve(path) for path in paths]
        root = str(self.root)
        inside: set[str] = set()
        targets = []
        for path in paths:
            candidate = os.path.abspath(os.path.join(root, as_path_string(path, self.name)))
            parent, name = os.path.split(candidate)
            if parent in inside and not name.startswith(TEMP_PREFIX) and not os.path.islink(candidate):
                targets.append(candidate)
                continue
            targets.append(self._resolve(path))
            try:
                confine(parent, self.root, self.name)
            except InvalidPathError:
                continue  # the path is the root itself, whose parent lies outside
            inside.add(parent)
        return targets

    # -- writing ---------------------------------------------------------
    def save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        # docstring inherited
        target = self._resolve(path)
        self._write(self._encode(data, target, path, kwargs), target, path, overwrite)

    def check_save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        # docstring inherited
        target = self._resolve(path)
        self._encode(data, target, path, kwargs)
        self._check_free(target, path, overwrite)

    def save_batch(
        self, data_list: Sequence[Any], paths: Sequence[PathLike], *, overwrite: bool = False, **kwargs: Any
    ) -> None:
        # docstring inherited
        # Every path and item is checked before the first file is written.
        check_batch_lengths(data_list, paths, self.name)
        targets = self._resolve_all(paths)
        payloads = [
            self._encode(data, target, path, kwargs)
            for data, target, path in zip(data_list, targets, paths, strict=True)
        ]
        check_batch_paths(targets, paths, self.name, overwrite)
        for target, path in zip(targets, paths, strict=True):
            self._check_free(target, path, overwrite)
        for payload, target, path in zip(payloads, targets, paths, strict=True):
            self._write(payload, target, path, overwrite)

    def _encode(self, data: Any, target: str, path: PathLike, options: dict[str, Any]) -> Payload:
        """Check the name, then the data against the suffix; return what to write. No I/O but on an error."""
        self._check_new_name(target, path)
        return encode(data, target, path, options, self.name)

    def _check_free(self, target: str, path: PathLike, overwrite: bool) -> None:
        """Raise what writing ``target`` would raise, as the filesystem is now (one ``lstat``)."""
        try:
            mode = os.lstat(target).st_mode
        except FileNotFoundError:
            return
        except NotADirectoryError:
            raise self._parent_is_file(path) from None
        if stat_module.S_ISDIR(mode):
            raise self._is_directory(path)
        if not overwrite:
            raise FileExistsError(
                errno.EEXIST, f"{self.name} backend: path exists; pass overwrite=True to replace it", str(path)
            )

    def _write(self, payload: Payload, target: str, path: PathLike, overwrite: bool) -> None:
        """Write ``payload`` to a temporary sibling of ``target``, then move it into place."""
        parent, name = os.path.split(target)
        temp, raw = self._create_temp(parent, name, path)
        try:
            # The temporary file stays open, so claimed (see claims.py), until it is in place.
            with raw:
                try:
                    if isinstance(payload, list):
                        _write_buffers(raw.fileno(), payload)
                    else:
                        stream = io.BufferedWriter(raw)
                        payload(stream)
                        stream.flush()
                        stream.detach()  # leave closing to ``with raw``
                    if self.fsync:
                        os.fsync(raw.fileno())
                except OSError as error:
                    # The OS refused part-way (disk full, file size limit, I/O error).
                    reason = error.strerror or str(error)
                    raise OSError(
                        error.errno,
                        f"{self.name} backend: writing failed part-way ({reason}); the path is unchanged",
                        str(path),
                    ) from error
                self._commit(temp, target, path, overwrite)
        except OSError as error:
            _remove_if_present(temp)
            if error.errno == errno.ENAMETOOLONG:  # the OS names the temporary file
                raise OSError(
                    errno.ENAMETOOLONG,
                    f"{self.name} backend: the path is too long for this filesystem; use a shorter path",
                    str(path),
                ) from None
            raise
        except BaseException:
            _remove_if_present(temp)
            raise

    def _create_temp(self, parent: str, name: str, path: PathLike) -> tuple[str, io.FileIO]:
        """Create a claimed temporary file in ``parent`` for ``name``, exclusively; return its path and file.

        A named file (tifffile wants the name), claimed by this writer so
        that :meth:`cleanup` leaves it alone; if a cleanup removed it before
        the claim, another is made.
        """
        while True:
            temp = os.path.join(parent, f"{TEMP_PREFIX}{os.urandom(8).hex()}-{temp_name_part(name, 200)}")
            try:
                raw = io.FileIO(temp, "xb")
            except FileNotFoundError:
                # Parents are made only when missing: one failed open is cheaper
                # than a stat before every write.
                self._make_directories(parent, path)
                raw = io.FileIO(temp, "xb")
            except NotADirectoryError:
                raise self._parent_is_file(path) from None
            if claim(raw.fileno()):
                return temp, raw
            raw.close()

    def _make_directories(self, directory: str, path: PathLike) -> None:
        try:
            os.makedirs(directory, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise self._parent_is_file(path) from None

    def _parent_is_file(self, path: PathLike) -> NotADirectoryError:
        return NotADirectoryError(
            errno.ENOTDIR, f"{self.name} backend: a parent of this path is a file, not a directory", str(path)
        )

    def _commit(self, source: str, target: str, path: PathLike, overwrite: bool) -> None:
        """Move the finished file ``source`` to ``target``: replace, or exclusive create."""
        if overwrite:
            try:
                os.replace(source, target)
            except OSError:
                # Linux reports a directory target as EISDIR, or as ENOTEMPTY
                # when it holds files; both mean the same to the caller.
                if os.path.isdir(target):
                    raise self._is_directory(path) from None
                raise
        else:
            try:
                os.link(source, target, follow_symlinks=False)
            except FileExistsError:
                if os.path.isdir(target):
                    raise self._is_directory(path) from None
                raise FileExistsError(
                    errno.EEXIST, f"{self.name} backend: path exists; pass overwrite=True to replace it", str(path)
                ) from None
            os.unlink(source)
        if self.fsync:
            _fsync_directory(os.path.dirname(target))

    def _is_directory(self, path: PathLike) -> IsADirectoryError:
        return IsADirectoryError(errno.EISDIR, f"{self.name} backend: a directory exists at this path", str(path))

    def _missing(self, path: PathLike) -> FileNotFoundError:
        return FileNotFoundError(errno.ENOENT, f"{self.name} backend: nothing is stored at this path", str(path))

    def ensure_directory(self, path: PathLike) -> None:
        # docstring inherited
        target = self._resolve(path)
        try:
            os.makedirs(target, exist_ok=True)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, f"{self.name} backend: a file exists at this path", str(path)) from None
        except NotADirectoryError:
            raise self._parent_is_file(path) from None

    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        # docstring inherited
        target = self._resolve(path)
        if self.root is not None and target == str(self.root):
            raise IsADirectoryError(errno.EISDIR, f"{self.name} backend: cannot delete the root directory", str(path))
        try:
            if not stat_module.S_ISDIR(os.lstat(target).st_mode):
                os.unlink(target)
            elif recursive:
                shutil.rmtree(target)
            else:
                os.rmdir(target)
        except (FileNotFoundError, NotADirectoryError):
            raise self._missing(path) from None
        except OSError as error:
            if error.errno != errno.ENOTEMPTY:
                raise
            hint = "pass recursive=True"
            if not self.list_dir(path):
                hint = "it holds only temporary files of unfinished writes; call cleanup() or pass recursive=True"
            raise OSError(errno.ENOTEMPTY, f"{self.name} backend: directory is not empty; {hint}", str(path)) from None

    def copy(self, src: PathLike, dst: PathLike, *, overwrite: bool = False, recursive: bool = False) -> None:
        # docstring inherited
        source, target = self._resolve(src), self._resolve(dst)
        if os.path.isdir(source):
            # Each file goes through the atomic copy below, inside the root.
            self.copy_directory(src, dst, overwrite=overwrite, recursive=recursive)
            return
        with self._open_for_reading(source, src) as stream:
            self._check_new_name(target, dst)
            self._write(lambda out: shutil.copyfileobj(stream, out, 1 << 24), target, dst, overwrite)

    def move(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        # docstring inherited
        source, target = self._resolve(src), self._resolve(dst)
        try:
            is_directory = stat_module.S_ISDIR(os.lstat(source).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            raise self._missing(src) from None
        if is_directory:
            raise IsADirectoryError(
                errno.EISDIR, f"{self.name} backend: copy and move take files, not directories", str(src)
            )
        self._check_new_name(target, dst)
        self._make_directories(os.path.dirname(target), dst)
        try:
            self._commit(source, target, dst, overwrite)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            # Another filesystem (possible without a root): copy, then delete.
            self.copy(src, dst, overwrite=overwrite)
            os.unlink(source)

    # -- reading ---------------------------------------------------------
    def _open_for_reading(self, target: str, path: PathLike) -> io.BufferedReader:
        try:
            return open(target, "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise self._missing(path) from None
        except IsADirectoryError:
            raise IsADirectoryError(
                errno.EISDIR, f"{self.name} backend: this path is a directory, not a file", str(path)
            ) from None

    def load(self, path: PathLike, **kwargs: Any) -> Any:
        # docstring inherited
        target = self._resolve(path)
        return self._read(target, path, kwargs)

    def load_batch(self, paths: Sequence[PathLike], **kwargs: Any) -> list[Any]:
        # docstring inherited
        return [self._read(target, path, kwargs) for target, path in zip(self._resolve_all(paths), paths, strict=True)]

    def _read(self, target: str, path: PathLike, kwargs: dict[str, Any]) -> Any:
        kind = FORMATS.get(os.path.splitext(target)[1].lower(), "bytes")
        if kwargs and kind != "tiff":
            raise TypeError(
                f"{self.name} backend: load of {str(path)!r} got unexpected options {sorted(kwargs)}; "
                "only .tif/.tiff files take options (tifffile's)"
            )
        with self._open_for_reading(target, path) as stream:
            if kind == "tiff":
                return read_tiff(stream, path, kwargs, self.name)
            if kind == "npy":
                return read_npy(stream, path)
            if kind == "npz":
                return read_npz(stream, path, self.name)
            content = stream.read()
        if kind == "bytes":
            return content
        try:
            return content.decode("utf-8") if kind == "txt" else json.loads(content)
        except ValueError as error:
            raise ValueError(
                f"{self.name} backend: {str(path)!r} is not valid {'UTF-8 text' if kind == 'txt' else 'JSON'}: {error}"
            ) from error

    def exists(self, path: PathLike) -> bool:
        # docstring inherited
        return os.path.exists(self._resolve(path))

    def is_file(self, path: PathLike) -> bool:
        # docstring inherited
        return os.path.isfile(self._resolve(path))

    def is_dir(self, path: PathLike) -> bool:
        # docstring inherited
        return os.path.isdir(self._resolve(path))

    def _scan(self, directory: str, path: PathLike) -> list[os.DirEntry[str]]:
        """Return the entries of ``directory``, temporary files left out."""
        try:
            with os.scandir(directory) as entries:
                return [entry for entry in entries if not entry.name.startswith(TEMP_PREFIX)]
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT, f"{self.name} backend: no directory at this path", str(path)
            ) from None
        except NotADirectoryError:
            if os.path.isfile(directory):
                raise NotADirectoryError(
                    errno.ENOTDIR, f"{self.name} backend: this path is a file, not a directory", str(path)
                ) from None
            # A path below a file does not exist, as on every backend.
            raise FileNotFoundError(
                errno.ENOENT, f"{self.name} backend: no directory at this path", str(path)
            ) from None

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
        sort: str = "lexicographic",
    ) -> list[str]:
        # docstring inherited
        # Symlinked files are listed; symlinked directories are not walked into.
        names: list[str] = []
        pending = [("", self._scan(self._resolve(directory), directory))]
        while pending:
            prefix, entries = pending.pop()
            for entry in entries:
                if entry.is_file():
                    names.append(prefix + entry.name)
                elif recursive and entry.is_dir(follow_symlinks=False):
                    try:
                        pending.append((f"{prefix}{entry.name}/", self._scan(entry.path, directory)))
                    except FileNotFoundError:
                        continue  # deleted while we were listing
        base = str(directory)
        return sort_names((posixpath.join(base, name) for name in filter_names(names, pattern, extensions)), sort)

    def list_dir(self, path: PathLike, sort: str = "lexicographic") -> list[str]:
        # docstring inherited
        return sort_names((entry.name for entry in self._scan(self._resolve(path), path)), sort)

    def stat(self, path: PathLike) -> dict[str, Any]:
        """Return ``type``, ``size`` in bytes (0 for a directory, as on every backend) and ``mtime``."""
        try:
            info = os.stat(self._resolve(path))
        except (FileNotFoundError, NotADirectoryError):
            raise self._missing(path) from None
        if stat_module.S_ISDIR(info.st_mode):
            return {"type": "directory", "size": 0, "mtime": info.st_mtime}
        return {"type": "file", "size": info.st_size, "mtime": info.st_mtime}

    # -- maintenance -----------------------------------------------------
    def cleanup(self, directory: PathLike | None = None, older_than: float = 0.0) -> list[str]:
        """Remove temporary files that killed writers left behind.

        Parameters
        ----------
        directory
            Where to look, with all its subdirectories; by default the root.
        older_than
            Remove only temporary files last modified at least this many
            seconds ago (by default any age).

        Returns
        -------
        list of str
            The sorted absolute paths of the removed files.

        Notes
        -----
        Safe to run at any time, with any arguments, beside writers in any
        process: a writer claims its temporary file (an exclusive ``flock``)
        until the file is in place, and the OS drops the claim when the writer
        ends, killed or not; only unclaimed files are removed (see
        :mod:`polystore.backends.claims`).
        """
        if directory is None:
            if self.root is None:
                raise TypeError(f"{self.name} backend: cleanup() needs a directory when the backend has no root")
            top = str(self.root)
        else:
            top = self._resolve(directory)
        deadline = time.time() - older_than
        removed = []
        for folder, _, files in os.walk(top):
            for name in files:
                if not name.startswith(TEMP_PREFIX):
                    continue
                temp = os.path.join(folder, name)
                if remove_if_unclaimed(temp, deadline, os.unlink):
                    removed.append(temp)
        return sorted(removed)


# -- formats -------------------------------------------------------------
# -- low-level file helpers ----------------------------------------------
def _write_buffers(descriptor: int, buffers: list[Any]) -> None:
    """Write every buffer in order; a single write may stop short (over 2 GiB)."""
    views = [memoryview(buffer).cast("B") for buffer in buffers]
    total = sum(len(view) for view in views)
    fallocate = _fallocate() if total >= _PREALLOCATE_FROM else None
    if fallocate is not None:
        # As numpy's tofile does: reserving the blocks first makes large
        # writes faster (ext4: 8 GB/s against 5.4 for 256 MiB). Only a hint,
        # so its failure (a filesystem without fallocate) is ignored.
        fallocate(descriptor, _FALLOC_FL_KEEP_SIZE, 0, total)
    written = os.writev(descriptor, views)
    for view in views:
        if written >= len(view):
            written -= len(view)
            continue
        view = view[written:]
        written = 0
        while view:
            view = view[os.write(descriptor, view):]


@functools.cache
def _fallocate() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``fallocate(2)`` through ctypes, or None where there is none.

    ``os.posix_fallocate`` is no substitute: where the filesystem lacks
    fallocate, glibc emulates it by writing every block, which is slow.
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


def _fsync_directory(directory: str) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_if_present(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
