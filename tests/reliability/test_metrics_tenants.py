"""``/metrics`` of a distributed cluster names no tenant and no stream unless the operator allows it.

Real parts: a redis-server and three ``vidmem serve`` processes sharing it (distributed mode, no
worker needed): one without a metrics token, one with ``VIDMEM_METRICS_TOKEN``, one without a token but
``VIDMEM_METRICS_PER_STREAM=true``. Two tenants each register a camera. The tokenless scrape holds
neither tenant's name nor any stream id (the per-stream gauges are summed by kind); the scrape with the
token, and the one the operator opted in, hold both.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import RedisServer, free_port
from tests.integration.procs import VIDMEM, Proc, distributed_env, keyed_client, stop_all, wait_healthy
from tests.reliability.figures import TestFigures

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

TOKEN = "metrics-" + "0123456789abcdef" * 2


@pytest.fixture
def apis(redis_server: RedisServer, tmp_path: Path, model_cache: Path) -> Iterator[dict[str, str]]:
    """Base URLs of the three API processes: ``open``, ``token`` and ``opted_in``."""
    redis.Redis.from_url(redis_server.url).flushdb()
    settings: dict[str, dict[str, object]] = {
        "open": {},
        "token": {"metrics_token": TOKEN},
        "opted_in": {"metrics_per_stream": True},
    }
    procs, bases = [], {}
    try:
        for name, extra in settings.items():
            env = distributed_env(redis_server.url, model_cache, upload_dir=tmp_path / "up", **extra)
            port = free_port()
            procs.append(Proc(name, [*VIDMEM, "serve", "--port", str(port)], env, tmp_path))
            bases[name] = f"http://127.0.0.1:{port}"
        for base, proc in zip(bases.values(), procs, strict=True):
            wait_healthy(base, proc)
        yield bases
    finally:
        stop_all(procs)


def test_metrics_name_no_tenant_without_token(
    apis: dict[str, str], redis_server: RedisServer, figures: TestFigures
) -> None:
    tenants = [f"acme-{secrets.token_hex(4)}", f"globex-{secrets.token_hex(4)}"]
    stream_ids = []
    for tenant in tenants:
        with keyed_client(apis["open"], redis_server.url, tenant=tenant, timeout=30) as c:
            for i in range(2):
                body = {"url": f"rtsp://127.0.0.1:9/{tenant}/{i}", "check": False, "name": f"{tenant} cam"}
                r = c.post("/v1/streams", json=body)
                assert r.status_code == 201, r.text
                stream_ids.append(r.json()["stream_id"])
    secrets_ = [*tenants, *stream_ids]

    tokenless = httpx.get(f"{apis['open']}/metrics", timeout=30)
    assert tokenless.status_code == 200, tokenless.text
    leaked = [s for s in secrets_ if s in tokenless.text]
    assert not leaked, f"the tokenless /metrics names {leaked}"
    assert 'vidmem_stream_tokens{kind="live"}' in tokenless.text, tokenless.text  # summed, still there
    assert "vidmem_streams 4" in tokenless.text, tokenless.text

    assert httpx.get(f"{apis['token']}/metrics", timeout=30).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    full = httpx.get(f"{apis['token']}/metrics", headers=auth, timeout=30)
    assert full.status_code == 200, full.text
    missing = [s for s in secrets_ if s not in full.text]
    assert not missing, f"the scrape with the token lacks {missing}"

    opted_in = httpx.get(f"{apis['opted_in']}/metrics", timeout=30)
    assert opted_in.status_code == 200
    assert all(s in opted_in.text for s in secrets_), opted_in.text
    figures.set(tenants=len(tenants), streams=len(stream_ids), leaked_without_token=len(leaked))
