"""The s3 backend when things go wrong: racing writers, and a server that stops and comes back.

These tests run on a SeaweedFS of their own, since they stop it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from polystore import S3Backend, ZarrBackend
from polystore.testing import assert_same_data
from tests._seaweed import SeaweedServer, seaweed_server

#: Losers of a race on SeaweedFS wait 1 to 4 s for their 412; a bound for every wait here.
PATIENCE = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    with seaweed_server(tmp_path_factory.mktemp("seaweed-faults")) as started:
        yield started


@pytest.fixture
def prefix() -> str:
    return f"faults/{uuid.uuid4().hex}"


@pytest.fixture
def backend(server: SeaweedServer, prefix: str) -> Iterator[S3Backend]:
    yield S3Backend(**server.backend_options(prefix=prefix), retry_timeout=PATIENCE)
    if server.process is None:  # a test that failed half-way left the server stopped
        server.start()


def test_eight_writers_racing_on_one_key_leave_one_winner_whose_bytes_are_stored(
    server: SeaweedServer, prefix: str
) -> None:
    rounds, writers = 3, 8
    # Each writer has a client of its own, as separate processes would; all rounds race at once.
    backends = [S3Backend(**server.backend_options(prefix=prefix)) for _ in range(writers)]
    payloads = {(r, w): os.urandom(4096) for r in range(rounds) for w in range(writers)}
    outcomes: dict[tuple[int, int], str] = {}
    barrier = threading.Barrier(rounds * writers, timeout=PATIENCE)

    def write(round_: int, writer: int) -> None:
        barrier.wait()
        try:
            backends[writer].save(payloads[round_, writer], f"race/{round_}.bin")
            outcomes[round_, writer] = "won"
        except FileExistsError:
            outcomes[round_, writer] = "lost"

    threads = [threading.Thread(target=write, args=key) for key in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=PATIENCE)
    assert not any(thread.is_alive() for thread in threads), "a writer did not finish"
    assert len(outcomes) == rounds * writers
    for round_ in range(rounds):
        winners = [w for w in range(writers) if outcomes[round_, w] == "won"]
        assert len(winners) == 1, f"round {round_}: winners {winners}"
        assert backends[0].load(f"race/{round_}.bin") == payloads[round_, winners[0]]


def stored_before(backend: S3Backend) -> dict[str, np.ndarray]:
    arrays = {f"before/{i}.npy": np.full((32, 32), i, dtype=np.int32) for i in range(20)}
    backend.save_batch(list(arrays.values()), list(arrays))
    backend.ensure_directory("before/empty")
    return arrays


@pytest.mark.parametrize("stop", ["terminate", "kill"])
def test_after_a_restart_operations_retry_and_succeed_and_nothing_stored_is_lost(
    server: SeaweedServer, backend: S3Backend, stop: str
) -> None:
    arrays = stored_before(backend)
    server.stop() if stop == "terminate" else server.kill()
    # The server comes back about a second after the save below was issued: the client retries meanwhile.
    restart = threading.Timer(1.0, server.start)
    restart.start()
    started = time.monotonic()
    try:
        backend.save(np.arange(10), "after/a.npy")
    finally:
        restart.join(timeout=PATIENCE)
    assert time.monotonic() - started < PATIENCE
    assert_same_data(backend.load("after/a.npy"), np.arange(10))
    for path, data in zip(arrays, backend.load_batch(list(arrays)), strict=True):
        assert_same_data(data, arrays[path])
    assert backend.list_dir("before") == sorted([*(p.rsplit("/", 1)[1] for p in arrays), "empty"])


def test_with_the_server_down_an_operation_fails_clearly_once_its_retries_run_out(
    server: SeaweedServer, prefix: str
) -> None:
    backend = S3Backend(**server.backend_options(prefix=prefix), retry_timeout=1.0)
    arrays = stored_before(backend)
    server.stop()
    try:
        started = time.monotonic()
        for operation in (lambda: backend.load("before/0.npy"), lambda: backend.save(b"x", "down.bin")):
            with pytest.raises(ConnectionError) as raised:
                operation()
            message = str(raised.value)
            assert "s3 backend" in message and server.endpoint in message and "did not answer" in message
        assert time.monotonic() - started < PATIENCE
    finally:
        server.start()
    for path, data in zip(arrays, backend.load_batch(list(arrays)), strict=True):
        assert_same_data(data, arrays[path])
    assert not backend.exists("down.bin")


def test_a_server_that_cannot_start_fails_with_its_reason(tmp_path: Path, server: SeaweedServer) -> None:
    # The ports of a running server are taken: a second server on them exits, and says why.
    clash = SeaweedServer(tmp_path)
    clash.ports = dict(server.ports)
    with pytest.raises(RuntimeError, match="SeaweedFS"):
        clash.start(timeout=10.0)
    assert clash.process is None


# -- zarr arrays in a bucket ----------------------------------------------------------
def bucket_zarr(server: SeaweedServer, prefix: str, **options: float) -> ZarrBackend:
    store_options = {k: v for k, v in server.backend_options().items() if k not in ("bucket", "prefix")}
    return ZarrBackend(root=f"s3://{server.buckets[0]}/{prefix}", store_options={**store_options, **options})


def test_eight_zarr_writers_racing_on_one_array_leave_one_winner_whose_array_is_stored(
    server: SeaweedServer, prefix: str
) -> None:
    writers = 8
    backends = [bucket_zarr(server, prefix) for _ in range(writers)]  # one client each, as processes would
    outcomes: dict[int, str] = {}
    barrier = threading.Barrier(writers, timeout=PATIENCE)

    def write(writer: int) -> None:
        barrier.wait()
        try:
            backends[writer].save(np.full((256, 256), writer, dtype=np.int32), "race.zarr", chunks=(64, 64))
            outcomes[writer] = "won"
        except FileExistsError:
            outcomes[writer] = "lost"

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=PATIENCE)
    assert not any(thread.is_alive() for thread in threads), "a writer did not finish"
    winners = [writer for writer, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1 and len(outcomes) == writers
    assert_same_data(backends[0].load("race.zarr"), np.full((256, 256), winners[0], dtype=np.int32))


def test_a_zarr_save_across_a_restart_retries_and_succeeds_and_nothing_stored_is_lost(
    server: SeaweedServer, prefix: str
) -> None:
    backend = bucket_zarr(server, prefix, retry_timeout=PATIENCE)
    before = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    backend.save(before, "before.zarr", chunks=(16, 16))
    server.kill()
    restart = threading.Timer(1.0, server.start)
    restart.start()
    try:
        backend.save(before * 2, "after.zarr", chunks=(16, 16))
    finally:
        restart.join(timeout=PATIENCE)
        if server.process is None:
            server.start()
    assert_same_data(backend.load("after.zarr"), before * 2)
    assert_same_data(backend.load("before.zarr"), before)
    assert backend.list_files(".") == ["./after.zarr", "./before.zarr"]


def test_with_the_server_down_zarr_operations_fail_clearly_and_leave_the_stored_array(
    server: SeaweedServer, prefix: str
) -> None:
    backend = bucket_zarr(server, prefix, retry_timeout=1.0)
    backend.save(np.arange(100), "kept.zarr", chunks=(10,))
    server.stop()
    try:
        for operation in (lambda: backend.load("kept.zarr"), lambda: backend.save(np.arange(3), "down.zarr")):
            with pytest.raises(ConnectionError) as raised:
                operation()
            message = str(raised.value)
            assert "zarr backend" in message and server.endpoint in message and "did not answer" in message
    finally:
        server.start()
    assert_same_data(backend.load("kept.zarr"), np.arange(100))
    assert not backend.exists("down.zarr")
