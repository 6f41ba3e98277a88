"""PolystorePlugin and get_registry on a real LocalCluster (worker processes)."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
from distributed import Client

from polystore import BackendRegistry, InvalidPathError
from polystore_dask import DaskFileManager, PolystorePlugin, get_registry
from tests._cluster import PATIENCE, cluster_client, kill_worker, wait_until, worker_addresses

pytestmark = pytest.mark.cluster


def registry_identity() -> tuple[int, int, str]:
    """In a task: this process's pid, its registry's id and the worker's id."""
    from distributed import get_worker

    return os.getpid(), id(get_registry()), get_worker().id


def save_in_memory(path: str, value: int) -> None:
    get_registry()["memory"].save(np.array([value]), path)


def load_from_memory(path: str) -> int:
    return int(get_registry()["memory"].load(path)[0])


def run_on(client: Client, address: str, function, *args):
    future = client.submit(function, *args, workers=[address], allow_other_workers=False, pure=False)
    return future.result(timeout=PATIENCE)


def process_of(client: Client, address: str) -> int:
    """The pid of the worker process at ``address``, as that worker reports it outside any task."""
    return client.run(os.getpid, workers=[address])[address]


def assert_has_a_working_registry_of_its_own(client: Client, address: str, path: str) -> None:
    """The worker at ``address`` has the plugin set up: its tasks get a registry with the shipped backends,
    whose memory starts without ``path`` and keeps what a task saves there for the next task."""
    assert client.run(lambda dask_worker: "polystore" in dask_worker.plugins, workers=[address]) == {address: True}
    assert {"disk", "memory", "zarr"} <= set(run_on(client, address, call_registry))
    with pytest.raises(FileNotFoundError):
        run_on(client, address, load_from_memory, path)
    run_on(client, address, save_in_memory, path, 5)
    assert run_on(client, address, load_from_memory, path) == 5


def test_plugin_builds_a_registry_on_every_worker(client):
    answers = client.run(lambda dask_worker: type(dask_worker.plugins["polystore"].registry).__name__)
    assert sorted(answers) == worker_addresses(client)
    assert set(answers.values()) == {"BackendRegistry"}


def test_get_registry_is_the_same_object_for_every_task_on_a_worker(client):
    for address in worker_addresses(client):
        first = run_on(client, address, registry_identity)
        second = run_on(client, address, registry_identity)
        assert first == second


def test_each_worker_has_its_own_registry_in_its_own_process(client):
    addresses = worker_addresses(client)
    first, second = (run_on(client, address, registry_identity) for address in addresses)
    assert first[0] != second[0]  # pid
    assert first[2] != second[2]  # worker id
    assert first[0] != os.getpid()
    # Each task's registry is in the process of the worker it ran on ...
    assert [first[0], second[0]] == [process_of(client, address) for address in addresses]
    # ... and is that worker's own: one path holds a different value in each, and a save in one is not in the other.
    for address, value in zip(addresses, (1, 2), strict=True):
        run_on(client, address, save_in_memory, "own/shared-name", value)
    assert [run_on(client, address, load_from_memory, "own/shared-name") for address in addresses] == [1, 2]
    run_on(client, addresses[0], save_in_memory, "own/first-only", 3)
    with pytest.raises(FileNotFoundError):
        run_on(client, addresses[1], load_from_memory, "own/first-only")


def test_get_registry_outside_a_worker_says_to_call_it_in_a_task():
    with pytest.raises(RuntimeError, match=r"inside a Dask task.*register_plugin\(PolystorePlugin\(\)\)"):
        get_registry()


