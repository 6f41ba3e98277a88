"""DaskFileManager: the FileManager API, run as tasks on the workers of a Dask cluster."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from distributed import Client, Future

from polystore.backend import PathLike, check_batch_lengths
from polystore.paths import check_sort
from polystore_dask.labelled import to_dataarray, unlabelled
from polystore_dask.ordering import OrderedTasks
from polystore_dask.per_host import HostPlacement
from polystore_dask.per_process import ProcessPlacement
from polystore_dask.placement import Placement
from polystore_dask.rescue import StrandedTaskRescue
from polystore_dask.shared import SharedPlacement
from polystore_dask.traits import KnownBackends

if TYPE_CHECKING:
    import dask.array
    import xarray
    from dask.delayed import Delayed

__all__ = ["DaskFileManager"]

#: The placement policy for each locality a backend may declare.
PLACEMENTS: dict[str, type[Placement]] = {
    "shared": SharedPlacement, "process": ProcessPlacement, "host": HostPlacement
}


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

    Where tasks run follows the ``locality`` each backend's class declares
    on the workers (learned once per backend), never the backend's name:

    - ``"shared"`` (``disk``, ``zarr``, your own by default): any worker
      runs the task, or the worker holding its data Future. A relative path
      of a filesystem backend is taken relative to this process's working
      directory, unless the backend has a ``root`` on the workers (then it
      is relative to that root). Every worker must see the same data: for
      a backend with a filesystem root the first use checks it (a marker
      one worker writes at the root must be seen by all) and otherwise
      raises ``RuntimeError`` naming the root and the hosts that differ.
    - ``"process"`` (``memory``): a saved path stays on the worker that
      saved it (where its data Future already was, else the next worker in
      turn), and later operations on it run there. Listings show the union
      over workers. A path whose worker left or restarted raises
      ``FileNotFoundError`` that names the path and the lost worker. Paths
      the manager did not save (for example saved by a task through
      :func:`~polystore_dask.get_registry`) are looked for on every worker.
    - Surviving a worker's loss (``"process"`` and ``"host"``): ``save``,
      ``save_batch``, ``copy``, ``move`` and ``save_array`` take ``replicas=k`` (default: the
      plugin's option, e.g. ``PolystorePlugin(options={"memory": {"replicas": 2}})``,
      else 1). Each path is then written on k distinct workers (hosts, for
      a per-host backend) side by side, and counted as held by those whose
      write finished; a load runs on any live holder (the least busy). An
      overwrite is ordered before every later operation, and the path's
      holders switch to the new version when every replica's write has
      finished. A background thread of the manager copies each path that
      lost a holder (its worker left or restarted) from a live holder to
      another worker until k hold it again; with fewer than k workers the
      path stays where it is and a log line says so. Only when every holder
      is lost does a load raise ``FileNotFoundError`` naming the path and
      every holder. ``delete`` removes every replica; listings show each
      path once. ``replicas`` above 1 on a ``"shared"`` backend raises
      ``ValueError``.

    Paths are ordered and routed by the backend's canonical spelling
    (:attr:`~polystore.StorageBackend.path_spelling`), so two spellings of
    one file (``"a.npy"`` and ``"<root>/a.npy"``) are one path.

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
        self._tasks = OrderedTasks(client)
        self._backends = KnownBackends(client)
        self._placements: dict[str, Placement] = {}
        self._lock = threading.Lock()
        client.register_plugin(StrandedTaskRescue())

    def __repr__(self) -> str:
        return f"DaskFileManager({self.client!r})"

    # -- writing ---------------------------------------------------------
    def save(
        self,
        data: Any,
        path: PathLike,
        backend: str,
        *,
        overwrite: bool = False,
        replicas: int | None = None,
        **kwargs: Any,
    ) -> Future:
        """Store ``data`` (a value or a Future) at ``path`` on ``backend``; see :meth:`FileManager.save`.

        A Future's data is saved on the worker that holds it. Data held by
        the client goes in the task graph if small; from 8 MiB it travels
        once, straight to the worker that saves it, and is shipped again
        from ``data`` if that worker dies before saving it (as for
        :meth:`save_batch`: leave ``data`` unchanged until the save is done).
        ``replicas=k`` (per-process and per-host backends only) keeps the
        path on k workers (see the class notes); None: the plugin's
        ``replicas`` option for the backend, else as the path already has,
        else 1.
        """
        placement = self._placement(backend)
        return placement.save(data, path, {"overwrite": overwrite, **kwargs, **_replicas(placement, replicas)})

    def save_batch(
        self,
        data_list: Sequence[Any],
        paths: Sequence[PathLike],
        backend: str,
        *,
        overwrite: bool = False,
        replicas: int | None = None,
        **kwargs: Any,
    ) -> Future:
        """Store each item of ``data_list`` at the matching path, in a few tasks; lengths must match.

        Items are grouped into about two tasks per worker (Future items on
        the worker holding them); the future resolves to None, or raises the
        error of the first failing group (items of other groups may be saved).
        ``replicas`` as for :meth:`save`.

        Items held by the client travel to their workers once, outside the
        task graph; a group whose worker dies before saving it is shipped
        again from the client's items (which are kept, not copied, while the
        returned future is held: leave them unchanged until it is done).
        """
        check_batch_lengths(data_list, paths, _name(backend))
        placement = self._placement(backend)
        options = {"overwrite": overwrite, **kwargs, **_replicas(placement, replicas)}
        return placement.save_batch(data_list, paths, options)

    def ensure_directory(self, path: PathLike, backend: str) -> Future:
        """Create the directory ``path`` and its parents (idempotent)."""
        return self._placement(backend).ensure_directory(path)

    def delete(self, path: PathLike, backend: str, *, recursive: bool = False) -> Future:
        """Delete a file or directory; see :meth:`FileManager.delete`.

        On a per-process backend a file is deleted on the worker keeping it;
        a directory (or a path the manager has not seen) on every worker that has it.
        """
        return self._placement(backend).delete(path, recursive)

    def copy(
        self,
        src: PathLike,
        dst: PathLike,
        backend: str,
        *,
        overwrite: bool = False,
        recursive: bool = False,
        replicas: int | None = None,
    ) -> Future:
        """Copy ``src`` to ``dst`` within ``backend`` (a tree with ``recursive``); see :meth:`FileManager.copy`.

        Per process, the copy stays with the source's worker; a directory is
        copied on every worker keeping paths inside it, each its own part.
        ``replicas`` as for :meth:`save` (None: as many as ``src`` has).
        """
        placement = self._placement(backend)
        placement.check_replicas(replicas)
        return placement.transfer("copy", src, dst, overwrite, recursive, replicas)

    def move(
        self, src: PathLike, dst: PathLike, backend: str, *, overwrite: bool = False, replicas: int | None = None
    ) -> Future:
        """Move ``src`` to ``dst`` within ``backend``; per process, the data stays with the source's worker.

        ``replicas`` as for :meth:`copy`.
        """
        placement = self._placement(backend)
        placement.check_replicas(replicas)
        return placement.transfer("move", src, dst, overwrite, False, replicas)

    # -- reading ---------------------------------------------------------
    def load(self, path: PathLike, backend: str, **kwargs: Any) -> Future:
        """Return a Future of what is stored at ``path``; see :meth:`FileManager.load`."""
        return self._placement(backend).load(path, kwargs)

    def load_batch(self, paths: Sequence[PathLike], backend: str, **kwargs: Any) -> Future:
        """Return a Future of the list of objects stored at ``paths``, in order, loaded in a few tasks."""
        return self._placement(backend).load_batch(paths, kwargs)

    def exists(self, path: PathLike, backend: str) -> bool:
        """Whether anything exists at ``path`` (on any worker, for a per-process backend)."""
        return bool(self._placement(backend).query("exists", path, {}))

    def is_file(self, path: PathLike, backend: str) -> bool:
        """Whether ``path`` is a stored object (on any worker, for a per-process backend)."""
        return bool(self._placement(backend).query("is_file", path, {}))

    def is_dir(self, path: PathLike, backend: str) -> bool:
        """Whether ``path`` is a directory (on any worker, for a per-process backend)."""
        return bool(self._placement(backend).query("is_dir", path, {}))

    def list_files(
        self,
        directory: PathLike,
        backend: str,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
        sort: str = "lexicographic",
    ) -> list[str]:
        """Return the sorted file paths in ``directory`` (the union over workers, for a per-process backend).

        ``sort="natural"`` orders digit runs by value (``img2`` before
        ``img10``); the default is ``"lexicographic"``.
        """
        check_sort(sort)
        options = {"pattern": pattern, "extensions": extensions, "recursive": recursive, "sort": sort}
        listed: list[str] = self._placement(backend).query("list_files", directory, options)
        return listed

    def list_dir(self, path: PathLike, backend: str, sort: str = "lexicographic") -> list[str]:
        """Return the sorted entry names in the directory ``path`` (the union over workers, per process)."""
        check_sort(sort)
        listed: list[str] = self._placement(backend).query("list_dir", path, {"sort": sort})
        return listed

    def stat(self, path: PathLike, backend: str) -> dict[str, Any]:
        """Return ``type`` and ``size`` (and backend extras) of ``path``."""
        stat: dict[str, Any] = self._placement(backend).query("stat", path, {})
        return stat

    # -- arrays ----------------------------------------------------------
    def save_array(
        self,
        x: dask.array.Array | xarray.DataArray,
        path: PathLike,
        backend: str = "zarr",
        *,
        chunks: tuple[int, ...] | None = None,
        shards: tuple[int, ...] | None = None,
        compressor: str | None = "zstd",
        overwrite: bool = False,
        compute: bool = True,
        resume: bool = False,
        dimension_names: Sequence[str | None] | None = None,
        attributes: dict[str, Any] | None = None,
        replicas: int | None = None,
    ) -> Delayed | None:
        """Write the dask array (or DataArray) ``x`` to ``path``, each block by a task on the worker that holds it.

        For a backend that stores arrays by region (``supports_regions``, as
        ``zarr``) the array is created first, then every task writes whole
        chunks (whole shards when ``shards`` is given): ``x`` is rechunked to
        that grid if its blocks do not line up with it, so no two tasks touch
        one chunk and no lock is needed. Each write task computes the blocks
        it writes itself (their tasks are fused into it), and small
        neighbouring blocks are written several to a task, as one region:
        up to 4 MiB of blocks a task, set by the dask config value
        ``polystore.save-array.group-bytes`` on the client (0 writes every
        block by a task of its own). ``chunks=None`` uses ``x``'s chunks
        when they are regular, else the backend's default. With a
        per-process backend (``memory``) each block stays in the memory of
        the worker that computed it, at ``<path>/<i>.<j>...``, with the
        array's layout at ``<path>/.array``.

        The array's creation (or, per process, the check for what exists)
        waits for the unfinished operations on ``path``, like any operation.

        The array is marked incomplete until every block is written, and
        each finished write (a block, or a group of blocks) is recorded in it (see
        :meth:`ZarrBackend.committed_regions`): a run that failed part-way
        leaves an array that loads refuse, and ``resume=True`` then writes
        only the blocks not recorded.

        Parameters
        ----------
        x
            The array to write: a dask array, anything ``dask.array.asarray``
            takes, or an ``xarray.DataArray``, whose dims and attrs are stored
            as its dimension names and attributes (its coordinates are not:
            save each as an array of its own beside it).
        path
            Where to write it.
        backend
            ``"zarr"`` (default), ``"memory"``, or another backend that stores
            arrays by region or keeps data per process.
        chunks, shards, compressor
            As for :meth:`ZarrBackend.create_array`. Per process, ``chunks``
            is the shape of the kept blocks (``x`` is rechunked to it) and
            the other two do not apply.
        overwrite
            Replace an existing array; without it an existing path raises
            ``FileExistsError``.
        compute
            Write now and return None once everything is written; with
            False, return a ``dask.delayed.Delayed`` whose ``compute()``
            writes (the array itself is created, or the old one removed,
            right away; operations issued before that ``compute()`` wait for
            the creation only).
        resume
            Finish the array an earlier ``save_array`` of the same options
            left incomplete: only the blocks it did not record are computed
            and written, then the array is marked complete. The shape, dtype,
            chunks (when asked for, by ``chunks`` or by ``x``'s regular
            blocks), shards, compressor and dimension names must be those of
            the incomplete array, else ``ValueError`` names what differs and
            nothing is written. A complete array there (of the same layout)
            is left as it is and nothing is computed; a missing one is written
            whole. Not with ``overwrite``; only for backends that store arrays
            by region.
        dimension_names
            One name per dimension, stored in the array's metadata, where
            xarray reads its dimensions (default: ``x.dims`` for a DataArray).
        attributes
            A dict of JSON values stored with the array (merged over a
            DataArray's ``attrs``).
        replicas
            Per process or per host: keep each block (and the layout) on
            this many workers; they are copied from the worker that computed
            each block before this returns (needs ``compute=True``). None:
            the plugin's ``replicas`` option for the backend, else 1.

        Raises
        ------
        ValueError
            ``resume`` with a layout that differs from the incomplete
            array's, or with ``overwrite``.
        TypeError
            An ``xarray.Dataset`` (save each variable on its own path).
        """
        data, dimension_names, attributes = unlabelled(x, dimension_names, attributes)
        options = {
            "chunks": chunks, "shards": shards, "compressor": compressor, "overwrite": overwrite, "compute": compute,
            "resume": resume, "dimension_names": dimension_names, "attributes": attributes,
        }
        placement = self._placement(backend)
        return placement.save_array(data, path, {**options, **_replicas(placement, replicas)})

    def load_array(
        self, path: PathLike, backend: str = "zarr", chunks: Any = None, *, as_dataarray: bool = False
    ) -> dask.array.Array | xarray.DataArray:
        """Return a lazy dask array of the array at ``path``, its blocks read by tasks on the workers.

        The layout is read now, by one small task that waits for the
        unfinished writes of ``path``; blocks are read when the array is
        computed, each by a task keyed ``polystore-load_array-...`` (per
        process, on the worker that keeps the block). ``chunks=None`` uses
        the stored chunks (as ``dask.array.from_zarr`` does); other chunks
        take any form ``dask.array`` takes (sizes, ``-1``, ``"auto"``, a
        dict), and chunks that do not fit the stored shape raise
        ``ValueError`` naming the path and that shape.

        With ``as_dataarray=True`` the result is an ``xarray.DataArray`` (of
        that lazy array) with the stored dimension names as its dims, the
        stored attributes as its attrs and the last part of ``path`` as its
        name; an array stored without dimension names raises ``ValueError``.
        It needs xarray (``pip install 'polystore[xarray]'``).
        """
        array = self._placement(backend).load_array(path, chunks)
        if not as_dataarray:
            return array
        return to_dataarray(array, path, backend, self.stat(path, backend))

    # -- plumbing --------------------------------------------------------
    def _placement(self, backend: Any) -> Placement:
        """The placement of ``backend``'s tasks, chosen by the locality its class declares on the workers."""
        name = _name(backend)
        with self._lock:
            placement = self._placements.get(name)
        if placement is not None:
            return placement
        traits = self._backends[name]
        policy = PLACEMENTS.get(traits.locality)
        if policy is None:
            raise ValueError(
                f"{name} backend: {traits.type_name} declares locality {traits.locality!r}, which "
                f"DaskFileManager cannot route; declare one of {sorted(PLACEMENTS)}"
            )
        with self._lock:
            return self._placements.setdefault(name, policy(traits, self._tasks))


def _replicas(placement: Placement, replicas: int | None) -> dict[str, int]:
    """The ``replicas`` option for ``placement``'s save (checked; none for a backend that does not replicate)."""
    placement.check_replicas(replicas)
    return {"replicas": replicas} if replicas is not None and placement.replicates else {}


def _name(backend: Any) -> str:
    if not isinstance(backend, str):
        raise TypeError(
            f"backend must be a backend name (str), not {type(backend).__name__} ({backend!r}); "
            "pass it right after the path, e.g. dfm.load(path, 'disk')"
        )
    return backend
