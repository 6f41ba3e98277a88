"""DaskFileManager on a real LocalCluster: every method, ordering, routing, batches."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from distributed import Client, Future, get_task_stream, get_worker, wait

from polystore import BackendNotFoundError
from polystore_dask import get_registry
from tests._cluster import wait_until, worker_addresses

pytestmark = pytest.mark.cluster

SUFFIX = {"memory": "", "disk": ".npy", "zarr": ".zarr"}


@pytest.fixture(params=["memory", "disk", "zarr"])
def backend(request):
    return request.param


@pytest.fixture
def place(backend, tmp_path) -> Callable[[str], str]:
    """Return a path for ``name`` on ``backend``: in tmp_path for disk/zarr, a unique key for memory."""

    def place(name: str) -> str:
        if backend == "memory":
            return f"{tmp_path.name}/{name}{SUFFIX[backend]}"
        return str(tmp_path / f"{name}{SUFFIX[backend]}")

    return place


@pytest.fixture
def folder(backend, tmp_path) -> Callable[[str], str]:
    """Return a directory path for ``name`` on ``backend``."""
    return lambda name: f"{tmp_path.name}/{name}" if backend == "memory" else str(tmp_path / name)


def memory_paths_on(client: Client, prefix: str) -> dict[str, list[str]]:
    """Each worker's memory files under ``prefix`` (empty list where there are none)."""

    def files(dask_worker):
        backend = dask_worker.plugins["polystore"].registry["memory"]
        return backend.list_files(prefix, recursive=True) if backend.is_dir(prefix) else []

    return client.run(files)


def ran_on(stream, prefix: str) -> set[str]:
    """The workers that ran the tasks (recorded by ``get_task_stream``) whose key starts with ``prefix``."""
    return {entry["worker"] for entry in stream.data if str(entry["key"]).startswith(prefix)}


def count_tasks(stream, prefix: str) -> int:
    return len({entry["key"] for entry in stream.data if str(entry["key"]).startswith(prefix)})


# -- every method, on every backend -------------------------------------------
def test_save_then_load_round_trips(dfm, backend, place):
    data = np.arange(12, dtype=np.int16).reshape(3, 4)
    saved = dfm.save(data, place("a"), backend)
    assert isinstance(saved, Future)
    assert saved.result() is None
    loaded = dfm.load(place("a"), backend)
    assert isinstance(loaded, Future)
    result = loaded.result()
    assert result.dtype == data.dtype
    np.testing.assert_array_equal(result, data)


def test_task_keys_name_the_operation(dfm, backend, place):
    futures = {
        "save": dfm.save(np.ones(2), place("k"), backend),
        "load": dfm.load(place("k"), backend),
        "copy": dfm.copy(place("k"), place("k2"), backend),
        "move": dfm.move(place("k2"), place("k3"), backend),
        "save_batch": dfm.save_batch([np.ones(2)], [place("k4")], backend),
        "load_batch": dfm.load_batch([place("k4")], backend),
        "delete": dfm.delete(place("k3"), backend),
        "ensure_directory": dfm.ensure_directory(place("dir"), backend),
    }
    for operation, future in futures.items():
        assert future.key.startswith(f"polystore-{operation}-")
        future.result()


def test_queries_return_plain_values(dfm, backend, place, tmp_path):
    dfm.save(np.ones(3), place("q"), backend).result()
    directory = os.path.dirname(place("q"))
    assert dfm.exists(place("q"), backend) is True
    assert dfm.is_file(place("q"), backend) is True
    assert dfm.is_dir(place("q"), backend) is False
    assert dfm.is_dir(directory, backend) is True
    assert dfm.exists(place("missing"), backend) is False
    assert dfm.list_files(directory, backend) == [place("q")]
    assert dfm.list_dir(directory, backend) == [os.path.basename(place("q"))]
    stat = dfm.stat(place("q"), backend)
    assert stat["type"] == "file" and stat["size"] > 0
    assert dfm.stat(directory, backend)["type"] == "directory"


