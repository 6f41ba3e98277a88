"""Work stealing leaves pinned memory tasks on the worker that keeps their paths (StrandedTaskRescue.transition)."""

from __future__ import annotations

import time

import numpy as np
from distributed import Client, Event

from tests._cluster import PATIENCE, worker_info

#: How long the load stays queued behind the busy worker's task: distributed balances every 100 ms,
#: so without the fix the idle worker steals the load (which then fails) well within it.
QUEUED_SECONDS = 3.0


def hold_the_thread(started: str, release: str) -> None:
    """Occupy this worker's only thread until ``release`` is set (at most PATIENCE seconds)."""
    Event(started).set()
    Event(release).wait(timeout=PATIENCE)


def holders(client: Client, path: str) -> list[str]:
    def has(dask_worker) -> bool:
        return dask_worker.plugins["polystore"].registry["memory"].is_file(path)

    return sorted(address for address, found in client.run(has).items() if found)


def test_a_load_queued_behind_a_busy_keeper_is_not_stolen_by_an_idle_worker(client, dfm, tmp_path):
    path = f"/{tmp_path.name}/kept.npy"
    data = np.arange(12.0).reshape(3, 4)
    dfm.save(data, path, "memory").result(timeout=PATIENCE)
    (keeper,) = holders(client, path)
    (idle,) = [address for address in worker_info(client) if address != keeper]
    started, release = Event(f"{tmp_path.name}-started"), Event(f"{tmp_path.name}-release")
    busy = client.submit(hold_the_thread, started.name, release.name, workers=[keeper], pure=False)
    try:
        assert started.wait(timeout=PATIENCE)
        loaded = dfm.load(path, "memory")
        # The load waits in the keeper's queue while the other worker has nothing to do: the case
        # in which distributed's stealing moved it there, where it failed with FileNotFoundError.
        deadline = time.monotonic() + QUEUED_SECONDS
        while time.monotonic() < deadline and not loaded.done():
            time.sleep(0.05)
        assert not loaded.done(), f"the load ran before the keeper was free: {loaded.exception()!r}"
        assert client.processing(workers=[idle])[idle] == ()
    finally:
        release.set()
    busy.result(timeout=PATIENCE)
    np.testing.assert_array_equal(loaded.result(timeout=PATIENCE), data)
