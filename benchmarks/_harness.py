"""Timing harness shared by every benchmark row.

A *trial* is a zero-argument callable that prepares its inputs, times only
the operation being measured, cleans up, and returns the elapsed seconds.
:func:`compare` runs our trial and the baseline's alternately in one process
(after a warm-up of each) so that machine noise hits both alike.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Bench", "GiB", "MiB", "Result", "RssSampler", "Stats", "Trial", "compare", "compare_several", "dask_client",
    "measure", "throughput_result", "timed",
]

#: Prepares, times the measured operation, cleans up; returns seconds.
Trial = Callable[[], float]

MiB = 1 << 20
GiB = 1 << 30


@contextlib.contextmanager
def dask_client(plugin: Any = None) -> Iterator[Any]:
    """A Client of ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` with ``plugin`` registered.

    ``plugin`` defaults to ``PolystorePlugin()``.
    """
    from distributed import Client, LocalCluster

    from polystore_dask import PolystorePlugin

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR,
            # any free port for the scheduler's HTTP server: no warning when another cluster holds 8787
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(PolystorePlugin() if plugin is None else plugin)
        yield client


def timed(function: Callable[..., object], *args: object, **kwargs: object) -> float:
    """Return the seconds one call of ``function(*args, **kwargs)`` takes.

    The result is released after the clock stops, so freeing it is not timed.
    """
    start = time.perf_counter()
    result = function(*args, **kwargs)
    elapsed = time.perf_counter() - start
    del result
    return elapsed


def compare(ours: Trial, baseline: Trial, *, reps: int, warmup: int = 1) -> tuple[list[float], list[float]]:
    """Run both trials ``warmup`` times, then ``reps`` times each, alternating.

    Timed reps go in ABBA order (ours first on even reps, the baseline first
    on odd ones): the first run of a pair is measurably slower here (up to
    1.7x for a 1 GiB zarr write), so ``reps`` must be even for each side to
    go first equally often. Returns the timed seconds of ours and of the
    baseline, warm-up excluded.
    """
    if reps % 2:
        raise ValueError(f"compare needs an even number of reps so each side goes first equally often, not {reps}")
    for _ in range(warmup):
        ours()
        baseline()
    ours_times: list[float] = []
    baseline_times: list[float] = []
    for rep in range(reps):
        if rep % 2 == 0:
            ours_times.append(ours())
            baseline_times.append(baseline())
        else:
            baseline_times.append(baseline())
            ours_times.append(ours())
    return ours_times, baseline_times


def compare_several(ours: Trial, baselines: list[Trial], *, reps: int, warmup: int = 1) -> list[list[float]]:
    """:func:`compare` against several baselines at once, sharing our reps.

    Each rep runs ours, then every baseline, in that order on even reps and
    reversed on odd ones (``reps`` must be even). Returns the timed seconds
    of ours, then of each baseline, warm-up excluded.
    """
    if reps % 2:
        raise ValueError(f"compare_several needs an even number of reps so each order runs equally often, not {reps}")
    trials = [ours, *baselines]
    for _ in range(warmup):
        for trial in trials:
            trial()
    times: list[list[float]] = [[] for _ in trials]
    for rep in range(reps):
        order = list(range(len(trials)))
        for index in order if rep % 2 == 0 else reversed(order):
            times[index].append(trials[index]())
    return times


def measure(trial: Trial, *, reps: int, warmup: int = 1) -> list[float]:
    """Run ``trial`` ``warmup`` times untimed, then return the seconds of ``reps`` runs."""
    for _ in range(warmup):
        trial()
    return [trial() for _ in range(reps)]


@dataclass(frozen=True)
class Stats:
    """Median and spread of one side's per-rep values."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stats:
        return cls(statistics.median(values), min(values), max(values), len(values))

    @classmethod
    def throughput(cls, work: float, seconds: list[float]) -> Stats:
        """Stats of ``work / s`` for each rep's seconds ``s`` (units of work per second)."""
        return cls.of([work / s for s in seconds])

    @classmethod
    def paired_ratio(cls, ours_seconds: list[float], baseline_seconds: list[float]) -> Stats:
        """Stats of each rep's throughput ratio, ours over baseline (baseline time over ours).

        Rep ``i`` of ours ran right next to rep ``i`` of the baseline, so load
        from other work that drifts over the run mostly cancels in their ratio.
        """
        return cls.of([b / o for o, b in zip(ours_seconds, baseline_seconds, strict=True)])


@dataclass
class Result:
    """One line of the results table.

    ``ratio`` holds the per-rep throughput ratios, ours over baseline, so
    above 1 means ours is faster (for time-per-operation rows it is baseline
    time over ours). ``met`` is None for rows with no target.
    """

    row: str
    title: str
    unit: str
    ours_label: str
    ours: Stats
    baseline_label: str = ""
    baseline: Stats | None = None
    ratio: Stats | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Bench:
    """What every row needs: the mode, repetition counts and a scratch directory."""

    quick: bool
    root: Path
    #: Timed reps (even: see :func:`compare`) of the cheap rows and of the
    #: rows that move 1 GiB per run or start Dask tasks.
    reps: int = 10
    heavy_reps: int = 6
    warmup: int = 1
    notes: dict[str, str] = field(default_factory=dict)
    #: 1-minute load average when the run started (other work on the machine skews every row).
    start_load: float = field(default_factory=lambda: os.getloadavg()[0])
    _counter: Iterator[int] = field(default_factory=itertools.count)

    @classmethod
    @contextlib.contextmanager
    def create(cls, *, quick: bool, scratch: Path) -> Iterator[Bench]:
        """Yield a Bench whose scratch directory (made in ``scratch``) is removed afterwards."""
        root = Path(tempfile.mkdtemp(prefix="polystore-bench-", dir=scratch)).resolve()
        try:
            yield cls(quick=quick, root=root, reps=6 if quick else 10)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def size(self, full: int, quick: int) -> int:
        """Pick the full or the quick size of a parameter."""
        return quick if self.quick else full

    def fresh_dir(self) -> Path:
        """Create and return a new empty directory under the scratch root."""
        path = self.root / f"d{next(self._counter):05d}"
        path.mkdir()
        return path

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A fresh directory for one rep's outputs, deleted (untimed) on exit."""
        path = self.fresh_dir()
        try:
            yield path
        finally:
            shutil.rmtree(path)


class RssSampler:
    """Peak growth of this process's resident memory while the block runs.

    A thread samples RSS every ``interval`` seconds; ``peak_growth`` is the
    highest sample minus the RSS at entry, in bytes.
    """

    def __init__(self, interval: float = 0.002) -> None:
        import psutil  # shipped with distributed, which the Dask rows need anyway

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.start_rss = 0
        self.peak_rss = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self.start_rss = self.peak_rss = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)

    @property
    def peak_growth(self) -> int:
        return self.peak_rss - self.start_rss


def throughput_result(
    row: str,
    title: str,
    *,
    unit: str,
    work: float,
    ours: tuple[str, list[float]],
    baseline: tuple[str, list[float]],
    min_ratio: float,
    note: str = "",
) -> Result:
    """A row comparing throughputs: ``work`` units per run, target ``ratio >= min_ratio``."""
    ours_stats = Stats.throughput(work, ours[1])
    baseline_stats = Stats.throughput(work, baseline[1])
    ratio = Stats.paired_ratio(ours[1], baseline[1])
    of_medians = f"ratio of medians {ours_stats.median / baseline_stats.median:.2f}"
    return Result(
        row=row,
        title=title,
        unit=unit,
        ours_label=ours[0],
        ours=ours_stats,
        baseline_label=baseline[0],
        baseline=baseline_stats,
        ratio=ratio,
        target=f"ratio >= {min_ratio:g}",
        met=ratio.median >= min_ratio,
        note="; ".join(filter(None, [of_medians, note])),
    )
