"""The scratch backend: disk's contract (the conformance kit), under its own name and locality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from polystore import BackendRegistry, DiskBackend, FileManager, ScratchBackend
from polystore.testing import BackendTests


class TestScratchConformance(BackendTests):
    array_suffixes = (".npy", ".tif")

    @pytest.fixture
    def backend(self, tmp_path: Path) -> ScratchBackend:
        return ScratchBackend(root=tmp_path)


def test_scratch_declares_host_locality_and_disk_declares_shared() -> None:
    assert ScratchBackend.locality == "host"
    assert DiskBackend.locality == "shared"


def test_scratch_is_configured_like_disk_and_files_are_plain_files(tmp_path: Path) -> None:
    registry = BackendRegistry({"scratch": {"root": str(tmp_path)}})
    FileManager(registry).save(np.arange(4), "run/a.npy", "scratch")
    assert np.array_equal(np.load(tmp_path / "run" / "a.npy"), np.arange(4))


def test_scratch_errors_name_the_scratch_backend(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="^.*scratch backend: nothing is stored"):
        ScratchBackend(root=tmp_path).load("missing.npy")
