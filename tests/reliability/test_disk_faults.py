"""The disk backend under racing processes, a killed writer and many threads."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from polystore import DiskBackend
from polystore.backends.disk import TEMP_PREFIX
from tests._disk_workers import overwrite_forever, race_to_save

SPAWN = multiprocessing.get_context("spawn")


def temp_files(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith(TEMP_PREFIX))


def temp_file_sizes(directory: Path) -> list[int]:
    sizes = []
    for name in temp_files(directory):
        try:
            sizes.append(os.stat(directory / name).st_size)
        except FileNotFoundError:
            continue  # renamed into place meanwhile
    return sizes


def test_of_eight_processes_saving_one_path_exactly_one_wins(tmp_path: Path) -> None:
    start, results = SPAWN.Barrier(8), SPAWN.Queue()
    racers = [
        SPAWN.Process(target=race_to_save, args=(str(tmp_path), "race/target.npy", i, start, results)) for i in range(8)
    ]
    for racer in racers:
        racer.start()
    outcomes = [results.get(timeout=120) for _ in racers]
    for racer in racers:
        racer.join(timeout=60)
        assert racer.exitcode == 0

    winners = [index for outcome, index in outcomes if outcome == "won"]
    assert len(winners) == 1
    assert sum(outcome == "lost" for outcome, _ in outcomes) == 7
    loaded = DiskBackend(root=tmp_path).load("race/target.npy")
    np.testing.assert_array_equal(loaded, np.full((256, 256), winners[0], dtype=np.int32))
    assert os.listdir(tmp_path / "race") == ["target.npy"]


def test_a_writer_killed_mid_save_leaves_a_whole_file_and_a_temp_file_that_only_cleanup_sees(tmp_path: Path) -> None:
    size = 64 * 1024 * 1024  # float32: 256 MiB
    backend = DiskBackend(root=tmp_path)
    backend.save(np.full(size, 1, dtype=np.float32), "big.npy")
    full_size = os.stat(tmp_path / "big.npy").st_size

    writer = SPAWN.Process(target=overwrite_forever, args=(str(tmp_path), "big.npy", size))
    writer.start()
    try:
        deadline = time.monotonic() + 120
        while writer.is_alive() and time.monotonic() < deadline:
            if any(1024 < written < full_size for written in temp_file_sizes(tmp_path)):
                break  # a temp file is half written: kill the writer now
        assert writer.is_alive(), "the writer died before it could be killed"
        assert time.monotonic() < deadline, "never saw a half-written temp file"
    finally:
        writer.kill()  # SIGKILL
        writer.join(timeout=60)
    assert writer.exitcode == -9

    loaded = backend.load("big.npy")
    assert loaded.shape == (size,) and loaded.dtype == np.float32
    assert loaded[0] in (1, 2, 3)  # the first file, or one of the writer's complete saves
    assert np.all(loaded == loaded[0])
    assert backend.list_dir(".") == ["big.npy"]
    assert backend.list_files(".") == ["./big.npy"]

    leftovers = temp_files(tmp_path)
    assert leftovers
    assert backend.cleanup() == [str(tmp_path / name) for name in leftovers]
    assert os.listdir(tmp_path) == ["big.npy"]


def whole_data(token: int) -> np.ndarray:
    """An array only the writer of ``token`` ever saves; wholeness is checkable."""
    return np.arange(256, dtype=np.int64) + token * 1000


def assert_whole(array: np.ndarray) -> None:
    assert array.shape == (256,) and array.dtype == np.int64
    assert array[0] % 1000 == 0
    np.testing.assert_array_equal(array, whole_data(int(array[0]) // 1000))


def test_eight_threads_mixing_operations_lose_nothing_and_never_see_partial_data(tmp_path: Path) -> None:
    backend = DiskBackend(root=tmp_path)
    shared = [f"shared/s{k}.npy" for k in range(4)]
    for path in shared:
        backend.save(whole_data(0), path)
    errors: list[BaseException] = []
    final_state: dict[str, int | None] = {}
    lock = threading.Lock()

    def worker(thread: int) -> None:
        rng = np.random.default_rng(thread)
        own = {f"own/t{thread}/p{k}.npy": None for k in range(8)}
        try:
            for step in range(500):
                token = thread * 10_000 + step + 1
                path = str(rng.choice(list(own)))
                operation = rng.integers(7)
                if operation == 0:
                    backend.save(whole_data(token), path, overwrite=True)
                    own[path] = token
                elif operation == 1:
                    if own[path] is None:
                        backend.save(whole_data(token), path)
                        own[path] = token
                    else:
                        with pytest.raises(FileExistsError):
                            backend.save(whole_data(token), path)
                elif operation == 2:
                    if own[path] is None:
                        with pytest.raises(FileNotFoundError):
                            backend.load(path)
                    else:
                        np.testing.assert_array_equal(backend.load(path), whole_data(own[path]))
                elif operation == 3:
                    assert backend.exists(path) == (own[path] is not None)
                elif operation == 4:
                    if own[path] is None:
                        with pytest.raises(FileNotFoundError):
                            backend.delete(path)
                    else:
                        backend.delete(path)
                        own[path] = None
                elif operation == 5:
                    backend.save(whole_data(token), str(rng.choice(shared)), overwrite=True)
                else:
                    assert_whole(backend.load(str(rng.choice(shared))))
        except BaseException as error:  # reported to the main thread
            errors.append(error)
        with lock:
            final_state.update(own)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors, errors
    for path, token in final_state.items():
        if token is None:
            assert not backend.exists(path)
        else:
            np.testing.assert_array_equal(backend.load(path), whole_data(token))
    for path in shared:
        assert_whole(backend.load(path))
    assert backend.cleanup() == []
