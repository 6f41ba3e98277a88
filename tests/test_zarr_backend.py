"""The zarr backend: the conformance kit plus what only zarr promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from polystore import ZarrBackend
from polystore.testing import BackendTests


class TestZarrConformance(BackendTests):
    suffixes = {"array": ".zarr"}

    @pytest.fixture
    def backend(self, tmp_path: Path) -> ZarrBackend:
        return ZarrBackend(root=tmp_path)
