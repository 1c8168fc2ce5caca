"""The Celery broker dies (a second redis-server, apart from the store) while the API and a worker run.

Submitting work then fails fast with 503 ``broker_unavailable`` (JSON, ``Retry-After``) instead of
hanging in Celery's retries; reads keep working; nothing half-created is left behind. Once the broker
is back on its port, the same upload is accepted and the job completes, with no process restarted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import RedisServer
from tests.integration.procs import Proc, distributed_env, run_cluster
from tests.reliability.conftest import api_client, timed, upload, wait_job
from tests.reliability.figures import TestFigures
from tests.stream.clips import make_clip

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

FAST_503_S = 3.0
OUTAGE_S = 6.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of its own as the Celery broker (killed and restarted by the test)."""
    (tmp_path / "broker").mkdir()
    server = RedisServer(tmp_path / "broker").start()
    yield server
    server.stop()


@pytest.fixture
def cluster(
    redis_server: RedisServer, broker: RedisServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, Proc]]]:
    """API + one Celery worker (ingest, encode, answer) with the store and the broker apart."""
    redis.Redis.from_url(redis_server.url).flushdb()
    env = distributed_env(
        redis_server.url, tmp_path_factory.getbasetemp() / "models", broker_url=broker.url,
        upload_dir=tmp_path / "uploads",
    )  # fmt: skip
    worker = ["worker", "--queues", "ingest,encode,answer", "--concurrency", "2", "--name", "all@%h"]
    with run_cluster(env, tmp_path, worker=worker) as running:
        yield running


def _unavailable(r: httpx.Response, code: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == code, r.text
    assert int(r.headers["retry-after"]) > 0


def test_broker_down_fails_fast_and_recovers(
    cluster: tuple[str, dict[str, Proc]],
    redis_server: RedisServer,
    broker: RedisServer,
    tmp_path: Path,
    figures: TestFigures,
) -> None:
    base, procs = cluster
    uploads = tmp_path / "uploads"
    clip = make_clip(tmp_path / "clip.mp4", seconds=4, fps=10, size=(96, 64))
    pids = {name: p.p.pid for name, p in procs.items()}
    with api_client(base, redis_server.url, figures, timeout=30) as c:
        r = upload(c, clip, fps=2)
        assert r.status_code == 202, r.text
        first = r.json()
        job = wait_job(c, first["job_id"], 60)
        assert job["state"] == "done", job
        streams_before = {s["stream_id"] for s in c.get("/v1/streams").json()["streams"]}

        broker.kill()
        killed = time.monotonic()
        figures.add("faults_injected")

        r, upload_s = timed(lambda: upload(c, clip, fps=2))
        _unavailable(r, "broker_unavailable")
        ask = {"question": "What moves?", "max_new_tokens": 4}
        r, ask_s = timed(lambda: c.post(f"/v1/streams/{first['stream_id']}/ask", json=ask))
        _unavailable(r, "broker_unavailable")
        figures.set(upload_503_s=upload_s, ask_503_s=ask_s)
        assert upload_s < FAST_503_S and ask_s < FAST_503_S

        # Reads need only the store: they keep working. /healthz answers (and may say the broker is down).
        r_list, list_s = timed(lambda: c.get("/v1/streams"))
        assert r_list.status_code == 200, r_list.text
        assert c.get(f"/v1/jobs/{first['job_id']}").json()["state"] == "done"
        r, health_s = timed(lambda: c.get("/healthz"))
        figures.set(list_streams_s=list_s, healthz_s=health_s, healthz_status=r.status_code)
        assert r.status_code in (200, 503) and r.headers["content-type"].startswith("application/json")
        assert health_s < FAST_503_S

        # A refused submit leaves nothing behind: no upload file, no stream that waits forever.
        # (Checked here, asserted at the end, so that the recovery is exercised either way.)
        leftovers = [f"upload file {p.name}" for p in uploads.iterdir()] if uploads.exists() else []
        leftovers += [f"stream {s['stream_id']} in state {s['state']!r}, its job never queued"
                      for s in r_list.json()["streams"] if s["stream_id"] not in streams_before]  # fmt: skip

        # The broker stays down long enough for the worker to lose its connection and retry; questions keep
        # failing fast meanwhile. (Not uploads: each refused one would leave a job "in progress" that
        # counts against the tenant's tenant_max_jobs while the leftovers above are not cleaned up.)
        while time.monotonic() - killed < OUTAGE_S:
            r, s = timed(lambda: c.post(f"/v1/streams/{first['stream_id']}/ask", json=ask))
            _unavailable(r, "broker_unavailable")
            slowest = max(s, figures.values.get("slowest_503_s", 0.0))
            figures.set(slowest_503_s=slowest)
            assert s < FAST_503_S
            time.sleep(0.5)
        for p in uploads.iterdir() if uploads.exists() else []:
            p.unlink()  # (counted above) so that the check after recovery starts clean

        broker.start()  # the same port: nothing else is restarted
        figures.set(broker_down_s=round(time.monotonic() - killed, 3))
        restarted = time.monotonic()
        r = upload(c, clip, fps=2)
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job_id"], 60)
        figures.set(recovery_to_job_done_s=round(time.monotonic() - restarted, 3))
        assert job["state"] == "done", job
        assert job["frames_sampled"] == job["frames_encoded"] > 0, job
        figures.add("frames_checked", job["frames_encoded"])
        ans = c.post(
            f"/v1/streams/{r.json()['stream_id']}/ask", json={"question": "And now?", "max_new_tokens": 4}
        )
        assert ans.status_code == 200, ans.text

    assert {name: p.p.pid for name, p in procs.items()} == pids
    assert all(p.p.poll() is None for p in procs.values()), "a process died"
    assert not leftovers, f"a refused submit left behind: {leftovers}"
