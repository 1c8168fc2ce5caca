"""Hostile WebRTC offers against a real ``vidmem serve``: ICE candidates that name where the server must not
send (a UDP port the test listens on at 127.0.0.1), malformed candidates and too many of them; and one
tenant trying to take every peer of a server with offers that never connect.

The network policy is the default one (loopback refused), with and without ``webrtc_loopback`` (which
adds 127.0.0.1 to the *server's* candidates, not to what it may reach).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import RedisServer
from tests.integration.procs import Proc, distributed_env, embedded_env, keyed_client, run_api, run_cluster
from tests.reliability.figures import TestFigures
from tests.rtc_peers import BrowserPeer, LoopThread, SyntheticTrack, with_candidates
from tests.stream.live_helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

ICE_TIMEOUT_S = 5.0
HOST = "2130706431"  # a host candidate's priority


@dataclass
class Server:
    base: str
    proc: Proc
    loopback: bool


@pytest.fixture(scope="module", params=[False, True], ids=["webrtc_loopback-off", "webrtc_loopback-on"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model_cache: Path
) -> Iterator[Server]:
    """``vidmem serve`` (embedded mode) whose URL network policy allows no loopback address."""
    logs = tmp_path_factory.mktemp("hostile_rtc")
    env = embedded_env(
        model_cache, logs / "uploads", frame_size=64, url_allowed_networks="[]",
        webrtc_loopback=request.param, webrtc_ice_timeout_s=ICE_TIMEOUT_S, log_format="text",
    )  # fmt: skip
    with run_api(env, logs) as (base, proc):
        yield Server(base, proc, request.param)


@pytest.fixture(scope="module")
def client_loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def offer_sdp(client_loop: LoopThread) -> str:
    """A real aiortc offer (video only); its peer is closed at once."""
    peer = BrowserPeer.with_track(client_loop, SyntheticTrack())
    try:
        return peer.offer()
    finally:
        peer.close()


class UdpListener:
    """A UDP port on 127.0.0.1 that counts every datagram it receives (in a thread)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.packets: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.packets.append(self.sock.recv(2048))
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def post(c: httpx.Client, sdp: str) -> httpx.Response:
    return c.post("/v1/webrtc/offer", json={"sdp": sdp, "type": "offer"})


def view(c: httpx.Client, sid: str) -> dict[str, object]:
    r = c.get(f"/v1/streams/{sid}")
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


# ---- candidates ----------------------------------------------------------------------------------


def test_refused_candidates_get_no_packet(server: Server, offer_sdp: str, figures: TestFigures) -> None:
    """Every candidate names a UDP port the test listens on at 127.0.0.1 (and [::1]): the server must
    never send there. The offer is answered without them, and ends after webrtc_ice_timeout_s with an
    error that names them."""
    listener = UdpListener()
    try:
        sdp = with_candidates(
            offer_sdp,
            [
                f"1 1 udp {HOST} 127.0.0.1 {listener.port} typ host",
                f"2 1 udp {HOST} ::1 {listener.port} typ host",
            ],
        )
        with httpx.Client(
            base_url=server.base, timeout=30, event_hooks={"response": [figures.http_hook]}
        ) as c:
            r = post(c, sdp)
            assert r.status_code == 200, r.text
            sid = r.json()["stream_id"]
            time.sleep(1.5)  # aioice checks its pairs at once: well within this
            assert listener.packets == [], (
                f"the server sent {len(listener.packets)} packets to a refused address"
            )
            ended = wait_until(
                lambda: v if (v := view(c, sid))["state"] == "done" else None,
                ICE_TIMEOUT_S + 5,
                "the stream end",
            )
            figures.add("probes")
            assert "webrtc_ice_timeout_s" in str(ended["last_error"]), ended
            assert f"127.0.0.1:{listener.port} (loopback" in str(ended["last_error"]), ended
            time.sleep(0.5)
        assert listener.packets == [], (
            f"the server sent {len(listener.packets)} packets to a refused candidate"
        )
        figures.set(packets_to_refused_candidate=len(listener.packets))
    finally:
        listener.close()


MALFORMED = {
    "port-99999": (f"1 1 udp {HOST} 192.0.2.10 99999 typ host", "99999"),
    "port-0": (f"1 1 udp {HOST} 192.0.2.10 0 typ host", "'0'"),
    "ip-999.1.1.1": (f"1 1 udp {HOST} 999.1.1.1 5000 typ host", "999.1.1.1"),
    "host-name": (f"1 1 udp {HOST} example.com 5000 typ host", "example.com"),
    "no-typ": (f"1 1 udp {HOST} 192.0.2.10 5000 host", "typ"),
    "bad-type": (f"1 1 udp {HOST} 192.0.2.10 5000 typ sneaky", "sneaky"),
    "bad-transport": (f"1 1 sctp {HOST} 192.0.2.10 5000 typ host", "sctp"),
}


