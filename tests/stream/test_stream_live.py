"""LiveSource against real peers on loopback: an RTSP server (killed, restarted, frozen) and HTTP MJPEG."""

from __future__ import annotations

import logging
import signal
import time

import pytest

from stream.errors import ForbiddenUrl
from stream.live import LiveSource
from stream.live_types import LiveConfig
from tests.stream.live_helpers import assert_well_formed, collect, numbered, queued_before, wait_for
from tests.stream.live_peers import MjpegServer, RtspServer

pytestmark = pytest.mark.integration

FAST = LiveConfig(
    fps=2, open_timeout_s=3, read_timeout_s=2, backoff_initial_s=0.2, backoff_max_s=1.0, jitter=0.2
)


def test_rtsp_frames_arrive_at_fps(rtsp_server: RtspServer) -> None:
    with LiveSource(rtsp_server.url, FAST) as src:
        assert wait_for(lambda: src.state == "live", 10), src.stats
        raw = collect(src, 3.0)
        assert src.state == "live"
    frames = numbered(raw, first_seq=queued_before(src, raw))
    assert 4 <= len(frames) <= 8, [f.pts for f in frames]
    assert_well_formed(frames, first_seq=frames[0].seq)
    assert frames[0].seq <= 2  # at most the frames of the wait above came before
    assert frames[0].image.shape == (96, 160, 3)
    # FFmpeg's RTSP client gives the very first frame of a session no timestamp.
    assert all(f.source_time is not None for f in frames if f.seq > 0)
    assert src.stats.state == "stopped"
    assert src.stats.gaps == () and src.stats.reconnects == 0


def test_rtsp_server_killed_and_restarted(rtsp_server: RtspServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = rtsp_server.url.replace("rtsp://", "rtsp://user:secret@")
    with LiveSource(url, FAST) as src:
        assert wait_for(lambda: src.state == "live", 10), src.stats
        raw_before = collect(src, 1.5)
        rtsp_server.kill()
        assert wait_for(lambda: src.state == "reconnecting", FAST.read_timeout_s + 1), src.stats
        assert src.stats.disconnected_since is not None
        time.sleep(2.0)
        assert src.state == "reconnecting" and src.stats.reconnects == 0
        rtsp_server.start()
        assert wait_for(lambda: src.state == "live", 15), src.stats
        raw_after = collect(src, 1.5)
        stats = src.stats
    frames = numbered(raw_before + raw_after)
    before, after = frames[: len(raw_before)], frames[len(raw_before) :]
    assert len(before) >= 2 and len(after) >= 2
    assert_well_formed(frames, first_seq=before[0].seq)
    assert len({f.pts for f in frames}) == len(frames)
    assert stats.reconnects == 1 and len(stats.gaps) == 1, stats
    assert stats.frames_replayed == 0  # only HLS is de-duplicated: the new session's clock restarted
    gap = stats.gaps[0]
    assert gap.start_wall < gap.end_wall
    assert gap.end_wall - gap.start_wall >= 2.0
    assert before[-1].wall_time is not None and after[0].wall_time is not None
    assert before[-1].wall_time <= gap.start_wall + 0.01 and gap.end_wall <= after[0].wall_time + 0.01
    assert after[0].pts - before[-1].pts >= 2.0  # the gap shows in the timeline
    assert stats.disconnected_since is None
    assert "secret" not in repr(stats) and "secret" not in src.shown
    assert "secret" not in caplog.text


def test_rtsp_server_frozen_is_detected(rtsp_server: RtspServer) -> None:
    with LiveSource(rtsp_server.url, FAST) as src:
        assert wait_for(lambda: src.state == "live", 10), src.stats
        collect(src, 1.0)
        rtsp_server.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            assert wait_for(lambda: src.state == "reconnecting", FAST.read_timeout_s + 2), src.stats
            detected_after = time.monotonic() - frozen_at
            assert detected_after <= FAST.read_timeout_s + 1.5
            assert src.stats.disconnected_since is not None and src.stats.last_error
            started = time.monotonic()
            src.stop()
            assert time.monotonic() - started <= FAST.open_timeout_s + FAST.read_timeout_s + 1
        finally:
            rtsp_server.signal(signal.SIGCONT)
    assert src.state == "stopped"
    assert src.stats.gaps == ()  # the gap never closed


def test_http_mjpeg(mjpeg_server: MjpegServer) -> None:
    with LiveSource(mjpeg_server.url, FAST) as src:
        assert wait_for(lambda: src.state == "live", 10), src.stats
        frames = numbered(collect(src, 2.0))
    assert 2 <= len(frames) <= 6
    assert_well_formed(frames, first_seq=frames[0].seq)
    assert frames[0].image.shape == (96, 160, 3)


def test_unreachable_source_keeps_retrying(closed_port: int) -> None:
    cfg = LiveConfig(open_timeout_s=1, read_timeout_s=1, backoff_initial_s=0.1, backoff_max_s=0.3)
    src = LiveSource(f"rtsp://user:secret@127.0.0.1:{closed_port}/test", cfg).start()
    try:
        assert wait_for(lambda: src.stats.last_error is not None, 5)
        time.sleep(1.0)
        stats = src.stats
        assert stats.state == "connecting" and stats.frames_sampled == 0 and stats.gaps == ()
        assert stats.last_error is not None and "could not be reached" in stats.last_error
        assert "secret" not in repr(stats)
        assert src.get(timeout_s=0.1) is None
    finally:
        started = time.monotonic()
        src.stop()
    assert time.monotonic() - started < 2.5
    assert src.state == "stopped"
    assert src.get() is None  # no frame, and get() no longer waits


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "concat:/etc/passwd|/etc/hosts",
        "subfile,,start,0,end,100,,:/etc/passwd",
        "data:video/mp4;base64,AAAA",
        "/etc/passwd",
        "rtmp://127.0.0.1/live",
        "rtsp://user:secret@127.0.0.1 x/test",
    ],
)
def test_forbidden_urls_are_refused_at_construction(url: str) -> None:
    with pytest.raises(ForbiddenUrl) as info:
        LiveSource(url, FAST)
    assert "secret" not in str(info.value)


def test_slow_consumer_drops_new_frames(rtsp_server: RtspServer) -> None:
    cfg = LiveConfig(fps=50, read_timeout_s=2, queue_size=2)
    with LiveSource(rtsp_server.url, cfg) as src:
        assert wait_for(lambda: src.stats.frames_dropped >= 3, 10), src.stats
        sizes = []
        for _ in range(20):
            sizes.append(src.qsize())
            time.sleep(0.02)
        stats = src.stats
        assert stats.frames_sampled == 2 and max(sizes) <= 2
        taken = [f for f in (src.get(0.1), src.get(0.1)) if f is not None]
    kept = numbered(taken, first_seq=queued_before(src, taken))
    assert [f.seq for f in kept if f is not None] == [0, 1]


def test_skip_similar(rtsp_server: RtspServer) -> None:
    cfg = LiveConfig(fps=5, read_timeout_s=2, skip_similar=1000.0)  # every frame counts as "similar"
    with LiveSource(rtsp_server.url, cfg) as src:
        assert wait_for(lambda: src.stats.frames_skipped_similar >= 3, 10), src.stats
        assert src.stats.frames_sampled == 1
