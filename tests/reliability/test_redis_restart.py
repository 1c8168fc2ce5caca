"""Redis (store and broker, AOF on) crashes under load and comes back on the same port a few seconds later.

Load: an upload being encoded, a live RTSP camera read by a ``vidmem ingest`` process, and questions.
Redis is SIGKILLed (a crash: no shutdown save) and restarted with the same AOF directory. AOF with
``appendfsync everysec``, Redis's default and the compose file's: every write reaches the OS (the AOF
file's page cache) before Redis replies, so a crash of the *process* loses no acknowledged write; only a
crash of the machine could lose the last second, which ``always`` would also cover, at a cost on every
write that this test does not need.

What must hold: nothing that existed is lost (streams, jobs, memories); the API, the Celery workers and
the ingest process reconnect by themselves (same PIDs); the job completes with every frame once; the
camera's memory grows again and its stream is live; questions are answered again; and during the outage
the API answers 503 ``store_unavailable`` (JSON) quickly instead of 500s or hanging.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TESTDATA, RedisServer
from tests.integration.procs import Proc, distributed_env, run_cluster
from tests.reliability.conftest import (
    api_client,
    assert_exactly_once,
    memory_seqs,
    stuck_work,
    upload,
    wait_job,
)
from tests.reliability.figures import TestFigures
from tests.stream.clips import make_clip
from tests.stream.live_helpers import wait_until
from tests.stream.live_peers import RtspServer

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

OUTAGE_S = 4.0
"""How long Redis stays down: longer than redis-py's own retries of one command (~2-5 s), so clients
really see it gone."""
HANG_S = 15.0
"""A request that takes longer than this during the outage counts as hanging."""
STALL_S = 30.0
"""The upload's job failing to progress this long after the restart (3 visibility timeouts) is stuck."""
QUESTION = {"question": "What is in front of the camera?", "max_new_tokens": 4}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RedisServer]:
    """The Redis of this test alone (store and broker), with AOF, crashed and restarted by the test."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", appendonly=True, appendfsync="everysec").start()
    yield server
    server.stop()


@pytest.fixture
def cluster(
    store: RedisServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, Proc]]]:
    """API + ingest worker + encode/answer worker + a live ingest process, all on ``store``."""
    env = distributed_env(
        store.url, tmp_path_factory.getbasetemp() / "models", upload_dir=tmp_path / "uploads",
        task_visibility_timeout_s=10, live_lease_s=3, live_heartbeat_s=0.5, live_open_timeout_s=3,
        live_read_timeout_s=2,
    )  # fmt: skip
    model = ["worker", "--queues", "encode,answer", "--concurrency", "2", "--name", "model@%h"]
    with run_cluster(
        env, tmp_path, **{"worker-ingest": ["worker", "--queues", "ingest", "--name", "ingest@%h"]},
        **{"worker-model": model, "live": ["ingest", "--name", "live-1"]},
    ) as running:  # fmt: skip
        yield running


@dataclass
class Probe:
    """One request made while Redis was down (or coming back): when, how long, and what came back."""

    at_s: float  # since the crash
    took_s: float
    what: str
    status: int | None  # None: no answer (timeout, connection error)
    code: str | None


def probe_during_outage(
    c: httpx.Client, sid: str, job_id: str, t0: float, stop: threading.Event
) -> list[Probe]:
    """Requests in a loop (list, stream, job, ask) until ``stop``; each one's outcome."""
    calls = [
        ("GET /v1/streams", lambda: c.get("/v1/streams")),
        ("GET stream", lambda: c.get(f"/v1/streams/{sid}")),
        ("GET job", lambda: c.get(f"/v1/jobs/{job_id}")),
        ("POST ask", lambda: c.post(f"/v1/streams/{sid}/ask", json=QUESTION)),
    ]
    out: list[Probe] = []
    i = 0
    while not stop.is_set():
        what, call = calls[i % len(calls)]
        i += 1
        start = time.monotonic()
        status, code = None, None
        try:
            r = call()
            status = r.status_code
            if r.headers.get("content-type", "").startswith("application/json") and status >= 400:
                code = r.json()["error"]["code"]
        except httpx.HTTPError as e:
            code = type(e).__name__
        out.append(Probe(round(start - t0, 3), round(time.monotonic() - start, 3), what, status, code))
        time.sleep(0.1)
    return out


