"""RTSP under a network policy goes through stream.rtsp_relay: against the real GStreamer RTSP server (plain,
with digest login, behind TLS) it reads frames; against a hostile server that redirects (plain and rtsps,
on OPTIONS or DESCRIBE, to an allowed address even) it is refused with ForbiddenUrl, and the redirect's
target, the real server, gets no connection. A live reader records the refusal and repeats it on every
reconnect, still without reaching the target."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.redis_server import free_port
from stream.av_input import open_video, resolve
from stream.errors import ForbiddenUrl, UnreachableSource
from stream.live import LiveSource
from stream.live_types import LiveConfig
from stream.urls import NetworkPolicy
from tests.stream.live_helpers import wait_until
from tests.stream.live_peers import RtspServer, require_live_peers
from tests.stream.rtsp_peers import ElsewhereRtsp, RedirectingRtsp, TlsFront, self_signed

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

LOOPBACK = NetworkPolicy(allowed_networks=["127.0.0.0/8"])
"""Every loopback address allowed: a redirect is refused because it is a redirect, not for its target."""


def _first_frame(url: str, policy: NetworkPolicy = LOOPBACK) -> tuple[int, int]:
    source = resolve(url, allowed_schemes=("rtsp", "rtsps"), timeout_s=5.0, network_policy=policy)
    with open_video(source) as (container, stream):
        frame = next(container.decode(stream))
        return frame.width, frame.height


def _relay_threads() -> int:
    return sum(t.name == "vidmem-rtsp-relay" for t in threading.enumerate())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def camera_with_login(live_clip: Path, tmp_path: Path) -> Iterator[RtspServer]:
    require_live_peers()
    server = RtspServer(live_clip, free_port(), tmp_path / "login.log", login="cam:s3cr%40t")
    try:
        yield server.start()
    finally:
        server.stop()


def test_frames_come_through_the_relay(rtsp_server: RtspServer) -> None:
    before = _relay_threads()
    assert _first_frame(rtsp_server.url) == (160, 96)
    assert _relay_threads() == before, "the relay's thread outlived the container"


def test_digest_login_works_through_the_relay(camera_with_login: RtspServer) -> None:
    """FFmpeg computes the digest over the relay's URL and sends it as ``uri``: the camera accepts it."""
    assert _first_frame(camera_with_login.url) == (160, 96)
    with pytest.raises(UnreachableSource):
        _first_frame(camera_with_login.url.replace("s3cr%40t", "wrong"))


def test_rtsps_is_relayed_over_tls(rtsp_server: RtspServer, certificate: tuple[Path, Path]) -> None:
    """The camera's self-signed certificate is accepted (like FFmpeg's tls_verify=0)."""
    with TlsFront("127.0.0.1", ("127.0.0.1", rtsp_server.port), certificate) as front:
        assert _first_frame(f"rtsps://127.0.0.1:{front.port}/test") == (160, 96)


@pytest.mark.parametrize(
    ("status", "on", "tls"),
    [(302, "OPTIONS", False), (301, "DESCRIBE", False), (307, "OPTIONS", True), (303, "DESCRIBE", True)],
)
def test_a_redirect_is_refused_and_never_followed(
    rtsp_server: RtspServer, certificate: tuple[Path, Path], status: int, on: str, tls: bool
) -> None:
    before = rtsp_server.clients()
    with RedirectingRtsp("127.0.0.2", rtsp_server.url, status, on, certificate if tls else None) as hostile:
        with pytest.raises(ForbiddenUrl, match=f"redirects \\(RTSP {status}\\).*not followed"):
            _first_frame(hostile.url)
        assert hostile.requests[-1].startswith(on), hostile.requests
    time.sleep(0.5)
    assert rtsp_server.clients() == before, "the redirect's target got a connection"


@pytest.mark.parametrize("location", [True, False], ids=["with-location", "without-location"])
def test_a_zero_padded_redirect_is_refused(rtsp_server: RtspServer, location: bool) -> None:
    """``RTSP/1.0 <1,100 zeros>302``: FFmpeg 8.1 reads the whole status word, so this is a redirect to it
    (see the next test); without a Location only the status tells it apart."""
    before = rtsp_server.clients()
    hostile = RedirectingRtsp("127.0.0.2", rtsp_server.url, padding=1100, location=location)
    with hostile, pytest.raises(ForbiddenUrl, match=r"redirects \(RTSP 302\).*not followed"):
        _first_frame(hostile.url)
    time.sleep(0.5)
    assert rtsp_server.clients() == before, "the redirect's target got a connection"


def test_ffmpeg_itself_follows_the_zero_padded_redirect(rtsp_server: RtspServer) -> None:
    """Why the guard reads the word whole: FFmpeg, without the relay, follows it to the target."""
    before = rtsp_server.clients()
    with RedirectingRtsp("127.0.0.2", rtsp_server.url, padding=1100) as hostile:
        source = resolve(hostile.url, allowed_schemes=("rtsp",), timeout_s=5.0)  # no policy: FFmpeg's own
        with open_video(source) as (container, stream):
            frame = next(container.decode(stream))
    assert (frame.width, frame.height) == (160, 96)
    assert rtsp_server.clients() > before


def test_a_content_base_elsewhere_stays_on_the_relayed_connection(rtsp_server: RtspServer) -> None:
    """Requests name the relay until DESCRIBE's Content-Base names another server; SETUP and PLAY then
    name that server but travel on the same, relayed connection: the other server sees nothing."""
    before = rtsp_server.clients()
    base = f"rtsp://127.0.0.1:{rtsp_server.port}/test/"
    with ElsewhereRtsp("127.0.0.2", base) as camera:
        source = resolve(camera.url, allowed_schemes=("rtsp",), timeout_s=2.0, network_policy=LOOPBACK)
        with open_video(source):
            pass
    methods = [line.split()[0] for line in camera.requests]
    assert methods[:4] == ["OPTIONS", "DESCRIBE", "SETUP", "PLAY"], camera.requests
    assert all(line.split()[1].startswith("rtsp://127.0.0.1:") for line in camera.requests[:2])
    assert camera.requests[2].split()[1] == base + "trackID=1"
    assert camera.connections == 1 and rtsp_server.clients() == before


def test_a_live_reader_refuses_the_redirect_on_every_reconnect(rtsp_server: RtspServer) -> None:
    before = rtsp_server.clients()
    config = LiveConfig(
        fps=2, allowed_schemes=("rtsp",), network_policy=LOOPBACK, backoff_initial_s=0.1, backoff_max_s=0.2
    )
    with RedirectingRtsp("127.0.0.2", rtsp_server.url) as hostile, LiveSource(hostile.url, config) as source:
        wait_until(lambda: len(hostile.requests) >= 4, 20, "the reader to reconnect a few times")
        assert "redirects (RTSP 302)" in (source.stats.last_error or ""), source.stats
        assert source.stats.state == "connecting" and source.stats.frames_sampled == 0
    time.sleep(0.5)
    assert rtsp_server.clients() == before, "a reconnect followed the redirect"
