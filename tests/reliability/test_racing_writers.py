"""Racing writers: many processes (or threads) saving one path at once, readers looping meanwhile.

Without overwrite exactly one writer wins, the others get FileExistsError
naming the path, and the path holds the winner's data, whole. With overwrite
every writer succeeds and the path ends holding one writer's data, whole.
Readers looping through the race never see a partial or mixed object, nor a
missing one once it existed. Disk and zarr, processes and threads.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import posixpath
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from polystore.backends.disk import TEMP_PREFIX
from tests._reliability_ledger import record, scaled
from tests._reliability_workers import (
    drain,
    identify,
    make_backend,
    racer,
    read_until,
    reader,
    save_repeatedly,
    token_data,
)

SPAWN = multiprocessing.get_context("spawn")

WRITERS = 4
READERS = 2
THREAD_WRITERS = 8

#: Per backend: array elements (int64), path suffix, save options.
SETUPS: dict[str, tuple[int, str, dict[str, Any]]] = {
    "disk": (2 * 2**20, ".npy", {}),  # 16 MiB
    "zarr": (2**20, ".zarr", {"chunks": (2**16,)}),  # 8 MiB in 16 chunks
}

ROUNDS = scaled(3, 30)
THREAD_ROUNDS = scaled(4, 40)
TIMEOUT = 120

#: Overwriting writers save this many times each, so readers overlap many swaps.
OVERWRITE_REPEATS = 3


def repeats_for(overwrite: bool) -> int:
    return OVERWRITE_REPEATS if overwrite else 1


@dataclass
class RaceResult:
    """What one round gave: each writer's outcome and each reader's summary."""

    writers: list[tuple[int, str, str | None, str | None]]
    readers: list[dict[str, Any]]


class ProcessRace:
    """Writer and reader processes, started once and reused round after round."""

    def __init__(self, backend: str, root: Path) -> None:
        size, _, options = SETUPS[backend]
        self.start = SPAWN.Barrier(WRITERS)
        self.stop = SPAWN.Event()
        self.writer_commands, self.writer_results = SPAWN.Queue(), SPAWN.Queue()
        self.reader_commands, self.reader_results, self.ready = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Queue()
        self.processes = [
            SPAWN.Process(
                target=racer,
                args=(backend, str(root), size, options, self.start, self.writer_commands, self.writer_results),
            )
            for _ in range(WRITERS)
        ] + [
            SPAWN.Process(
                target=reader,
                args=(backend, str(root), size, self.reader_commands, self.stop, self.ready, self.reader_results),
            )
            for _ in range(READERS)
        ]
        for process in self.processes:
            process.start()

    def race(self, path: str, tokens: list[int], overwrite: bool) -> RaceResult:
        self.stop.clear()
        for _ in range(READERS):
            self.reader_commands.put(path)
        drain(self.ready, READERS, TIMEOUT)
        for token in tokens:
            self.writer_commands.put((path, token, overwrite, repeats_for(overwrite)))
        writers = drain(self.writer_results, len(tokens), TIMEOUT)
        self.stop.set()
        return RaceResult(writers, drain(self.reader_results, READERS, TIMEOUT))

    def close(self) -> None:
        for _ in range(WRITERS):
            self.writer_commands.put(None)
        for _ in range(READERS):
            self.reader_commands.put(None)
        for process in self.processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join()


class ThreadRace:
    """Writer and reader threads sharing one backend instance, started for each round."""

    def __init__(self, backend: str, root: Path) -> None:
        self.size, _, self.options = SETUPS[backend]
        self.backend = make_backend(backend, str(root))

    def race(self, path: str, tokens: list[int], overwrite: bool) -> RaceResult:
        start, stop = threading.Barrier(len(tokens)), threading.Event()
        writers: list[Any] = []
        readers: list[dict[str, Any]] = []
        lock = threading.Lock()

        def write(token: int) -> None:
            data = token_data(token, self.size)
            start.wait()
            outcome = save_repeatedly(self.backend, data, path, token, overwrite, repeats_for(overwrite), self.options)
            with lock:
                writers.append(outcome)

        def read() -> None:
            summary = read_until(self.backend, path, self.size, stop)
            with lock:
                readers.append(summary)

        reading = [threading.Thread(target=read) for _ in range(READERS)]
        writing = [threading.Thread(target=write, args=(token,)) for token in tokens]
        for thread in reading + writing:
            thread.start()
        for thread in writing:
            thread.join(TIMEOUT)
        stop.set()
        for thread in reading:
            thread.join(TIMEOUT)
        return RaceResult(writers, readers)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module", params=["disk", "zarr"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def race_root(backend_name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp(f"race-{backend_name}")


@pytest.fixture(scope="module")
def processes(backend_name: str, race_root: Path) -> Iterator[ProcessRace]:
    race = ProcessRace(backend_name, race_root)
    yield race
    race.close()


def visible_temp_names(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith(TEMP_PREFIX))


def check_round(
    backend_name: str, root: Path, area: str, path: str, result: RaceResult, tokens: list[int], initial: int | None
) -> None:
    """Judge a round: winners and losers, what readers saw, the final data, listings and leftovers."""
    size = SETUPS[backend_name][0]
    backend = make_backend(backend_name, str(root))
    saved = sorted(token for token, outcome, _, _ in result.writers if outcome == "saved")
    failed = [(token, kind, message) for token, outcome, kind, message in result.writers if outcome != "saved"]
    final = identify(backend.load(path), size)
    torn = sum(summary["torn"] for summary in result.readers) + (final is None)
    missing = sum(summary["missing_after"] for summary in result.readers)
    if initial is not None:
        missing += sum(summary["missing_before"] for summary in result.readers)
    loads = sum(summary["loads"] for summary in result.readers)
    saves = len(result.writers) * repeats_for(initial is not None)
    record(area, operations=saves + loads + 1, lost_or_torn=torn + missing)

    firsts = [summary["first_torn"] for summary in result.readers if summary["first_torn"]]
    assert torn == 0, f"torn reads: {firsts}, final {final}"
    assert missing == 0, f"{missing} reads found the path missing after it existed"
    seen = set().union(*(summary["tokens"] for summary in result.readers))
    allowed = set(saved) | ({initial} if initial is not None else set())
    assert seen <= allowed, f"readers saw data of {seen - allowed}, which no successful save wrote"
    errors = {name: count for summary in result.readers for name, count in summary["errors"].items()}
    assert all("replaced" in name and f"Errno {errno.EAGAIN}" in name for name in errors), f"reader errors: {errors}"
    if initial is None:
        assert len(saved) == 1, f"{len(saved)} writers won: {saved}; failures: {failed}"
        assert final == saved[0]
        assert all(kind == "FileExistsError" and path in message for _, kind, message in failed), failed
    else:
        assert failed == [], failed
        assert final in saved
    directory = posixpath.dirname(path)
    assert backend.list_dir(directory) == [posixpath.basename(path)]
    assert visible_temp_names(root / directory) == []
    assert backend.cleanup() == []


def run_rounds(
    race: ProcessRace | ThreadRace, backend_name: str, root: Path, area: str, rounds: int, writers: int, overwrite: bool
) -> None:
    suffix = SETUPS[backend_name][1]
    size = SETUPS[backend_name][0]
    for number in range(rounds):
        base = 1000 * (number + 1) + (500 if overwrite else 0)
        mode = "overwrite" if overwrite else "exclusive"
        path = f"{area.replace(' ', '-').replace(':', '')}-{mode}-{number}/target{suffix}"
        initial = None
        if overwrite:
            initial = base
            make_backend(backend_name, str(root)).save(token_data(initial, size), path, **SETUPS[backend_name][2])
        tokens = [base + 1 + index for index in range(writers)]
        check_round(backend_name, root, area, path, race.race(path, tokens, overwrite), tokens, initial)


def test_of_processes_racing_to_save_one_path_exactly_one_wins_and_readers_see_it_whole(
    processes: ProcessRace, backend_name: str, race_root: Path
) -> None:
    run_rounds(processes, backend_name, race_root, f"race: {backend_name} processes", ROUNDS, WRITERS, overwrite=False)


def test_processes_racing_to_overwrite_leave_one_writers_data_and_readers_never_miss_it(
    processes: ProcessRace, backend_name: str, race_root: Path
) -> None:
    run_rounds(processes, backend_name, race_root, f"race: {backend_name} processes", ROUNDS, WRITERS, overwrite=True)


def test_of_threads_racing_to_save_one_path_exactly_one_wins_and_readers_see_it_whole(
    backend_name: str, race_root: Path
) -> None:
    run_rounds(
        ThreadRace(backend_name, race_root),
        backend_name,
        race_root,
        f"race: {backend_name} threads",
        THREAD_ROUNDS,
        THREAD_WRITERS,
        overwrite=False,
    )


def test_threads_racing_to_overwrite_leave_one_writers_data_and_readers_never_miss_it(
    backend_name: str, race_root: Path
) -> None:
    run_rounds(
        ThreadRace(backend_name, race_root),
        backend_name,
        race_root,
        f"race: {backend_name} threads",
        THREAD_ROUNDS,
        THREAD_WRITERS,
        overwrite=True,
    )
