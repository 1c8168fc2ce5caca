"""LiveSource on live HLS (ffmpeg writing a playlist, served by python -m http.server): frames arrive, and a
reconnect after the HTTP server was cut skips the segments FFmpeg's HLS demuxer replays."""

from __future__ import annotations

import itertools

import pytest

from stream.frames import Frame
from stream.live import LiveSource
from stream.live_types import LiveConfig
from tests.stream.live_helpers import assert_well_formed, collect, wait_for
from tests.stream.live_peers import HlsProducer, StaticHttpServer

pytestmark = pytest.mark.integration

HLS = LiveConfig(
    fps=2,
    open_timeout_s=3,
    read_timeout_s=HlsProducer.SEGMENT_S + 1,  # a healthy read waits up to one segment for the next
    backoff_initial_s=0.2,
    backoff_max_s=0.5,
)


def source_times(frames: list[Frame]) -> list[float]:
    times = [f.source_time for f in frames]
    assert all(t is not None for t in times), times
    return [t for t in times if t is not None]


def test_hls_frames_carry_source_time(hls_server: StaticHttpServer) -> None:
    with LiveSource(hls_server.url("live.m3u8"), HLS) as src:
        assert wait_for(lambda: src.state == "live", 10), src.stats
        frames = collect(src, 2.5)
    assert len(frames) >= 2
    assert_well_formed(frames, first_seq=frames[0].seq)
    assert frames[0].image.shape == (96, 160, 3)
    times = source_times(frames)
    assert all(b > a for a, b in itertools.pairwise(times)), times
    assert src.stats.frames_replayed == 0 and src.stats.gaps == ()


def test_hls_reconnect_skips_replayed_segments(hls_server: StaticHttpServer) -> None:
    """The feed is cut until the source has noticed (the demuxer ends once the playlist stops loading)
    and a reopen was refused, then restored: the reopen starts three segments behind the playlist's end,
    so the segments read just before the cut are decoded again. The cut must stay shorter than about
    three segments (6 s), or the reopen starts past everything read and nothing is replayed."""
    with LiveSource(hls_server.url("live.m3u8"), HLS) as src:
        assert wait_for(lambda: src.state == "live", 10), src.stats
        before = collect(src, 2.5)
        hls_server.kill()
        assert wait_for(lambda: src.state == "reconnecting", HLS.read_timeout_s + 1), src.stats
        assert wait_for(lambda: "could not be reached" in (src.stats.last_error or ""), 2), src.stats
        assert src.stats.frames_replayed == 0
        hls_server.start()
        assert wait_for(lambda: src.state == "live", 10), src.stats
        after = collect(src, 3.0)
        stats = src.stats
    assert stats.frames_replayed > 0, stats
    assert stats.reconnects == 1 and len(stats.gaps) == 1, stats
    frames = before + after
    assert_well_formed(frames, first_seq=before[0].seq)
    times = source_times(frames)
    assert all(b > a for a, b in itertools.pairwise(times)), times
    gap = stats.gaps[0]
    walls = [f.wall_time for f in frames if f.wall_time is not None]
    assert all(w <= gap.start_wall + 0.01 or w >= gap.end_wall - 0.01 for w in walls), (gap, walls)
    assert sum(w < gap.start_wall for w in walls) >= 2 and sum(w >= gap.end_wall for w in walls) >= 1
