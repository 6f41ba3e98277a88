"""Isolated "hosts" on this one machine for the multi-host tests: a real scheduler and N real worker hosts.

Each host is a real ``dask worker`` (the CLI, with its nanny) started under
``unshare --mount --uts --propagation private --fork``: it has its own
hostname and its own private, size-limited tmpfs mounted at one shared
scratch path (a dedicated directory, never ``/tmp`` itself), the way cluster
nodes have local disks at the same path. The scheduler runs in the ordinary
namespaces, ``--host 127.0.0.1``; all traffic stays on loopback (no network
namespaces). Every wait is bounded; teardown stops every process group it
started, by pid, and then checks that no process on the machine still has
one of the hosts' tmpfs mounted.

Needs root (mount and UTS namespaces); :func:`unavailable` says exactly what
is missing where it cannot run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["HOST_PATIENCE", "Hosts", "hosts_running", "mounted_anywhere", "unavailable"]

#: Bound of every wait on the harness: start-up, workers registering, teardown.
HOST_PATIENCE = 60.0
#: How long a process group gets after SIGTERM before SIGKILL.
STOP_GRACE = 5.0
#: The scheduler's worker time-to-live: a worker silent this long is removed (the SIGSTOP fault relies on it).
WORKER_TTL = "6s"

_BIN = Path(sys.executable).parent
_REPO = Path(__file__).resolve().parent.parent


def unavailable() -> str | None:
    """Why the harness cannot run here (the exact missing piece), or None if it can."""
    if os.geteuid() != 0:
        return (
            f"multi-host tests need root to create mount and UTS namespaces (unshare --mount --uts); "
            f"running as uid {os.geteuid()}"
        )
    unshare = shutil.which("unshare")
    if unshare is None:
        return "multi-host tests need the unshare command (util-linux); it is not on PATH"
    probe = Path(f"/dev/shm/polystore-unshare-probe-{uuid.uuid4().hex}")
    probe.mkdir()
    try:
        result = subprocess.run(
            [unshare, "--mount", "--uts", "--propagation", "private", "--fork", "sh", "-c",
             f"hostname polystore-probe && mount -t tmpfs -o size=1m polystore-probe {probe}"],
            capture_output=True, text=True, timeout=30,
        )
    finally:
        probe.rmdir()
    if result.returncode != 0:
        return (
            "multi-host tests need unshare --mount --uts with a tmpfs mount, which was refused here: "
            f"{result.stderr.strip() or f'exit code {result.returncode}'}"
        )
    return None


def mounted_anywhere(marker: str) -> list[str]:
    """The pids of processes on this machine whose mount table has a mount whose source contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/mounts", encoding="utf-8", errors="replace") as mounts:
                if any(line.split(" ", 1)[0].find(marker) >= 0 for line in mounts):
                    found.append(entry)
    return found


def _dask_environment(extra: dict[str, str]) -> dict[str, str]:
    """The environment of the scheduler and the hosts: this venv, this checkout, the harness's timeouts, ``extra``."""
    return {
        **os.environ,
        **extra,
        "PATH": f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])),
        "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": WORKER_TTL,
        "DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT": "1h",
    }


def _die_with_parent(signum: int) -> Callable[[], None]:
    """For ``preexec_fn``: the child gets ``signum`` when the test process dies, so a crashed run leaves nothing."""
    import ctypes

    def arrange() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(1, signum)  # PR_SET_PDEATHSIG

    return arrange


