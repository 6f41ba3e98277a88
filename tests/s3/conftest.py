"""The S3 tests' fixtures, on the session's SeaweedFS (the ``seaweed`` fixture of tests/conftest.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from polystore import S3Backend
from tests._seaweed import SeaweedServer


@pytest.fixture
def s3_options(seaweed: SeaweedServer) -> dict[str, Any]:
    """``S3Backend`` options for a prefix of the bucket that no other test uses."""
    return seaweed.backend_options(prefix=f"tests/{uuid.uuid4().hex}")


@pytest.fixture
def s3(s3_options: dict[str, Any]) -> S3Backend:
    """An S3Backend on the session's server, in a fresh prefix."""
    return S3Backend(**s3_options)
