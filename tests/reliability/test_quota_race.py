"""One tenant's parallel requests cannot pass its limits: distributed mode, a real redis-server and two API
processes sharing it.

40 requests of one tenant fired at once, split over both APIs, against a limit of 8: exactly 8 are
accepted and the others get 429 ``quota_exceeded`` with ``Retry-After``; for uploads and URL videos
(``tenant_max_jobs``), camera registrations and WebRTC offers (``tenant_max_live_streams``). Requests
that fail halfway (a non-video upload, a bad body, a client that goes away mid-upload) leave no place
taken, and a place taken by an API process that is killed comes back after ``tenant_reservation_ttl_s``.
When the accepted work ends (jobs done, cameras stopped, offers that never connect timed out), the
tenant gets exactly its limit again.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from bench.redis_server import free_port
from tests.conftest import RedisServer
from tests.integration.procs import VIDMEM, Proc, distributed_env, run_cluster, wait_healthy
from tests.reliability.figures import TestFigures
from tests.rtc_peers import BrowserPeer, LoopThread, SyntheticTrack
from tests.stream.clips import make_clip
from tests.stream.live_helpers import wait_until
from tests.stream.servers import serve_directory
from workers.tenants import ApiKeys

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.slow]

LIMIT = 8
BURST = 40
ICE_TIMEOUT_S = 3.0


@dataclass
class Cluster:
    bases: list[str]  # the two API processes
    procs: dict[str, Proc]
    redis_url: str
    env: dict[str, str]
    logdir: Path

    def clients(self, tenant: str, figures: TestFigures) -> list[httpx.Client]:
        """One client per API process, with a new key of ``tenant``, counting responses in ``figures``."""
        key = ApiKeys(redis.Redis.from_url(self.redis_url)).create(tenant)[1]
        return [
            httpx.Client(
                base_url=base,
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
                limits=httpx.Limits(max_connections=BURST + 8),
                event_hooks={"response": [figures.http_hook]},
            )
            for base in self.bases
        ]


def start_cluster(redis_url: str, logdir: Path, models: Path, **settings: object) -> Iterator[Cluster]:
    redis.Redis.from_url(redis_url).flushdb()
    env = distributed_env(
        redis_url, models, upload_dir=logdir / "uploads", tenant_max_jobs=LIMIT,
        tenant_max_live_streams=LIMIT, webrtc_max_peers=BURST + 8, webrtc_max_peers_per_tenant=BURST + 8,
        webrtc_ice_timeout_s=ICE_TIMEOUT_S, webrtc_loopback=True, live_lease_s=3, live_heartbeat_s=0.5,
        url_check_workers=BURST, url_check_per_tenant=BURST,  # the quota, not the URL-check bound, refuses
        **settings,
    )  # fmt: skip
    port2 = free_port()
    with run_cluster(env, logdir, api2=["serve", "--port", str(port2)]) as (base, procs):
        base2 = f"http://127.0.0.1:{port2}"
        wait_healthy(base2, procs["api2"])
        yield Cluster([base, base2], procs, redis_url, env, logdir)


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two API processes on one redis-server (no worker: nothing a test accepts finishes by itself)."""
    logdir = tmp_path_factory.mktemp("quota_cluster")
    yield from start_cluster(redis_server.url, logdir, tmp_path_factory.getbasetemp() / "models")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("quota_clips") / "clip.mp4", seconds=2, fps=10, size=(96, 64))


# ---- helpers -------------------------------------------------------------------------------------


