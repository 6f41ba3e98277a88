"""Row 15: the multi-host test harness (tests/_hosts.py): start-up time and memory, 4 and 8 hosts.

Ours: a ``dask scheduler`` and N isolated hosts (``dask worker`` with nanny,
each under ``unshare --mount --uts`` with its own tmpfs), from the first
spawn until every worker has registered. Baseline: a ``LocalCluster`` of N
worker processes with nannies (what every other cluster test uses), from
construction until ``wait_for_workers(N)``. Memory: the summed PSS
(``/proc/<pid>/smaps_rollup``) of every process the side started, once all
workers are up (PSS counts shared pages once, split among their users).
Needs root, like the harness.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from benchmarks._harness import Bench, MiB, Result, Stats, compare

__all__ = ["run"]


def _pss(pid: int) -> int:
    """The proportional set size of ``pid`` in bytes (0 if it has gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def _descendants(roots: set[int]) -> set[int]:
    """``roots`` and every process below them."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def _hosts_trial(root: Path, count: int, memory: list[int]) -> float:
    from tests._hosts import Hosts

    hosts = Hosts(root / f"hosts-{len(memory)}-{time.monotonic_ns()}", count, scratch_size="16m")
    hosts.root.mkdir(parents=True)
    start = time.perf_counter()
    hosts.start()
    elapsed = time.perf_counter() - start
    try:
        memory.append(sum(_pss(pid) for pid in _descendants(set(hosts.pids()))))
    finally:
        hosts.stop()
    return elapsed


def _local_trial(count: int, memory: list[int]) -> float:
    from distributed import Client, LocalCluster

    before = _descendants({os.getpid()}) - {os.getpid()}
    start = time.perf_counter()
    with LocalCluster(
        n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    ) as cluster:
        with Client(cluster) as client:
            client.wait_for_workers(count, timeout=120)
            elapsed = time.perf_counter() - start
            started = _descendants({os.getpid()}) - {os.getpid()} - before
            # The LocalCluster's scheduler runs in this process: not counted, as ours' is.
            memory.append(sum(_pss(pid) for pid in started))
    return elapsed


def run(bench: Bench, rows: set[str]) -> list[Result]:
    """Measure row 15 for 4 and 8 hosts."""
    from tests._hosts import unavailable

    reason = unavailable()
    if reason is not None:
        raise RuntimeError(f"row 15 cannot run here: {reason}")
    bench.notes["15"] = (
        "Row 15: the multi-host test harness against a LocalCluster with as many worker processes (nannies "
        "on both sides), start until every worker is registered; memory is the summed PSS of the processes "
        "each side started, with every worker up (ours includes its scheduler process, the LocalCluster's "
        "scheduler runs in the benchmark process and is not counted). Starting many processes on 2 cores "
        "is CPU-bound, so load from other work on the machine weighs on both sides."
    )
    reps = 2 if bench.quick else 4
    results = []
    for count in (4, 8):
        ours_memory: list[int] = []
        local_memory: list[int] = []
        ours, baseline = compare(
            lambda count=count, memory=ours_memory: _hosts_trial(bench.root, count, memory),
            lambda count=count, memory=local_memory: _local_trial(count, memory),
            reps=reps,
        )
        results.append(
            Result(
                row=f"15{'ab'[count // 8]}",
                title=f"start {count} isolated hosts (scheduler + {count} unshare'd dask workers with nanny)",
                unit="s",
                ours_label=f"tests/_hosts.py Hosts({count}).start()",
                ours=Stats.of(ours),
                baseline_label=f"LocalCluster(n_workers={count}) + wait_for_workers",
                baseline=Stats.of(baseline),
                ratio=Stats.paired_ratio(ours, baseline),
                note=(
                    f"memory with all up (PSS, warm-up excluded): ours {statistics.median(ours_memory[1:]) / MiB:.0f} "
                    f"MiB (min {min(ours_memory[1:]) / MiB:.0f}, max {max(ours_memory[1:]) / MiB:.0f}), "
                    f"LocalCluster {statistics.median(local_memory[1:]) / MiB:.0f} MiB "
                    f"(min {min(local_memory[1:]) / MiB:.0f}, max {max(local_memory[1:]) / MiB:.0f})"
                ),
            )
        )
    return results
