"""WebRTC ingest through the API (embedded mode, the tiny model): a real aiortc client peer plays the
browser over loopback UDP. An offer is answered and its video reaches the memory; the stream ends when the
peer hangs up, goes silent (the watchdog) or the stream is deleted; bad offers get a clear 4xx and leave
the server serving; the peer limit holds.

The client peer runs on an event loop of its own (``tests.rtc_peers``); the app runs on the TestClient's.
Every client peer is closed after its test, and the server must then hold no connection any more.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings
from tests.api.conftest import BUDGET, LOCAL_BASE, Response, assert_error, make_settings
from tests.rtc_peers import (
    BrowserPeer,
    LoopThread,
    SyntheticTrack,
    drop_lines,
    drop_section,
    only_codec,
    set_direction,
)
from tests.stream.clips import make_clip
from tests.stream.live_helpers import wait_until

WATCHDOG_S = 2.0
ICE_TIMEOUT_S = 6.0
MAX_PEERS = 2
RTC = {
    "fps": 2.0,
    "frame_size": 64,
    "live_heartbeat_s": 0.2,
    "live_lease_s": 3.0,
    "webrtc_watchdog_s": WATCHDOG_S,
    "webrtc_connect_timeout_s": 15.0,
    "webrtc_ice_timeout_s": ICE_TIMEOUT_S,
    "webrtc_max_peers": MAX_PEERS,
    "webrtc_loopback": True,
    "webrtc_start_kbps": 1500,
    "webrtc_min_kbps": 300,
    "webrtc_max_kbps": 4000,
}
HINT = "x-google-start-bitrate=1500;x-google-min-bitrate=300;x-google-max-bitrate=4000"
MALFORMED = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video notaport UDP/TLS/RTP/SAVPF 96\r\n"


@contextmanager
def serving(settings: Settings) -> Iterator[TestClient]:
    """A TestClient over a fresh embedded app that answers a server error with its 500 (as a real server
    does) instead of raising it in the test; the in-process worker pools are shut down on exit."""
    app: FastAPI = create_app(settings)
    try:
        with TestClient(app, base_url=LOCAL_BASE, raise_server_exceptions=False) as client:
            yield client
    finally:
        shutdown = getattr(app.state.runtime.dispatcher, "shutdown", None)
        if shutdown is not None:
            shutdown()


@pytest.fixture(scope="module")
def c(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with serving(make_settings(model_cache, tmp_path_factory.mktemp("rtc_uploads"), **RTC)) as client:
        yield client


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real H.264 clip as a camera sends it: 640x360, 25 fps (longer than any test plays it)."""
    return make_clip(tmp_path_factory.mktemp("rtc_clips") / "camera.mp4", seconds=20, fps=25, size=(640, 360))


@pytest.fixture(scope="module")
def client_loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def offer_sdp(c: TestClient, client_loop: LoopThread) -> str:
    """A real offer (video and audio, candidates included) whose peer is closed at once: for the offers
    the server must refuse before connecting."""
    peer = BrowserPeer.with_track(client_loop, SyntheticTrack())
    try:
        return peer.offer(audio=True)
    finally:
        peer.close()


Browsers = Callable[..., BrowserPeer]


@pytest.fixture
def browsers(c: TestClient, client_loop: LoopThread) -> Iterator[Browsers]:
    """Make client peers (a synthetic track, or ``clip``); all are closed after the test, and then the
    server must hold no WebRTC connection (each ends when its peer leaves)."""
    made: list[BrowserPeer] = []

    def make(clip: Path | None = None, track: SyntheticTrack | None = None) -> BrowserPeer:
        if clip is not None:
            peer = BrowserPeer.with_clip(client_loop, clip)
        else:
            peer = BrowserPeer.with_track(client_loop, track or SyntheticTrack())
        made.append(peer)
        return peer

    yield make
    for peer in made:
        try:
            peer.close()
        except Exception as e:  # close the others all the same
            print(f"closing a client peer failed: {e!r}")
    wait_until(lambda: peers(c) == 0, 10, "the server to let go of every connection")


# ---- helpers -------------------------------------------------------------------------------------


