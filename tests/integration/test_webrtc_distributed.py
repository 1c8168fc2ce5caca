"""A browser's WebRTC stream in distributed mode with real parts: redis-server, a Celery encode/answer worker
process and the API as a separate ``vidmem serve --redis-url`` process.

The API process holds the WebRTC connection; its ``LiveSupervisor(claim=False)`` reads the track and hands
the sampled frames over Redis to encode tasks that the worker process runs. The browser is a real aiortc
client peer (``tests.rtc_peers``) sending a real H.264 clip (640x360, 25 fps) through ``MediaPlayer``.
Every sampled frame ends up in the memory exactly once; the client hanging up ends the stream, frees the
server's connection and leaves no frame chunk behind in Redis.
"""

from __future__ import annotations

import itertools
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from aiortc.contrib.media import MediaPlayer

from tests.conftest import RedisServer, free_port
from tests.integration.procs import VIDMEM, Proc, distributed_env, keyed_client, stop_all, wait_healthy
from tests.rtc_peers import BrowserPeer, LoopThread
from tests.stream.clips import make_clip
from tests.stream.live_helpers import wait_until

pytestmark = pytest.mark.integration

FPS = 2
BUDGET = 512
HEARTBEAT_S = 0.5
WATCHDOG_S = 5.0
ENCODED = re.compile(rb"Task vidmem\.encode\[[^\]]+\] succeeded")


@dataclass
class RtcCluster:
    base: str
    api: Proc
    worker: Proc
    redis: redis.Redis
    redis_url: str