class NamingUnpickler(pickle.Unpickler):
    """Unpickles as usual, noting every class or function the pickle names."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.named: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str):
        self.named.add((module, name))
        return super().find_class(module, name)


def test_pickled_plugin_holds_only_options_and_imports():
    plugin = PolystorePlugin(options={"disk": {"root": "/scratch"}}, imports=["json"])
    data = pickle.dumps(plugin)
    assert len(data) < 1000
    unpickler = NamingUnpickler(data)
    copy = unpickler.load()
    assert copy.options == {"disk": {"root": "/scratch"}}
    assert copy.imports == ("json",)
    # What the pickle holds: the plugin class, then a state of exactly the options and the imports.
    assert unpickler.named == {(PolystorePlugin.__module__, "PolystorePlugin")}
    state = {"options": {"disk": {"root": "/scratch"}}, "imports": ("json",)}
    assert plugin.__reduce_ex__(pickle.DEFAULT_PROTOCOL)[2] == state
    assert copy.__getstate__() == {"options": {"disk": {"root": "/scratch"}}, "imports": ("json",)}


def test_a_plugin_that_is_set_up_pickles_as_a_new_one(client, polystore_plugin):
    # A worker's plugin has built a registry and holds memory data; none of it is pickled.
    address = worker_addresses(client)[0]
    run_on(client, address, save_in_memory, "pickled/a", 9)
    pickled = client.run(lambda dask_worker: pickle.dumps(dask_worker.plugins["polystore"]), workers=[address])[address]
    assert pickled == pickle.dumps(polystore_plugin)


def test_plugin_refuses_options_that_are_not_keyword_mappings():
    with pytest.raises(TypeError, match="options"):
        PolystorePlugin(options={"disk": "/scratch"})
    with pytest.raises(TypeError, match="imports"):
        PolystorePlugin(imports=[3])


def test_registering_again_is_a_no_op_that_keeps_memory(client):
    address = worker_addresses(client)[0]
    run_on(client, address, save_in_memory, "kept/a", 7)
    assert client.register_plugin(PolystorePlugin()) == {}
    assert run_on(client, address, load_from_memory, "kept/a") == 7


def test_a_worker_that_joins_later_gets_the_plugin(client):
    before = set(worker_addresses(client))
    client.cluster.scale(3)
    try:
        client.wait_for_workers(3, timeout=PATIENCE)
        (added,) = set(worker_addresses(client)) - before
        pid, _, _ = run_on(client, added, registry_identity)
        assert pid != os.getpid()
        assert pid == process_of(client, added)
        assert_has_a_working_registry_of_its_own(client, added, "joined/a")
    finally:
        client.cluster.scale(2)
        wait_until(lambda: len(worker_addresses(client)) == 2, "the cluster to shrink back to 2 workers")


def test_a_killed_worker_comes_back_with_the_plugin(client):
    before = set(worker_addresses(client))
    victim = worker_addresses(client)[0]
    old_pid = client.run(os.getpid, workers=[victim])[victim]
    run_on(client, victim, save_in_memory, "before-kill/a", 4)
    kill_worker(client, victim)
    client.wait_for_workers(2, timeout=PATIENCE)
    pids = [run_on(client, address, registry_identity)[0] for address in worker_addresses(client)]
    assert old_pid not in pids
    (replacement,) = set(worker_addresses(client)) - before
    # A new registry, set up in the new process: the killed worker's memory is not in it.
    assert_has_a_working_registry_of_its_own(client, replacement, "before-kill/a")


def test_client_restart_keeps_the_plugin(client):
    client.restart()
    for address in worker_addresses(client):
        run_on(client, address, save_in_memory, "after-restart/a", 1)
        assert run_on(client, address, load_from_memory, "after-restart/a") == 1


def test_restart_workers_keeps_the_plugin_and_drops_memory(client):
    address = worker_addresses(client)[0]
    run_on(client, address, save_in_memory, "dropped/a", 3)
    client.restart_workers([address])
    client.wait_for_workers(2, timeout=PATIENCE)
    for address in worker_addresses(client):
        with pytest.raises(FileNotFoundError):
            run_on(client, address, load_from_memory, "dropped/a")


# -- plugin lifecycle: its own one-worker cluster, where plugins come and go --
@pytest.fixture(scope="module")
def bare_client():
    with cluster_client(1) as client:
        yield client


def call_registry() -> list[str]:
    return sorted(get_registry())


def test_a_worker_without_the_plugin_says_to_register_it(bare_client):
    with pytest.raises(RuntimeError, match=r"no polystore plugin.*client\.register_plugin\(PolystorePlugin\(\)\)"):
        bare_client.submit(call_registry, pure=False).result()


def test_failed_setup_raises_at_registration_and_in_every_task(bare_client):
    with pytest.raises(TypeError, match="rooot"):
        bare_client.register_plugin(PolystorePlugin(options={"disk": {"rooot": 1}}))
    try:
        with pytest.raises(
            RuntimeError, match=r"setup failed.*rooot.*unregister_worker_plugin\(\"polystore\"\)"
        ) as caught:
            bare_client.submit(call_registry, pure=False).result()
        assert "register_plugin" in str(caught.value)
    finally:
        bare_client.unregister_worker_plugin("polystore")


def test_options_naming_an_unknown_backend_fail_setup(bare_client):
    with pytest.raises(KeyError, match="nosuch"):
        bare_client.register_plugin(PolystorePlugin(options={"nosuch": {}}))
    bare_client.unregister_worker_plugin("polystore")


def test_imports_register_user_backends_on_the_workers(bare_client):
    assert "test_counting" not in bare_client.submit(lambda: sorted(BackendRegistry()), pure=False).result()
    bare_client.register_plugin(PolystorePlugin(imports=["tests._custom_backends"]))
    try:
        assert "test_counting" in bare_client.submit(call_registry, pure=False).result()
    finally:
        bare_client.unregister_worker_plugin("polystore")


def test_unregistering_tears_the_registry_down(bare_client):
    bare_client.register_plugin(PolystorePlugin())
    bare_client.unregister_worker_plugin("polystore")
    with pytest.raises(RuntimeError, match="no polystore plugin"):
        bare_client.submit(call_registry, pure=False).result()


def test_with_a_root_in_the_options_relative_paths_belong_to_the_root(bare_client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    bare_client.register_plugin(PolystorePlugin(options={"disk": {"root": str(root)}}))
    try:
        dfm = DaskFileManager(bare_client)
        dfm.save(np.arange(3), "sub/a.npy", "disk").result(timeout=PATIENCE)
        assert (root / "sub" / "a.npy").is_file()
        assert dfm.list_files("sub", "disk") == ["sub/a.npy"]
        with pytest.raises(InvalidPathError):
            dfm.save(np.arange(3), "../escape.npy", "disk").result(timeout=PATIENCE)
    finally:
        bare_client.unregister_worker_plugin("polystore")
