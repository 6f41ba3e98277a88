"""Faults during writes on disk and zarr: writers killed at random points, writes the OS refuses part-way.

After a writer is killed (SIGKILL) anywhere in a large save, the path holds
the old data or the new data, whole (or nothing, for a first save), never a
mix; listings show no temporary file; the next save works, and the
backend's ``cleanup()`` removes what the killed writer left. A save that
the OS refuses part-way (RLIMIT_FSIZE: EFBIG) raises an error naming the
path, leaves the old data whole and no temporary file at all.

Child processes come from a forkserver that preloads polystore, numpy and
zarr, so each trial costs a fork rather than a fresh interpreter.
"""

from __future__ import annotations

import multiprocessing
import os
import posixpath
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polystore.backends.disk import TEMP_PREFIX
from tests._reliability_ledger import DEEP, record, scaled
from tests._reliability_workers import drain, identify, make_backend, save_once, save_with_file_size_limit, token_data

#: Per backend: array elements (int64), path suffix, save options.
SETUPS: dict[str, tuple[int, str, dict[str, Any]]] = {
    "disk": (8 * 2**20, ".npy", {}),  # 64 MiB
    "zarr": (4 * 2**20, ".zarr", {"chunks": (2**17,), "compressor": None}),  # 32 MiB in 32 chunk files of 1 MiB
}

KILL_TRIALS = scaled(6, 36)
SIZE_LIMIT_TRIALS = scaled(2, 6)
TIMEOUT = 120

OLD, NEW, NEXT = 1, 2, 3


@pytest.fixture(scope="module")
def forkserver() -> Iterator[multiprocessing.context.BaseContext]:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests._reliability_workers", "zarr"])
    yield context


