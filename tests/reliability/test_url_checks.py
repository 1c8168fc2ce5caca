"""Slow URLs cannot exhaust the API: the pre-checks of client URLs are bounded per tenant and in total.

Against a real ``vidmem serve`` (distributed mode, a real redis-server, keys of two tenants) and an HTTP
server started by the test whose ``/stall/`` path sends a video's header and then holds the connection:
each check of such a URL takes the whole open timeout. Tenant acme sends 45 of them at once (videos and
live streams). The checks beyond acme's bound are refused at once (429 ``too_many_checks``), ``/healthz``
answers within a second throughout, and tenant globex's video URL is checked and accepted promptly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import RedisServer
from tests.integration.procs import distributed_env, run_cluster
from tests.reliability.conftest import timed
from tests.reliability.figures import TestFigures
from tests.stream.clips import make_clip
from tests.stream.servers import HttpServer, serve_directory
from workers.tenants import ApiKeys

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

SLOW = 45
"""Slow URLs tenant acme submits at once (30 videos, 15 live streams)."""
OPEN_TIMEOUT_S = 8
"""How long each check of a slow URL holds on (the servers' open and read timeouts)."""
HEALTH_S = 1.0
PROMPT_S = 3.0


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[HttpServer]:
    (tmp_path / "www").mkdir()
    make_clip(tmp_path / "www" / "clip.mp4", seconds=3, fps=10, size=(96, 64), faststart=True)
    with serve_directory(tmp_path / "www") as server:
        yield server


@pytest.fixture
def api(redis_server: RedisServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API alone (the checks run in it; no worker is needed to refuse or accept a URL)."""
    redis.Redis.from_url(redis_server.url).flushdb()
    t = OPEN_TIMEOUT_S
    env = distributed_env(
        redis_server.url, tmp_path_factory.getbasetemp() / "models", upload_dir=tmp_path / "uploads",
        open_timeout_s=t, live_open_timeout_s=t, live_read_timeout_s=t,
        tenant_max_jobs=SLOW, tenant_max_live_streams=SLOW,  # the URL-check bound refuses, not the quota
    )  # fmt: skip
    with run_cluster(env, tmp_path) as (base, _):
        yield base


def _client(base: str, redis_url: str, tenant: str, figures: TestFigures) -> httpx.Client:
    key = ApiKeys(redis.Redis.from_url(redis_url)).create(tenant)[1]
    return httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60,
        event_hooks={"response": [figures.http_hook]}, limits=httpx.Limits(max_connections=SLOW + 5),
    )  # fmt: skip


def test_slow_urls_do_not_starve_health_or_other_tenants(
    api: str, peer: HttpServer, redis_server: RedisServer, figures: TestFigures
) -> None:
    slow, fast = peer.url("stall/clip.mp4"), peer.url("clip.mp4")
    with (
        _client(api, redis_server.url, "acme", figures) as acme,
        _client(api, redis_server.url, "globex", figures) as globex,
        ThreadPoolExecutor(SLOW + 1) as pool,
    ):

        def submit(i: int) -> Callable[[], httpx.Response]:
            if i % 3 == 2:
                return lambda: acme.post("/v1/streams", json={"url": slow, "check": True})
            return lambda: acme.post("/v1/videos", json={"url": slow})

        t0 = time.monotonic()
        slow_calls = [pool.submit(timed, submit(i)) for i in range(SLOW)]
        time.sleep(0.5)
        other = pool.submit(timed, lambda: globex.post("/v1/videos", json={"url": fast}))
        health: list[float] = []
        while time.monotonic() - t0 < OPEN_TIMEOUT_S - 2:  # while acme's checks still hold on
            r, took = timed(lambda: httpx.get(f"{api}/healthz", timeout=30))
            assert r.status_code == 200, r.text
            health.append(took)
            time.sleep(0.1)
        other_r, other_s = other.result()
        results = [f.result() for f in slow_calls]

    refused = [(r, s) for r, s in results if r.status_code == 429]
    figures.set(
        slow_urls=SLOW,
        refused_at_once=len(refused),
        checked=len(results) - len(refused),
        slowest_refusal_s=max((s for _, s in refused), default=0.0),
        healthz_probes=len(health),
        healthz_slowest_s=max(health),
        other_tenant_s=other_s,
    )
    assert max(health) < HEALTH_S, f"/healthz took up to {max(health)} s while slow URLs were checked"
    assert other_r.status_code == 202, other_r.text
    assert other_s < PROMPT_S, f"another tenant's URL waited {other_s} s behind tenant acme's slow URLs"
    assert all(r.json()["error"]["code"] == "too_many_checks" for r, _ in refused)
    assert all(int(r.headers["Retry-After"]) > 0 for r, _ in refused)
    assert len(refused) >= SLOW - 2, [r.status_code for r, _ in results]  # url_check_per_tenant (2) run
    assert max(s for _, s in refused) < HEALTH_S
    assert all(r.status_code in (422, 429) for r, _ in results), [r.text for r, _ in results]
    assert figures.values.get("http_5xx", 0) == 0
