"""Self-registration of backend classes and the BackendRegistry mapping."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from metaclass_registry.testing import restored_registry

from polystore import BackendNotFoundError, BackendRegistry, FileManager, MemoryBackend, StorageBackend
from tests._custom_backends import CountingBackend

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def scratch_registry() -> Iterator[None]:
    """Classes defined inside a test are unregistered again after it."""
    with restored_registry(StorageBackend):
        yield


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=120,
    )


def test_defining_a_concrete_subclass_registers_it(scratch_registry: None) -> None:
    registry = BackendRegistry()

    class MyBackend(CountingBackend):
        _backend_type = "my_backend"

    assert "my_backend" in registry
    assert isinstance(registry["my_backend"], MyBackend)


def test_a_class_with_abstract_methods_is_not_registered(scratch_registry: None) -> None:
    class HalfDone(StorageBackend):
        _backend_type = "half_done"

        def save(self, data: Any, path: Any, *, overwrite: bool = False, **kwargs: Any) -> None:
            return None

    assert "half_done" not in BackendRegistry()


def test_reusing_a_taken_key_fails_at_definition_naming_the_holder(scratch_registry: None) -> None:
    with pytest.raises(Exception, match="MemoryBackend") as raised:

        class Impostor(CountingBackend):
            _backend_type = "memory"

    assert "'memory'" in str(raised.value)
    assert BackendRegistry()["memory"].__class__ is MemoryBackend


def test_a_subclass_of_a_shipped_backend_needs_its_own_key(scratch_registry: None) -> None:
    with pytest.raises(Exception, match="already registered"):

        class Inherits(MemoryBackend):
            pass

    class Renamed(MemoryBackend):
        _backend_type = "renamed_memory"

    assert isinstance(BackendRegistry()["renamed_memory"], Renamed)


def test_instances_are_created_once_and_cached_per_registry() -> None:
    registry = BackendRegistry()
    assert registry["memory"] is registry["memory"]


def test_two_registries_never_share_instances() -> None:
    first, second = BackendRegistry(), BackendRegistry()
    assert first["memory"] is not second["memory"]
    first["memory"].save(b"x", "only/in/first.bin")
    assert not second["memory"].exists("only/in/first.bin")


def test_registry_is_a_read_only_mapping() -> None:
    registry = BackendRegistry()
    assert "memory" in registry and "nope" not in registry and 3 not in registry
    assert list(registry) == sorted(registry) and len(registry) == len(list(registry))
    assert "memory" in registry.keys()
    with pytest.raises(TypeError):
        registry["memory"] = MemoryBackend()  # type: ignore[index]


def test_options_are_passed_to_the_constructor() -> None:
    registry = BackendRegistry({"test_frozen": {"contents": {"a.bin": b"A"}}})
    assert registry["test_frozen"].load("a.bin") == b"A"
    assert registry.options == {"test_frozen": {"contents": {"a.bin": b"A"}}}


def test_invalid_options_raise_naming_the_backend_and_options() -> None:
    registry = BackendRegistry({"memory": {"colour": "blue"}})
    with pytest.raises(TypeError, match=r"'memory'.*colour"):
        registry["memory"]


def test_printed_options_hide_secret_values_but_keep_them() -> None:
    options = {"s3": {"bucket": "b", "access_key_id": "AKIAEXAMPLE", "secret_access_key": "wJalrEXAMPLEKEY"}}
    registry = BackendRegistry(options)
    for printed in (repr(registry.options), str(registry.options), str(registry.options["s3"]), repr(registry)):
        assert "AKIAEXAMPLE" not in printed and "wJalrEXAMPLEKEY" not in printed
    assert "'secret_access_key': '***'" in repr(registry.options) and "'bucket': 'b'" in repr(registry.options)
    assert registry.options == options


def test_an_options_error_hides_secret_values() -> None:
    registry = BackendRegistry({"memory": {"colour": "blue", "password": "hunter2-secret"}})
    with pytest.raises(TypeError, match=r"'memory'.*colour") as raised:
        registry["memory"]
    assert "hunter2-secret" not in str(raised.value) and "'password': '***'" in str(raised.value)


def test_unknown_name_raises_backend_not_found_listing_available_names() -> None:
    with pytest.raises(BackendNotFoundError) as raised:
        BackendRegistry()["nope"]
    assert isinstance(raised.value, KeyError)
    message = str(raised.value)
    assert message.startswith("no storage backend named 'nope'")
    assert "memory" in message


def test_file_manager_reports_unknown_backend_names() -> None:
    with pytest.raises(BackendNotFoundError, match="available: .*memory"):
        FileManager().load("a.npy", "nope")
    with pytest.raises(BackendNotFoundError, match="available: mine"):
        FileManager({"mine": MemoryBackend()}).load("a.npy", "nope")


def test_file_manager_refuses_a_non_string_backend_name() -> None:
    with pytest.raises(TypeError, match="backend name"):
        FileManager().load("a.npy", None)  # type: ignore[arg-type]


def test_file_manager_accepts_a_plain_dict_of_instances() -> None:
    store = MemoryBackend()
    fm = FileManager({"scratch": store})
    fm.save(b"x", "a.bin", "scratch")
    assert store.load("a.bin") == b"x"


def test_file_manager_of_none_raises_type_error_saying_what_to_pass() -> None:
    with pytest.raises(TypeError, match=r"None.*FileManager\(\)"):
        FileManager(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("registry", ["disk", ["disk"], BackendRegistry], ids=["str", "list", "the-class"])
def test_file_manager_of_something_not_a_mapping_raises_type_error(registry: Any) -> None:
    with pytest.raises(TypeError, match="Mapping"):
        FileManager(registry)


def test_file_manager_without_an_argument_builds_a_default_registry() -> None:
    fm = FileManager()
    assert isinstance(fm.registry, BackendRegistry)
    assert {"disk", "memory", "zarr"} <= set(fm.registry)


def test_sixteen_threads_asking_for_one_backend_get_one_instance(scratch_registry: None) -> None:
    created: list[int] = []

    class SlowToCreate(CountingBackend):
        _backend_type = "slow_to_create"

        def __init__(self) -> None:
            super().__init__()
            created.append(1)
            time.sleep(0.05)  # widens the window in which a racing thread could create a second one

    registry = BackendRegistry()
    barrier = threading.Barrier(16)
    seen: list[StorageBackend] = []

    def ask() -> None:
        barrier.wait()
        seen.append(registry["slow_to_create"])

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(created) == 1
    assert len({id(backend) for backend in seen}) == 1 and len(seen) == 16


def test_a_fresh_process_sees_exactly_the_shipped_backends_and_writes_no_cache(tmp_path: Path) -> None:
    result = run_python(
        """
        import polystore
        print(sorted(polystore.BackendRegistry()))
        """,
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        HOME=str(tmp_path / "home"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['disk', 'memory', 's3', 'scratch', 'zarr']"
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "home" / ".cache").exists()


def test_import_polystore_imports_neither_zarr_obstore_nor_dask() -> None:
    result = run_python(
        """
        import sys
        import polystore
        registry = polystore.BackendRegistry()
        fm = polystore.FileManager(registry)
        optional = {'zarr', 'obstore', 'dask', 'distributed', 'tifffile'}
        print(sorted(m for m in sys.modules if m.split('.')[0] in optional))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_entry_point_backends_are_listed_and_imported_on_first_use(tmp_path: Path) -> None:
    site = tmp_path / "site"
    package = site / "plugin_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "backend.py").write_text(
        textwrap.dedent(
            """
            from tests._custom_backends import CountingBackend

            class ShippedBackend(CountingBackend):
                _backend_type = "shipped"
            """
        )
    )
    dist_info = site / "plugin_pkg-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-pkg\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[polystore.backends]\nshipped = plugin_pkg.backend:ShippedBackend\n")
    result = run_python(
        """
        import sys
        import polystore
        registry = polystore.BackendRegistry()
        print("shipped" in registry, "shipped" in list(registry), "plugin_pkg.backend" in sys.modules)
        backend = registry["shipped"]
        print(type(backend).__name__, "plugin_pkg.backend" in sys.modules)
        """,
        PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["True True False", "ShippedBackend True"]