def test_list_files_filters_and_recurses(dfm, backend, place):
    for name in ("a", "b", "sub/c"):
        dfm.save(np.ones(1), place(name), backend)
    directory = os.path.dirname(place("a"))
    assert dfm.list_files(directory, backend, pattern="a*") == [place("a")]
    assert dfm.list_files(directory, backend, recursive=True) == sorted(place(name) for name in ("a", "b", "sub/c"))


def test_delete_copy_move_and_ensure_directory(dfm, backend, place, folder):
    data = np.arange(4.0)
    dfm.save(data, place("src"), backend)
    dfm.copy(place("src"), place("copied"), backend)
    dfm.move(place("copied"), place("moved"), backend)
    np.testing.assert_array_equal(dfm.load(place("moved"), backend).result(), data)
    assert dfm.exists(place("copied"), backend) is False
    dfm.delete(place("src"), backend).result()
    assert dfm.exists(place("src"), backend) is False
    dfm.ensure_directory(folder("made/deep"), backend).result()
    dfm.ensure_directory(folder("made/deep"), backend).result()
    assert dfm.is_dir(folder("made/deep"), backend) is True
    with pytest.raises(OSError, match="not empty"):
        dfm.delete(folder("made"), backend).result()
    dfm.delete(folder("made"), backend, recursive=True).result()
    assert dfm.exists(folder("made"), backend) is False


def test_errors_are_the_backends_own(dfm, backend, place):
    with pytest.raises(FileNotFoundError):
        dfm.load(place("never"), backend).result()
    with pytest.raises(FileNotFoundError):
        dfm.delete(place("never"), backend).result()
    with pytest.raises(FileNotFoundError):
        dfm.stat(place("never"), backend)
    with pytest.raises(FileNotFoundError):
        dfm.list_files(place("never"), backend)
    dfm.save(np.ones(1), place("once"), backend).result()
    with pytest.raises(FileExistsError):
        dfm.save(np.zeros(1), place("once"), backend).result()
    with pytest.raises(FileExistsError):
        dfm.copy(place("once"), place("once"), backend).result()


def test_saving_the_same_data_twice_without_overwrite_is_refused(dfm, backend, place):
    data = np.arange(3.0)
    dfm.save(data, place("twice"), backend).result()
    with pytest.raises(FileExistsError):
        dfm.save(data, place("twice"), backend).result()
    with pytest.raises(FileExistsError):
        dfm.save_batch([data], [place("twice")], backend).result()


def test_unknown_backend_raises_backend_not_found(dfm, tmp_path):
    with pytest.raises(BackendNotFoundError, match="nosuch"):
        dfm.save(np.ones(1), str(tmp_path / "a"), "nosuch").result()
    with pytest.raises(BackendNotFoundError, match="nosuch"):
        dfm.exists(str(tmp_path / "a"), "nosuch")


def test_backend_must_be_a_name(dfm):
    with pytest.raises(TypeError, match="backend name"):
        dfm.load("a", None)


# -- ordering ---------------------------------------------------------------
def test_load_right_after_save_sees_it(dfm, backend, place):
    futures = [dfm.save(np.full(3, i), place(f"o{i}"), backend) for i in range(5)]
    loads = [dfm.load(place(f"o{i}"), backend) for i in range(5)]
    assert [int(future.result()[0]) for future in loads] == list(range(5))
    assert all(future.result() is None for future in futures)


def test_operations_on_one_path_take_effect_in_issue_order(dfm, backend, place):
    path = place("seq")
    dfm.save(np.full(2, 1), path, backend)
    first = dfm.load(path, backend)
    dfm.delete(path, backend)
    gone = dfm.exists(path, backend)
    dfm.save(np.full(2, 2), path, backend)
    dfm.save(np.full(2, 3), path, backend, overwrite=True)
    last = dfm.load(path, backend)
    assert int(first.result()[0]) == 1
    assert gone is False
    assert int(last.result()[0]) == 3


def test_a_failed_operation_does_not_fail_the_next(dfm, backend, place):
    path = place("kept")
    dfm.save(np.full(2, 1), path, backend)
    refused = dfm.save(np.full(2, 2), path, backend)
    loaded = dfm.load(path, backend)
    with pytest.raises(FileExistsError):
        refused.result()
    assert int(loaded.result()[0]) == 1


