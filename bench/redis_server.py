"""A real redis-server child process on 127.0.0.1, started and stopped (by PID) by its owner.

Shared by the benchmarks and the tests, which need a real server, not fakeredis. The fault-injection
tests crash it (``kill``: SIGKILL, no chance to save) and ``start`` it again on the same port and
directory; with ``appendonly`` it then reloads its data from the AOF files in that directory.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Literal

import redis


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """redis-server on a free loopback port, with its files (log, AOF) in ``workdir``.

    appendonly:  log every write to an append-only file in ``workdir`` (survives ``kill`` + ``start``).
    appendfsync: when the AOF is fsynced: "everysec" (Redis's default: a crash of the process loses
                 nothing, since each write reaches the OS before the reply; a crash of the machine loses
                 up to a second), "always" (before each reply; slower), or "no".
    """

    def __init__(
        self,
        workdir: Path,
        appendonly: bool = False,
        appendfsync: Literal["always", "everysec", "no"] = "everysec",
    ) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.workdir = workdir
        self.args = [
            exe,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(workdir),
            "--save", "",
            "--appendonly", "yes" if appendonly else "no",
            "--appendfsync", appendfsync,
            "--daemonize", "no",
            "--logfile", str(workdir / "redis.log"),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's PID while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start the server (again: same port, directory and files) and wait until it answers PING, which it
        does only once its AOF is loaded."""
        if self.pid is not None:
            raise RuntimeError(f"redis-server already runs on port {self.port} (pid {self.pid})")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                client.close()
                return self
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """Crash it: SIGKILL, no shutdown save; clients see their connections reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
