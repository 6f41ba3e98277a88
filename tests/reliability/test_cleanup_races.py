"""cleanup() racing live writers: it never removes what a writer still needs, whatever its arguments.

Writers (threads, or processes) save new paths and overwrite one path in a
loop, loading each right after its save returns; meanwhile cleanup() runs in
a tight loop with every kind of argument: the whole root, one directory,
``older_than=0`` and a negative margin. Every save must return normally and
leave a whole, readable object; and once the writers are done, a last
cleanup leaves no temporary file behind.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from polystore import DiskBackend, ZarrBackend
from polystore.backends.disk import TEMP_PREFIX
from polystore.backends.zarr import swap as zarr_swap
from tests._reliability_ledger import record, scaled
from tests._reliability_workers import drain, make_backend, save_and_check

SPAWN = multiprocessing.get_context("spawn")
WRITERS = 3
ROUNDS = scaled(12, 120)
#: Per backend: array elements (int64) and save options; each save takes a few milliseconds.
SETUPS: dict[str, tuple[int, dict[str, Any]]] = {
    "disk": (2**19, {}),  # 4 MiB
    "zarr": (2**18, {"chunks": (2**14,)}),  # 2 MiB in 16 chunks
}
#: What cleanup is called with, in turn: its default, one writer's directory, no margin, a margin in the future.
CLEANUPS: list[dict[str, Any]] = [{}, {"directory": "w0"}, {"older_than": 0}, {"older_than": -3600}]


def clean_until(backend: DiskBackend | ZarrBackend, done: threading.Event, tally: dict[str, int]) -> None:
    while not done.is_set():
        for arguments in CLEANUPS:
            tally["removed"] += len(backend.cleanup(**arguments))
            tally["cleanups"] += 1


def leftovers(root: Path) -> list[str]:
    return [os.path.join(folder, name) for folder, dirs, files in os.walk(root) for name in dirs + files
            if name.startswith(TEMP_PREFIX)]


@pytest.mark.parametrize("writers", ["threads", "processes"])
@pytest.mark.parametrize("backend_name", ["disk", "zarr"])
def test_cleanup_in_a_loop_never_breaks_a_live_save(backend_name: str, writers: str, tmp_path: Path) -> None:
    race(backend_name, writers, tmp_path)


def test_cleanup_never_takes_the_lock_of_a_live_zarr_writer_without_renameat2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zarr_swap, "_renameat2", None)  # writers of one path take turns through a lock directory
    race("zarr", "threads", tmp_path, area="zarr without renameat2")


def race(backend_name: str, writers: str, tmp_path: Path, area: str | None = None) -> None:
    """Run the writers and the cleaner; fail on any save that failed or returned unreadable."""
    size, options = SETUPS[backend_name]
    cleaner_backend = make_backend(backend_name, str(tmp_path))
    for index in range(WRITERS):
        (tmp_path / f"w{index}").mkdir()
    done, tally = threading.Event(), {"removed": 0, "cleanups": 0}
    cleaner = threading.Thread(target=clean_until, args=(cleaner_backend, done, tally))
    arguments = [(backend_name, str(tmp_path), f"w{index}", 1 + index * 10**4, ROUNDS, size, options)
                 for index in range(WRITERS)]
    cleaner.start()
    try:
        if writers == "threads":
            summaries: list[dict[str, Any]] = []
            threads = [threading.Thread(target=lambda a=a: summaries.append(save_and_check(*a))) for a in arguments]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            results = SPAWN.Queue()
            processes = [SPAWN.Process(target=save_and_check, args=(*a, results)) for a in arguments]
            for process in processes:
                process.start()
            summaries = drain(results, WRITERS, timeout=300)
            for process in processes:
                process.join(timeout=60)
    finally:
        done.set()
        cleaner.join()
    saved = sum(summary["saved"] for summary in summaries)
    failed = sum(summary["failed"] for summary in summaries)
    unreadable = sum(summary["unreadable"] for summary in summaries)
    record(f"cleanup races: {area or backend_name}, {writers}", operations=2 * saved + failed + tally["cleanups"],
           faults=tally["cleanups"], lost_or_torn=failed + unreadable)
    problems = [summary["first_problem"] for summary in summaries if summary["first_problem"]]
    assert (failed, unreadable) == (0, 0), f"{failed} saves failed, {unreadable} returned unreadable: {problems}"
    assert saved == WRITERS * ROUNDS * 2
    assert tally["cleanups"] > 0
    cleaner_backend.cleanup()
    assert leftovers(tmp_path) == []