def test_a_directory_operation_waits_for_writes_inside_it(dfm, backend, place, folder):
    for index in range(4):
        dfm.save(np.ones(1), place(f"tree/{index}"), backend)
    deleted = dfm.delete(folder("tree"), backend, recursive=True)
    assert deleted.result() is None
    assert dfm.exists(folder("tree"), backend) is False


def test_finished_operations_leave_the_chain_table(dfm, backend, place):
    futures = [dfm.save(np.ones(1), place(f"c{i}"), backend) for i in range(10)]
    futures += [dfm.load(place(f"c{i}"), backend) for i in range(10)]
    for future in futures:
        future.result()
    wait_until(lambda: len(dfm._tasks.chains) == 0, "the chain table to empty")


# -- where tasks run ----------------------------------------------------------
def make_array(value: float) -> np.ndarray:
    return np.full(4, value)


def test_future_data_is_saved_where_it_lives(client, dfm, backend, place):
    holder = worker_addresses(client)[1]
    data = client.submit(make_array, 5.0, workers=[holder], pure=False)
    data.result()
    with get_task_stream(client) as stream:
        dfm.save(data, place("fut"), backend).result()
    np.testing.assert_array_equal(dfm.load(place("fut"), backend).result(), np.full(4, 5.0))
    assert ran_on(stream, "polystore-save-run-") == {holder}
    if backend == "memory":
        assert memory_paths_on(client, os.path.dirname(place("fut")))[holder] == [place("fut")]


def test_memory_saves_stay_on_one_worker_each_and_spread(client, dfm, tmp_path):
    paths = [f"{tmp_path.name}/s{i}" for i in range(6)]
    for index, path in enumerate(paths):
        dfm.save(np.full(1, index), path, "memory")
    assert [int(dfm.load(path, "memory").result()[0]) for path in paths] == list(range(6))
    held = memory_paths_on(client, tmp_path.name)
    assert sorted(sum(held.values(), [])) == paths  # each path on exactly one worker
    assert all(held.values())  # and both workers got some


def test_memory_listings_are_the_union_over_workers(client, dfm, tmp_path):
    paths = [f"{tmp_path.name}/u/{name}" for name in ("a", "b", "c", "d")]
    for path in paths:
        dfm.save(np.ones(1), path, "memory")
    assert dfm.list_files(f"{tmp_path.name}/u", "memory") == paths
    assert dfm.list_dir(f"{tmp_path.name}/u", "memory") == ["a", "b", "c", "d"]
    assert dfm.is_dir(f"{tmp_path.name}/u", "memory") is True
    assert all(memory_paths_on(client, f"{tmp_path.name}/u").values())


def test_memory_listings_in_natural_order_merge_the_workers_by_the_same_key(client, dfm, tmp_path):
    first, second = worker_addresses(client)
    directory = f"{tmp_path.name}/frames"
    placed = {"img10": first, "img1": first, "img2": second, "img02": second}
    data = {name: client.submit(make_array, 1.0, workers=[worker], pure=False) for name, worker in placed.items()}
    wait(list(data.values()))  # finished, so each save runs on the worker that holds its data
    for name, future in data.items():
        dfm.save(future, f"{directory}/{name}", "memory")
    names = ["img1", "img02", "img2", "img10"]
    assert dfm.list_files(directory, "memory", sort="natural") == [f"{directory}/{name}" for name in names]
    assert dfm.list_dir(directory, "memory", sort="natural") == names
    assert dfm.list_dir(directory, "memory") == ["img02", "img1", "img10", "img2"]
    assert memory_paths_on(client, directory) == {
        first: [f"{directory}/img1", f"{directory}/img10"], second: [f"{directory}/img02", f"{directory}/img2"]
    }


def test_an_unknown_sort_is_refused_on_the_client(dfm, tmp_path):
    with pytest.raises(ValueError, match="'lexicographic'.*'natural'.*not 'numeric'"):
        dfm.list_files(str(tmp_path), "disk", sort="numeric")
    with pytest.raises(ValueError, match="not 'numeric'"):
        dfm.list_dir(f"{tmp_path.name}/nowhere", "memory", sort="numeric")


