"""Placement for ``locality = "process"`` backends: each path lives in the worker process that saved it.

A saved path stays on the worker that saved it (where its data Future
already was, else the next worker in turn), and later operations on it run
there: tasks are pinned to that worker and check its id, so a path whose
worker left or restarted raises ``FileNotFoundError`` naming the path and
the lost worker. Directories, listings and queries span every worker.
"""

from __future__ import annotations

import errno
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from distributed import Future

from polystore.backend import PathLike
from polystore_dask import array_graphs
from polystore_dask.batching import group_items, holders_of, items_per_task, nbytes, ship_parts
from polystore_dask.ordering import OrderedTasks
from polystore_dask.owners import Owners
from polystore_dask.placement import ArrayOptions, BatchPart, Placement
from polystore_dask.replicas import Replication
from polystore_dask.tasks import (
    Outcome,
    call,
    collect,
    copy_tree_here,
    delete_after,
    delete_here,
    save_loaded,
    settle,
    settle_copies,
    settle_deletes,
    unwrap,
)
from polystore_dask.traits import BackendTraits, PathKey
from polystore_dask.workers import Holders, Keeper, Owner, Workers

if TYPE_CHECKING:
    import dask.array
    from dask.delayed import Delayed

__all__ = ["ProcessPlacement"]


