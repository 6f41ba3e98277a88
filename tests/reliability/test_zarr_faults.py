"""The zarr backend under faults: races, interrupted writes, damaged files, killed writers."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from polystore import ZarrBackend
from polystore.backends.zarr import swap as _zarr_fs


@pytest.fixture
def backend(tmp_path: Path) -> ZarrBackend:
    return ZarrBackend(root=tmp_path)


@pytest.fixture
def without_renameat2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run on the fallback path, as on a system without ``renameat2``."""
    monkeypatch.setattr(_zarr_fs, "_renameat2", None)


# -- racing creators -----------------------------------------------------------------
_RACER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from polystore import ZarrBackend
    root, index = sys.argv[1], int(sys.argv[2])
    backend = ZarrBackend(root=root)
    data = np.full((64, 64), index, dtype="int32")
    open(os.path.join(root, f"ready-{index}"), "w").close()
    while not os.path.exists(os.path.join(root, "go")):
        time.sleep(0.001)
    try:
        backend.save(data, "race.zarr", chunks=(16, 16))
        print("won")
    except FileExistsError:
        print("lost")
    """
)


def test_of_six_processes_creating_one_array_exactly_one_wins(tmp_path: Path) -> None:
    racers = [
        subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path), str(i)], stdout=subprocess.PIPE, text=True)
        for i in range(6)
    ]
    try:
        while len(list(tmp_path.glob("ready-*"))) < 6 and all(r.poll() is None for r in racers):
            time.sleep(0.01)
        (tmp_path / "go").touch()
        outcomes = [racer.communicate(timeout=120)[0].strip() for racer in racers]
    finally:
        for racer in racers:
            racer.kill()
    assert sorted(outcomes) == ["lost"] * 5 + ["won"]
    winner = outcomes.index("won")
    np.testing.assert_array_equal(ZarrBackend(root=tmp_path).load("race.zarr"), np.full((64, 64), winner, "int32"))
    assert not list(tmp_path.glob(".polystore-tmp-*"))


@pytest.mark.usefixtures("without_renameat2")
def test_without_renameat2_racing_threads_still_have_one_winner_and_overwrite_works(backend: ZarrBackend) -> None:
    outcomes: list[str] = []
    start = threading.Barrier(6)

    def racer(index: int) -> None:
        start.wait()
        try:
            backend.save(np.full((16, 16), index, "int16"), "fallback.zarr", chunks=(4, 4))
            outcomes.append(f"won:{index}")
        except FileExistsError:
            outcomes.append("lost")

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("lost") == 5
    backend.save(np.ones(3), "fallback.zarr", overwrite=True)
    np.testing.assert_array_equal(backend.load("fallback.zarr"), np.ones(3))
    assert backend.list_dir(".") == ["fallback.zarr"]


# -- readers during overwrites ---------------------------------------------------------
@pytest.mark.parametrize("swap", ["renameat2", "fallback"])
def test_readers_during_overwrites_see_one_whole_array(
    backend: ZarrBackend, swap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if swap == "fallback":
        monkeypatch.setattr(_zarr_fs, "_renameat2", None)
    backend.save(np.full((16, 16), 1, "int32"), "swap.zarr", chunks=(4, 4))
    done = threading.Event()
    seen: list[set[int]] = []
    missing: list[int] = []

    def reader() -> None:
        while not done.is_set():
            try:
                seen.append(set(np.unique(backend.load("swap.zarr")).tolist()))
            except FileNotFoundError:
                missing.append(1)  # only in the fallback's window
            except BlockingIOError:
                pass  # replaced on every attempt: the load gave up rather than mix

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in readers:
        thread.start()
    try:
        for value in range(2, 14):
            backend.save(np.full((16, 16), value, "int32"), "swap.zarr", chunks=(4, 4), overwrite=True)
    finally:
        done.set()
        for thread in readers:
            thread.join()
    assert seen and all(len(values) == 1 for values in seen)
    if swap == "renameat2":
        assert missing == []


# -- interrupted writes ----------------------------------------------------------------
@contextlib.contextmanager
def file_size_limit() -> Iterator[None]:
    """Make every file larger than 2000 bytes fail to write (EFBIG), as a full quota would."""
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)


def half_compressible() -> np.ndarray:
    """Chunks of ones compress to a few bytes; random chunks stay 4 KiB and fail to write."""
    data = np.ones((256, 256), "float32")
    data[128:] = np.random.default_rng(0).random((128, 256), dtype="float32")
    return data


def test_save_failing_mid_write_leaves_no_array_and_no_temp_dir(backend: ZarrBackend, tmp_path: Path) -> None:
    with pytest.raises(OSError, match="too large"):
        with file_size_limit():
            backend.save(half_compressible(), "out/interrupted.zarr", chunks=(32, 32))
    assert not backend.exists("out/interrupted.zarr")
    assert os.listdir(tmp_path / "out") == ["zarr.json"]  # only the metadata of the group the save created


def test_overwrite_failing_mid_write_keeps_the_old_array(backend: ZarrBackend, tmp_path: Path) -> None:
    old = np.arange(10.0)
    backend.save(old, "kept.zarr")
    with pytest.raises(OSError, match="too large"):
        with file_size_limit():
            backend.save(half_compressible(), "kept.zarr", chunks=(32, 32), overwrite=True)
    np.testing.assert_array_equal(backend.load("kept.zarr"), old)
    assert os.listdir(tmp_path) == ["kept.zarr"]


class FailingArrayLike:
    """An array-like whose data cannot be produced (a failing upstream computation)."""

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        raise RuntimeError("upstream computation failed")


def test_save_of_a_failing_array_like_writes_nothing(backend: ZarrBackend, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="upstream"):
        backend.save(FailingArrayLike(), "never.zarr")
    assert os.listdir(tmp_path) == []


def test_killed_writer_leftovers_are_hidden_and_cleaned_up(backend: ZarrBackend, tmp_path: Path) -> None:
    backend.save(np.ones(4), "d/kept.zarr")
    leftover = tmp_path / "d" / ".polystore-tmp-half.zarr-0123456789abcdef"
    zarr.create_array(store=str(leftover), shape=(4,), dtype="int8")
    assert backend.list_dir("d") == ["kept.zarr"] and backend.list_files("d") == ["d/kept.zarr"]
    assert backend.cleanup(older_than=3600) == []
    assert backend.cleanup() == [str(leftover)]
    assert sorted(os.listdir(tmp_path / "d")) == ["kept.zarr", "zarr.json"]  # d is a zarr group


# -- damaged arrays ---------------------------------------------------------------------
def test_truncated_chunk_file_raises_naming_it_while_other_regions_still_load(
    backend: ZarrBackend, tmp_path: Path
) -> None:
    data = np.random.default_rng(2).random((40, 30))
    backend.save(data, "hurt.zarr", chunks=(8, 8))
    chunk = tmp_path / "hurt.zarr" / "c" / "1" / "2"
    with open(chunk, "r+b") as file:
        file.truncate(100)
    with pytest.raises(ValueError, match=f"{chunk}.*truncated or corrupt"):
        backend.load("hurt.zarr")
    with pytest.raises(ValueError, match=str(chunk)):
        backend.load("hurt.zarr", region=(slice(10, 12), slice(None)))
    np.testing.assert_array_equal(backend.load("hurt.zarr", region=(slice(0, 8),)), data[:8])


@pytest.mark.parametrize("compressor", [None, "blosc-lz4"])
def test_corrupt_shard_or_uncompressed_chunk_is_named(
    backend: ZarrBackend, tmp_path: Path, compressor: str | None
) -> None:
    backend.save(
        np.arange(64 * 64).reshape(64, 64), "shards.zarr", chunks=(8, 8), shards=(32, 32), compressor=compressor
    )
    shard = tmp_path / "shards.zarr" / "c" / "1" / "0"
    shard.write_bytes(shard.read_bytes()[:-20])
    with pytest.raises(ValueError, match=str(shard)):
        backend.load("shards.zarr")


def test_missing_chunk_file_reads_as_the_fill_value(backend: ZarrBackend, tmp_path: Path) -> None:
    backend.create_array("holes.zarr", (16, 16), "int32", (8, 8), fill_value=-7)
    backend.save(np.ones((16, 16), "int32"), "holes.zarr", region=(slice(0, 16), slice(0, 16)))
    (tmp_path / "holes.zarr" / "c" / "0" / "1").unlink()
    expected = np.ones((16, 16), "int32")
    expected[:8, 8:] = -7
    np.testing.assert_array_equal(backend.load("holes.zarr"), expected)


@pytest.mark.parametrize(
    "content",
    [None, b'{"node_type": "group", "zarr_format": 3}', b"{not json"],
    ids=["plain", "group", "broken-metadata"],
)
def test_loading_a_directory_that_is_not_an_array_raises_is_a_directory(
    backend: ZarrBackend, tmp_path: Path, content: bytes | None
) -> None:
    (tmp_path / "d.zarr").mkdir()
    if content is not None:
        (tmp_path / "d.zarr" / "zarr.json").write_bytes(content)
    with pytest.raises(IsADirectoryError, match="d.zarr"):
        backend.load("d.zarr")


@pytest.mark.usefixtures("without_renameat2")
def test_without_renameat2_a_lock_left_by_a_killed_writer_times_out_until_cleaned_up(
    backend: ZarrBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_zarr_fs, "_LOCK_TIMEOUT", 0.05)
    (tmp_path / ".polystore-tmp-stuck.zarr.lock").mkdir()
    with pytest.raises(TimeoutError, match="cleanup"):
        backend.save(np.ones(3), "stuck.zarr")
    assert backend.list_dir(".") == []
    backend.cleanup()
    backend.save(np.ones(3), "stuck.zarr")
    assert os.listdir(tmp_path) == ["stuck.zarr"]
