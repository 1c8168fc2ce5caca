"""A real Celery worker process announces itself: /healthz counts it while it runs and not once it stopped,
and its log (Celery's own lines included) is JSON lines."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings
from tests.conftest import RedisServer
from tests.integration.procs import VIDMEM, Proc, distributed_env

pytestmark = pytest.mark.integration


def _until(
    c: TestClient, cond: Callable[[dict[str, Any]], bool], what: str, proc: Proc, timeout_s: float
) -> Any:
    """The first /healthz body for which ``cond`` holds."""
    deadline = time.monotonic() + timeout_s
    while not cond(body := c.get("/healthz").json()):
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out waiting for {what}; /healthz says {body}; the worker's log:\n{proc.tail()}"
            )
        time.sleep(0.2)
    return body


def test_a_celery_workers_heartbeat_shows_in_healthz(
    redis_server: RedisServer, real_redis: redis.Redis, model_cache: Path, tmp_path: Path
) -> None:
    env = distributed_env(redis_server.url, model_cache, worker_heartbeat_s=0.5)
    worker = Proc("ingest", [*VIDMEM, "worker", "--queues", "ingest", "--name", "ingest@%h"], env, tmp_path)
    app = create_app(Settings(redis_url=redis_server.url, upload_dir=tmp_path / "up"))
    try:
        with TestClient(app) as c:
            body = _until(c, lambda b: b["workers"]["ingest"] == 1, "the worker's beat", worker, 60)
            assert body["status"] == "degraded"  # no encode or answer worker
            assert body["workers"] == {"ingest": 1, "encode": 0, "answer": 0, "live_readers": 0}
            worker.stop()  # a clean shutdown removes the beat at once
            _until(c, lambda b: b["workers"]["ingest"] == 0, "the beat gone", worker, 10)
    finally:
        worker.stop()
    lines = [line for line in worker.log.read_text().splitlines() if line.strip()]
    # Every log line is one JSON object; Celery prints only its shutdown notice ("worker: Warm shutdown")
    # to the console directly, not through logging.
    assert all(line.startswith("{") or line.startswith("worker: ") for line in lines), lines
    parsed = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(x["logger"].startswith("celery") and "ready" in x["message"] for x in parsed), lines
