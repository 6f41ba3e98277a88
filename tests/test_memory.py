"""The memory backend: the conformance kit plus what only memory promises."""

from __future__ import annotations

import numpy as np
import pytest

from polystore import MemoryBackend
from polystore.testing import BackendTests


class TestMemoryConformance(BackendTests):
    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend()