def view(c: TestClient, sid: str) -> dict[str, Any]:
    r = c.get(f"/v1/streams/{sid}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_view(c: TestClient, sid: str, cond: Callable[[dict[str, Any]], Any], timeout_s: float, what: str
              ) -> dict[str, Any]:  # fmt: skip
    """Poll the stream's view until ``cond`` holds; that view."""

    def check() -> dict[str, Any]:
        v = view(c, sid)
        return v if cond(v) else {}

    try:
        return wait_until(check, timeout_s, what)
    except AssertionError as e:
        raise AssertionError(f"{e}; the stream: {view(c, sid)}") from None


def peers(c: TestClient) -> int:
    r = c.get("/v1/webrtc/config")
    assert r.status_code == 200, r.text
    n: int = r.json()["peers"]
    return n


def stream_ids(c: TestClient) -> set[str]:
    return {s["stream_id"] for s in c.get("/v1/streams").json()["streams"]}


def post_offer(c: TestClient, sdp: str, **extra: Any) -> Response:
    return c.post("/v1/webrtc/offer", json={"sdp": sdp, "type": "offer", **extra})


def connect(c: TestClient, peer: BrowserPeer, **extra: Any) -> dict[str, Any]:
    """Offer, answer, and wait until the client peer is connected; the answer's JSON."""
    r = post_offer(c, peer.offer(), **extra)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    peer.accept(body["sdp"])
    wait_until(lambda: peer.connection_state == "connected", 10, "the client peer to connect")
    return body


def live_stream(c: TestClient, peer: BrowserPeer, **extra: Any) -> str:
    sid: str = connect(c, peer, **extra)["stream_id"]
    wait_view(c, sid, lambda v: v["state"] == "live" and v["frames_sampled"] >= 1, 10, "the stream live")
    return sid


def ask(c: TestClient, sid: str) -> Response:
    return c.post(f"/v1/streams/{sid}/ask", json={"question": "What is on the screen?", "max_new_tokens": 4})


# ---- a browser streaming -------------------------------------------------------------------------


def test_config(c: TestClient) -> None:
    r = c.get("/v1/webrtc/config")
    assert r.status_code == 200, r.text
    assert r.json() == {"ice_servers": [], "max_peers": MAX_PEERS, "peers": 0, "watchdog_s": WATCHDOG_S,
                        "fps": 2.0, "budget": BUDGET}  # fmt: skip


def test_offer_answered_and_frames_reach_memory(c: TestClient, browsers: Browsers, camera_clip: Path) -> None:
    peer = browsers(clip=camera_clip)
    r = post_offer(c, peer.offer(), fps=2, name="desk", budget=BUDGET)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"sdp", "type", "stream_id"} and body["type"] == "answer"
    answer, sid = body["sdp"], body["stream_id"]
    assert answer.startswith("v=0\r\n")
    assert HINT in answer
    assert re.search(r"^a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 \d+ typ host", answer, re.MULTILINE), answer
    peer.accept(answer)
    wait_until(lambda: peer.connection_state == "connected", 10, "the client peer to connect")

    v = wait_view(c, sid, lambda v: v["state"] == "live" and v["resolution"], 10, "the stream live")
    assert v["kind"] == "webrtc" and v["name"] == "desk" and v["fps"] == 2 and v["budget"] == BUDGET
    assert v["resolution"] == "640x360" and v["reader"] and v["last_error"] is None
    assert peers(c) == 1

    v = wait_view(c, sid, lambda v: v["frames_encoded"] >= 3, 40, "frames in the memory")
    first = v["frames_encoded"]
    v = wait_view(c, sid, lambda v: v["frames_encoded"] >= first + 2, 15, "more frames in the memory")
    assert v["state"] == "live" and v["frames_sampled"] >= v["frames_encoded"]
    assert 0 < v["tokens_used"] <= BUDGET and v["slots"] >= 1 and v["last_frame_time"] > time.time() - 5
    mem = c.get(f"/v1/streams/{sid}/memory").json()
    assert mem["slots"] and mem["frames"] >= first + 2 and mem["tokens_used"] <= BUDGET
    assert all(b["t0"] > a["t1"] for a, b in itertools.pairwise(mem["slots"]))
    assert sid in stream_ids(c)

    r = ask(c, sid)
    assert r.status_code == 200, r.text
    assert r.json()["slots_used"] >= 1 and r.json()["budget"] == BUDGET
    assert peer.connection_state == "connected" and view(c, sid)["state"] == "live"


