"""Every Python code block in the README runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._seaweed import SeaweedServer, seaweed_server

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.fixture(scope="module")
def bucket_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A SeaweedFS on 127.0.0.1 for the blocks that use a bucket, reached as a user would: by the AWS environment."""
    with seaweed_server(tmp_path_factory.mktemp("readme-seaweed"), buckets=("readme-bucket",)) as server:
        yield server


def environment(block: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment a block runs in: with ``POLYSTORE_BUCKET`` in it, the standard AWS variables of a server."""
    if "POLYSTORE_BUCKET" not in block:
        return dict(os.environ)
    server: SeaweedServer = request.getfixturevalue("bucket_server")
    return {
        **os.environ,
        "POLYSTORE_BUCKET": server.buckets[0],
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": server.secret_access_key,
    }


def test_the_readme_has_code_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_code_block_runs(block: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    script = tmp_path / "block.py"
    script.write_text(block)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=environment(block, request),
    )
    assert result.returncode == 0, f"README block failed:\n{block}\n--- stderr ---\n{result.stderr[-3000:]}"