@pytest.fixture
def rtc_cluster(
    redis_server: RedisServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RtcCluster]:
    """The API (``vidmem serve --redis-url``) and an encode/answer Celery worker on a real Redis."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    env = distributed_env(
        redis_server.url, tmp_path_factory.getbasetemp() / "models", live_lease_s=3,
        live_heartbeat_s=HEARTBEAT_S, webrtc_watchdog_s=WATCHDOG_S, webrtc_connect_timeout_s=10,
        webrtc_loopback=True,
    )  # fmt: skip
    port = free_port()
    worker_args = [*VIDMEM, "worker", "--queues", "encode,answer", "--name", "gpu@%h"]
    worker = Proc("encode", worker_args, env, tmp_path)
    api = Proc("api", [*VIDMEM, "serve", "--port", str(port), "--redis-url", redis_server.url], env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, api)
        yield RtcCluster(base, api, worker, client, redis_server.url)
    finally:
        stop_all([api, worker])
        client.close()


@pytest.fixture
def camera_clip(tmp_path: Path) -> Path:
    """A real H.264 clip as a camera sends it: 640x360, 25 fps, longer than the test plays it."""
    return make_clip(tmp_path / "camera.mp4", seconds=20, fps=25, size=(640, 360))


@pytest.fixture
def client_loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def clip_peer(loop: LoopThread, clip: Path) -> BrowserPeer:
    """A client peer sending ``clip`` once (not looped: the client's VP8 encoder breaks when MediaPlayer
    loops)."""

    async def _open() -> MediaPlayer:
        return MediaPlayer(str(clip), loop=False)

    player = loop.call(_open())
    peer = BrowserPeer.with_track(loop, player.video)
    peer.player = player
    return peer


def test_browser_stream_through_celery_workers(
    rtc_cluster: RtcCluster, client_loop: LoopThread, camera_clip: Path
) -> None:
    cl = rtc_cluster
    started = time.monotonic()
    peer = clip_peer(client_loop, camera_clip)
    with keyed_client(cl.base, cl.redis_url, timeout=30) as c:

        def view() -> dict[str, Any]:
            r = c.get(f"/v1/streams/{sid}")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body

        def wait_view(cond: Callable[[dict[str, Any]], Any], timeout_s: float, what: str) -> dict[str, Any]:
            try:
                return wait_until(lambda: v if cond(v := view()) else {}, timeout_s, what)
            except AssertionError as e:
                raise AssertionError(f"{e}; the stream: {view()}") from None

        def peers() -> int:
            r = c.get("/v1/webrtc/config")
            assert r.status_code == 200, r.text
            n: int = r.json()["peers"]
            return n

        def memory() -> dict[str, Any]:
            r = c.get(f"/v1/streams/{sid}/memory")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body

        def check_memory(mem: dict[str, Any]) -> None:
            slots = mem["slots"]
            assert slots, mem
            assert all(b["t0"] > a["t0"] and b["t0"] > a["t1"] for a, b in itertools.pairwise(slots)), slots
            assert sum(s["tokens"] for s in slots) == mem["tokens_used"] <= BUDGET, mem
            assert sum(s["frames"] for s in slots) == mem["frames"], mem

        try:
            # 1. The offer is answered by the API process, the client connects, and that process reads it.
            offer = {"sdp": peer.offer(), "type": "offer", "fps": FPS, "budget": BUDGET, "name": "desk"}
            r = c.post("/v1/webrtc/offer", json=offer)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["type"] == "answer" and body["sdp"].startswith("v=0\r\n")
            sid = body["stream_id"]
            peer.accept(body["sdp"])
            wait_until(lambda: peer.connection_state == "connected", 10, "the client peer to connect")
            connected = time.monotonic()

            v = wait_view(lambda v: v["state"] == "live" and v["resolution"], 10, "the stream live")
            assert v["kind"] == "webrtc" and v["state"] == "live" and v["name"] == "desk", v
            assert v["resolution"] == "640x360" and v["fps"] == FPS and v["budget"] == BUDGET, v
            # The reader is the API process's own supervisor (named host:pid:random), nobody else.
            assert v["reader"] and v["reader"].startswith(f"{socket.gethostname()}:{cl.api.p.pid}:"), v
            assert v["last_error"] is None and peers() == 1

            # 2. Frames reach the memory through the Celery worker process.
            v = wait_view(lambda v: v["frames_encoded"] >= 6, 25, "frames in the memory")
            assert v["state"] == "live" and v["frames_sampled"] >= v["frames_encoded"], v
            check_memory(memory())
            assert ENCODED.search(cl.worker.log.read_bytes()), f"no encode in the worker:\n{cl.worker.tail()}"
            ans = c.post(f"/v1/streams/{sid}/ask",
                         json={"question": "What is on the screen?", "max_new_tokens": 4})  # fmt: skip
            assert ans.status_code == 200, ans.text
            assert ans.json()["slots_used"] > 0 and ans.json()["budget"] == BUDGET, ans.json()
            assert peer.connection_state == "connected"

            # 3. The client hangs up: the stream is done within seconds and the connection is let go.
            peer.close()
            hung_up = time.monotonic()
            try:
                v = wait_view(lambda v: v["state"] == "done", 5, "the stream done")
            except AssertionError as e:  # slow, or stuck? look again once even the watchdog would have fired
                time.sleep(WATCHDOG_S + 2)
                late = f"{time.monotonic() - hung_up:.1f} s after the hang-up: {view()}; peers {peers()}"
                raise AssertionError(f"{e}\n{late}") from None
            done_s = time.monotonic() - hung_up
            assert v["last_error"] and "watchdog" not in v["last_error"], v  # the hang-up, not the watchdog
            wait_until(lambda: peers() == 0, 5, "the server to let go of the connection")

            # Once the encoders are done, every frame sampled is in the memory exactly once.
            v = wait_view(lambda v: v["frames_encoded"] == v["frames_sampled"], 20, "the last frames")
            sampled = v["frames_sampled"]
            time.sleep(2 * HEARTBEAT_S)
            v = view()
            assert v["state"] == "done" and v["frames_sampled"] == v["frames_encoded"] == sampled, v
            mem = memory()
            check_memory(mem)
            assert mem["frames"] == sampled >= 6, mem
            worker_log = cl.worker.log.read_bytes()
            encodes = len(ENCODED.findall(worker_log))
            assert b"raised unexpected" not in worker_log, cl.worker.tail()
            assert ENCODED.search(cl.api.log.read_bytes()) is None, "the API process ran an encode task"

            # 4. Redis: no frame chunk in flight for the stream, none left over, the lease given back.
            r_ = cl.redis
            assert r_.zcard(f"vm:{{{sid}}}:inflight") == 0, r_.zrange(f"vm:{{{sid}}}:inflight", 0, -1)
            assert list(r_.scan_iter(match=f"vm:{{{sid}}}:frames:*")) == []
            assert r_.exists(f"vm:{{{sid}}}:lease") == 0
            assert r_.sismember("vm:live", sid) == 0  # a WebRTC stream is never offered to ingest processes
            assert peers() == 0

            ans = c.post(f"/v1/streams/{sid}/ask", json={"question": "And then?", "max_new_tokens": 4})
            assert ans.status_code == 200 and ans.json()["slots_used"] > 0, ans.text
            print(
                f"connected after {connected - started:.1f} s; {sampled} frames sampled and encoded in"
                f" {encodes} encode tasks, {len(mem['slots'])} slots, {mem['tokens_used']} tokens; done"
                f" {done_s:.2f} s after the hang-up; test body {time.monotonic() - started:.1f} s"
            )
        finally:
            peer.close()
