"""LiveConfig validation, the reconnect backoff, and the read timeout a live URL is opened with (no peers,
milliseconds). The HLS replay filter and stream-time sampler are tested with the timeline
(test_stream_timeline.py)."""

from __future__ import annotations

import random

import pytest

from stream.live import live_input
from stream.live_types import Backoff, LiveConfig
from stream.urls import is_hls_url


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
