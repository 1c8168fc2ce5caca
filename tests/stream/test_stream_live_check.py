"""check_live against real peers on loopback (RTSP, HLS, HTTP), and the live open options."""

from __future__ import annotations

import time

import av
import pytest

from stream.av_input import resolve
from stream.errors import ForbiddenUrl, NotAVideo, SourceError, UnreachableSource
from stream.live import ANALYZE_DURATION_US, live_input
from stream.live_check import check_live
from stream.live_types import LiveConfig
from tests.stream.clips import Clips
from tests.stream.live_peers import RtspServer, StaticHttpServer
from tests.stream.servers import HttpServer

CHECK = LiveConfig(open_timeout_s=2, read_timeout_s=2)
HLS_CHECK = LiveConfig(open_timeout_s=3, read_timeout_s=3)


def check_error(url: str, config: LiveConfig = CHECK) -> SourceError:
    """Run check_live, which must fail; the error, after checking it hides the password "secret"."""
    with pytest.raises(SourceError) as info:
        check_live(url, config)
    err = info.value
    assert "secret" not in str(err)
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    return err


def test_rtsp_opens_with_tcp_transport() -> None:
    rtsp = resolve("rtsp://cam/x", allowed_schemes=("rtsp",), timeout_s=1)
    assert rtsp.options["rtsp_transport"] == "tcp"
    assert (
        resolve("rtsps://cam/x", allowed_schemes=("rtsps",), timeout_s=1).options["rtsp_transport"] == "tcp"
    )
    assert "rtsp_transport" not in resolve("http://cam/x.mp4", timeout_s=1).options


def test_live_input_options() -> None:
    cfg = LiveConfig(open_timeout_s=4, read_timeout_s=1.5)
    source = live_input("rtsp://user:secret@cam/x", cfg)
    assert source.options["rtsp_transport"] == "tcp"
    assert source.options["analyzeduration"] == ANALYZE_DURATION_US
    assert source.options["timeout"] == source.options["rw_timeout"] == "1500000"
    assert (source.open_timeout_s, source.timeout_s) == (4, 1.5)
    assert "secret" not in source.shown


@pytest.mark.integration
def test_rtsp_ok(rtsp_server: RtspServer) -> None:
    started = time.monotonic()
    info = check_live(rtsp_server.url, CHECK)
    assert time.monotonic() - started < CHECK.open_timeout_s + CHECK.read_timeout_s
    assert (info.width, info.height, info.codec) == (160, 96, "h264")
    assert info.duration_s is None and not info.has_audio


@pytest.mark.integration
def test_hls_ok(hls_server: StaticHttpServer) -> None:
    info = check_live(hls_server.url("live.m3u8"), HLS_CHECK)
    assert (info.width, info.height, info.codec) == (160, 96, "h264")


@pytest.mark.integration
@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_closed_port_is_unreachable(closed_port: int, scheme: str) -> None:
    started = time.monotonic()
    err = check_error(f"{scheme}://user:secret@127.0.0.1:{closed_port}/live?token=secret")
    assert isinstance(err, UnreachableSource) and f"127.0.0.1:{closed_port}" in str(err)
    assert time.monotonic() - started < 1.5


@pytest.mark.integration
def test_wrong_rtsp_path_is_unreachable(rtsp_server: RtspServer) -> None:
    url = rtsp_server.url.replace("rtsp://", "rtsp://user:secret@").replace("/test", "/missing")
    assert isinstance(check_error(url), UnreachableSource)


def test_silent_server_times_out(silent_port: int) -> None:
    cfg = LiveConfig(open_timeout_s=1, read_timeout_s=1)
    started = time.monotonic()
    assert isinstance(check_error(f"rtsp://127.0.0.1:{silent_port}/x", cfg), UnreachableSource)
    assert time.monotonic() - started < cfg.open_timeout_s + cfg.read_timeout_s + 1


def test_stalled_after_open_gives_no_frame(http_server: HttpServer, clips: Clips) -> None:
    (http_server.root / "fs.mp4").write_bytes(clips.faststart.read_bytes())
    cfg = LiveConfig(open_timeout_s=1, read_timeout_s=1)
    started = time.monotonic()
    err = check_error(http_server.url("stall/fs.mp4"), cfg)
    assert isinstance(err, UnreachableSource) and "no frame" in str(err)
    assert time.monotonic() - started < cfg.open_timeout_s + cfg.read_timeout_s + 1


def test_http_page_is_not_a_video(http_server: HttpServer) -> None:
    (http_server.root / "index.html").write_text("<html><body>" + "not a video " * 200 + "</body></html>\n")
    url = http_server.url("index.html").replace("http://", "http://user:secret@")
    assert isinstance(check_error(url), NotAVideo)


def test_http_404_is_unreachable(http_server: HttpServer) -> None:
    url = http_server.url("missing.m3u8").replace("http://", "http://user:secret@")
    assert isinstance(check_error(url), UnreachableSource)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "concat:/etc/passwd|/etc/hosts",
        "subfile,,start,0,end,100,,:/etc/passwd",
        "data:video/mp4;base64,AAAA",
        "/etc/passwd",
        "rtmp://user:secret@127.0.0.1/live",  # a supported scheme, but not in CHECK.allowed_schemes
    ],
)
def test_forbidden_before_ffmpeg(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("av.open called")

    monkeypatch.setattr(av, "open", boom)
    with pytest.raises(ForbiddenUrl) as info:
        check_live(url, CHECK)
    assert "secret" not in str(info.value)
