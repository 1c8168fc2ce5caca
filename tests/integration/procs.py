"""vidmem processes for the integration tests: children of the test, stopped by PID (their process group),
their output kept in a log file that is printed when the test ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from bench.redis_server import free_port
from tests.conftest import REPO
from workers.tenants import ApiKeys

VIDMEM = [sys.executable, "-m", "vidmem.cli"]


class Proc:
    """A child process of the test, stopped by PID, its output kept in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        self.fh = self.log.open("wb")
        self.p = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=self.fh, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, with no chance to clean up."""
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.fh.close()

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def wait_healthy(base: str, api: Proc, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    pytest.fail("API did not start:\n" + api.tail())


def stop_all(procs: list[Proc]) -> None:
    for p in procs:
        p.stop()
    for p in procs:
        print(f"--- {p.log.name}\n{p.tail(1500)}")


@contextmanager
def run_cluster(
    env: dict[str, str], logdir: Path, **commands: list[str]
) -> Iterator[tuple[str, dict[str, Proc]]]:
    """Start each named ``vidmem`` command (its arguments after ``vidmem``) and the API (``api``, on a
    free port); once the API is healthy, yield (its base URL, the processes); stop them all by PID."""
    port = free_port()
    procs = {name: Proc(name, [*VIDMEM, *args], env, logdir) for name, args in commands.items()}
    procs["api"] = Proc("api", [*VIDMEM, "serve", "--port", str(port)], env, logdir)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, procs["api"])
        yield base, procs
    finally:
        stop_all(list(procs.values()))


@contextmanager
def run_api(env: dict[str, str], logdir: Path) -> Iterator[tuple[str, Proc]]:
    """The API alone (``vidmem serve`` on a free port; embedded mode when ``env`` names no Redis): once
    healthy, yield (its base URL, its process); stop it by PID."""
    with run_cluster(env, logdir) as (base, procs):
        yield base, procs["api"]


def keyed_client(base: str, redis_url: str, tenant: str = "tests", **kwargs: object) -> httpx.Client:
    """An HTTP client of the API at ``base`` with a new API key of ``tenant`` (distributed mode needs one)."""
    key = ApiKeys(redis.Redis.from_url(redis_url)).create(tenant)[1]
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, **kwargs)  # type: ignore[arg-type]


def _as_env(settings: dict[str, object]) -> dict[str, str]:
    """``settings`` as ``VIDMEM_<NAME>`` variables (booleans lower-cased)."""
    return {
        f"VIDMEM_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in settings.items()
    }


def distributed_env(redis_url: str, model_cache: Path, **settings: object) -> dict[str, str]:
    """The environment of vidmem processes sharing ``redis_url``: the tiny model, small frames, and
    ``settings`` as ``VIDMEM_<NAME>`` (e.g. ``live_lease_s=3``)."""
    return os.environ | {
        "VIDMEM_REDIS_URL": redis_url,
        "VIDMEM_MODEL": "tiny",
        "VIDMEM_MODEL_CACHE": str(model_cache),
        "VIDMEM_FRAME_SIZE": "64",
        "PYTHONUNBUFFERED": "1",
        **_as_env(settings),
    }


def embedded_env(model_cache: Path, upload_dir: Path, **settings: object) -> dict[str, str]:
    """The environment of a ``vidmem serve`` in embedded mode (no Redis, whatever the test session names):
    the tiny model, uploads in ``upload_dir``, and ``settings`` as ``VIDMEM_<NAME>`` (e.g. ``budget=512``)."""
    env = os.environ | {
        "VIDMEM_MODEL": "tiny",
        "VIDMEM_MODEL_CACHE": str(model_cache),
        "VIDMEM_UPLOAD_DIR": str(upload_dir),
        "PYTHONUNBUFFERED": "1",
        **_as_env(settings),
    }
    env.pop("VIDMEM_REDIS_URL", None)
    return env
