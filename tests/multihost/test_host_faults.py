"""Faults on four isolated hosts: a worker killed or frozen mid-save_batch to scratch, a host's scratch filling up.

Each ends with the operation completed, or a clear error naming path and
host, and nothing already stored lost or torn; each is counted into the
reliability report (tests/_reliability_ledger.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import uuid
from typing import Any

import numpy as np
import pytest
from distributed import Client

from polystore_dask import DaskFileManager
from tests._cluster import wait_until, worker_info
from tests._host_tasks import fill_disk, remove
from tests._hosts import HOST_PATIENCE
from tests._reliability_ledger import record
from tests.multihost.conftest import HOSTS

pytestmark = pytest.mark.multihost

#: Items of each faulted batch, and their size: enough for every host to get several parts.
ITEMS = 24
ITEM_BYTES = 1 << 20


def item(index: int) -> np.ndarray:
    return np.full(ITEM_BYTES // 8, index, dtype=np.float64)


def save_before(dfm: DaskFileManager, directory: str) -> list[str]:
    """Items stored before the fault, on every host: they must all come through it intact."""
    paths = [f"{directory}/before{index}.npy" for index in range(8)]
    dfm.save_batch([item(1000 + index) for index in range(8)], paths, "scratch").result(timeout=HOST_PATIENCE)
    return paths


def lost_or_torn(client: Client, before: list[str], batch: list[str]) -> int:
    """Count stored items that are missing or wrong (before the fault), or wrong (the faulted batch's).

    Read through a fresh manager, so nothing the faulted one remembers helps.
    """
    client.wait_for_workers(HOSTS, timeout=HOST_PATIENCE)
    dfm = DaskFileManager(client)
    bad = 0
    for index, path in enumerate(before):
        try:
            bad += int(not np.array_equal(dfm.load(path, "scratch").result(timeout=HOST_PATIENCE), item(1000 + index)))
        except FileNotFoundError:
            bad += 1
    for index, path in enumerate(batch):
        try:
            bad += int(not np.array_equal(dfm.load(path, "scratch").result(timeout=HOST_PATIENCE), item(index)))
        except FileNotFoundError:
            pass  # not saved: allowed when the batch reported an error
    directory = os.path.dirname(batch[0])
    listed = dfm.list_dir(directory, "scratch")
    bad += sum(1 for name in listed if not name.endswith(".npy"))  # no temporary or partial file shows
    return bad


def check_outcome(future: Any, paths: list[str]) -> BaseException | None:
    """The batch completed (None) or failed with an error that names one of its paths and a host."""
    try:
        future.result(timeout=HOST_PATIENCE)
    except Exception as error:  # the outcome under test: which error, and what it says
        message = str(error)
        assert any(path in message for path in paths) and "host h" in message, f"unclear error: {error!r}"
        return error
    return None


def test_a_hosts_worker_sigkilled_during_save_batch_to_scratch(client, dfm, hosts):
    directory = str(hosts.scratch / f"killed-{uuid.uuid4().hex}")
    before = save_before(dfm, directory)
    paths = [f"{directory}/item{index}.npy" for index in range(ITEMS)]
    victim = hosts.worker_pid(client, "h2")
    future = dfm.save_batch([item(index) for index in range(ITEMS)], paths, "scratch")
    os.kill(victim, signal.SIGKILL)
    error = check_outcome(future, paths)
    bad = lost_or_torn(client, before, paths)
    record("multihost: save_batch scratch, worker SIGKILLed", operations=1 + ITEMS + len(before), faults=1,
           lost_or_torn=bad)
    assert bad == 0, f"{bad} items lost or torn (batch outcome: {error!r})"


def test_a_worker_frozen_past_the_schedulers_timeout_then_continued(client, dfm, hosts):
    directory = str(hosts.scratch / f"frozen-{uuid.uuid4().hex}")
    before = save_before(dfm, directory)
    paths = [f"{directory}/item{index}.npy" for index in range(ITEMS)]
    address = hosts.worker_address(client, "h3")
    frozen = hosts.worker_pid(client, "h3")
    os.kill(frozen, signal.SIGSTOP)
    try:
        future = dfm.save_batch([item(index) for index in range(ITEMS)], paths, "scratch")
        wait_until(lambda: address not in worker_info(client), "the scheduler to drop the worker")
    finally:
        # Past the TTL the scheduler drops the worker and its nanny may already have ended the process.
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen, signal.SIGCONT)
    error = check_outcome(future, paths)
    bad = lost_or_torn(client, before, paths)
    record("multihost: save_batch scratch, worker SIGSTOPped past the TTL", operations=1 + ITEMS + len(before),
           faults=1, lost_or_torn=bad)
    assert bad == 0, f"{bad} items lost or torn (batch outcome: {error!r})"


def test_a_hosts_scratch_filling_up_mid_save_batch_fails_naming_path_and_host(client, dfm, hosts):
    directory = str(hosts.scratch / f"full-{uuid.uuid4().hex}")
    before = save_before(dfm, directory)
    filler = str(hosts.scratch / "filler")
    address = hosts.worker_address(client, "h4")
    free = client.run(lambda: os.statvfs(filler.rsplit("/", 1)[0]), workers=[address])[address]
    client.submit(fill_disk, filler, free.f_bavail * free.f_frsize - ITEM_BYTES // 2, workers=[address],
                  allow_other_workers=False, pure=False).result(timeout=HOST_PATIENCE)
    paths = [f"{directory}/item{index}.npy" for index in range(ITEMS)]
    try:
        future = dfm.save_batch([item(index) for index in range(ITEMS)], paths, "scratch")
        with pytest.raises(OSError) as caught:
            future.result(timeout=HOST_PATIENCE)
        assert caught.value.errno == errno.ENOSPC
        assert caught.value.filename in paths and "host h4" in str(caught.value)
        bad = lost_or_torn(client, before, paths)
    finally:
        client.submit(remove, filler, workers=[address], allow_other_workers=False, pure=False).result()
    record("multihost: save_batch scratch, host disk full", operations=1 + ITEMS + len(before), faults=1,
           lost_or_torn=bad)
    assert bad == 0
    # With space again, the same batch goes through.
    dfm.save_batch([item(index) for index in range(ITEMS)], paths, "scratch", overwrite=True).result()
    assert lost_or_torn(client, before, paths) == 0
