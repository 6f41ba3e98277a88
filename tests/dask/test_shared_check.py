"""The shared-filesystem check on one machine: it passes, leaves nothing behind, and skips what has no root.

(On hosts that do not share a filesystem it refuses: tests/multihost/test_hosts.py.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from polystore import DiskBackend, MemoryBackend, S3Backend, ScratchBackend
from polystore_dask import PolystorePlugin
from polystore_dask.sharing import Marker, check_shared, leave_marker


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-check")


@pytest.fixture(scope="module")
def polystore_plugin(root: Path) -> PolystorePlugin:
    return PolystorePlugin(options={"disk": {"root": str(root / "disk")}, "zarr": {"root": str(root / "zarr")}})


@pytest.mark.parametrize("backend", ["disk", "zarr"])
def test_a_shared_root_on_one_machine_passes_and_the_marker_is_gone(client, dfm, root, backend):
    assert dfm.exists("nothing.npy", backend) is False
    assert os.listdir(root / backend) == [], "the check's marker is removed before the first operation runs"


def test_a_marker_missing_on_every_worker_is_refused_naming_backend_root_and_hosts(client, root):
    # A marker no worker can see stands for a root the workers do not share.
    hostname = next(iter(client.run(__import__("socket").gethostname).values()))
    marker = Marker(str(root / "elsewhere"), str(root / "elsewhere" / "never-written"), "writer-host", "tcp://x")
    with pytest.raises(RuntimeError) as caught:
        check_shared(client, "disk", "DiskBackend", marker)
    message = str(caught.value)
    assert "disk backend (DiskBackend)" in message and str(root / "elsewhere") in message
    assert "writer-host" in message and hostname in message
    assert "locality='host'" in message and "'s3'" in message


class _Worker:
    address = "tcp://127.0.0.1:1"


def test_only_shared_backends_with_a_filesystem_root_leave_a_marker(tmp_path):
    assert leave_marker(_Worker(), MemoryBackend(), str(tmp_path)) is None
    assert leave_marker(_Worker(), S3Backend("bucket", endpoint="http://127.0.0.1:1", allow_http=True), "") is None
    assert leave_marker(_Worker(), ScratchBackend(root=tmp_path), str(tmp_path)) is None
    marker = leave_marker(_Worker(), DiskBackend(root=tmp_path / "root"), "/elsewhere")
    assert marker is not None and marker.root == str(tmp_path / "root") and os.path.exists(marker.path)
    assert DiskBackend(root=tmp_path / "root").list_dir(".") == [], "listings hide the marker"
    without_root = leave_marker(_Worker(), DiskBackend(), str(tmp_path / "client-cwd"))
    assert without_root is not None and without_root.root == str(tmp_path / "client-cwd")
