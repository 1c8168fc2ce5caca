"""Time limits of guarded http(s) opens (``stream.guarded_http.Timeouts``): FFmpeg's interrupt callback, which
enforces PyAV's open and read timeouts, is not consulted while FFmpeg reads through PyAV's ``io_open``, and
a socket timeout only limits the gap between two bytes. Against servers on loopback that trickle one
byte every 0.5 s (in the body after an MP4 ``ftyp`` box and a 1 GB ``free`` box, or in the headers), a
probe, a sampling check and a live check fail within about their open timeout (also when only the
coded frames trickle: FFmpeg reads the first one while it opens); after the open, a read waits the read
timeout for its next byte; connecting to every address of a host takes one timeout, not one per address
(guarded http and the RTSP relay alike)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from stream import guarded_http
from stream.errors import UnreachableSource
from stream.guarded_http import GuardedOpener, Timeouts
from stream.live_check import check_live
from stream.live_types import LiveConfig
from stream.probe import probe
from stream.rtsp_relay import RtspRelay
from stream.sampling import sample_frames
from stream.urls import NetworkPolicy
from tests.stream.clips import make_clip
from tests.stream.http_peers import Trickler

pytestmark = pytest.mark.reliability

LOOPBACK = NetworkPolicy(allowed_networks=["127.0.0.0/8"])
OPEN_S = 2.0
SLACK_S = 1.5
"""How much later than its limit a failure may come (thread start-up, FFmpeg's own work)."""


def _probe(url: str) -> object:
    return probe(url, timeout_s=OPEN_S, network_policy=LOOPBACK)


def _sample(url: str) -> object:
    """The sampling half of ``workers.service.check_video``: the first keyframe."""
    with contextlib.closing(
        sample_frames(url, mode="keyframes", size=(32, 32), timeout_s=OPEN_S, network_policy=LOOPBACK)
    ) as frames:
        return next(frames, None)


def _check_live(url: str) -> object:
    config = LiveConfig(open_timeout_s=OPEN_S, read_timeout_s=OPEN_S, network_policy=LOOPBACK)
    return check_live(url, config)


@pytest.mark.parametrize("where", ["body", "headers"])
@pytest.mark.parametrize("check", [_probe, _sample, _check_live], ids=["probe", "sample", "check_live"])
def test_a_trickling_server_fails_the_open_within_its_timeout(
    where: str, check: Callable[[str], object]
) -> None:
    with Trickler(where=where) as peer:
        t0 = time.monotonic()
        with pytest.raises(UnreachableSource, match=f"did not open within {OPEN_S:g} s"):
            check(peer.url("cam.mp4"))
        elapsed = time.monotonic() - t0
        assert peer.connections == 1
    assert OPEN_S - 0.1 <= elapsed < OPEN_S + SLACK_S, f"failed after {elapsed:.1f} s"


def _opened(peer: Trickler, timeouts: Timeouts) -> guarded_http._Body:
    """The body of ``peer``'s answer, read as after ``av.open`` returned."""
    body = GuardedOpener(peer.url(), LOOPBACK, timeouts)(peer.url(), 1, {})
    assert isinstance(body, guarded_http._Body)
    timeouts.opened()
    return body


def test_after_the_open_a_read_waits_the_read_timeout_for_its_next_byte() -> None:
    """Like FFmpeg's rw_timeout: a feed that keeps sending is read on; one that stops fails."""
    with Trickler(where="body", every_s=0.3) as sending:
        body = _opened(sending, Timeouts(5.0, 1.0))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:  # longer than the read timeout, one byte at a time
            assert body.read(4096)
        body.close()
    with Trickler(where="body", every_s=10.0) as silent:
        body = _opened(silent, Timeouts(5.0, 1.0))
        assert body.read(4096)  # the boxes sent at once
        t0 = time.monotonic()
        with pytest.raises(UnreachableSource, match=r"sent nothing for 1 s \(read timeout\)"):
            body.read(4096)
        assert time.monotonic() - t0 < 1.0 + SLACK_S
        body.close()


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small MP4 with its index first."""
    path = tmp_path_factory.mktemp("mp4") / "fast.mp4"
    return make_clip(path, seconds=2, fps=10, size=(160, 96), codec="libx264", faststart=True).read_bytes()


@pytest.mark.parametrize("check", [_sample, _check_live], ids=["sample", "check_live"])
def test_a_trickled_first_frame_is_still_within_the_open(mp4: bytes, check: Callable[[str], object]) -> None:
    """The index comes at once, the coded frames one byte per 0.5 s: FFmpeg reads the first frame while
    it opens (``avformat_find_stream_info``), so the open timeout bounds a one-shot check here too, and
    the per-read timeout after the open never has to."""
    with Trickler(where="media", media=mp4) as peer:
        t0 = time.monotonic()
        with pytest.raises(UnreachableSource, match=f"did not open within {OPEN_S:g} s"):
            check(peer.url("cam.mp4"))
        assert time.monotonic() - t0 < OPEN_S + SLACK_S


@contextlib.contextmanager
def _hanging(addresses: list[str]) -> Iterator[int]:
    """One port on which every one of ``addresses`` accepts no connection: each listener's queue is full
    (listen(0) and one connection never accepted), so a new connect waits until its timeout."""
    with contextlib.ExitStack() as stack:
        port = 0
        for address in addresses:
            listener = stack.enter_context(socket.socket())
            listener.bind((address, port))
            port = int(listener.getsockname()[1])
            listener.listen(0)
            filler = stack.enter_context(socket.create_connection((address, port), timeout=1))
            filler.setblocking(False)
        yield port


HANGING = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def test_connecting_to_every_address_takes_one_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host whose three addresses all hang: one open timeout in all, not one per address."""
    with _hanging(HANGING) as port:
        url = f"http://camera.test:{port}/cam.mjpg"
        monkeypatch.setattr(guarded_http, "check_network", lambda *_: tuple(HANGING))
        t0 = time.monotonic()
        with pytest.raises(UnreachableSource, match="did not open within 1 s"):
            GuardedOpener(url, LOOPBACK, Timeouts(1.0, 1.0))(url, 1, {})
        http_s = time.monotonic() - t0
        t0 = time.monotonic()
        with pytest.raises(UnreachableSource, match="no connection within 1 s"):
            RtspRelay(f"rtsp://camera.test:{port}/x", tuple(HANGING), 1.0, "rtsp://camera.test/x").__enter__()
        relay_s = time.monotonic() - t0
    assert http_s < 1.0 + SLACK_S and relay_s < 1.0 + SLACK_S, (http_s, relay_s)
