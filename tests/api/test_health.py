"""GET /healthz: embedded mode is ok; in distributed mode (a real redis-server) the worker heartbeats decide
between ok and degraded, and an unreachable broker or Redis is a quick 503."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings
from tests.conftest import RedisServer
from workers import health


def test_embedded_is_ok(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["mode"] == "embedded"
    assert body["redis"] == "ok" and body["broker"] == "ok"
    workers = body["workers"]
    assert set(workers) == {"ingest", "encode", "answer", "live_readers"}
    assert workers["ingest"] == workers["encode"] == workers["answer"] == 1


@contextmanager
def distributed(tmp_path: Path, **settings: Any) -> Iterator[TestClient]:
    app = create_app(Settings(upload_dir=tmp_path / "up", **settings))
    with TestClient(app) as c:
        yield c


@pytest.mark.integration
def test_without_workers_the_cluster_is_degraded(
    redis_server: RedisServer, real_redis: redis.Redis, tmp_path: Path
) -> None:
    with distributed(tmp_path, redis_url=redis_server.url) as c:
        r = c.get("/healthz")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "degraded" and body["mode"] == "distributed"
        assert body["redis"] == "ok" and body["broker"] == "ok"
        assert body["workers"] == {"ingest": 0, "encode": 0, "answer": 0, "live_readers": 0}

        health.publish_beat(real_redis, "celery:ingest@a", ["ingest"], ttl_s=30)
        health.publish_beat(real_redis, "celery:gpu@b", ["encode", "answer"], ttl_s=30)
        health.publish_beat(real_redis, "celery:gpu@c", ["encode", "answer"], ttl_s=30)
        body = c.get("/healthz").json()
        assert body["status"] == "ok"
        assert body["workers"] == {"ingest": 1, "encode": 2, "answer": 2, "live_readers": 0}

        real_redis.sadd("vm:live", "some-camera")  # a camera registered and no ingest process to read it
        assert c.get("/healthz").json()["status"] == "degraded"
        health.publish_beat(real_redis, "live:ingest-1", [health.LIVE], ttl_s=30)
        body = c.get("/healthz").json()
        assert body["status"] == "ok" and body["workers"]["live_readers"] == 1


@pytest.mark.integration
def test_an_unreachable_broker_is_a_quick_503(
    redis_server: RedisServer, real_redis: redis.Redis, closed_port: int, tmp_path: Path
) -> None:
    broker = f"redis://127.0.0.1:{closed_port}/0"
    with distributed(tmp_path, redis_url=redis_server.url, broker_url=broker) as c:
        t0 = time.monotonic()
        r = c.get("/healthz")
        took = time.monotonic() - t0
    assert r.status_code == 503, r.text
    assert took < 2, f"/healthz took {took:.2f} s with the broker down"
    body = r.json()
    assert body["status"] == "down" and body["redis"] == "ok"
    assert body["broker"].startswith("error: ") and str(closed_port) not in body["broker"]


def test_an_unreachable_redis_is_a_quick_503(closed_port: int, tmp_path: Path) -> None:
    with distributed(tmp_path, redis_url=f"redis://127.0.0.1:{closed_port}/0") as c:
        t0 = time.monotonic()
        r = c.get("/healthz")
        took = time.monotonic() - t0
    assert r.status_code == 503, r.text
    assert took < 2, f"/healthz took {took:.2f} s with Redis down"
    body = r.json()
    assert body["status"] == "down" and body["redis"].startswith("error: ") and body["workers"] is None
