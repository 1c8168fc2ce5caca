"""Time windows of questions: relative, from the start, now, absolute; live streams and videos."""

from __future__ import annotations

import math

import pytest

from workers.timewindow import BadWindow, Clock, bound, duration_s, window

LIVE = Clock(now=1_000_000.0, created_at=990_000.0, end=9_990.0, live=True)
VIDEO = Clock(now=1_000_000.0, created_at=990_000.0, end=60.0, live=False)


def test_durations() -> None:
    assert duration_s("10m") == 600
    assert duration_s("1h30m") == 5400
    assert duration_s("90s") == 90 and duration_s("250ms") == 0.25 and duration_s("2d") == 172_800
    assert duration_s("1.5h") == 5400
    for bad in ("", "10", "m", "10 m", "10x", "1h-5m", "-5m"):
        with pytest.raises(BadWindow):
            duration_s(bad)


def test_live_bounds_use_the_wall_clock() -> None:
    assert bound("-10m", LIVE) == 10_000 - 600  # now is stream time 10 000 s
    assert bound("now", LIVE) == 10_000
    assert bound("+5m", LIVE) == 300
    assert bound(995_000.0, LIVE) == 5_000
    assert bound(995_000, LIVE) == 5_000
    assert bound("995000", LIVE) == 5_000
    # 1970-01-12T13:46:40Z is Unix 1 000 000; an ISO time without a zone is UTC.
    assert bound("1970-01-12T13:46:40Z", LIVE) == 10_000
    assert bound("1970-01-12T13:46:40", LIVE) == 10_000
    assert bound("1970-01-12T14:46:40+01:00", LIVE) == 10_000


def test_video_bounds_are_relative_to_its_end() -> None:
    assert bound("-10s", VIDEO) == 50 and bound("now", VIDEO) == 60 and bound("+5s", VIDEO) == 5
    with pytest.raises(BadWindow, match="live stream"):
        bound("2026-11-21T10:00:00Z", VIDEO)
    with pytest.raises(BadWindow, match="live stream"):
        bound(1_700_000_000, VIDEO)


def test_windows() -> None:
    assert window(None, None, LIVE) is None
    assert window("-1m", None, LIVE) == (9_940, math.inf)
    assert window(None, "+1m", LIVE) == (-math.inf, 60)
    assert window("+1m", "+2m", LIVE) == (60, 120)
    with pytest.raises(BadWindow, match="later than"):
        window("-1m", "-2m", LIVE)
    for bad in ("yesterday", "10m", "-", "+", True, math.nan, "nan"):
        with pytest.raises(BadWindow):
            window(bad, None, LIVE)  # type: ignore[arg-type]