def test_memory_copy_and_move_keep_the_data_on_its_worker(client, dfm, tmp_path):
    source = f"{tmp_path.name}/src"
    dfm.save(np.ones(2), source, "memory").result()
    (owner,) = [address for address, files in memory_paths_on(client, tmp_path.name).items() if files]
    dfm.copy(source, f"{tmp_path.name}/copy", "memory")
    dfm.move(source, f"{tmp_path.name}/moved", "memory").result()
    held = memory_paths_on(client, tmp_path.name)
    assert held[owner] == [f"{tmp_path.name}/copy", f"{tmp_path.name}/moved"]


def test_memory_copy_onto_a_path_kept_elsewhere_moves_the_data_there(client, dfm, tmp_path):
    first, second = worker_addresses(client)
    source, target = f"{tmp_path.name}/on-first", f"{tmp_path.name}/on-second"
    on_first = client.submit(make_array, 1.0, workers=[first], pure=False)
    on_second = client.submit(make_array, 2.0, workers=[second], pure=False)
    wait([on_first, on_second])  # finished, so each save runs where its data is (not on the next worker in turn)
    dfm.save(on_first, source, "memory")
    dfm.save(on_second, target, "memory").result()
    with pytest.raises(FileExistsError):
        dfm.copy(source, target, "memory").result()
    dfm.move(source, target, "memory", overwrite=True).result()
    np.testing.assert_array_equal(dfm.load(target, "memory").result(), np.full(4, 1.0))
    held = memory_paths_on(client, tmp_path.name)
    assert held == {first: [], second: [target]}


def test_memory_overwrite_conflicts_are_caught_across_workers(client, dfm, tmp_path):
    first, second = worker_addresses(client)
    path = f"{tmp_path.name}/x"
    dfm.save(client.submit(make_array, 1.0, workers=[first], pure=False), path, "memory").result()
    with pytest.raises(FileExistsError):
        dfm.save(client.submit(make_array, 2.0, workers=[second], pure=False), path, "memory").result()
    dfm.save(client.submit(make_array, 3.0, workers=[second], pure=False), path, "memory", overwrite=True).result()
    np.testing.assert_array_equal(dfm.load(path, "memory").result(), np.full(4, 3.0))
    assert memory_paths_on(client, tmp_path.name) == {first: [path], second: []}


def save_directly(path: str) -> str:
    get_registry()["memory"].save(np.arange(3), path)
    return get_worker().address


def test_a_path_saved_directly_by_a_task_is_found(client, dfm, tmp_path):
    path = f"{tmp_path.name}/direct"
    where = client.submit(save_directly, path, workers=[worker_addresses(client)[1]], pure=False).result()
    assert dfm.exists(path, "memory") is True
    assert dfm.stat(path, "memory")["type"] == "file"
    np.testing.assert_array_equal(dfm.load(path, "memory").result(), np.arange(3))
    dfm.copy(path, f"{tmp_path.name}/direct-copy", "memory").result()
    dfm.delete(path, "memory").result()
    assert memory_paths_on(client, tmp_path.name)[where] == [f"{tmp_path.name}/direct-copy"]


def test_loading_a_memory_path_nobody_saved_raises_file_not_found(dfm, tmp_path):
    with pytest.raises(FileNotFoundError, match="memory backend"):
        dfm.load(f"{tmp_path.name}/never", "memory").result()
    with pytest.raises(FileNotFoundError, match="memory backend"):
        dfm.load_batch([f"{tmp_path.name}/never"], "memory").result()


# -- batches ------------------------------------------------------------------
def test_batches_run_in_few_tasks_and_keep_order(client, dfm, backend, place):
    count = 60
    data = [np.full(3, index, dtype=np.int32) for index in range(count)]
    paths = [place(f"batch/{index:03d}") for index in range(count)]
    with get_task_stream(client) as stream:
        saved = dfm.save_batch(data, paths, backend)
        loaded = dfm.load_batch(paths, backend)
        assert saved.result() is None
        assert [int(item[0]) for item in loaded.result()] == list(range(count))
    workers = len(worker_addresses(client))
    assert 1 <= count_tasks(stream, "polystore-save_batch-run-") <= 2 * workers + 2
    assert 1 <= count_tasks(stream, "polystore-load_batch-run-") <= 2 * workers + 2