def burst(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Make every call at once (one thread each, released together); the responses in order."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def tally(rs: list[httpx.Response], accepted: int, figures: TestFigures) -> list[httpx.Response]:
    """The accepted responses (status ``accepted``); every other one must be 429 quota_exceeded with a
    Retry-After. Counts both in ``figures``."""
    ok = [r for r in rs if r.status_code == accepted]
    refused = [r for r in rs if r.status_code == 429]
    others = [(r.status_code, r.text[:200]) for r in rs if r.status_code not in (accepted, 429)]
    assert not others, others
    for r in refused:
        assert r.json()["error"]["code"] == "quota_exceeded", r.text
        assert int(r.headers["retry-after"]) > 0, r.headers
    figures.add("probes", len(rs))
    figures.add("accepted", len(ok))
    figures.add("refused_429", len(refused))
    return ok


def upload(c: httpx.Client, path: Path, name: str = "clip.mp4") -> httpx.Response:
    return c.post("/v1/videos", files={"file": (name, path.read_bytes(), "video/mp4")}, data={"fps": "1"})


def running_places(cluster: Cluster, tenant: str, group: str) -> int:
    """How many places the tenant's running set holds in Redis (streams and reservations)."""
    return int(redis.Redis.from_url(cluster.redis_url).zcard(f"vm:tenant:{tenant}:running:{group}"))


def partial_upload(base: str, key: str, sent: int = 64 * 1024, declared: int = 8 * 2**20) -> socket.socket:
    """A multipart upload that sends its headers and ``sent`` bytes of a ``declared``-byte body, then
    waits (the caller closes the socket: a client that went away, or a slow one)."""
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    head = (
        f"POST /v1/videos HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {declared}\r\n\r\n"
        '--b\r\nContent-Disposition: form-data; name="file"; filename="slow.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    )
    s.sendall(head.encode() + b"\0" * sent)
    return s


def wait_jobs(c: httpx.Client, job_ids: list[str], timeout_s: float) -> None:
    def finished() -> bool:
        return all(c.get(f"/v1/jobs/{j}").json()["state"] in ("done", "failed") for j in job_ids)

    wait_until(finished, timeout_s, f"{len(job_ids)} jobs to finish")


# ---- jobs: uploads and URL videos ------------------------------------------------------------------


def test_parallel_videos_get_exactly_the_job_limit(
    cluster: Cluster, clip: Path, tmp_path: Path, figures: TestFigures
) -> None:
    tenant = "burst-jobs"
    c1, c2 = cluster.clients(tenant, figures)
    key = c1.headers["authorization"].removeprefix("Bearer ")
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 500)
    www = tmp_path / "www"
    www.mkdir()
    (www / "clip.mp4").write_bytes(clip.read_bytes())
    with serve_directory(www) as server:
        # Requests that fail halfway give their place back: clients that go away in the middle of an
        # upload (they held every place), non-video uploads (415) and bad bodies (422).
        sockets = [partial_upload(cluster.bases[i % 2], key) for i in range(LIMIT)]
        wait_until(lambda: running_places(cluster, tenant, "jobs") == LIMIT, 10, "the uploads' places")
        assert upload(c1, clip).status_code == 429
        for s in sockets:
            s.close()
        wait_until(lambda: running_places(cluster, tenant, "jobs") == 0, 5, "the abandoned uploads' places")
        failing: list[Callable[[], httpx.Response]] = []
        for i in range(24):
            failing.append(lambda c=(c1, c2)[i % 2]: upload(c, text, "notes.txt"))
        for i in range(8):
            failing.append(lambda c=(c1, c2)[i % 2]: c.post("/v1/videos", json={"url": 5}))
        rs = burst(failing)
        statuses = sorted(r.status_code for r in rs)
        assert set(statuses) <= {415, 422, 429} and 415 in statuses, statuses
        figures.set(failing_requests=len(rs) + len(sockets))
        wait_until(lambda: running_places(cluster, tenant, "jobs") == 0, 5, "every failed request's place")

        # 30 uploads and 10 URL videos at once, over both APIs: exactly the limit gets through.
        calls: list[Callable[[], httpx.Response]] = []
        for i in range(BURST):
            c = (c1, c2)[i % 2]
            if i % 4 == 3:
                calls.append(lambda c=c: c.post("/v1/videos", json={"url": server.url("clip.mp4"), "fps": 1}))
            else:
                calls.append(lambda c=c: upload(c, clip))
        t0 = time.monotonic()
        first = tally(burst(calls), 202, figures)
        figures.set(burst_s=round(time.monotonic() - t0, 2))
        assert len(first) == LIMIT, f"{len(first)} of {BURST} parallel videos accepted; the limit is {LIMIT}"
        # Another tenant is not affected.
        other = cluster.clients("burst-jobs-other", figures)[1]
        assert upload(other, clip).status_code == 202

        # When the accepted jobs are done, the tenant has its whole limit again, and no more.
        worker = Proc("worker", [*VIDMEM, "worker", "--queues", "ingest,encode,answer", "--name", "quota@%h"],
                      cluster.env, cluster.logdir)  # fmt: skip
        try:
            wait_jobs(c1, [r.json()["job_id"] for r in first], timeout_s=240)
            again = tally(burst(calls), 202, figures)
            assert len(again) == LIMIT, f"{len(again)} accepted after the first jobs finished"
            wait_jobs(c1, [r.json()["job_id"] for r in again], timeout_s=240)
        finally:
            worker.stop()
    assert figures.values.get("http_5xx", 0) == 0


# ---- live streams: cameras and browsers ---------------------------------------------------------------


def test_parallel_cameras_get_exactly_the_live_limit(cluster: Cluster, figures: TestFigures) -> None:
    c1, c2 = cluster.clients("burst-cams", figures)
    cam = {"url": f"rtsp://127.0.0.1:{free_port()}/cam", "check": False}  # nothing reads it (no ingest)
    calls = [lambda c=(c1, c2)[i % 2]: c.post("/v1/streams", json=cam) for i in range(BURST)]
    first = tally(burst(calls), 201, figures)
    assert len(first) == LIMIT, f"{len(first)} of {BURST} parallel cameras registered; the limit is {LIMIT}"
    # Stopping three gives exactly three places back.
    for r in first[:3]:
        assert c1.delete(f"/v1/streams/{r.json()['stream_id']}").status_code == 200
    more = tally(burst(calls[:10]), 201, figures)
    assert len(more) == 3, f"{len(more)} registered after stopping 3"
    for r in first[3:] + more:
        assert c2.delete(f"/v1/streams/{r.json()['stream_id']}", params={"purge": "true"}).status_code == 200
    assert figures.values.get("http_5xx", 0) == 0


@pytest.fixture(scope="module")
def offer_sdp() -> Iterator[str]:
    """A real offer (its peer is closed at once: no answer to it ever connects)."""
    loop = LoopThread()
    peer = BrowserPeer.with_track(loop, SyntheticTrack())
    try:
        yield peer.offer()
    finally:
        peer.close()
        loop.close()


def test_parallel_offers_get_exactly_the_live_limit(
    cluster: Cluster, offer_sdp: str, figures: TestFigures
) -> None:
    c1, c2 = cluster.clients("burst-rtc", figures)
    body = {"sdp": offer_sdp, "type": "offer"}
    calls = [lambda c=(c1, c2)[i % 2]: c.post("/v1/webrtc/offer", json=body) for i in range(BURST)]
    first = tally(burst(calls), 200, figures)
    assert len(first) == LIMIT, f"{len(first)} of {BURST} parallel offers answered; the limit is {LIMIT}"

    # None of them connects: each ends after webrtc_ice_timeout_s, and the places come back.
    t0 = time.monotonic()

    def ended() -> bool:
        views = [c1.get(f"/v1/streams/{r.json()['stream_id']}").json() for r in first]
        return all(v["state"] == "done" and "webrtc_ice_timeout_s" in (v["last_error"] or "") for v in views)

    wait_until(ended, ICE_TIMEOUT_S + 10, "the offers that never connected to end")
    figures.set(freed_after_s=round(time.monotonic() - t0, 2))
    again = tally(burst(calls), 200, figures)
    assert len(again) == LIMIT, f"{len(again)} answered once the first ones ended"
    assert figures.values.get("http_5xx", 0) == 0


# ---- an API process dies holding places ----------------------------------------------------------


@pytest.fixture
def crash_cluster(
    redis_server: RedisServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    yield from start_cluster(
        redis_server.url, tmp_path, tmp_path_factory.getbasetemp() / "models", tenant_reservation_ttl_s=3
    )


def test_places_of_a_killed_api_process_come_back(
    crash_cluster: Cluster, clip: Path, figures: TestFigures
) -> None:
    """Slow uploads hold every place on API 1, renewed past their TTL; API 1 is SIGKILLed; the places
    come back within the TTL (3 s) and API 2 accepts exactly the limit."""
    cl = crash_cluster
    _, c2 = cl.clients("crash", figures)
    key = c2.headers["authorization"].removeprefix("Bearer ")
    slow = [partial_upload(cl.bases[0], key) for _ in range(LIMIT)]
    try:
        wait_until(lambda: running_places(cl, "crash", "jobs") == LIMIT, 10, "the slow uploads' places")
        time.sleep(2 * 3 + 1)  # past the TTL: the uploads still in progress keep their places
        refused = upload(c2, clip)
        assert refused.status_code == 429, refused.text
        cl.procs["api"].kill()
        killed = time.monotonic()
        wait_until(lambda: upload(c2, clip).status_code == 202, 3 + 5, "a place after API 1 died")
        figures.set(places_back_after_s=round(time.monotonic() - killed, 2))
    finally:
        for s in slow:
            s.close()
    rest = tally(burst([lambda: upload(c2, clip) for _ in range(12)]), 202, figures)
    assert len(rest) == LIMIT - 1, f"{len(rest)} accepted besides the first; the limit is {LIMIT}"
