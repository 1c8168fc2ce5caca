"""Distributed mode with real parts: redis-server, Celery worker processes, the API under uvicorn.

An upload travels through the HTTP API from ingest to answer, across process boundaries.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import TESTDATA, RedisServer
from tests.integration.procs import keyed_client, run_cluster
from tests.stream.clips import make_clip

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(
    redis_server: RedisServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """API + an ingest worker + an encode/answer worker on a real Redis. Yields a client with an API key."""
    redis.Redis.from_url(redis_server.url).flushdb()
    env = os.environ | {
        "VIDMEM_REDIS_URL": redis_server.url,
        "VIDMEM_MODEL": "tiny",
        "VIDMEM_MODEL_CACHE": str(tmp_path_factory.getbasetemp() / "models"),
        "VIDMEM_UPLOAD_DIR": str(tmp_path / "uploads"),
        "PYTHONUNBUFFERED": "1",
    }
    with run_cluster(
        env, tmp_path, ingest=["worker", "--queues", "ingest", "--name", "ingest@%h"],
        encode=["worker", "--queues", "encode,answer", "--name", "gpu@%h"],
    ) as (base, _), keyed_client(base, redis_server.url, timeout=120) as client:  # fmt: skip
        yield client


def clip(tmp_path: Path) -> Path:
    real = TESTDATA / "slow_traffic_small.mp4"
    if real.exists():
        return real
    return make_clip(tmp_path / "clip.mp4", seconds=12.0, fps=25, size=(320, 240))


def test_upload_to_answer_across_processes(cluster: httpx.Client, tmp_path: Path) -> None:
    src = clip(tmp_path)
    c = cluster
    with src.open("rb") as fh:
        r = c.post(
            "/v1/videos", files={"file": (src.name, fh, "video/mp4")}, data={"fps": "1", "budget": "600"}
        )
    assert r.status_code == 202, r.text
    job_id, stream_id = r.json()["job_id"], r.json()["stream_id"]

    progress: list[float] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        progress.append(job["progress"])
        if job["state"] in ("done", "failed"):
            break
        time.sleep(0.25)
    assert job["state"] == "done", job
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert job["frames_sampled"] == job["frames_encoded"] >= 10

    mem = c.get(f"/v1/streams/{stream_id}/memory").json()
    assert mem["budget"] == 600
    assert sum(s["tokens"] for s in mem["slots"]) == mem["tokens_used"] <= 600
    # every sampled frame is in the memory exactly once, in order
    assert sum(s["frames"] for s in mem["slots"]) == job["frames_sampled"]
    t0 = [s["t0"] for s in mem["slots"]]
    assert t0 == sorted(set(t0))
    thumb = c.get(mem["slots"][0]["thumbnail"])
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"

    ans = c.post(
        f"/v1/streams/{stream_id}/ask", json={"question": "What is on the road?", "max_new_tokens": 8}
    )
    assert ans.status_code == 200, ans.text
    body = ans.json()
    assert body["tokens_used"] <= body["budget"] == 600
    assert body["slots_used"] == len(mem["slots"])
    assert 0 < body["ttft_s"] <= body["latency_s"]

    with c.stream(
        "POST", f"/v1/streams/{stream_id}/ask", json={"question": "Describe it.", "stream": True}
    ) as s:
        assert s.status_code == 200
        assert s.headers["content-type"].startswith("text/event-stream")
        events = [line for line in s.iter_lines() if line.startswith("event:")]
    assert events[-1] == "event: done" and "event: piece" in events

    # a bad upload is refused while the cluster keeps serving
    bad = c.post("/v1/videos", files={"file": ("x.mp4", b"hello", "video/mp4")})
    assert bad.status_code == 415 and bad.json()["error"]["code"] == "not_a_video"
    assert c.get("/healthz").json()["redis"] == "ok"
    # distributed mode: no key, no access
    anonymous = httpx.get(c.base_url.join(f"/v1/streams/{stream_id}"), timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
