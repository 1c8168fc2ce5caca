"""Live streams in distributed mode with real parts: a real RTSP camera, redis-server, two `vidmem ingest`
processes, a Celery encode/answer worker and the API under uvicorn.

The stream is read by exactly one ingest process; SIGKILL that one and the other takes the stream over
within seconds, and the memory goes on with no frame twice and no time repeated.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import RedisServer
from tests.integration.procs import Proc, distributed_env, keyed_client, run_cluster
from tests.stream.live_helpers import wait_until
from tests.stream.live_peers import RtspServer
from workers.live_reader import TAKEOVER

pytestmark = pytest.mark.integration

LEASE_S = 3.0


@pytest.fixture
def live_cluster(
    redis_server: RedisServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, Proc]]]:
    """API + two ingest processes + an encode/answer worker on a real Redis. Yields (base URL, ingests)."""
    redis.Redis.from_url(redis_server.url).flushdb()
    env = distributed_env(
        redis_server.url, tmp_path_factory.getbasetemp() / "models", live_lease_s=LEASE_S,
        live_heartbeat_s=0.5, live_open_timeout_s=3, live_read_timeout_s=2,
    )  # fmt: skip
    names = ("ingest-a", "ingest-b")
    with run_cluster(
        env, tmp_path, **{n: ["ingest", "--name", n] for n in names},
        encode=["worker", "--queues", "encode,answer", "--name", "gpu@%h"],
    ) as (base, procs):  # fmt: skip
        yield base, {n: procs[n] for n in names}


def test_ingest_failover_reads_each_frame_once(
    live_cluster: tuple[str, dict[str, Proc]], rtsp_server: RtspServer, redis_server: RedisServer
) -> None:
    base, ingests = live_cluster
    with keyed_client(base, redis_server.url, timeout=60) as c:

        def view() -> dict[str, Any]:
            r = c.get(f"/v1/streams/{sid}")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body

        r = c.post("/v1/streams", json={"url": rtsp_server.url, "fps": 2, "budget": 600, "name": "gate"})
        assert r.status_code == 201, r.text
        sid = r.json()["stream_id"]
        s = wait_until(lambda: (v := view())["frames_encoded"] >= 6 and v, 60, "frames in the memory")
        owner = s["reader"]
        assert owner in ingests and s["state"] == "live"
        time.sleep(2 * LEASE_S)
        assert view()["reader"] == owner, "the stream changed readers while both processes were alive"

        ingests[owner].kill()
        killed_at = time.monotonic()
        other = next(n for n in ingests if n != owner)
        before = view()["frames_sampled"]
        wait_until(lambda: (v := view())["reader"] == other and v["frames_sampled"] > before,
                     LEASE_S + 15, "the other ingest process to take over")  # fmt: skip
        took_over_s = time.monotonic() - killed_at
        wait_until(lambda: view()["frames_encoded"] >= before + 6, 30, "frames after the takeover")
        s = view()
        assert any(g["reason"] == TAKEOVER for g in s["gaps"]), s["gaps"]

        # Stop reading; once the encoders are done, every frame sampled is in the memory exactly once,
        # in order, with strictly increasing times.
        assert c.delete(f"/v1/streams/{sid}").status_code == 200
        wait_until(lambda: (v := view())["frames_encoded"] == v["frames_sampled"], 30, "the last frames")
        s = view()
        mem = c.get(f"/v1/streams/{sid}/memory").json()
        assert mem["frames"] == s["frames_sampled"] == sum(x["frames"] for x in mem["slots"])
        assert all(b["t0"] > a["t1"] for a, b in itertools.pairwise(mem["slots"]))
        assert mem["tokens_used"] <= 600

        ans = c.post(f"/v1/streams/{sid}/ask", json={"question": "Who came through the gate?"})
        assert ans.status_code == 200, ans.text
        print(f"takeover after {took_over_s:.1f} s; {s['frames_sampled']} frames; gaps {s['gaps']}")
        assert took_over_s < LEASE_S + 10
