"""The disk backend: the conformance kit plus what only disk promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from polystore import DiskBackend
from polystore.testing import BackendTests


class TestDiskConformance(BackendTests):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> DiskBackend:
        return DiskBackend(root=tmp_path)
