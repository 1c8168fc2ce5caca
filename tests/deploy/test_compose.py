"""docker-compose.yml, checked the way CI can: no Docker engine runs there, but `docker-compose config`
parses, validates and interpolates the file without one. The parsed result must have what production
relies on (healthchecks, healthy-Redis dependencies, AOF, a password everywhere, GPU reservations), and
the file must refuse to load without the Redis password. The python healthchecks of the ingest process and
the Celery workers also run for real, against a redis-server and a worker (the integration test at the end).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.redis_server import RedisServer
from tests.conftest import REPO
from tests.integration.procs import VIDMEM, Proc, distributed_env

PASSWORD = "0123456789abcdef-test"
REDIS_URL = f"redis://:{PASSWORD}@redis:6379/0"
VIDMEM_SERVICES = ("api", "ingest", "worker-ingest", "worker-encode", "worker-answer")
LONG_RUNNING = ("redis", *VIDMEM_SERVICES)
CPU_PROFILE = ("worker-encode-cpu", "worker-answer-cpu")
WORKERS = ("worker-ingest", "worker-encode", "worker-answer", *CPU_PROFILE)


def compose(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run docker-compose on the repo's file with only ``env`` as settings: no VIDMEM_* or COMPOSE_*
    variable of the caller's shell, and an empty env file instead of a .env beside the file."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(
            "docker-compose is not installed: scripts/system-deps.sh installs it (Debian's docker-compose, "
            "which runs `docker-compose config` without a Docker engine)"
        )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VIDMEM_", "COMPOSE_", "DOCKER_"))}
    env_file = tmp_path / "empty.env"
    env_file.touch()
    return subprocess.run(
        [exe, "-f", str(REPO / "docker-compose.yml"), "--env-file", str(env_file), *args],
        cwd=REPO, env=clean | env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def config(tmp_path: Path, *profiles: str, **env: str) -> dict[str, Any]:
    flags = [a for p in profiles for a in ("--profile", p)]
    out = compose(tmp_path, *flags, "config", VIDMEM_REDIS_PASSWORD=PASSWORD, **env)
    assert out.returncode == 0, out.stderr
    parsed: dict[str, Any] = yaml.safe_load(out.stdout)
    return parsed["services"]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return config(tmp_path_factory.mktemp("compose"), "cpu", "flower")


def _argv(cmd: Any) -> list[str]:
    return cmd if isinstance(cmd, list) else str(cmd).split()


def test_long_running_services_have_healthchecks(services: dict[str, Any]) -> None:
    for name in (*LONG_RUNNING, *CPU_PROFILE, "flower"):
        check = services[name].get("healthcheck")
        assert check and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: {check['test']}"


def test_vidmem_services_wait_for_a_healthy_redis_and_carry_its_password(services: dict[str, Any]) -> None:
    for name in (*VIDMEM_SERVICES, *CPU_PROFILE, "flower"):
        dep = services[name].get("depends_on", {})
        assert dep.get("redis", {}).get("condition") == "service_healthy", f"{name}: {dep}"
    for name in (*VIDMEM_SERVICES, *CPU_PROFILE):
        assert services[name]["environment"]["VIDMEM_REDIS_URL"] == REDIS_URL, name
    assert f"--broker={REDIS_URL}" in _argv(services["flower"]["command"])


def test_redis_persists_and_requires_the_password(services: dict[str, Any]) -> None:
    redis = services["redis"]
    argv = _argv(redis["command"])
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert argv[argv.index("--requirepass") + 1] == PASSWORD
    assert redis["environment"]["REDISCLI_AUTH"] == PASSWORD  # the healthcheck's redis-cli authenticates
    assert any(v.endswith(":/data") or ":/data:" in v for v in map(str, redis["volumes"]))
    assert not redis.get("ports"), "Redis is published: only the compose network should reach it"


def test_roles_and_gpu_reservations(services: dict[str, Any]) -> None:
    assert _argv(services["ingest"]["command"]) == ["vidmem", "ingest"]
    for name, queue, device in (
        ("worker-ingest", "ingest", None),
        ("worker-encode", "encode", "cuda"),
        ("worker-answer", "answer", "cuda"),
        ("worker-encode-cpu", "encode", "cpu"),
        ("worker-answer-cpu", "answer", "cpu"),
    ):
        argv = _argv(services[name]["command"])
        assert argv[:2] == ["vidmem", "worker"] and argv[argv.index("--queues") + 1] == queue, name
        assert services[name]["environment"].get("VIDMEM_DEVICE") == device, name
    for name in ("worker-encode", "worker-answer"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert [(d["driver"], d["capabilities"]) for d in devices] == [("nvidia", ["gpu"])], name
    for name in CPU_PROFILE:
        assert services[name]["profiles"] == ["cpu"] and "deploy" not in services[name], name
    assert services["flower"]["profiles"] == ["flower"]


def test_worker_healthcheck_pings_the_node_name_vidmem_worker_uses(services: dict[str, Any]) -> None:
    for name in WORKERS:
        argv = services[name]["command"]
        assert argv[argv.index("--name") + 1] == "vidmem@%h", name  # %h: the container's hostname
        assert "['vidmem@' + socket.gethostname()]" in services[name]["healthcheck"]["test"][-1], name


def test_optional_settings_pass_through(tmp_path: Path) -> None:
    unset = config(tmp_path)
    assert not unset["api"]["environment"].get("VIDMEM_METRICS_TOKEN")  # unset: no token
    given = config(tmp_path, VIDMEM_METRICS_TOKEN="scrape-me", VIDMEM_REDIS_HOST="10.0.0.5",
                   VIDMEM_ENCODE_GPU="2")  # fmt: skip
    assert given["api"]["environment"]["VIDMEM_METRICS_TOKEN"] == "scrape-me"
    assert given["worker-encode"]["environment"]["VIDMEM_REDIS_URL"] == f"redis://:{PASSWORD}@10.0.0.5:6379/0"
    devices = given["worker-encode"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["device_ids"] == ["2"]


@pytest.mark.parametrize("profiles", [(), ("cpu",), ("flower",), ("cpu", "flower")])
def test_profiles_validate(tmp_path: Path, profiles: tuple[str, ...]) -> None:
    flags = [a for p in profiles for a in ("--profile", p)]
    out = compose(tmp_path, *flags, "config", "-q", VIDMEM_REDIS_PASSWORD=PASSWORD)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("env", [{}, {"VIDMEM_REDIS_PASSWORD": ""}], ids=["unset", "empty"])
def test_refuses_to_load_without_the_redis_password(tmp_path: Path, env: dict[str, str]) -> None:
    out = compose(tmp_path, "config", **env)
    assert out.returncode != 0, out.stdout
    assert "VIDMEM_REDIS_PASSWORD" in out.stderr, out.stderr


def _health(services: dict[str, Any], name: str, env: dict[str, str]) -> int:
    """Run ``name``'s healthcheck (a CMD python -c one-liner) here, with this interpreter."""
    test = services[name]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    return subprocess.run([sys.executable, "-c", test[3]], cwd=REPO, env=env, timeout=60).returncode


@pytest.mark.integration
def test_healthchecks_run_against_real_processes(
    services: dict[str, Any], redis_server: RedisServer, model_cache: Path, tmp_path: Path
) -> None:
    env = distributed_env(redis_server.url, model_cache)
    assert _health(services, "ingest", env) == 0
    assert _health(services, "ingest", env | {"VIDMEM_REDIS_URL": "redis://127.0.0.1:1/0"}) != 0
    assert _health(services, "worker-ingest", env) != 0  # no worker yet: no reply within 5 s
    command = services["worker-ingest"]["command"]  # the service's own command: vidmem worker ...
    worker = Proc("worker", [*VIDMEM, *command[1:]], env, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while _health(services, "worker-ingest", env) != 0:  # until the node vidmem@<this host> answers
            assert worker.p.poll() is None and time.monotonic() < deadline, worker.tail()
    finally:
        worker.stop()
