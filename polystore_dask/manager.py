"""DaskFileManager: the FileManager API, run as tasks on the workers of a Dask cluster."""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from distributed import Client, Future, wait

from polystore.paths import as_path_string, normalize_key
from polystore.backend import PathLike, check_batch_lengths
from polystore_dask import arrays
from polystore_dask.batching import group_items, items_per_task, nbytes
from polystore_dask.chains import PathChains, PathKey
from polystore_dask.rescue import StrandedTaskRescue
from polystore_dask.routing import MemoryOwners, Workers
from polystore_dask.tasks import (
    Owner,
    call,
    collect,
    delete_after,
    delete_here,
    join_batches,
    origin_of,
    save_loaded,
    settle,
    settle_deletes,
    unwrap,
)

if TYPE_CHECKING:
    import dask.array
    from dask.delayed import Delayed

__all__ = ["DaskFileManager"]

MEMORY = "memory"

#: Inline data at least this big is scattered to its worker rather than
#: embedded in the task graph (which distributed warns about from 10 MiB).
_SCATTER_BYTES = 8 << 20


class DaskFileManager:
    """The :class:`~polystore.FileManager` API, run as tasks on a Dask cluster's workers.

    Each task uses the :class:`~polystore.BackendRegistry` that
    :class:`~polystore_dask.PolystorePlugin` built on its worker, so register
    the plugin first. ``save``, ``load``, ``save_batch``, ``load_batch``,
    ``delete``, ``copy``, ``move`` and ``ensure_directory`` return
    ``distributed.Future`` objects; ``exists``, ``is_file``, ``is_dir``,
    ``list_files``, ``list_dir`` and ``stat`` wait and return plain values.

    Operations on one path (or on a directory and paths inside it) issued
    through one manager take effect in the order they were issued, whether
    or not earlier ones succeed: each task waits for the unfinished ones
    before it. Task keys start with ``polystore-<operation>-``.

    ``memory`` is per worker: a saved path stays on the worker that saved it
    (where its data Future already was, else the next worker in turn), and
    later operations on it run there. Listings show the union over workers.
    A path whose worker left or restarted raises ``FileNotFoundError`` that
    names the path and the lost worker. Paths the manager did not save (for
    example saved by a task through :func:`~polystore_dask.get_registry`)
    are looked for on every worker.

    ``disk`` and ``zarr`` assume every worker sees the same filesystem.
    A relative path for them is taken relative to this process's working
    directory, unless the backend was given a ``root`` in the plugin's
    options, in which case it is relative to that root (as on the workers).

    Parameters
    ----------
    client
        The ``distributed.Client`` of the cluster to run on.

    Notes
    -----
    The manager asks the scheduler which workers exist (by process id) and
    registers a small scheduler plugin (:class:`~polystore_dask.rescue.StrandedTaskRescue`),
    so ``polystore_dask`` must be importable on the scheduler as on the
    workers, as Dask expects of any code it runs.

    Examples
    --------
    >>> client.register_plugin(PolystorePlugin())  # doctest: +SKIP
    >>> dfm = DaskFileManager(client)  # doctest: +SKIP
    >>> dfm.save(np.arange(3), "/scratch/a.npy", "disk").result()  # doctest: +SKIP
    >>> dfm.load("/scratch/a.npy", "disk").result()  # doctest: +SKIP
    array([0, 1, 2])
    """

    def __init__(self, client: Client) -> None:
        if not isinstance(client, Client):
            raise TypeError(f"DaskFileManager needs a distributed.Client, not {type(client).__name__}")
        self.client = client
        self._chains = PathChains()
        self._owners = MemoryOwners(client)
        client.register_plugin(StrandedTaskRescue())

    def __repr__(self) -> str:
        return f"DaskFileManager({self.client!r})"

    # -- writing ---------------------------------------------------------
    def save(self, data: Any, path: PathLike, backend: str, *, overwrite: bool = False, **kwargs: Any) -> Future:
        """Store ``data`` (a value or a Future) at ``path`` on ``backend``; see :meth:`FileManager.save`.

        A Future's data is saved on the worker that holds it.
        """
        key = self._key(path, backend)
        options = {"overwrite": overwrite, **kwargs}
        if backend != MEMORY:
            pin = self._holders(data)
            data = self._ship(data, pin)
            return self._run(
                "save", call, backend, "save", (data, path), options,
                path_args=(1,), origin=origin_of(backend), writes=[key], pin=pin,
            )
        workers = Workers(self.client)
        owner = self._owners.live(key[1], workers) or self._owners.choose(key[1], workers, data)
        self._owners.set(key[1], owner)
        data = self._ship(data, [owner.address])
        return self._run(
            "save", call, MEMORY, "save", (data, path), options,
            path_args=(1,), owner=owner, writes=[key], pin=[owner.address],
        )

    def save_batch(
        self, data_list: Sequence[Any], paths: Sequence[PathLike], backend: str, *, overwrite: bool = False, **kwargs: Any
    ) -> Future:
        """Store each item of ``data_list`` at the matching path, in a few tasks; lengths must match.

        Items are grouped into about two tasks per worker (Future items on
        the worker holding them); the future resolves to None, or raises the
        error of the first failing group (items of other groups may be saved).
        """
        check_batch_lengths(data_list, paths, _name(backend))
        keys = [self._key(path, backend) for path in paths]
        workers = Workers(self.client)
        holders = self._holders_of(data_list)
        if backend == MEMORY:
            owners = [
                self._owners.live(key[1], workers) or workers.at(holders.get(index, ""))
                for index, key in enumerate(keys)
            ]
        else:
            owners = [workers.at(holders.get(index, "")) for index in range(len(keys))]
        groups = group_items(owners, items_per_task(len(keys), len(workers)), [nbytes(data) for data in data_list])
        token = uuid.uuid4().hex
        chunks = []
        for part, (owner, positions) in enumerate(groups):
            if owner is None and backend == MEMORY:
                owner = self._owners.next_worker(workers)
            pin = None if owner is None else [owner.address]
            if backend == MEMORY:
                for index in positions:
                    self._owners.set(keys[index][1], owner)
            items = self._ship([data_list[index] for index in positions], pin)
            chunks.append(
                self._start(
                    f"polystore-save_batch-run-{token}-{part}", call, backend, "save_batch",
                    (items, [paths[index] for index in positions]), {"overwrite": overwrite, **kwargs},
                    path_args=(1,), origin=origin_of(backend), owner=owner if backend == MEMORY else None,
                    writes=[keys[index] for index in positions], pin=pin,
                )
            )
        return self._submit(f"polystore-save_batch-{token}", settle, chunks)

    def ensure_directory(self, path: PathLike, backend: str) -> Future:
        """Create the directory ``path`` and its parents (idempotent)."""
        key = self._key(path, backend)
        if backend != MEMORY:
            return self._run(
                "ensure_directory", call, backend, "ensure_directory", (path,), {},
                path_args=(0,), origin=origin_of(backend), writes=[key],
            )
        workers = Workers(self.client)
        keeper = self._owners.live(key[1], workers) or self._owners.keeper_of_ancestor(key[1], workers)
        if keeper is not None:
            # A file is at the path or above it: fail where that file is.
            return self._run(
                "ensure_directory", call, MEMORY, "ensure_directory", (path,), {},
                path_args=(0,), owner=keeper, writes=[key], pin=[keeper.address],
            )
        # Directories are made on every worker, so that a later save of this
        # path fails with IsADirectoryError wherever it runs.
        token = uuid.uuid4().hex
        after = self._chains.waits([key], write=True)
        parts = [
            self._submit(f"polystore-ensure_directory-run-{token}-{index}", call, MEMORY, "ensure_directory", (path,), {},
                         path_args=(0,), owner=each, after=after, pin=[each.address])
            for index, each in enumerate(workers.running())
        ]
        barrier = self._submit(f"polystore-ensure_directory-run-{token}", collect, parts)
        self._chains.add([key], barrier, write=True)
        return self._submit(f"polystore-ensure_directory-{token}", settle, barrier)

    def delete(self, path: PathLike, backend: str, *, recursive: bool = False) -> Future:
        """Delete a file or directory; see :meth:`FileManager.delete`.

        On ``memory`` a file is deleted on the worker keeping it; a directory
        (or a path the manager has not seen) on every worker that has it.
        """
        key = self._key(path, backend)
        options = {"recursive": recursive}
        if backend != MEMORY:
            return self._run(
                "delete", call, backend, "delete", (path,), options,
                path_args=(0,), origin=origin_of(backend), writes=[key],
            )
        owner = self._owners.get(key[1])
        if owner is not None and not self._owners.keepers_inside(key[1]):
            future = self._run(
                "delete", call, MEMORY, "delete", (path,), options,
                path_args=(0,), owner=owner, writes=[key], pin=Workers(self.client).pin(owner),
            )
        else:
            token = uuid.uuid4().hex
            after = self._chains.waits([key], write=True)
            parts = [
                self._submit(f"polystore-delete-run-{token}-{index}", delete_here, str(path), recursive, each.worker_id,
                             after=after, pin=[each.address])
                for index, each in enumerate(Workers(self.client).owners())
            ]
            barrier = self._submit(f"polystore-delete-run-{token}", collect, parts)
            self._chains.add([key], barrier, write=True)
            future = self._submit(f"polystore-delete-{token}", settle_deletes, barrier, str(path))
        future.add_done_callback(
            lambda done: done.status == "finished" and self._owners.forget(key[1], owner, inside=True)
        )
        return future

    def copy(self, src: PathLike, dst: PathLike, backend: str, *, overwrite: bool = False) -> Future:
        """Copy ``src`` to ``dst`` within ``backend``; on ``memory`` the copy stays with the source's worker."""
        return self._transfer("copy", src, dst, backend, overwrite)

    def move(self, src: PathLike, dst: PathLike, backend: str, *, overwrite: bool = False) -> Future:
        """Move ``src`` to ``dst`` within ``backend``; on ``memory`` the data stays with the source's worker."""
        return self._transfer("move", src, dst, backend, overwrite)

    def _transfer(self, operation: str, src: PathLike, dst: PathLike, backend: str, overwrite: bool) -> Future:
        source, target = self._key(src, backend), self._key(dst, backend)
        moving = operation == "move"
        options = {"overwrite": overwrite}
        if backend != MEMORY:
            return self._run(
                operation, call, backend, operation, (src, dst), options,
                path_args=(0, 1), origin=origin_of(backend), writes=[source, target] if moving else [target],
                reads=[] if moving else [source],
            )
        workers = Workers(self.client)
        owner = self._owner_for_reading(source)
        keeper = self._owners.live(target[1], workers)
        if owner is None or keeper is None or keeper == owner:
            if owner is not None:
                self._owners.set(target[1], owner)
            future = self._run(
                operation, call, MEMORY, operation, (src, dst), options,
                path_args=(0, 1), owner=owner, writes=[source, target] if moving else [target],
                reads=[] if moving else [source], pin=workers.pin(owner),
            )
        else:
            # dst is kept by another worker: the data goes there, worker to worker.
            token = uuid.uuid4().hex
            loaded = self._submit(
                f"polystore-{operation}-run-{token}-load", call, MEMORY, "load", (src,), {},
                path_args=(0,), owner=owner, after=self._chains.waits([source], write=moving), pin=workers.pin(owner),
            )
            saved = self._submit(
                f"polystore-{operation}-run-{token}-save", save_loaded, loaded, str(dst), overwrite, keeper,
                after=self._chains.waits([target], write=True), pin=[keeper.address],
            )
            self._chains.add([target], saved, write=True)
            last = saved
            if moving:
                last = self._submit(
                    f"polystore-{operation}-run-{token}", delete_after, saved, str(src), owner, pin=workers.pin(owner)
                )
                self._chains.add([source], last, write=True)
            else:
                self._chains.add([source], loaded, write=False)
            future = self._submit(f"polystore-{operation}-{token}", unwrap, last, pin=[keeper.address])
        if moving and owner is not None:
            future.add_done_callback(lambda done: done.status == "finished" and self._owners.forget(source[1], owner))
        return future

    # -- reading ---------------------------------------------------------
    def load(self, path: PathLike, backend: str, **kwargs: Any) -> Future:
        """Return a Future of what is stored at ``path``; see :meth:`FileManager.load`."""
        key = self._key(path, backend)
        if backend != MEMORY:
            return self._run(
                "load", call, backend, "load", (path,), kwargs,
                path_args=(0,), origin=origin_of(backend), reads=[key],
            )
        owner = self._owner_for_reading(key)
        return self._run(
            "load", call, MEMORY, "load", (path,), kwargs,
            path_args=(0,), owner=owner, reads=[key], pin=Workers(self.client).pin(owner),
        )

    def load_batch(self, paths: Sequence[PathLike], backend: str, **kwargs: Any) -> Future:
        """Return a Future of the list of objects stored at ``paths``, in order, loaded in a few tasks."""
        keys = [self._key(path, backend) for path in paths]
        workers = Workers(self.client)
        if backend == MEMORY:
            unknown = [key for key in keys if self._owners.get(key[1]) is None]
            if unknown:
                wait(self._chains.waits(unknown, write=False))
                self._owners.locate([key[1] for key in unknown])
            owners: list[Owner | None] = [self._owners.get(key[1]) for key in keys]
        else:
            owners = [None] * len(keys)
        groups = group_items(owners, items_per_task(len(keys), len(workers)), [0] * len(keys))
        token = uuid.uuid4().hex
        chunks, positions = [], []
        for part, (owner, where) in enumerate(groups):
            chunks.append(
                self._start(
                    f"polystore-load_batch-run-{token}-{part}", call, backend, "load_batch",
                    ([paths[index] for index in where],), kwargs,
                    path_args=(0,), origin=origin_of(backend), owner=owner,
                    reads=[keys[index] for index in where], pin=workers.pin(owner),
                )
            )
            positions.append(where)
        return self._submit(f"polystore-load_batch-{token}", join_batches, chunks, positions, len(keys))

    def exists(self, path: PathLike, backend: str) -> bool:
        """Whether anything exists at ``path`` (on any worker, for ``memory``)."""
        if backend == MEMORY:
            return any(kind is not None for kind in self._memory_kinds(path))
        return self._ask("exists", backend, path)

    def is_file(self, path: PathLike, backend: str) -> bool:
        """Whether ``path`` is a stored object (on any worker, for ``memory``)."""
        if backend == MEMORY:
            return "file" in self._memory_kinds(path)
        return self._ask("is_file", backend, path)

    def is_dir(self, path: PathLike, backend: str) -> bool:
        """Whether ``path`` is a directory (on any worker, for ``memory``)."""
        if backend == MEMORY:
            return "dir" in self._memory_kinds(path)
        return self._ask("is_dir", backend, path)

    def list_files(
        self,
        directory: PathLike,
        backend: str,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
    ) -> list[str]:
        """Return the sorted file paths in ``directory`` (the union over workers, for ``memory``)."""
        options = {"pattern": pattern, "extensions": extensions, "recursive": recursive}
        if backend == MEMORY:
            return self._memory_listing("list_files", directory, options)
        return self._ask("list_files", backend, directory, options)

    def list_dir(self, path: PathLike, backend: str) -> list[str]:
        """Return the sorted entry names in the directory ``path`` (the union over workers, for ``memory``)."""
        if backend == MEMORY:
            return self._memory_listing("list_dir", path, {})
        return self._ask("list_dir", backend, path)

    def stat(self, path: PathLike, backend: str) -> dict[str, Any]:
        """Return ``type`` and ``size`` (and backend extras) of ``path``."""
        if backend != MEMORY:
            return self._ask("stat", backend, path)
        key = self._key(path, backend)
        wait(self._chains.waits([key], write=False))
        return self._owners.stat(key[1], str(path))

    # -- arrays ----------------------------------------------------------
    def save_array(
        self,
        x: dask.array.Array,
        path: PathLike,
        backend: str = "zarr",
        *,
        chunks: tuple[int, ...] | None = None,
        shards: tuple[int, ...] | None = None,
        compressor: str | None = "zstd",
        overwrite: bool = False,
        compute: bool = True,
    ) -> Delayed | None:
        """Write the dask array ``x`` to ``path``, each block by a task on the worker that holds it.

        For ``zarr`` (or any backend with ``create_array``) the array is
        created first, then every task writes whole chunks (whole shards when
        ``shards`` is given): ``x`` is rechunked to that grid if its blocks
        do not line up with it, so no two tasks touch one chunk and no lock
        is needed. ``chunks=None`` uses ``x``'s chunks when they are regular,
        else the backend's default. With ``backend="memory"`` each block stays
        in the memory of the worker that computed it, at ``<path>/<i>.<j>...``,
        with the array's layout at ``<path>/.array``.

        Parameters
        ----------
        x
            The array to write.
        path
            Where to write it.
        backend
            ``"zarr"`` (default), ``"memory"``, or another backend with
            ``create_array`` and region saves.
        chunks, shards, compressor
            As for :meth:`ZarrBackend.create_array`. For ``memory``,
            ``chunks`` is the shape of the kept blocks (``x`` is rechunked
            to it) and the other two do not apply.
        overwrite
            Replace an existing array; without it an existing path raises
            ``FileExistsError``.
        compute
            Write now and return None once everything is written; with
            False, return a ``dask.delayed.Delayed`` whose ``compute()``
            writes (the array itself is created, or the old one removed,
            right away).
        """
        return arrays.save_array(
            self, x, path, _name(backend), chunks=chunks, shards=shards,
            compressor=compressor, overwrite=overwrite, compute=compute,
        )

    def load_array(self, path: PathLike, backend: str = "zarr", chunks: Any = None) -> dask.array.Array:
        """Return a lazy dask array of the array at ``path``, its blocks read by tasks on the workers.

        The layout is read now, by one small task; blocks are read when the
        array is computed, each by a task keyed ``polystore-load_array-...``
        (on ``memory``, on the worker that keeps the block). ``chunks=None``
        uses the stored chunks (as ``dask.array.from_zarr`` does).
        """
        return arrays.load_array(self, path, _name(backend), chunks)

    # -- plumbing --------------------------------------------------------
    def _key(self, path: PathLike, backend: str) -> PathKey:
        backend = _name(backend)
        if backend == MEMORY:
            return backend, normalize_key(path, MEMORY)
        return backend, posixpath.normpath(os.path.abspath(as_path_string(path, backend)))

    def _submit(self, key: str, function: Callable[..., Any], *args: Any, pin: list[str] | None = None, **kwargs: Any) -> Future:
        return self.client.submit(
            function, *args, key=key, pure=False, workers=pin, allow_other_workers=pin is not None, **kwargs
        )

    def _start(
        self,
        key: str,
        function: Callable[..., Any],
        *args: Any,
        writes: Sequence[PathKey] = (),
        reads: Sequence[PathKey] = (),
        pin: list[str] | None = None,
        **kwargs: Any,
    ) -> Future:
        """Submit the task of one operation (or batch chunk), after the unfinished ones it must follow."""
        after = {future.key: future for future in self._chains.waits(writes, write=True)}
        after.update((future.key, future) for future in self._chains.waits(reads, write=False))
        outcome = self._submit(key, function, *args, after=list(after.values()), pin=pin, **kwargs)
        self._chains.add(writes, outcome, write=True)
        self._chains.add(reads, outcome, write=False)
        return outcome

    def _run(
        self, operation: str, function: Callable[..., Any], *args: Any, pin: list[str] | None = None, **kwargs: Any
    ) -> Future:
        """Submit an operation's task and the task whose result (or error) the user's future holds."""
        token = uuid.uuid4().hex
        outcome = self._start(f"polystore-{operation}-run-{token}", function, *args, pin=pin, **kwargs)
        return self._submit(f"polystore-{operation}-{token}", unwrap, outcome, pin=pin)

    def _ask(self, operation: str, backend: str, path: PathLike, options: dict[str, Any] | None = None) -> Any:
        """Run a query on some worker after the unfinished operations it must follow; return its answer."""
        key = self._key(path, backend)
        outcome = self._submit(
            f"polystore-{operation}-{uuid.uuid4().hex}", call, backend, operation, (path,), options or {},
            path_args=(0,), origin=origin_of(backend), after=self._chains.waits([key], write=False),
        )
        return outcome.result().result()

    def _owner_for_reading(self, key: PathKey) -> Owner | None:
        """The worker to read a memory path on: its owner, else whoever has it (None: nobody)."""
        owner = self._owners.get(key[1])
        if owner is None:
            wait(self._chains.waits([key], write=False))
            found = self._owners.locate([key[1]]).get(key[1])
            owner = None if found is None else found[0]
        return owner

    def _memory_kinds(self, path: PathLike) -> list[str | None]:
        key = self._key(path, MEMORY)
        wait(self._chains.waits([key], write=False))
        return self._owners.kinds(key[1])

    def _memory_listing(self, method: str, path: PathLike, options: dict[str, Any]) -> list[str]:
        wait(self._chains.waits([self._key(path, MEMORY)], write=False))
        return self._owners.listing(method, path, options)

    def _holders(self, data: Any) -> list[str] | None:
        """The workers holding ``data`` if it is a finished Future (its task runs there)."""
        if not isinstance(data, Future):
            return None
        return sorted(self.client.who_has([data]).get(data.key, ())) or None

    def _holders_of(self, data_list: Sequence[Any]) -> dict[int, str]:
        futures = {index: data for index, data in enumerate(data_list) if isinstance(data, Future)}
        if not futures:
            return {}
        who_has = self.client.who_has(list(futures.values()))
        return {
            index: sorted(who_has[future.key])[0]
            for index, future in futures.items()
            if who_has.get(future.key)
        }

    def _ship(self, data: Any, pin: list[str] | None) -> Any:
        """Scatter large inline data (to the pinned worker) instead of embedding it in the graph."""
        if isinstance(data, list):
            if sum(map(nbytes, data)) < _SCATTER_BYTES:
                return data
            return [self._ship(item, pin) if nbytes(item) else item for item in data]
        if nbytes(data) < _SCATTER_BYTES:
            return data
        return self.client.scatter(data, workers=pin, hash=False)


def _name(backend: Any) -> str:
    if not isinstance(backend, str):
        raise TypeError(
            f"backend must be a backend name (str), not {type(backend).__name__} ({backend!r}); "
            "pass it right after the path, e.g. dfm.load(path, 'disk')"
        )
    return backend
