"""GuardedOpener (every HTTP request of a client's http(s) URL checked by a NetworkPolicy) against real
loopback servers: what it sends and refuses, range requests for seeking (an MP4 with its index at the end),
a live MJPEG feed, and a live HLS feed read through it, cut and restored."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stream.av_input import open_video, resolve
from stream.errors import ForbiddenUrl, UnreachableSource
from stream.guarded_http import AVIO_FLAG_WRITE, GuardedOpener, Timeouts
from stream.live import LiveSource
from stream.live_types import LiveConfig
from stream.urls import DEFAULT_NETWORK_POLICY, NetworkPolicy
from tests.stream.clips import make_clip
from tests.stream.http_peers import far_index, web_peer
from tests.stream.live_helpers import assert_well_formed, collect, numbered, wait_for
from tests.stream.live_peers import HlsProducer, MjpegServer, StaticHttpServer
from tests.stream.servers import QuietServer, RangeFiles, in_thread

LOOPBACK_ONE = NetworkPolicy(allowed_networks=["127.0.0.1/32"])


def five_s() -> Timeouts:
    """Fresh limits of 5 s (open and read) for one opener."""
    return Timeouts(5.0, 5.0)


class _Recorder(RangeFiles):
    """Files of a directory (byte ranges served); every request's path and headers are recorded; ``/moved``
    redirects."""

    log: list[tuple[str, dict[str, str]]]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.log.append((self.path, dict(self.headers)))
        if self.path == "/moved":
            self.send_response(301)
            self.send_header("Location", "/a.bin")
            self.end_headers()
            return
        super().do_GET()


@contextmanager
def recorder(root: Path) -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    log: list[tuple[str, dict[str, str]]] = []
    handler = type("Handler", (_Recorder,), {"log": log})
    with in_thread(QuietServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))) as base:
        yield base, log


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    (tmp_path / "a.bin").write_bytes(bytes(range(256)) * 4)
    with recorder(tmp_path) as served:
        yield served


def test_reads_a_body_asking_like_ffmpeg(site: tuple[str, list[tuple[str, dict[str, str]]]]) -> None:
    """The whole resource is asked for as ``Range: bytes=0-``, credentials only once the server asks."""
    base, log = site
    opener = GuardedOpener(f"{base}/x.m3u8", LOOPBACK_ONE, five_s())
    body = opener(f"http://user:p%40ss@{base.removeprefix('http://')}/a.bin", 1, {})
    data = b"".join(iter(lambda: body.read(100), b""))
    body.close()
    assert data == bytes(range(256)) * 4
    path, headers = log[-1]
    assert path == "/a.bin" and "Authorization" not in headers and headers["Range"] == "bytes=0-"
    assert headers["Host"] == base.removeprefix("http://")
    segment = opener(f"{base}/a.bin", 1, {"offset": "10", "end_offset": "20"})
    assert log[-1][1]["Range"] == "bytes=10-19" and not segment.seekable()
    segment.close()


def test_a_body_with_ranges_seeks_by_range_requests(tmp_path: Path) -> None:
    """A seek only moves the position; a far read asks for a range (same address), a near one reads on."""
    big = bytes(range(256)) * 4096  # 1 MiB
    (tmp_path / "big.bin").write_bytes(big)
    with recorder(tmp_path) as (base, log):
        body = GuardedOpener(f"{base}/big.bin", LOOPBACK_ONE, five_s())(f"{base}/big.bin", 1, {})
        end = len(big)
        assert body.seekable() and body.seek(-24, 2) == end - 24 and body.tell() == end - 24
        assert len(log) == 1  # a seek alone asks for nothing (FFmpeg's size probe seeks to the end and back)
        assert body.read(100) == big[-24:] and log[-1][1]["Range"] == f"bytes={end - 24}-"
        assert body.seek(-1000, 1) == end - 1000 and body.read(4) == big[-1000:-996]
        assert log[-1][1]["Range"] == f"bytes={end - 1000}-"
        assert body.seek(100, 1) == end - 896 and body.read(4) == big[-896:-892] and len(log) == 3
        assert body.seek(2 * end, 0) == 2 * end and body.read(10) == b"" and len(log) == 3
        assert body.seek(-1, 0) < 0
        body.close()


def test_refusals_and_errors(site: tuple[str, list[tuple[str, dict[str, str]]]]) -> None:
    base, log = site
    with pytest.raises(ForbiddenUrl, match="is refused"):  # the policy: 127.0.0.1 is loopback
        GuardedOpener(f"{base}/x.m3u8", DEFAULT_NETWORK_POLICY, five_s())(f"{base}/a.bin", 1, {})
    for url, flags in [
        (f"{base.replace('http:', 'https:')}/a.bin", 1),  # another scheme than the playlist's
        ("file:///etc/passwd", 1),
        ("crypto+http://127.0.0.1/a.ts", 1),
        (f"{base}/a.bin", AVIO_FLAG_WRITE),
        (f"{base}/moved", 1),  # redirects are not followed
    ]:
        with pytest.raises(ForbiddenUrl):
            GuardedOpener(f"{base}/x.m3u8", LOOPBACK_ONE, five_s())(url, flags, {})
    assert [p for p, _ in log] == ["/moved"]
    opener = GuardedOpener(f"{base}/x.m3u8", LOOPBACK_ONE, five_s())
    with pytest.raises(UnreachableSource, match="HTTP 404"):
        opener(f"{base}/missing.ts", 1, {})
    # After a failure the container gets empty bodies, without requests: the error surfaces once.
    assert opener(f"{base}/a.bin", 1, {}).read(10) == b""
    assert [p for p, _ in log] == ["/moved", "/missing.ts"]
    assert isinstance(opener.failed, UnreachableSource)


def test_closed_port_is_unreachable(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/live.m3u8"
    with pytest.raises(UnreachableSource, match="could not be reached"):
        GuardedOpener(url, LOOPBACK_ONE, Timeouts(2.0, 2.0))(url, 1, {})


def test_an_mp4_with_its_index_at_the_end_is_read_through_the_guard(tmp_path: Path) -> None:
    """The moov box after the media: FFmpeg seeks to it and back; every frame decodes, over range requests."""
    clip = make_clip(tmp_path / "late.mp4", seconds=4, fps=10, size=(160, 96), codec="libx264")
    data = clip.read_bytes()
    assert data.index(b"moov") > data.index(b"mdat")
    with recorder(tmp_path) as (base, log):
        source = resolve(f"{base}/late.mp4", timeout_s=5.0, network_policy=LOOPBACK_ONE)
        with open_video(source) as (container, stream):
            frames = sum(1 for _ in container.decode(stream))
    assert frames == 40
    ranges = [headers.get("Range") for _, headers in log]
    assert ranges[0] == "bytes=0-" and len(ranges) >= 2 and all(r is not None for r in ranges[1:]), ranges


def test_an_mp4_on_a_server_that_does_not_announce_ranges_is_read_by_ranges(tmp_path: Path) -> None:
    """Like FFmpeg: the first request asks ``Range: bytes=0-``, and a 206 with the size in its
    ``Content-Range`` makes the body seekable, ``Accept-Ranges`` or not (the index at the end is reached)."""
    far_index(make_clip(tmp_path / "late.mp4", seconds=4, fps=10, size=(160, 96), codec="libx264"))
    with web_peer(tmp_path, accept_ranges=False) as peer:
        body = GuardedOpener(peer.url("late.mp4"), LOOPBACK_ONE, five_s())(peer.url("late.mp4"), 1, {})
        assert body.seekable()
        body.close()
        source = resolve(peer.url("late.mp4"), timeout_s=5.0, network_policy=LOOPBACK_ONE)
        with open_video(source) as (container, stream):
            frames = sum(1 for _ in container.decode(stream))
    assert frames == 40
    ranges = [span for _, span in peer.seen]
    assert ranges[:2] == ["bytes=0-", "bytes=0-"] and len(ranges) >= 4 and None not in ranges, ranges


@pytest.mark.integration
def test_live_mjpeg_through_the_guard(mjpeg_server: MjpegServer) -> None:
    """An endless multipart body, read forward only (it has no length), gives frames."""
    config = LiveConfig(fps=2, open_timeout_s=5, read_timeout_s=3, network_policy=LOOPBACK_ONE)
    with LiveSource(mjpeg_server.url, config) as src:
        assert wait_for(lambda: src.state == "live", 10), src.stats
        frames = collect(src, 2.0)
    assert len(frames) >= 2 and frames[0].image.shape[2] == 3


GUARDED_HLS = LiveConfig(
    fps=2,
    open_timeout_s=3,
    read_timeout_s=1,
    hls_read_timeout_s=2 * HlsProducer.SEGMENT_S + 1,
    backoff_initial_s=0.2,
    backoff_max_s=0.5,
    network_policy=LOOPBACK_ONE,
)


@pytest.mark.integration
def test_live_hls_through_the_guard_survives_a_cut(hls_server: StaticHttpServer) -> None:
    """Live HLS read with every playlist reload and segment fetched by the GuardedOpener: frames come, a
    cut server is noticed and named, and the feed comes back when the server does."""
    with LiveSource(hls_server.url("live.m3u8"), GUARDED_HLS) as src:
        assert wait_for(lambda: src.state == "live", 10), src.stats
        before = collect(src, 2.5)
        hls_server.kill()
        assert wait_for(lambda: src.state == "reconnecting", GUARDED_HLS.hls_read_timeout_s + 1), src.stats
        assert wait_for(lambda: "could not be reached" in (src.stats.last_error or ""), 3), src.stats
        hls_server.start()
        assert wait_for(lambda: src.state == "live", 10), src.stats
        after = collect(src, 3.0)
        stats = src.stats
    assert len(before) >= 2 and len(after) >= 1, (before, after)
    assert stats.reconnects == 1 and len(stats.gaps) == 1, stats
    assert_well_formed(numbered(before + after), first_seq=0)


@pytest.mark.integration
def test_live_hls_on_a_forbidden_network_never_starts(hls_server: StaticHttpServer) -> None:
    """The default policy refuses the loopback playlist at every attempt; the reason is kept."""
    with LiveSource(hls_server.url("live.m3u8"), LiveConfig(network_policy=DEFAULT_NETWORK_POLICY)) as src:
        assert wait_for(lambda: "is refused" in (src.stats.last_error or ""), 5), src.stats
        assert src.state == "connecting" and src.get(0.5) is None