def test_redis_crash_and_restart_under_load(
    cluster: tuple[str, dict[str, Proc]],
    store: RedisServer,
    rtsp_server: RtspServer,
    tmp_path: Path,
    figures: TestFigures,
) -> None:
    base, procs = cluster
    pids = {name: p.p.pid for name, p in procs.items()}
    clip = TESTDATA / "big_buck_bunny_60s_640x360.mp4"
    if not clip.exists():
        clip = make_clip(tmp_path / "long.mp4", seconds=60, fps=10, size=(160, 96), gop=10)
    with api_client(base, store.url, figures, timeout=HANG_S) as c:

        def view(sid: str) -> dict[str, Any]:
            r = c.get(f"/v1/streams/{sid}")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body

        r = c.post("/v1/streams", json={"url": rtsp_server.url, "fps": 2, "budget": 600, "name": "cam"})
        assert r.status_code == 201, r.text
        cam = r.json()["stream_id"]
        wait_until(lambda: view(cam)["frames_encoded"] >= 4, 60, "the camera's first frames in the memory")
        r = upload(c, clip, fps=2)
        assert r.status_code == 202, r.text
        job_id, vid = r.json()["job_id"], r.json()["stream_id"]
        for _ in range(2):
            ans = c.post(f"/v1/streams/{cam}/ask", json=QUESTION)
            assert ans.status_code == 200, ans.text
        job = wait_until(lambda: (j := c.get(f"/v1/jobs/{job_id}").json())["frames_encoded"] > 0 and j, 60,
                         "the upload's first frames in the memory")  # fmt: skip
        assert job["state"] == "running", f"the upload ended before the crash: {job}"

        before_ids = {s["stream_id"] for s in c.get("/v1/streams").json()["streams"]}
        before_frames = {sid: c.get(f"/v1/streams/{sid}/memory").json()["frames"] for sid in (cam, vid)}

        # Crash Redis; probe the API while it is down and while it comes back.
        stop = threading.Event()
        probes: list[Probe] = []
        crashed = time.monotonic()
        store.kill()
        figures.add("faults_injected")
        prober = threading.Thread(
            target=lambda: probes.extend(probe_during_outage(c, cam, job_id, crashed, stop)), daemon=True
        )
        prober.start()
        time.sleep(OUTAGE_S)
        store.start()
        restarted = time.monotonic()
        figures.set(outage_s=round(restarted - crashed, 3))
        time.sleep(2.0)
        stop.set()
        prober.join(HANG_S + 5)

        during = [p for p in probes if p.at_s < OUTAGE_S]
        print("probes (s since the crash, took s, request, status, code):", *probes, sep="\n  ")
        figures.set(
            outage_requests=len(during),
            outage_answers=dict(Counter(f"{p.status} {p.code or ''}".strip() for p in during)),
            outage_slowest_s=max((p.took_s for p in during), default=0.0),
        )
        bad = [p for p in probes if p.status is None or (p.status >= 500 and p.code != "store_unavailable")]
        assert not bad, f"during the outage: no answer, or a 5xx other than store_unavailable: {bad}"
        assert any(p.code == "store_unavailable" for p in during), f"no 503 while Redis was down: {during}"

        # Everything that existed is still there; the API, workers and ingest process carry on.
        listing = wait_until(lambda: _ok(c.get("/v1/streams")), 30, "the API back")
        figures.set(api_back_after_restart_s=round(time.monotonic() - restarted, 3))
        assert listing is not None and before_ids <= {s["stream_id"] for s in listing.json()["streams"]}
        for sid, n in before_frames.items():
            assert c.get(f"/v1/streams/{sid}/memory").json()["frames"] >= n, sid
        assert c.get(f"/v1/jobs/{job_id}").json()["state"] in ("running", "done")

        after = view(cam)["frames_encoded"]
        s = wait_until(lambda: (v := view(cam))["frames_encoded"] >= after + 4 and v["state"] == "live" and v,
                       30, "the camera's memory to grow again, live")  # fmt: skip
        figures.set(camera_live_again_after_restart_s=round(time.monotonic() - restarted, 3),
                    camera_frames=s["frames_encoded"], camera_gaps=len(s["gaps"]))  # fmt: skip
        ans = c.post(f"/v1/streams/{cam}/ask", json=QUESTION)
        assert ans.status_code == 200, ans.text
        figures.add("asks_answered_after_restart")

        # The upload: tasks cut off by the crash come back (visibility timeout 10 s) and finish it.
        job = wait_job(c, job_id, 90, stall_s=STALL_S, explain=lambda: stuck_work(store.url, vid))
        figures.set(job_done_after_restart_s=round(time.monotonic() - restarted, 3))
        assert job["state"] == "done", job
        assert job["frames_sampled"] == job["frames_encoded"] > 0, job
        assert_exactly_once(memory_seqs(store.url, vid), job["frames_sampled"])
        figures.add("frames_checked", job["frames_sampled"])

    dead = {name: p.p.returncode for name, p in procs.items() if p.p.poll() is not None}
    assert not dead, f"processes exited: {dead}"
    assert {name: p.p.pid for name, p in procs.items()} == pids


def _ok(r: httpx.Response) -> httpx.Response | None:
    return r if r.status_code == 200 else None
