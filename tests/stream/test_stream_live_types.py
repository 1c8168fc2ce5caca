"""LiveConfig validation, the reconnect backoff and the HLS replay filter (no peers, milliseconds)."""

from __future__ import annotations

import random

import pytest

from stream.live_types import Backoff, LiveConfig, ReplayFilter


@pytest.mark.parametrize(
    "bad",
    [
        {"fps": 0},
        {"read_timeout_s": -1},
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
