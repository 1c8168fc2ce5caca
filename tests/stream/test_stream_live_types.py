"""LiveConfig validation, the reconnect backoff, the HLS replay filter and stream-time sampler, and the
read timeout a live URL is opened with (no peers, milliseconds)."""

from __future__ import annotations

import random

import pytest

from stream.live import StreamTimeSelector, is_hls_url, live_input
from stream.live_types import Backoff, LiveConfig, ReplayFilter


@pytest.mark.parametrize(
    "bad",
    [
        {"fps": 0},
        {"read_timeout_s": -1},
        {"hls_read_timeout_s": 0},
        {"hls_read_timeout_s": float("inf")},
        {"backoff_initial_s": 2, "backoff_max_s": 1},
        {"jitter": 1.0},
        {"allowed_schemes": ("file",)},
        {"allowed_schemes": "rtsp"},
        {"queue_size": 0},
        {"skip_similar": -1.0},
        {"size": (0, 10)},
        {"replay_window_s": 0},
        {"replay_window_s": float("nan")},
    ],
)
def test_live_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LiveConfig(**bad)  # type: ignore[arg-type]


def test_backoff_doubles_up_to_the_cap_with_jitter_and_resets() -> None:
    b = Backoff(0.5, 4.0, 0.2, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(6)]
    for d, base in zip(delays, [0.5, 1, 2, 4, 4, 4], strict=True):
        assert 0.8 * base <= d <= 1.2 * base
    b.reset()
    assert 0.4 <= b.next_delay() <= 0.6


def kept(f: ReplayFilter, times: list[float]) -> list[float]:
    return [t for t in times if not f.is_replay(t)]


def test_replay_filter_skips_times_already_passed_across_reopens() -> None:
    f = ReplayFilter(window_s=120)
    assert kept(f, [10.0, 10.1, 10.2, 10.3]) == [10.0, 10.1, 10.2, 10.3]
    # A reopen replays from 10.1: everything up to the latest (10.3, included) is skipped.
    assert kept(f, [10.1, 10.2, 10.3, 10.4, 10.5]) == [10.4, 10.5]
    # The earliest time itself is a replay too.
    assert kept(f, [10.0, 10.6]) == [10.6]


def test_replay_filter_producer_restart_before_the_earliest_time() -> None:
    f = ReplayFilter(window_s=120)
    assert kept(f, [50.0, 50.1, 50.2]) == [50.0, 50.1, 50.2]
    # The producer restarted its clock at 1.4 (< 50.0): a new timeline, kept from its first frame.
    assert kept(f, [1.4, 1.5, 1.6]) == [1.4, 1.5, 1.6]
    # Replays are now judged on the new timeline.
    assert kept(f, [1.5, 1.6, 1.7]) == [1.7]


def test_replay_filter_producer_restart_far_behind_the_latest_time() -> None:
    f = ReplayFilter(window_s=120)
    assert kept(f, [0.0, 300.0]) == [0.0, 300.0]
    assert kept(f, [180.0]) == []  # 120 s behind the latest: still a replay
    assert kept(f, [179.9, 180.0]) == [179.9, 180.0]  # more than 120 s behind: a new timeline
    assert kept(f, [180.0, 180.1]) == [180.1]


def ticks(start: float, count: int) -> list[float]:
    """Source times of ``count`` frames of a 10 fps stream from ``start`` (seconds)."""
    return [round(start + i / 10, 6) for i in range(count)]


def kept_by(select: StreamTimeSelector, times: list[float]) -> list[float]:
    return [t for t in times if select(t)]


def test_stream_time_selector_keeps_fps_per_stream_second() -> None:
    select = StreamTimeSelector(fps=2)
    # 3 s of stream from an MPEG-TS clock starting at 1.4 (however fast the frames were decoded).
    assert kept_by(select, ticks(1.4, 30)) == [1.4, 1.9, 2.4, 2.9, 3.4, 3.9]
    assert kept_by(select, [4.3]) == []  # the same time again: dropped
    # A gap within the timeline (1.6 s, e.g. missed frames): the next target is kept, none repeated.
    assert kept_by(select, ticks(5.9, 11)) == [5.9, 6.4, 6.9]


def test_stream_time_selector_restarts_on_a_new_timeline() -> None:
    select = StreamTimeSelector(fps=2)
    assert kept_by(select, ticks(50.0, 10)) == [50.0, 50.5]
    # The producer restarted its clock: kept from its first frame, targets from there.
    assert kept_by(select, ticks(1.4, 11)) == [1.4, 1.9, 2.4]
    # A forward jump over TIMELINE_JUMP_S (a reconnect that missed segments): restarts at that frame,
    # one frame per target after it, not a burst.
    assert kept_by(select, ticks(9.05, 11)) == [9.05, 9.55, 10.05]


@pytest.mark.parametrize(
    ("url", "hls"),
    [
        ("http://cdn.example/live/index.m3u8", True),
        ("https://user:secret@cdn.example/LIVE.M3U8?token=secret#t=5", True),
        ("http://cdn.example/radio.m3u", True),
        ("http://cdn.example/watch?list=live.m3u8", False),  # only the path counts
        ("http://cam.example/video.mjpg", False),
        ("rtsp://user:secret@cam.example/stream", False),
    ],
)
def test_live_input_read_timeout_by_url(url: str, hls: bool) -> None:
    """An HLS playlist URL is opened with hls_read_timeout_s (a healthy read waits for the next
    segment); anything else with read_timeout_s. The open timeout is the same for both."""
    cfg = LiveConfig(open_timeout_s=4, read_timeout_s=1.5, hls_read_timeout_s=12)
    assert is_hls_url(url) is hls
    source = live_input(url, cfg)
    expected = 12 if hls else 1.5
    assert (source.open_timeout_s, source.timeout_s) == (4, expected)
    assert source.options["timeout"] == source.options["rw_timeout"] == str(round(expected * 1_000_000))
    assert ("rtsp_transport" in source.options) is url.startswith("rtsp:")
    assert "secret" not in source.shown
