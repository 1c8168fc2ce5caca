"""The live timeline (no peers, milliseconds): one rule says whether a decoded frame's source time is a
replay, continues the timeline or starts a new one; the replay filter, the stream-time sampler and the
wall-time clock all follow it; and the hand-over's numbering."""

from __future__ import annotations

import math

import numpy as np

from stream.frames import RawFrame
from stream.timeline import SourceTimeline, number


def kept(f: SourceTimeline, times: list[float]) -> list[float]:
    """The times the replay filter lets through."""
    return [t for t in times if f.place(t, 0.0) != "replay"]


def test_replay_filter_skips_times_already_passed_across_reopens() -> None:
    f = SourceTimeline(replay_window_s=120)
    assert kept(f, [10.0, 10.1, 10.2, 10.3]) == [10.0, 10.1, 10.2, 10.3]
    # A reopen replays from 10.1: everything up to the latest (10.3, included) is skipped.
    assert kept(f, [10.1, 10.2, 10.3, 10.4, 10.5]) == [10.4, 10.5]
    # The earliest time itself is a replay too.
    assert kept(f, [10.0, 10.6]) == [10.6]


def test_replay_filter_producer_restart_before_the_earliest_time() -> None:
    f = SourceTimeline(replay_window_s=120)
    assert kept(f, [50.0, 50.1, 50.2]) == [50.0, 50.1, 50.2]
    # The producer restarted its clock at 1.4 (< 50.0): a new timeline, kept from its first frame.
    assert kept(f, [1.4, 1.5, 1.6]) == [1.4, 1.5, 1.6]
    # Replays are now judged on the new timeline.
    assert kept(f, [1.5, 1.6, 1.7]) == [1.7]


def test_replay_filter_producer_restart_far_behind_the_latest_time() -> None:
    f = SourceTimeline(replay_window_s=120)
    assert kept(f, [0.0, 300.0]) == [0.0, 300.0]
    assert kept(f, [180.0]) == []  # 120 s behind the latest: still a replay
    assert kept(f, [179.9, 180.0]) == [179.9, 180.0]  # more than 120 s behind: a new timeline
    assert kept(f, [180.0, 180.1]) == [180.1]


def ticks(start: float, count: int) -> list[float]:
    """Source times of ``count`` frames of a 10 fps stream from ``start`` (seconds)."""
    return [round(start + i / 10, 6) for i in range(count)]


def kept_by(select: SourceTimeline, times: list[float]) -> list[float]:
    """The times the stream-time sampler keeps (replays never reach it)."""
    return [t for t in times if select.place(t, 0.0) != "replay" and select.sampled(t)]


def test_stream_time_selector_keeps_fps_per_stream_second() -> None:
    select = SourceTimeline(fps=2)
    # 3 s of stream from an MPEG-TS clock starting at 1.4 (however fast the frames were decoded).
    assert kept_by(select, ticks(1.4, 30)) == [1.4, 1.9, 2.4, 2.9, 3.4, 3.9]
    assert kept_by(select, [4.3]) == []  # the same time again: dropped
    # A gap within the timeline (1.6 s, e.g. missed frames): the next target is kept, none repeated.
    assert kept_by(select, ticks(5.9, 11)) == [5.9, 6.4, 6.9]


def test_stream_time_selector_restarts_on_a_new_timeline() -> None:
    select = SourceTimeline(fps=2)
    assert kept_by(select, ticks(50.0, 10)) == [50.0, 50.5]
    # The producer restarted its clock: kept from its first frame, targets from there.
    assert kept_by(select, ticks(1.4, 11)) == [1.4, 1.9, 2.4]
    # A forward jump over JUMP_S (a reconnect that missed segments): restarts at that frame,
    # one frame per target after it, not a burst.
    assert kept_by(select, ticks(9.05, 11)) == [9.05, 9.55, 10.05]


class _Clock:
    """The wall-time clock as a source applies it to a decoded frame (source time, decode time)."""

    def __init__(self) -> None:
        self.timeline = SourceTimeline()

    def wall(self, f: RawFrame) -> float:
        if f.source_time is None:
            return f.wall_time
        assert self.timeline.place(f.source_time, f.wall_time) != "replay"
        return self.timeline.wall(f.source_time)


def _f(source_time: float | None, wall: float) -> RawFrame:
    return RawFrame(np.zeros((2, 2, 3), np.uint8), wall_time=wall, shown_wall=wall, source_time=source_time)


def test_hls_times_follow_the_stream_clock() -> None:
    clock = _Clock()
    # A burst: three segments' frames decoded within a few ms keep their own spacing.
    assert [clock.wall(_f(10.0 + i, 1000.0 + i * 0.001)) for i in range(4)] == [
        1000.0,
        1001.0,
        1002.0,
        1003.0,
    ]
    # A new timeline (the producer restarted: timestamps go back) re-anchors at the frame's wall time.
    assert clock.wall(_f(1.0, 1050.0)) == 1050.0 and clock.wall(_f(2.0, 1050.1)) == 1051.0
    # So does a jump ahead (a long outage), and a frame without a decoder time keeps its wall time.
    assert clock.wall(_f(500.0, 1200.0)) == 1200.0
    assert clock.wall(_f(None, 1300.0)) == 1300.0


def test_numbering_continues_the_stream() -> None:
    """seq continues the stream's; pts is the time shown since the origin, strictly increasing even when
    the time shown repeats or goes back (a new timeline, another reader's clock)."""
    raw = [
        RawFrame(np.zeros((2, 2, 3), np.uint8), wall_time=w + 0.5, shown_wall=w, source_time=t)
        for w, t in [(1010.0, 3.0), (1010.5, 3.5), (1010.5, None), (1009.0, 0.1)]
    ]
    frames = number(raw, next_seq=7, last_pts=9.0, origin_wall=1000.0)
    assert [f.seq for f in frames] == [7, 8, 9, 10]
    assert np.allclose([f.pts for f in frames], [10.0, 10.5, 10.501, 10.502], rtol=0, atol=1e-9)
    assert [f.wall_time for f in frames] == [1010.0, 1010.5, 1010.5, 1009.0]
    assert [f.source_time for f in frames] == [3.0, 3.5, None, 0.1]
    first = number(raw[:1], next_seq=0, last_pts=-math.inf, origin_wall=1000.0)[0]
    assert (first.seq, first.pts) == (0, 10.0)