def test_malformed_or_too_many_candidates_are_bad_sdp(
    server: Server, offer_sdp: str, figures: TestFigures
) -> None:
    with httpx.Client(base_url=server.base, timeout=30, event_hooks={"response": [figures.http_hook]}) as c:
        before = c.get("/v1/streams").json()["streams"]
        for case, (candidate, shown) in MALFORMED.items():
            r = post(c, with_candidates(offer_sdp, [candidate]))
            assert r.status_code == 400, (case, r.status_code, r.text[:300])
            err = r.json()["error"]
            assert err["code"] == "bad_sdp" and shown in err["message"] and "candidate" in err["message"], err
            figures.add("refused")
        many = [f"{i} 1 udp {HOST} 203.0.113.{i % 250 + 1} {5000 + i} typ host" for i in range(100)]
        r = post(c, with_candidates(offer_sdp, many))
        assert r.status_code == 400 and "webrtc_max_candidates" in r.json()["error"]["message"], r.text[:300]
        figures.add("refused")
        assert c.get("/v1/streams").json()["streams"] == before, "a refused offer left a stream"
        assert c.get("/v1/webrtc/config").json()["peers"] == 0
    log = server.proc.log.read_text(errors="replace")
    assert "Traceback" not in log and "OverflowError" not in log, log[-3000:]


def test_a_good_offer_still_connects(server: Server, client_loop: LoopThread, figures: TestFigures) -> None:
    """After the hostile offers the server serves a real peer: it connects even though the policy refuses
    the peer's own candidates (loopback, documentation or private addresses here), because the server
    answers the address its checks come from."""
    peer = BrowserPeer.with_track(client_loop, SyntheticTrack())
    try:
        with httpx.Client(
            base_url=server.base, timeout=30, event_hooks={"response": [figures.http_hook]}
        ) as c:
            r = post(c, peer.offer())
            assert r.status_code == 200, r.text
            answer = r.json()["sdp"]
            if not server.loopback and "a=candidate:" not in answer:
                pytest.skip("this host has no address but loopback: without webrtc_loopback nothing connects")
            peer.accept(answer)
            wait_until(lambda: peer.connection_state == "connected", 10, "the client peer to connect")
            sid = r.json()["stream_id"]
            wait_until(lambda: view(c, sid)["state"] == "live", 10, "the stream live")
            time.sleep(ICE_TIMEOUT_S + 0.5)  # a connected peer is not ended by the ICE timeout
            assert view(c, sid)["state"] == "live"
            assert c.get("/healthz").status_code == 200
            figures.add("served")
    finally:
        peer.close()


# ---- one tenant and the peers of a server ----------------------------------------------------------


@pytest.fixture
def keyed_server(
    redis_server: RedisServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``vidmem serve`` in distributed mode: 4 WebRTC peers, 2 per tenant, a 5 s ICE timeout."""
    redis.Redis.from_url(redis_server.url).flushdb()
    env = distributed_env(
        redis_server.url, tmp_path_factory.getbasetemp() / "models", webrtc_max_peers=4,
        webrtc_max_peers_per_tenant=2, webrtc_ice_timeout_s=ICE_TIMEOUT_S, webrtc_loopback=True,
    )  # fmt: skip
    with run_cluster(env, tmp_path) as (base, _):
        yield base


def test_one_tenant_cannot_take_every_peer(
    keyed_server: str, redis_server: RedisServer, offer_sdp: str, figures: TestFigures
) -> None:
    """Tenant A's offers (that never connect) take its 2 places, not the server's 4: tenant B is still
    answered. A's places come back when its offers time out (webrtc_ice_timeout_s), not after the
    first-frame timeout."""
    hooks = {"response": [figures.http_hook]}
    a, b = (
        keyed_client(keyed_server, redis_server.url, tenant, timeout=30, event_hooks=hooks)
        for tenant in ("tenant-a", "tenant-b")
    )
    with a, b:
        first = [post(a, offer_sdp) for _ in range(2)]
        assert [r.status_code for r in first] == [200, 200], [r.text[:200] for r in first]
        third = post(a, offer_sdp)
        assert third.status_code == 429, third.text[:300]
        err = third.json()["error"]
        assert err["code"] == "too_many_peers" and "webrtc_max_peers_per_tenant=2" in err["message"], err
        figures.add("refused")
        assert [post(b, offer_sdp).status_code for _ in range(2)] == [200, 200]
        t0 = time.monotonic()
        wait_until(lambda: a.get("/v1/webrtc/config").json()["peers"] == 0, ICE_TIMEOUT_S + 5, "places freed")
        figures.set(places_freed_after_s=round(time.monotonic() - t0, 2))
        for r in first:
            v = wait_until(
                lambda r=r: v if (v := view(a, r.json()["stream_id"]))["state"] == "done" else None, 5, "done"
            )
            assert "webrtc_ice_timeout_s" in str(v["last_error"]), v
        assert post(a, offer_sdp).status_code == 200
    assert figures.values.get("http_5xx", 0) == 0
