"""A model of replicated memory paths: saves, overwrites, deletes and worker deaths against a plain dict.

Hypothesis draws sequences of save, save_batch, overwrite, delete and
SIGKILL of a worker on a 3-worker LocalCluster whose memory paths keep 2
replicas. After each kill the test waits for the cluster to heal (every
path held by 2 live workers) before the next step, so at least one replica
of every path is alive at every kill: no path may ever be lost or stale.
After every step every path of the model loads with the model's value, and
the listing shows exactly the model's paths. Lost or wrong paths are
counted into the reliability report, and must be 0.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from typing import Any

import dask
import numpy as np
import pytest
from distributed import Client
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from polystore_dask import DaskFileManager, PolystorePlugin
from polystore_dask.plugin import registry_of
from tests._cluster import PATIENCE, cluster_client, kill_worker, wait_until
from tests._reliability_ledger import DEEP, record, scaled

pytestmark = pytest.mark.cluster

WORKERS = 3
NAMES = ("a", "b", "c", "d", "e")
#: Workers killed at most per example (each kill waits for the cluster to heal: seconds).
KILLS = scaled(2, 6)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"}), cluster_client(WORKERS) as client:
        client.register_plugin(PolystorePlugin(options={"memory": {"replicas": 2}}))
        yield client


def held_here(paths: list[str], dask_worker: Any) -> list[str]:
    memory = registry_of(dask_worker)["memory"]
    return [path for path in paths if memory.is_file(path)]


def value(number: int) -> np.ndarray:
    return np.full(16, number, dtype=np.int64)


class ReplicaMachine(RuleBasedStateMachine):
    client: Client
    rng: random.Random

    def __init__(self) -> None:
        super().__init__()
        self.dfm = DaskFileManager(self.client)
        self.model: dict[str, int] = {}
        self.operations = self.faults = self.lost = 0
        self.directory = f"model-{uuid.uuid4().hex}"  # not random: Hypothesis seeds it alike for every example

    def path(self, name: str) -> str:
        return f"{self.directory}/{name}"

    @initialize(number=st.integers(1, 10**6))
    def save_some(self, number: int) -> None:
        self.save_batch(list(NAMES[:3]), number)

    @rule(name=st.sampled_from(NAMES), number=st.integers(1, 10**6), overwrite=st.booleans())
    def save(self, name: str, number: int, overwrite: bool) -> None:
        self.operations += 1
        future = self.dfm.save(value(number), self.path(name), "memory", overwrite=overwrite)
        if name in self.model and not overwrite:
            with pytest.raises(FileExistsError):
                future.result(timeout=PATIENCE)
            return
        future.result(timeout=PATIENCE)
        self.model[name] = number

    @rule(names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True), number=st.integers(1, 10**6))
    def save_batch(self, names: list[str], number: int) -> None:
        self.operations += 1
        numbers = [number + index for index in range(len(names))]
        self.dfm.save_batch(
            [value(each) for each in numbers], [self.path(name) for name in names], "memory", overwrite=True
        ).result(timeout=PATIENCE)
        self.model.update(zip(names, numbers, strict=True))

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        self.operations += 1
        future = self.dfm.delete(self.path(name), "memory")
        if name not in self.model:
            with pytest.raises(FileNotFoundError):
                future.result(timeout=PATIENCE)
            return
        future.result(timeout=PATIENCE)
        del self.model[name]

    @precondition(lambda machine: machine.model and machine.faults < KILLS)
    @rule()
    def kill_a_worker(self) -> None:
        self.faults += 1
        # The workers that answer now (the scheduler's listing was once seen empty here, between restarts).
        kill_worker(self.client, self.rng.choice(sorted(self.client.run(os.getpid))))
        self.client.wait_for_workers(WORKERS, timeout=PATIENCE)
        wait_until(lambda: len(self.client.run(os.getpid)) == WORKERS, "every worker to answer")
        paths = [self.path(name) for name in self.model]
        wait_until(lambda: self.healed(paths), "every path to be held by 2 live workers again")

    def healed(self, paths: list[str]) -> bool:
        counts = dict.fromkeys(paths, 0)
        for held in self.client.run(held_here, paths).values():
            for path in held:
                counts[path] += 1
        return all(count >= 2 for count in counts.values())

    @invariant()
    def every_path_loads_as_the_model_has_it(self) -> None:
        names = sorted(self.model)
        self.operations += 1
        try:
            loaded = self.dfm.load_batch([self.path(name) for name in names], "memory").result(timeout=PATIENCE)
        except FileNotFoundError:
            self.lost += len(names)
            raise
        wrong = [name for name, array in zip(names, loaded, strict=True) if int(array[0]) != self.model[name]]
        self.lost += len(wrong)
        assert not wrong, f"lost or stale: {wrong}"
        listed = self.dfm.list_files(self.directory, "memory") if names else []
        assert listed == [self.path(name) for name in names]

    def teardown(self) -> None:
        record("model: memory replicas=2 (Dask, workers killed)", operations=self.operations, faults=self.faults,
               lost_or_torn=self.lost)


def test_replicated_memory_paths_agree_with_the_model_through_worker_deaths(client: Client) -> None:
    ReplicaMachine.client = client
    ReplicaMachine.rng = random.Random(None if DEEP else 20261201)
    run_state_machine_as_test(
        ReplicaMachine,
        settings=settings(
            max_examples=scaled(3, 25), stateful_step_count=scaled(10, 30), derandomize=not DEEP, database=None,
            deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True,
        ),
    )
