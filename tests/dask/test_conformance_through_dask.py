"""The conformance kit, run through DaskFileManager: "same methods, same answers" on the cluster.

Each test gets fresh worker registries: the plugin is registered anew with
the test's own ``tmp_path`` as the root of ``disk``, ``zarr`` and ``scratch`` (so the
kit's relative paths, and its confinement checks, land there), which also
empties every worker's ``memory``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from distributed import Client

from polystore import DiskBackend, MemoryBackend, ScratchBackend, StorageBackend, ZarrBackend
from polystore.backend import Locality, PathLike
from polystore.testing import BackendTests
from polystore_dask import DaskFileManager, PolystorePlugin
from tests._cluster import PATIENCE


class ThroughDask(StorageBackend):
    """A backend whose every method runs through a DaskFileManager on ``backend`` and waits for the answer."""

    def __init__(self, dfm: DaskFileManager, backend: str, like: type[StorageBackend]) -> None:
        self.dfm = dfm
        self.backend = backend
        self.stored_kinds = like.stored_kinds  # type: ignore[misc]
        self.locality: Locality = like.locality  # type: ignore[misc]

    @property
    def name(self) -> str:
        return self.backend

    def save(self, data: Any, path: PathLike, *, overwrite: bool = False, **kwargs: Any) -> None:
        self.dfm.save(data, path, self.backend, overwrite=overwrite, **kwargs).result(timeout=PATIENCE)

    def save_batch(
        self, data_list: Sequence[Any], paths: Sequence[PathLike], *, overwrite: bool = False, **kwargs: Any
    ) -> None:
        self.dfm.save_batch(data_list, paths, self.backend, overwrite=overwrite, **kwargs).result(timeout=PATIENCE)

    def ensure_directory(self, path: PathLike) -> None:
        self.dfm.ensure_directory(path, self.backend).result(timeout=PATIENCE)

    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        self.dfm.delete(path, self.backend, recursive=recursive).result(timeout=PATIENCE)

    def copy(self, src: PathLike, dst: PathLike, *, overwrite: bool = False, recursive: bool = False) -> None:
        self.dfm.copy(src, dst, self.backend, overwrite=overwrite, recursive=recursive).result(timeout=PATIENCE)

    def move(self, src: PathLike, dst: PathLike, *, overwrite: bool = False) -> None:
        self.dfm.move(src, dst, self.backend, overwrite=overwrite).result(timeout=PATIENCE)

    def load(self, path: PathLike, **kwargs: Any) -> Any:
        return self.dfm.load(path, self.backend, **kwargs).result(timeout=PATIENCE)

    def load_batch(self, paths: Sequence[PathLike], **kwargs: Any) -> list[Any]:
        loaded: list[Any] = self.dfm.load_batch(paths, self.backend, **kwargs).result(timeout=PATIENCE)
        return loaded

    def exists(self, path: PathLike) -> bool:
        return self.dfm.exists(path, self.backend)

    def is_file(self, path: PathLike) -> bool:
        return self.dfm.is_file(path, self.backend)

    def is_dir(self, path: PathLike) -> bool:
        return self.dfm.is_dir(path, self.backend)

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: set[str] | None = None,
        recursive: bool = False,
        sort: str = "lexicographic",
    ) -> list[str]:
        return self.dfm.list_files(
            directory, self.backend, pattern=pattern, extensions=extensions, recursive=recursive, sort=sort
        )

    def list_dir(self, path: PathLike, sort: str = "lexicographic") -> list[str]:
        return self.dfm.list_dir(path, self.backend, sort=sort)

    def stat(self, path: PathLike) -> dict[str, Any]:
        return self.dfm.stat(path, self.backend)


@pytest.fixture
def fresh_dfm(client: Client, tmp_path: Path) -> Iterator[DaskFileManager]:
    """A manager on workers whose registries were just built, with ``tmp_path`` as the disk, zarr and scratch root."""
    client.unregister_worker_plugin("polystore")
    roots = {"root": str(tmp_path)}
    client.register_plugin(PolystorePlugin(options={"disk": roots, "zarr": roots, "scratch": roots}))
    client.wait_for_workers(2, timeout=PATIENCE)
    yield DaskFileManager(client)


class TestMemoryThroughDask(BackendTests):
    @pytest.fixture
    def backend(self, fresh_dfm: DaskFileManager) -> StorageBackend:
        return ThroughDask(fresh_dfm, "memory", MemoryBackend)


class TestDiskThroughDask(BackendTests):
    @pytest.fixture
    def backend(self, fresh_dfm: DaskFileManager) -> StorageBackend:
        return ThroughDask(fresh_dfm, "disk", DiskBackend)


class TestScratchThroughDask(BackendTests):
    """Node-local scratch on a LocalCluster: every worker is on one host, so any of them serves every path."""

    @pytest.fixture
    def backend(self, fresh_dfm: DaskFileManager) -> StorageBackend:
        return ThroughDask(fresh_dfm, "scratch", ScratchBackend)


class TestZarrThroughDask(BackendTests):
    suffixes: ClassVar[dict[str, str]] = {"array": ".zarr"}

    @pytest.fixture
    def backend(self, fresh_dfm: DaskFileManager) -> StorageBackend:
        return ThroughDask(fresh_dfm, "zarr", ZarrBackend)