class Hosts:
    """A scheduler and ``count`` isolated worker hosts ``h1``...; :meth:`start`, then :meth:`stop`.

    Parameters
    ----------
    root
        A directory of the harness's own: logs, the scheduler file, each
        worker's local directory, and ``scratch`` (the mount point).
    count
        How many hosts.
    scratch_size
        Each host's tmpfs size (``mount -o size=``), e.g. ``"64m"``.
    environment
        Variables every host's worker gets besides this process's (a
        cluster's AWS settings, for one).
    """

    def __init__(
        self, root: Path, count: int, scratch_size: str = "64m", environment: dict[str, str] | None = None
    ) -> None:
        self.root = Path(root)
        self.environment = dict(environment or {})
        self.count = count
        self.scratch_size = scratch_size
        #: The path where every host has its own tmpfs (empty in the ordinary namespace).
        self.scratch = self.root / "scratch"
        #: Part of each tmpfs's source name, to find it in any mount table.
        self.marker = f"polystore-hosts-{uuid.uuid4().hex[:12]}"
        self.names = [f"h{index}" for index in range(1, count + 1)]
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.hosts: dict[str, subprocess.Popen[bytes]] = {}
        self.address = ""

    def start(self, timeout: float = HOST_PATIENCE) -> None:
        """Start the scheduler, then every host; return once all have registered (at most ``timeout`` s)."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        scheduler_file = self.root / "scheduler.json"
        deadline = time.monotonic() + timeout
        try:
            self.scheduler = self._spawn(
                "scheduler",
                [str(_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 # Its HTTP server (health, metrics) stays on loopback too, on a free port.
                 "--dashboard-address", "127.0.0.1:0",
                 "--scheduler-file", str(scheduler_file)],
            )
            while not scheduler_file.exists() or not scheduler_file.read_text().strip():
                self._check_alive(self.scheduler, "the scheduler")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the scheduler wrote no {scheduler_file} within {timeout:g} s{self._logs()}")
                time.sleep(0.05)
            self.address = json.loads(scheduler_file.read_text())["address"]
            for name in self.names:
                self.hosts[name] = self._spawn_host(name)
            self._wait_registered(deadline, timeout)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, command: list[str], on_parent_death: int = signal.SIGTERM) -> subprocess.Popen[bytes]:
        """Start ``command`` in a process group of its own (so teardown reaches its children), logging to a file."""
        with open(self.root / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root,
                env=_dask_environment(self.environment), start_new_session=True,
                preexec_fn=_die_with_parent(on_parent_death),
            )

    def _spawn_host(self, name: str) -> subprocess.Popen[bytes]:
        local = self.root / f"{name}-worker-space"
        local.mkdir(exist_ok=True)
        script = (
            f"hostname {name} && mount -t tmpfs -o size={self.scratch_size} {self.marker}-{name} {self.scratch} && "
            f"exec {_BIN / 'dask'} worker {self.address} --name {name} --nthreads 1 --nanny --no-dashboard "
            f"--dashboard-address 127.0.0.1:0 --host 127.0.0.1 --death-timeout 60 --local-directory {local}"
        )
        # unshare ignores SIGTERM while it waits for its child: it gets SIGKILL if the test process dies,
        # and passes SIGTERM on to the nanny (--kill-child), which stops its worker.
        command = ["unshare", "--mount", "--uts", "--propagation", "private", "--fork", "--kill-child=SIGTERM",
                   "sh", "-c", script]
        return self._spawn(name, command, on_parent_death=signal.SIGKILL)

    def _wait_registered(self, deadline: float, timeout: float) -> None:
        from distributed import Client

        from tests._cluster import worker_info

        with Client(self.address, timeout=timeout) as client:
            while len(worker_info(client)) < self.count:
                for name, process in self.hosts.items():
                    self._check_alive(process, f"host {name}")
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"only {len(worker_info(client))} of {self.count} hosts registered "
                        f"within {timeout:g} s{self._logs()}"
                    )
                time.sleep(0.05)

    def _check_alive(self, process: subprocess.Popen[bytes], what: str) -> None:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} at start{self._logs()}")

    def _logs(self, lines: int = 15) -> str:
        tails = []
        for log in sorted(self.root.glob("*.log")):
            with contextlib.suppress(OSError):
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                tails.append(f"--- {log.name}:\n" + "\n".join(tail))
        return "\n" + "\n".join(tails) if tails else ""

    def pids(self) -> list[int]:
        """The pids of every process the harness started that is still running (process group leaders)."""
        started = [self.scheduler, *self.hosts.values()]
        return [process.pid for process in started if process is not None and process.poll() is None]

    def stop(self) -> None:
        """Stop every host, then the scheduler, by process group; check nothing is left running or mounted.

        Raises
        ------
        RuntimeError
            A process outlived SIGKILL, or a host's tmpfs is still mounted somewhere.
        """
        groups = [*self.hosts.values(), *([self.scheduler] if self.scheduler is not None else [])]
        for process in groups:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for process in groups:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for process in groups:
            # Children of a group leader that exited (a nanny's worker) are stopped too.
            _signal_group(process, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_GRACE)
        self.hosts, self.scheduler = {}, None
        left = _group_members({process.pid for process in groups})
        for _ in range(100):
            if not left:
                break
            time.sleep(0.05)
            left = _group_members({process.pid for process in groups})
        if left:
            raise RuntimeError(f"multi-host harness: processes {left} outlived SIGKILL")
        for _ in range(100):
            if not mounted_anywhere(self.marker):
                return
            time.sleep(0.05)
        raise RuntimeError(f"multi-host harness: a host tmpfs ({self.marker}) is still mounted after teardown")

    # -- what the fault tests do to a host ---------------------------------------
    def kill_host(self, name: str) -> None:
        """Stop a whole host (nanny, worker, namespaces): its tmpfs and everything on it are gone."""
        process = self.hosts[name]
        _signal_group(process, signal.SIGKILL)
        process.wait(timeout=STOP_GRACE)

    def restart_host(self, name: str) -> None:
        """Start host ``name`` again (a fresh, empty tmpfs), after :meth:`kill_host`."""
        self.hosts[name] = self._spawn_host(name)

    def worker_pid(self, client: Any, host: str) -> int:
        """The pid of the worker process (not the nanny) currently serving ``host``."""
        pids = client.run(os.getpid, workers=[self.worker_address(client, host)])
        return int(next(iter(pids.values())))

    def worker_address(self, client: Any, host: str) -> str:
        """The address of the worker of ``host`` (the worker's name is its host's)."""
        from tests._cluster import worker_info

        for address, info in worker_info(client).items():
            if info.get("name") == host:
                return str(address)
        raise LookupError(f"no worker of host {host} is in the cluster")


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _group_members(groups: set[int]) -> list[int]:
    """The live (not zombie) processes of the process groups ``groups``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[2]) in groups:
                members.append(int(entry))
    return sorted(members)


@contextlib.contextmanager
def hosts_running(
    root: Path, count: int, scratch_size: str = "64m", environment: dict[str, str] | None = None
) -> Iterator[Hosts]:
    """Started :class:`Hosts`, stopped (and checked) on exit."""
    hosts = Hosts(root, count, scratch_size, environment)
    hosts.start()
    try:
        yield hosts
    finally:
        hosts.stop()
