"""LiveSource on live HLS (ffmpeg writing a playlist, served by python -m http.server): frames arrive, are
sampled at ``fps`` per second of stream time although each segment is decoded in a burst, a healthy feed
is not taken for frozen between segments, and a reconnect after the HTTP server was cut skips the
segments FFmpeg's HLS demuxer replays."""

from __future__ import annotations

import itertools
import statistics

import pytest

from stream.frames import RawFrame
from stream.live import LiveSource
from stream.live_types import LiveConfig
from tests.stream.live_helpers import assert_well_formed, collect, numbered, wait_for
from tests.stream.live_peers import HlsProducer, StaticHttpServer

pytestmark = pytest.mark.integration

HLS = LiveConfig(
    fps=2,
    open_timeout_s=3,
    read_timeout_s=1,  # shorter than a segment: must not apply to HLS (a healthy read waits for the next)
    # FFmpeg reloads the playlist every segment length, then every half: a healthy read waits up to
    # about 1.5 segments.
    hls_read_timeout_s=2 * HlsProducer.SEGMENT_S + 1,
    backoff_initial_s=0.2,
    backoff_max_s=0.5,
)


def source_times(frames: list[RawFrame]) -> list[float]:
    times = [f.source_time for f in frames]
    assert all(t is not None for t in times), times
    return [t for t in times if t is not None]


def assert_sampled_in_stream_time(times: list[float]) -> None:
    """Strictly increasing source times, mostly 1/fps apart (0.5 s at fps=2)."""
    assert all(b > a for a, b in itertools.pairwise(times)), times
    steps = [b - a for a, b in itertools.pairwise(times)]
    assert 0.3 <= statistics.median(steps) <= 0.8, times


def test_hls_frames_carry_source_time(hls_server: StaticHttpServer) -> None:
    with LiveSource(hls_server.url("live.m3u8"), HLS) as src:
        assert wait_for(lambda: src.state == "live", 10), src.stats
        frames = collect(src, 2.5)
    assert len(frames) >= 2
    assert_well_formed(numbered(frames), first_seq=0)
    assert frames[0].image.shape == (96, 160, 3)
    assert_sampled_in_stream_time(source_times(frames))
    assert src.stats.frames_replayed == 0 and src.stats.gaps == ()


def test_hls_samples_fps_per_second_of_stream_time(hls_server: StaticHttpServer) -> None:
    """Each 2 s segment is decoded within milliseconds of appearing; the source still keeps about fps
    frames per second of stream (not one per segment), 1/fps apart in source time, and read_timeout_s
    (1 s, shorter than a segment) does not make the wait for the next segment a stall."""
    seconds = 6.0
    with LiveSource(hls_server.url("live.m3u8"), HLS) as src:
        assert wait_for(lambda: src.state == "live", 10), src.stats
        collect(src, 0.5)  # the opening burst: the playlist's last segments, decoded at once
        frames = collect(src, seconds)
        stats = src.stats
    expected = HLS.fps * seconds  # 12
    assert expected * 2 / 3 <= len(frames) <= HLS.fps * (seconds + 2 * HlsProducer.SEGMENT_S), (
        len(frames),
        source_times(frames),
    )
    assert_well_formed(numbered(frames), first_seq=0)
    assert_sampled_in_stream_time(source_times(frames))
    assert stats.gaps == () and stats.reconnects == 0 and stats.last_error is None, stats


def test_hls_reconnect_skips_replayed_segments(hls_server: StaticHttpServer) -> None:
    """The feed is cut until the source has noticed (the demuxer ends once the playlist stops loading)
    and a reopen was refused, then restored: the reopen starts three segments behind the playlist's end,
    so the segments read just before the cut are decoded again. The cut must stay shorter than about
    three segments (6 s), or the reopen starts past everything read and nothing is replayed."""
    with LiveSource(hls_server.url("live.m3u8"), HLS) as src:
        assert wait_for(lambda: src.state == "live", 10), src.stats
        before = collect(src, 2.5)
        hls_server.kill()
        assert wait_for(lambda: src.state == "reconnecting", HLS.hls_read_timeout_s + 1), src.stats
        assert wait_for(lambda: "could not be reached" in (src.stats.last_error or ""), 2), src.stats
        assert src.stats.frames_replayed == 0
        hls_server.start()
        assert wait_for(lambda: src.state == "live", 10), src.stats
        after = collect(src, 3.0)
        stats = src.stats
    assert stats.frames_replayed > 0, stats
    assert stats.reconnects == 1 and len(stats.gaps) == 1, stats
    frames = before + after
    assert_well_formed(numbered(frames), first_seq=0)
    assert_sampled_in_stream_time(source_times(frames))
    gap = stats.gaps[0]
    walls = [f.wall_time for f in frames if f.wall_time is not None]
    assert all(w <= gap.start_wall + 0.01 or w >= gap.end_wall - 0.01 for w in walls), (gap, walls)
    assert sum(w < gap.start_wall for w in walls) >= 2 and sum(w >= gap.end_wall for w in walls) >= 1