class ProcessPlacement(Placement):
    """Tasks run on the worker that keeps their path, which the table of owners records."""

    #: The view of the cluster whose members own paths: here each worker process.
    workers_view: type[Workers] = Workers
    replicates = True

    def __init__(self, traits: BackendTraits, tasks: OrderedTasks) -> None:
        super().__init__(traits, tasks)
        self.owners = Owners(tasks.client, traits.name, self.workers_view)
        self.replication = Replication(self)

    # -- writing ---------------------------------------------------------
    def save(self, data: Any, path: PathLike, options: dict[str, Any]) -> Future:
        key = self.key(path)
        wanted = self.replication.wanted(key[1], options.pop("replicas", None))
        if wanted > 1 or self.owners.replicated(key[1]) is not None:
            return self.replication.save_batch([data], [path], [key], options, [wanted])
        workers = self.owners.workers()
        owner = self.owners.live(key[1], workers) or self.owners.choose(key[1], workers, data)
        self.owners.set(key[1], owner)
        pin = workers.pin(owner)
        return self.tasks.run(
            "save", call, self.name, "save", (self.shipped(data, pin), path), options,
            path_args=(1,), owner=owner, writes=[key], pin=pin,
        )

    def save_batch(self, data_list: Sequence[Any], paths: Sequence[PathLike], options: dict[str, Any]) -> Future:
        keys = self.keys(paths)
        requested = options.pop("replicas", None)
        wanted = [self.replication.wanted(key[1], requested) for key in keys]
        if any(count > 1 for count in wanted) or any(self.owners.replicated(key[1]) is not None for key in keys):
            return self.replication.save_batch(data_list, paths, keys, options, wanted)
        workers = self.owners.workers()
        held = holders_of(self.client, data_list)
        places = [
            self.owners.live(key[1], workers) or workers.at(held.get(index, "")) for index, key in enumerate(keys)
        ]
        groups = group_items(places, items_per_task(len(keys), len(workers)), [nbytes(data) for data in data_list])
        chosen = []
        for place, positions in groups:
            owner = place or self.owners.next_worker(workers)
            for index in positions:
                self.owners.set(keys[index][1], owner)
            chosen.append(owner)
        pins = [workers.pin(owner) for owner in chosen]
        shipped = ship_parts(self.client, [[data_list[index] for index in positions] for _, positions in groups], pins)
        parts = [
            BatchPart(positions, items, pin, owner)
            for (_, positions), items, pin, owner in zip(groups, shipped, pins, chosen, strict=True)
        ]
        return self.submit_batch(parts, paths, keys, options)

    def ensure_directory(self, path: PathLike) -> Future:
        key = self.key(path)
        workers = self.owners.workers()
        keeper = self.owners.live(key[1], workers) or self.owners.keeper_of_ancestor(key[1], workers)
        if keeper is not None:
            # A file is at the path or above it: fail where that file is.
            return self.tasks.run(
                "ensure_directory", call, self.name, "ensure_directory", (path,), {},
                path_args=(0,), owner=keeper, writes=[key], pin=workers.pin(keeper),
            )
        # Directories are made on every worker, so that a later save of this
        # path fails with IsADirectoryError wherever it runs.
        return self._on_every_worker(
            "ensure_directory", key, workers.running(),
            lambda index, each, after, token: self.tasks.submit(
                f"polystore-ensure_directory-run-{token}-{index}", call, self.name, "ensure_directory", (path,), {},
                path_args=(0,), owner=each, after=after, pin=workers.pin(each),
            ),
            settle,
        )

    def delete(self, path: PathLike, recursive: bool) -> Future:
        key = self.key(path)
        owner = self.owners.get(key[1])
        replicated = self.owners.replicated(key[1]) is not None
        if owner is not None and not replicated and not self.owners.keepers_inside(key[1]):
            future = self.tasks.run(
                "delete", call, self.name, "delete", (path,), {"recursive": recursive},
                path_args=(0,), owner=owner, writes=[key], pin=self.owners.workers().pin(owner),
            )
        else:
            workers = self.owners.workers()
            future = self._on_every_worker(
                "delete", key, workers.owners(),
                lambda index, each, after, token: self.tasks.submit(
                    f"polystore-delete-run-{token}-{index}", delete_here, self.name, str(path), recursive,
                    each, after=after, pin=workers.pin(each),
                ),
                settle_deletes, self.name, str(path),
            )
        def forget(done: Future) -> None:
            if done.status == "finished":
                self.owners.forget(key[1], None if replicated else owner, inside=True)

        future.add_done_callback(forget)
        return future

    def _on_every_worker(
        self, operation: str, key: PathKey, everyone: list[Owner], part: Any, then: Any, *args: Any
    ) -> Future:
        """One task per worker in ``everyone`` (made by ``part``), ordered as one write of ``key``."""
        token = uuid.uuid4().hex
        after = self.tasks.after(writes=[key])
        parts = [part(index, each, after, token) for index, each in enumerate(everyone)]
        barrier = self.tasks.submit(f"polystore-{operation}-run-{token}", collect, parts)
        self.tasks.record(barrier, writes=[key])
        return self.tasks.submit(f"polystore-{operation}-{token}", then, barrier, *args)

    def transfer(
        self, operation: str, src: PathLike, dst: PathLike, overwrite: bool, recursive: bool,
        replicas: int | None = None,
    ) -> Future:
        source, target = self.key(src), self.key(dst)
        if recursive and operation == "copy" and self._is_directory(source):
            return self._copy_tree(src, dst, overwrite)
        moving = operation == "move"
        options = {"overwrite": overwrite}
        owner = self._owner_for_reading(source)
        of_source = self.owners.replicated(source[1])
        wanted = self.replication.wanted(target[1], replicas if replicas or of_source is None else of_source.wanted)
        if wanted > 1 or isinstance(owner, Holders) or self.owners.replicated(target[1]) is not None:
            return self.replication.copy(operation, src, dst, overwrite, wanted, owner)
        workers = self.owners.workers()
        keeper = self.owners.live(target[1], workers)
        if owner is None or keeper is None or keeper == owner:
            if owner is not None:
                self.owners.set(target[1], owner)
            future = self.tasks.run(
                operation, call, self.name, operation, (src, dst), options,
                path_args=(0, 1), owner=owner, writes=[source, target] if moving else [target],
                reads=[] if moving else [source], pin=workers.pin(owner),
            )
        else:
            future = self._between_workers(operation, src, dst, overwrite, owner, keeper, workers)
        if moving and owner is not None:
            moved_from = owner

            def forget(done: Future) -> None:
                if done.status == "finished":
                    self.owners.forget(source[1], moved_from)

            future.add_done_callback(forget)
        return future

    def _is_directory(self, key: PathKey) -> bool:
        """Whether ``key`` is a directory: known from the owners, else asked of every worker."""
        if self.owners.keepers_inside(key[1]):
            return True
        if self.owners.get(key[1]) is not None:
            return False
        self.tasks.settle_before(reads=[key])
        kinds = self.owners.kinds(key[1])
        return "dir" in kinds and "file" not in kinds

    def _copy_tree(self, src: PathLike, dst: PathLike, overwrite: bool) -> Future:
        """Copy the directory ``src`` on every worker, each its own part: copied paths stay with their sources.

        What refuses the copy is checked against every worker first, so a
        refused copy copies nothing anywhere.
        """
        source, target = self.key(src), self.key(dst)
        token = uuid.uuid4().hex
        self.tasks.settle_before(writes=[target], reads=[source])
        refusal = self._refuse_copy_tree(src, dst, overwrite)
        if refusal is not None:
            return self.tasks.submit(f"polystore-copy-{token}", unwrap, Outcome(error=refusal))
        after = self.tasks.after(writes=[target], reads=[source])
        workers = self.owners.workers()
        parts = [
            self.tasks.submit(
                f"polystore-copy-run-{token}-{index}", copy_tree_here, self.name, str(src), str(dst), overwrite,
                each, after=after, pin=workers.pin(each),
            )
            for index, each in enumerate(workers.owners())
        ]
        barrier = self.tasks.submit(f"polystore-copy-run-{token}", collect, parts)
        self.tasks.record(barrier, writes=[target], reads=[source])
        future = self.tasks.submit(f"polystore-copy-{token}", settle_copies, barrier, self.name, str(src))
        # Recorded now, not when the copy finishes: a done-callback can run after the user's ``.result()``
        # returned, and a load issued in between would be routed to an old copy on another worker. Later
        # operations on these paths wait for the copy, so none runs against the table early.
        self.owners.copy_inside(source[1], target[1])
        return future

    def _refuse_copy_tree(self, src: PathLike, dst: PathLike, overwrite: bool) -> Exception | None:
        """The error a directory copy of ``src`` to ``dst`` is refused with, if any, as any worker would see it."""
        source, target = self.key(src)[1], self.key(dst)[1]
        if target == source or target.startswith(source + "/" if source else ""):
            return ValueError(
                f"{self.name} backend: cannot copy the directory {str(src)!r} into its own subtree "
                f"({str(dst)!r}); choose a destination outside it"
            )
        kinds = self.owners.kinds(target)
        if "file" in kinds:
            return NotADirectoryError(
                errno.ENOTDIR,
                f"{self.name} backend: a file exists at the destination of a directory copy; "
                "delete it or choose another destination",
                str(dst),
            )
        if not overwrite and any(kind is not None for kind in kinds):
            return FileExistsError(
                errno.EEXIST, f"{self.name} backend: destination exists; pass overwrite=True to copy into it", str(dst)
            )
        return None

    def _between_workers(
        self,
        operation: str,
        src: PathLike,
        dst: PathLike,
        overwrite: bool,
        owner: Owner,
        keeper: Owner,
        workers: Workers,
    ) -> Future:
        """Copy or move ``src`` (kept by ``owner``) onto ``dst``, kept by another worker: the data goes there."""
        source, target = self.key(src), self.key(dst)
        moving = operation == "move"
        token = uuid.uuid4().hex
        loaded = self.tasks.submit(
            f"polystore-{operation}-run-{token}-load", call, self.name, "load", (src,), {},
            path_args=(0,), owner=owner, after=self.tasks.after(**{"writes" if moving else "reads": [source]}),
            pin=workers.pin(owner),
        )
        saved = self.tasks.submit(
            f"polystore-{operation}-run-{token}-save", save_loaded, loaded, self.name, str(dst), overwrite, keeper,
            after=self.tasks.after(writes=[target]), pin=workers.pin(keeper),
        )
        self.tasks.record(saved, writes=[target])
        last = saved
        if moving:
            last = self.tasks.submit(
                f"polystore-{operation}-run-{token}", delete_after, saved, self.name, str(src), owner,
                pin=workers.pin(owner),
            )
            self.tasks.record(last, writes=[source])
        else:
            self.tasks.record(loaded, reads=[source])
        return self.tasks.submit(f"polystore-{operation}-{token}", unwrap, last, pin=workers.pin(keeper))

    # -- reading ---------------------------------------------------------
    def load(self, path: PathLike, options: dict[str, Any]) -> Future:
        key = self.key(path)
        owner = self._owner_for_reading(key)
        return self.tasks.run(
            "load", call, self.name, "load", (path,), options,
            path_args=(0,), owner=owner, reads=[key], pin=self.owners.workers().pin(owner),
        )

    def load_batch(self, paths: Sequence[PathLike], options: dict[str, Any]) -> Future:
        keys = self.keys(paths)
        workers = self.owners.workers()
        unknown = [key for key in keys if self.owners.get(key[1]) is None]
        if unknown:
            self.tasks.settle_before(reads=unknown)
            self.owners.locate([key[1] for key in unknown])
        owners: list[Keeper | None] = [self.owners.keeper(key[1]) for key in keys]
        return self.submit_loads(owners, paths, keys, options, workers)

    def query(self, method: str, path: PathLike, options: dict[str, Any]) -> Any:
        key = self.key(path)
        self.tasks.settle_before(reads=[key])
        if method == "stat":
            return self.owners.stat(key[1], str(path))
        if method in ("list_files", "list_dir"):
            return self.owners.listing(method, path, options)
        kinds = self.owners.kinds(key[1])
        wanted = {"exists": {"file", "dir"}, "is_file": {"file"}, "is_dir": {"dir"}}[method]
        return any(kind in wanted for kind in kinds)

    def _owner_for_reading(self, key: PathKey) -> Keeper | None:
        """The worker to read a path on: its owner (the holders of its replicas), else whoever has it (None: nobody)."""
        owner = self.owners.keeper(key[1])
        if owner is None:
            self.tasks.settle_before(reads=[key])
            found = self.owners.locate([key[1]]).get(key[1])
            owner = None if found is None else found[0]
        return owner

    # -- arrays ----------------------------------------------------------
    def save_array(self, x: dask.array.Array, path: PathLike, options: ArrayOptions) -> Delayed | None:
        requested = options.pop("replicas", None)
        wanted = self.traits.replicas if requested is None else requested
        if wanted > 1 and not options["compute"]:
            raise ValueError(
                f"{self.name} backend: save_array(..., replicas={wanted}) needs compute=True (the replicas are "
                "made once every block is kept); compute the Delayed of a replicas=1 save instead"
            )
        return array_graphs.save_blocks(
            self.tasks, self.owners, self.traits, x, path, self.key(path), options,
            kept_by=None if wanted == 1 else lambda kept: self.replication.replicate(kept, wanted),
        )

    def load_array(self, path: PathLike, chunks: Any) -> dask.array.Array:
        return array_graphs.load_blocks(self.tasks, self.owners, self.traits, path, self.key(path), chunks)
