"""User-defined backends run the same conformance kit as the shipped ones."""

from __future__ import annotations

from typing import Any

import pytest

from polystore import BackendRegistry, FileManager
from polystore.testing import BackendTests, ReadOnlyBackendTests
from tests._custom_backends import CountingBackend, FrozenBackend


class TestCountingBackendConformance(BackendTests):
    @pytest.fixture
    def backend(self) -> CountingBackend:
        return CountingBackend()


class TestFrozenBackendConformance(ReadOnlyBackendTests):
    @pytest.fixture
    def contents(self) -> dict[str, Any]:
        return {"data/a.bin": b"alpha", "data/sub/b.bin": b"beta"}

    @pytest.fixture
    def backend(self, contents: dict[str, Any]) -> FrozenBackend:
        return FrozenBackend(contents)


def test_custom_backends_are_in_every_registry_by_their_key() -> None:
    registry = BackendRegistry()
    assert {"test_counting", "test_frozen"} <= set(registry)
    assert isinstance(registry["test_counting"], CountingBackend)


def test_file_manager_routes_to_a_custom_backend() -> None:
    registry = BackendRegistry()
    fm = FileManager(registry)
    fm.save(b"payload", "x/y.bin", "test_counting")
    assert fm.load("x/y.bin", "test_counting") == b"payload"
    assert registry["test_counting"].calls == {"save": 1, "load": 1}


def test_read_only_backend_options_reach_its_constructor() -> None:
    fm = FileManager(BackendRegistry({"test_frozen": {"contents": {"k.bin": b"v"}}}))
    assert fm.load("k.bin", "test_frozen") == b"v"