def test_thumbnail_at_a_time(c: TestClient, browsers: Browsers) -> None:
    sid = live_stream(c, browsers())
    wait_view(c, sid, lambda v: v["frames_encoded"] >= 2, 40, "frames in the memory")
    slots = c.get(f"/v1/streams/{sid}/memory").json()["slots"]
    r = c.get(f"/v1/streams/{sid}/thumbnail", params={"t": slots[0]["t0"]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg" and r.content[:3] == b"\xff\xd8\xff"
    assert int(r.headers["x-slot-id"]) in {s["slot_id"] for s in slots}
    far = c.get(f"/v1/streams/{sid}/thumbnail", params={"t": 1e6})  # nearest slot: the last
    assert far.status_code == 200 and far.headers["content-type"] == "image/jpeg"

    silent = SyntheticTrack()
    silent.go_silent()
    empty = connect(c, browsers(track=silent))["stream_id"]
    assert_error(c.get(f"/v1/streams/{empty}/thumbnail", params={"t": 0}), 409, "empty_memory")
    assert_error(ask(c, empty), 409, "empty_memory")
    assert_error(c.get(f"/v1/streams/{sid}/thumbnail", params={"t": "soon"}), 422, "validation_error")


def test_peer_hanging_up_ends_the_stream(c: TestClient, browsers: Browsers) -> None:
    peer = browsers()
    sid = live_stream(c, peer)
    wait_view(c, sid, lambda v: v["frames_encoded"] >= 1, 40, "frames in the memory")
    peer.close()
    hung_up = time.monotonic()
    v = wait_view(c, sid, lambda v: v["state"] == "done", 5, "the stream done")
    assert time.monotonic() - hung_up < 5 and v["last_error"], v
    wait_until(lambda: peers(c) == 0, 5, "the connection to be let go")
    sampled = v["frames_sampled"]
    time.sleep(0.5)
    v = view(c, sid)
    assert v["state"] == "done" and v["frames_sampled"] == sampled
    mem = c.get(f"/v1/streams/{sid}/memory")
    assert mem.status_code == 200 and mem.json()["slots"]
    assert ask(c, sid).status_code == 200


def test_watchdog_ends_a_silent_peer(c: TestClient, browsers: Browsers) -> None:
    """The peer stays connected but stops sending frames (a frozen tab): the watchdog ends the stream."""
    track = SyntheticTrack()
    peer = browsers(track=track)
    sid = live_stream(c, peer)
    track.go_silent()
    silent = time.monotonic()
    v = wait_view(c, sid, lambda v: v["state"] == "done", WATCHDOG_S + 3, "the watchdog to end the stream")
    took = time.monotonic() - silent
    assert took >= WATCHDOG_S - 0.5, f"ended after {took:.1f} s, before the watchdog could"
    assert "watchdog" in (v["last_error"] or ""), v
    wait_until(lambda: peers(c) == 0, 3, "the server to close the connection")
    wait_until(lambda: peer.connection_state != "connected", 5, "the client to see the connection closed")


def test_an_offer_that_never_connects_ends_after_the_ice_timeout(c: TestClient, browsers: Browsers) -> None:
    """The answer never reaches the peer (a client that sends offers and walks away): the connection is
    closed and its place freed after webrtc_ice_timeout_s, before the first-frame timeout."""
    r = post_offer(c, browsers().offer())
    assert r.status_code == 200, r.text
    sid, answered = r.json()["stream_id"], time.monotonic()
    assert peers(c) == 1
    v = wait_view(c, sid, lambda v: v["state"] == "done", ICE_TIMEOUT_S + 3, "the ICE timeout to end it")
    took = time.monotonic() - answered
    assert ICE_TIMEOUT_S - 0.5 <= took < RTC["webrtc_connect_timeout_s"], took
    assert "webrtc_ice_timeout_s" in (v["last_error"] or ""), v
    wait_until(lambda: peers(c) == 0, 3, "the place to be freed")


def test_delete_closes_the_connection(c: TestClient, browsers: Browsers) -> None:
    peer = browsers()
    sid = live_stream(c, peer)
    assert peers(c) == 1
    r = c.delete(f"/v1/streams/{sid}")
    assert r.status_code == 200 and r.json()["stopped"] is True, r.text
    assert view(c, sid)["state"] == "stopped"
    wait_until(lambda: peer.connection_state != "connected", 5, "the client to see the connection closed")
    wait_until(lambda: peers(c) == 0, 5, "the server to let go of the connection")
    sampled = view(c, sid)["frames_sampled"]
    time.sleep(0.6)
    v = view(c, sid)
    assert v["state"] == "stopped" and v["frames_sampled"] == sampled, v


def test_purge_closes_the_connection(c: TestClient, browsers: Browsers) -> None:
    peer = browsers()
    sid = live_stream(c, peer)
    r = c.delete(f"/v1/streams/{sid}", params={"purge": "true"})
    assert r.status_code == 200 and r.json()["deleted"] is True, r.text
    assert_error(c.get(f"/v1/streams/{sid}"), 404, "unknown_stream")
    wait_until(lambda: peer.connection_state != "connected", 5, "the client to see the connection closed")
    wait_until(lambda: peers(c) == 0, 5, "the server to let go of the connection")
    assert sid not in stream_ids(c)


def test_server_shutdown_closes_connections(
    model_cache: Path, tmp_path: Path, client_loop: LoopThread
) -> None:
    """A server stopping hangs up on its browsers (they see the connection close at once, rather than
    after ICE consent times out)."""
    track = SyntheticTrack()
    track.go_silent()  # connected, no frames: nothing for the encoders (no model to load for this app)
    peer = BrowserPeer.with_track(client_loop, track)
    try:
        with serving(make_settings(model_cache, tmp_path, **RTC)) as other:
            connect(other, peer)
            assert peers(other) == 1
        wait_until(lambda: peer.connection_state != "connected", 5, "the client to see the connection closed")
    finally:
        peer.close()


def test_peer_limit(c: TestClient, browsers: Browsers) -> None:
    first, second = browsers(), browsers()
    sid = live_stream(c, first)
    live_stream(c, second)
    assert peers(c) == MAX_PEERS
    before = stream_ids(c)
    err = assert_error(post_offer(c, browsers().offer()), 429, "too_many_peers")
    assert str(MAX_PEERS) in err["message"]
    assert stream_ids(c) == before and peers(c) == MAX_PEERS

    first.close()
    wait_view(c, sid, lambda v: v["state"] == "done", 5, "the first stream done")
    wait_until(lambda: peers(c) == MAX_PEERS - 1, 5, "a free place")
    live_stream(c, browsers())
    assert peers(c) == MAX_PEERS


# ---- bad offers ----------------------------------------------------------------------------------


def _bad_bodies(offer: str) -> dict[str, tuple[dict[str, Any], int, str]]:
    """name: (request body, status, code) of offers the server must refuse before connecting."""
    video_inactive = set_direction(offer, "video", "inactive")
    assert video_inactive != offer
    sdp = lambda s: {"sdp": s, "type": "offer"}  # noqa: E731
    return {
        "not-sdp": (sdp("hello, I am a browser"), 400, "bad_sdp"),
        "malformed": (sdp(MALFORMED), 400, "bad_sdp"),
        "truncated": (sdp(offer[: offer.index("a=rtpmap:") + 12]), 400, "bad_sdp"),
        "audio-only": (sdp(drop_section(offer, "video")), 422, "no_video"),
        "video-inactive": (sdp(video_inactive), 422, "no_video"),
        "vp9-only": (sdp(only_codec(offer, "video", "VP8", rename="VP9")), 422, "unsupported_codec"),
        "no-ice-credentials": (sdp(drop_lines(offer, "a=ice-pwd:")), 400, "bad_sdp"),
        "no-rtcp-mux": (sdp(drop_lines(offer, "a=rtcp-mux")), 400, "bad_sdp"),
        "type-answer": ({"sdp": offer, "type": "answer"}, 422, "validation_error"),
        "no-type": ({"sdp": offer}, 422, "validation_error"),
        "no-sdp": ({"type": "offer"}, 422, "validation_error"),
        "empty-sdp": (sdp(""), 422, "validation_error"),
        "sdp-not-text": ({"sdp": 5, "type": "offer"}, 422, "validation_error"),
        "fps-too-high": ({**sdp(offer), "fps": 60}, 422, "validation_error"),
        "budget-too-small": ({**sdp(offer), "budget": 1}, 422, "validation_error"),
        "extra-field": ({**sdp(offer), "candidates": []}, 422, "validation_error"),
        # aiortc cannot answer these either: refused up front, never a 5xx or a connection that can never
        # be established.
        "no-dtls-fingerprint": (sdp(drop_lines(offer, "a=fingerprint:")), 400, "bad_sdp"),
        "no-dtls-setup": (sdp(drop_lines(offer, "a=setup:")), 400, "bad_sdp"),
        "h264-packetization-mode-0": (
            sdp(only_codec(offer, "video", "H264", fmtp="packetization-mode=0;profile-level-id=42e01f")),
            422,
            "unsupported_codec",
        ),
        "h264-high-profile-only": (
            sdp(only_codec(offer, "video", "H264", fmtp="packetization-mode=1;profile-level-id=640c1f")),
            422,
            "unsupported_codec",
        ),
    }


BAD = [
    "not-sdp", "malformed", "truncated", "audio-only", "video-inactive", "vp9-only", "no-ice-credentials",
    "no-rtcp-mux", "type-answer", "no-type", "no-sdp", "empty-sdp", "sdp-not-text", "fps-too-high",
    "budget-too-small", "extra-field", "no-dtls-fingerprint", "no-dtls-setup", "h264-packetization-mode-0",
    "h264-high-profile-only",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_offer_is_refused(c: TestClient, offer_sdp: str, case: str) -> None:
    body, status, code = _bad_bodies(offer_sdp)[case]
    before = stream_ids(c)
    r = c.post("/v1/webrtc/offer", json=body)
    try:
        assert_error(r, status, code)
        assert stream_ids(c) == before, "a refused offer left a stream behind"
        assert peers(c) == 0, "a refused offer holds a connection"
    finally:
        if r.status_code == 200:  # (wrongly) answered: stop the stream, which closes its connection
            c.delete(f"/v1/streams/{r.json()['stream_id']}")
            wait_until(lambda: peers(c) == 0, 5, "the answered offer's connection to close")


def test_offer_with_audio_aiortc_cannot_decode_is_no_server_error(c: TestClient, offer_sdp: str) -> None:
    """The audio of an offer is ignored: an audio codec aiortc lacks (here iSAC only) must not turn a good
    video offer into a server error (answering it, or a clear 4xx, would do)."""
    r = post_offer(c, only_codec(offer_sdp, "audio", "opus", rename="ISAC"))
    try:
        if r.status_code != 200:
            assert_error(r, r.status_code)
            assert r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
    finally:
        if r.status_code == 200:
            assert view(c, r.json()["stream_id"])["kind"] == "webrtc"
            c.delete(f"/v1/streams/{r.json()['stream_id']}")
            wait_until(lambda: peers(c) == 0, 5, "the answered offer's connection to close")


def test_server_keeps_serving_after_bad_offers(c: TestClient, browsers: Browsers, offer_sdp: str) -> None:
    """Refused offers, one after another while a browser streams: that stream keeps getting frames, and a
    good offer afterwards connects."""
    sid = live_stream(c, browsers())
    sampled = view(c, sid)["frames_sampled"]
    bad = _bad_bodies(offer_sdp)
    for case in ("not-sdp", "malformed", "truncated", "audio-only", "vp9-only", "no-ice-credentials",
                 "type-answer", "no-sdp", "fps-too-high"):  # fmt: skip
        body, status, code = bad[case]
        assert_error(c.post("/v1/webrtc/offer", json=body), status, code)
    not_json = c.post("/v1/webrtc/offer", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(not_json, 422, "validation_error")
    v = wait_view(c, sid, lambda v: v["frames_sampled"] >= sampled + 2, 5, "the stream to keep going")
    assert v["state"] == "live" and peers(c) == 1
    other = live_stream(c, browsers())
    assert other != sid and peers(c) == 2
    assert c.get("/healthz").status_code == 200
