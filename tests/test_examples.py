"""The examples run as a user would run them, and the example backend meets the contract."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from polystore import BackendRegistry, FileManager
from polystore.testing import BackendTests

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

from custom_backend import GzipNpyBackend  # noqa: E402  (the examples directory is not a package)


def run_example(name: str, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` with this interpreter, the way ``python examples/<name>`` does."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{name} {' '.join(args)} exited {result.returncode}\n--- stderr ---\n{result.stderr[-4000:]}"
    return result


class TestGzipNpyBackendConformance(BackendTests):
    suffixes = {"array": ".npy.gz"}

    @pytest.fixture
    def backend(self, tmp_path: Path) -> GzipNpyBackend:
        return GzipNpyBackend(root=tmp_path)


def test_custom_backend_is_in_the_registry_and_compresses(tmp_path: Path) -> None:
    fm = FileManager(BackendRegistry({"npygz": {"root": tmp_path}}))
    data = np.zeros((256, 256), dtype=np.float64)
    fm.save(data, "zeros.npy.gz", "npygz")
    np.testing.assert_array_equal(fm.load("zeros.npy.gz", "npygz"), data)
    assert fm.stat("zeros.npy.gz", "npygz")["size"] < data.nbytes / 10