def test_batch_lengths_must_match(dfm, backend, place):
    with pytest.raises(ValueError, match="2 data items but 1 paths"):
        dfm.save_batch([np.ones(1), np.ones(1)], [place("one")], backend)


def test_batch_items_that_are_futures_stay_on_their_worker(client, dfm, tmp_path):
    holder = worker_addresses(client)[0]
    items = [client.submit(make_array, float(index), workers=[holder], pure=False) for index in range(4)]
    client.gather(items)
    paths = [f"{tmp_path.name}/f{index}" for index in range(4)]
    dfm.save_batch(items, paths, "memory").result()
    assert memory_paths_on(client, tmp_path.name)[holder] == paths
    assert [float(item[0]) for item in dfm.load_batch(paths, "memory").result()] == [0.0, 1.0, 2.0, 3.0]


def test_a_large_batch_from_the_client_travels_outside_the_task_graph(client, dfm, tmp_path, caplog):
    # 3000 x 64 KiB: 192 MiB made on the client. Sent inside the graph, distributed would warn
    # "Sending large graph of size ..." (a UserWarning on the client, and a log line).
    data = [np.full(8192, index, dtype=np.float64) for index in range(3000)]
    paths = [str(tmp_path / "large" / f"{index:04d}.npy") for index in range(3000)]
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        dfm.save_batch(data, paths, "disk").result()
    assert [str(warning.message) for warning in caught if "large graph" in str(warning.message)] == []
    assert [record.message for record in caplog.records if "large graph" in record.getMessage()] == []
    for index in (0, 1499, 2999):
        np.testing.assert_array_equal(np.load(paths[index]), data[index])