@pytest.fixture(params=["disk", "zarr"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


def temp_entries(root: Path) -> list[str]:
    """Every temporary file or directory under ``root`` (not inside arrays' own trees)."""
    found = []
    for folder, subfolders, files in os.walk(root):
        found += [os.path.join(folder, name) for name in subfolders + files if name.startswith(TEMP_PREFIX)]
        subfolders[:] = [name for name in subfolders if not name.startswith(TEMP_PREFIX)]
    return sorted(found)


def temp_bytes(directory: Path) -> int:
    """The bytes written so far into temporary files and directories in ``directory``."""
    total = 0
    for entry in temp_entries(directory):
        walk = os.walk(entry) if os.path.isdir(entry) else [(os.path.dirname(entry), [], [os.path.basename(entry)])]
        for folder, _, files in walk:
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except FileNotFoundError:
                    continue  # renamed or removed meanwhile
    return total


def kill_at_progress(writer: multiprocessing.process.BaseProcess, directory: Path, target: int, after: float) -> bool:
    """SIGKILL ``writer`` ``after`` seconds after ``target`` bytes are in its temporary files.

    Returns whether it was still running then.
    """
    deadline = time.monotonic() + TIMEOUT
    while writer.exitcode is None and temp_bytes(directory) < target and time.monotonic() < deadline:
        time.sleep(0.0002)
    time.sleep(after)
    running = writer.exitcode is None
    writer.kill()  # SIGKILL
    writer.join(TIMEOUT)
    return running and writer.exitcode == -signal.SIGKILL


def test_a_writer_killed_at_a_random_point_of_a_save_leaves_old_or_new_data_whole(
    forkserver: multiprocessing.context.BaseContext, backend_name: str, tmp_path: Path
) -> None:
    size, suffix, options = SETUPS[backend_name]
    backend = make_backend(backend_name, str(tmp_path))
    rng = random.Random(None if DEEP else 20261126)
    area = f"faults: {backend_name} killed writer"
    for trial in range(KILL_TRIALS):
        first_save = trial % 4 == 3  # also kill saves creating a new path, not only overwrites
        path = f"trial{trial}/data{suffix}"
        if not first_save:
            backend.save(token_data(OLD, size), path, **options)
        started = forkserver.Event()
        writer = forkserver.Process(
            target=save_once, args=(backend_name, str(tmp_path), path, NEW, size, not first_save, options, started)
        )
        writer.start()
        assert started.wait(TIMEOUT), "the writer never started"
        # A third of the kills right at the start, a third once a random share of the data is written,
        # a third a random moment after all of it is (in the commit, the swap or the removal of the old array).
        share = (0.0, rng.uniform(0.02, 1.0), 1.0)[trial % 3]
        after = rng.uniform(0, 0.02) if trial % 3 == 2 else 0.0
        killed = kill_at_progress(writer, tmp_path / posixpath.dirname(path), int(share * size * 8), after)
        assert writer.exitcode in (0, -signal.SIGKILL)
        check_after_kill(backend_name, tmp_path, path, first_save, area, killed)
    assert temp_entries(tmp_path) == []


def check_after_kill(backend_name: str, root: Path, path: str, first_save: bool, area: str, killed: bool) -> None:
    """Judge the state a killed writer left at ``path``: old or new data, whole, or nothing for a first save."""
    size, _, options = SETUPS[backend_name]
    backend = make_backend(backend_name, str(root))
    directory, name = posixpath.split(path)
    try:
        token = identify(backend.load(path), size)
        state = {OLD: "old", NEW: "new"}.get(token, "torn")
    except FileNotFoundError:
        state = "missing"
    lost = state == "torn" or (state == "missing" and not first_save)
    record(area, operations=1, faults=int(killed), lost_or_torn=int(lost))
    assert not lost, f"after the kill {path} is {state}"
    assert state != "old" or not first_save
    if backend.is_dir(directory):  # a first save killed early may not have made it yet
        listed = backend.list_dir(directory)
        assert listed == ([] if state == "missing" else [name]), "a temporary file shows in the listing"
        assert backend.list_files(directory) == ([] if state == "missing" else [path])
    else:
        assert state == "missing"

    # The next save works despite any leftovers, and cleanup removes them.
    leftovers = temp_entries(root / directory)
    backend.save(token_data(NEXT, size), path, overwrite=True, **options)
    assert identify(backend.load(path), size) == NEXT
    assert backend.cleanup(directory) == leftovers
    assert temp_entries(root / directory) == []
    assert backend.list_dir(directory) == [name]
    record(area, operations=5)


def refuse_save(
    forkserver: multiprocessing.context.BaseContext, backend_name: str, root: Path, path: str, limit: int
) -> dict[str, Any]:
    """Save NEW over OLD at ``path`` in a child whose files may not exceed ``limit`` bytes; its report."""
    size, _, options = SETUPS[backend_name]
    make_backend(backend_name, str(root)).save(token_data(OLD, size), path, **options)
    results = forkserver.Queue()
    writer = forkserver.Process(
        target=save_with_file_size_limit, args=(backend_name, str(root), path, NEW, size, limit, options, results)
    )
    writer.start()
    [report] = drain(results, 1, TIMEOUT)
    writer.join(TIMEOUT)
    return report


def test_a_save_the_os_refuses_part_way_raises_and_leaves_old_data_and_no_temp_file(
    forkserver: multiprocessing.context.BaseContext, backend_name: str, tmp_path: Path
) -> None:
    size, suffix, _ = SETUPS[backend_name]
    backend = make_backend(backend_name, str(tmp_path))
    area = f"faults: {backend_name} file size limit"
    for trial in range(SIZE_LIMIT_TRIALS):
        path = f"trial{trial}/data{suffix}"
        limit = (64 + 100 * trial) << 10  # 64 KiB, 164 KiB, ...: less than one file of the save
        report = refuse_save(forkserver, backend_name, tmp_path, path, limit)
        token = identify(backend.load(path), size)
        record(area, operations=2, faults=1, lost_or_torn=int(token != OLD))
        assert token == OLD, f"after the refused save {path} holds token {token}"
        assert report["error"] is not None, "the save succeeded despite the file size limit"
        assert report["oserror"], f"not an OSError: {report['error']}"
        assert temp_entries(tmp_path / f"trial{trial}") == [], "the failed save left a temporary file"
        assert backend.list_dir(f"trial{trial}") == [posixpath.basename(path)]
        assert backend.cleanup() == []


@pytest.mark.parametrize(
    "backend_name",
    [
        "disk",
        "zarr",
    ],
)
def test_the_error_of_a_save_the_os_refuses_names_the_path_and_the_cause(
    forkserver: multiprocessing.context.BaseContext, backend_name: str, tmp_path: Path
) -> None:
    path = f"refused/data{SETUPS[backend_name][1]}"
    report = refuse_save(forkserver, backend_name, tmp_path, path, 64 << 10)
    assert report["error"] is not None
    assert path in report["error"], report["error"]
    assert report["efbig"], f"the OS's EFBIG is lost: {report['error']}"