# -- paths --------------------------------------------------------------------
def test_relative_disk_paths_are_taken_from_the_client_directory(client, dfm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dfm.save(np.arange(2), "rel/a.npy", "disk").result()
    assert (tmp_path / "rel" / "a.npy").is_file()
    assert dfm.list_files("rel", "disk") == ["rel/a.npy"]
    np.testing.assert_array_equal(dfm.load("rel/a.npy", "disk").result(), np.arange(2))
    dfm.save(np.arange(2), "rel/b.zarr", "zarr").result()
    assert (tmp_path / "rel" / "b.zarr" / "zarr.json").is_file()
    assert dfm.list_files("rel", "zarr") == ["rel/b.zarr"]


# -- memory directories across workers ----------------------------------------------
def test_memory_root_answers_as_the_memory_backend_does(dfm):
    assert dfm.exists(".", "memory") is True
    assert dfm.is_dir("/", "memory") is True
    assert dfm.stat(".", "memory")["type"] == "directory"
    with pytest.raises(IsADirectoryError):
        dfm.load(".", "memory").result()


def test_memory_save_onto_a_directory_kept_by_another_worker_is_refused(client, dfm, tmp_path):
    first, second = worker_addresses(client)
    directory = f"{tmp_path.name}/d"
    dfm.save(client.submit(make_array, 1.0, workers=[first], pure=False), f"{directory}/a", "memory").result()
    with pytest.raises(IsADirectoryError):
        dfm.save(client.submit(make_array, 2.0, workers=[second], pure=False), directory, "memory").result()
    assert dfm.is_file(directory, "memory") is False


def test_memory_recursive_delete_reaches_every_worker(client, dfm, tmp_path):
    first, second = worker_addresses(client)
    directory = f"{tmp_path.name}/d"
    dfm.save(client.submit(make_array, 1.0, workers=[first], pure=False), f"{directory}/a", "memory")
    dfm.save(client.submit(make_array, 2.0, workers=[second], pure=False), f"{directory}/b", "memory")
    with pytest.raises(IsADirectoryError):
        dfm.save(np.ones(1), directory, "memory").result()
    dfm.delete(directory, "memory", recursive=True).result()
    assert dfm.exists(directory, "memory") is False
    assert memory_paths_on(client, tmp_path.name) == {first: [], second: []}


def test_memory_directory_copy_keeps_each_copied_path_on_the_worker_that_kept_its_source(client, dfm, tmp_path):
    first, second = worker_addresses(client)
    source, target = f"{tmp_path.name}/run", f"{tmp_path.name}/run-copy"
    data = {
        "a": client.submit(make_array, 1.0, workers=[first], pure=False),
        "sub/b": client.submit(make_array, 2.0, workers=[second], pure=False),
        "sub/c": client.submit(make_array, 3.0, workers=[first], pure=False),
    }
    wait(list(data.values()))  # finished, so each save runs on the worker that holds its data
    for name, future in data.items():
        dfm.save(future, f"{source}/{name}", "memory")
    dfm.copy(source, target, "memory", recursive=True).result()
    assert memory_paths_on(client, target) == {first: [f"{target}/a", f"{target}/sub/c"], second: [f"{target}/sub/b"]}
    for name, value in (("a", 1.0), ("sub/b", 2.0), ("sub/c", 3.0)):
        np.testing.assert_array_equal(dfm.load(f"{target}/{name}", "memory").result(), np.full(4, value))
    with pytest.raises(FileExistsError):
        dfm.copy(source, target, "memory", recursive=True).result()
    with pytest.raises(ValueError, match="subtree"):
        dfm.copy(source, f"{source}/sub/inside", "memory", recursive=True).result()


def test_inline_items_beside_a_future_travel_outside_the_graph_once_they_add_up(client, dfm, tmp_path, caplog):
    # Paths a worker keeps, overwritten by a batch that holds a Future on that worker and 40 inline
    # arrays of 1 MiB: the parts mix both, and their inline 10 MiB must not ride in the graph.
    holder = worker_addresses(client)[0]
    paths = [f"{tmp_path.name}/mixed/{index:02d}" for index in range(41)]
    first = [client.submit(make_array, float(index), workers=[holder], pure=False) for index in range(41)]
    client.gather(first)  # held on the holder: the batch saves each where it lives
    dfm.save_batch(first, paths, "memory").result()
    assert memory_paths_on(client, f"{tmp_path.name}/mixed")[holder] == paths
    inline = [np.full((1 << 20) // 8, index, dtype=np.float64) for index in range(1, 41)]
    future = client.submit(make_array, -1.0, workers=[holder], pure=False)
    future.result()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        dfm.save_batch([future, *inline], paths, "memory", overwrite=True).result()
    assert [str(warning.message) for warning in caught if "large graph" in str(warning.message)] == []
    assert [record.message for record in caplog.records if "large graph" in record.getMessage()] == []
    loaded = dfm.load_batch(paths, "memory").result()
    np.testing.assert_array_equal(loaded[0], np.full(4, -1.0))
    for index in (1, 20, 40):
        np.testing.assert_array_equal(loaded[index], inline[index - 1])


def test_a_large_save_from_the_client_travels_outside_the_graph_and_leaves_no_copy_behind(
    client, dfm, tmp_path, caplog
):
    # 12 MiB made on the client, for a memory path and for a disk file: shipped to the worker that saves
    # it (not in the graph, which distributed warns about from 10 MiB), and no copy of it is left on the
    # workers once saved (before, a second one was kept by client.replicate).
    from polystore_dask.shipping import SHIPPED_PREFIX

    data = np.arange((12 << 20) // 8, dtype=np.int64)
    path = f"{tmp_path.name}/big"
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        dfm.save(data, path, "memory").result()
        dfm.save(data + 1, str(tmp_path / "big.npy"), "disk").result()
    assert [str(warning.message) for warning in caught if "large graph" in str(warning.message)] == []
    assert [record.message for record in caplog.records if "large graph" in record.getMessage()] == []
    np.testing.assert_array_equal(dfm.load(path, "memory").result(), data)
    np.testing.assert_array_equal(np.load(tmp_path / "big.npy"), data + 1)
    assert sorted(path for paths in memory_paths_on(client, tmp_path.name).values() for path in paths) == [path]

    def shipped_keys(dask_worker) -> list[str]:
        return [str(key) for key in dask_worker.data if str(key).startswith(SHIPPED_PREFIX)]

    wait_until(lambda: not any(client.run(shipped_keys).values()), "the shipped copies to be dropped")
