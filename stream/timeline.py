"""The live timeline: one rule for the source times of a live feed, and the numbering of its frames.

A live source decodes frames whose source times (the decoder's own clock, ``frame.time``) may repeat (a
reopened HLS playlist replays the segments before its end), jump ahead (a reconnect that missed
segments) or go back (the producer restarted its clock). ``SourceTimeline.place`` says, once per decoded
frame and in decoding order, which of these it is: a "replay" (skip it), the "same" timeline, or a
"new" one. The three users of that answer share it:

- the replay filter: a "replay" is counted and skipped (``LiveStats.frames_replayed``);
- the stream-time sampler: ``sampled`` keeps about ``fps`` frames per second of source time, the
  targets restarting at the first frame of each new timeline;
- the wall-time clock: ``wall`` gives the Unix time a frame was shown, anchoring the source clock to
  the wall clock at the first frame of its timeline (a burst of frames decoded at once keeps its own
  spacing).

``number`` is the other half of the timeline: the live reader's hand-over (``workers.live_reader``) gives each
frame the stream's ``seq`` and ``pts`` (seconds since the stream was created) with it; sources never
number their frames.

Standard library only (and the frame types); knows nothing about PyAV, threads or Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from stream.frames import Frame, RawFrame
from stream.sampling import FrameSelector

JUMP_S = 2.0
"""A forward step in source time larger than this (seconds) between two decoded frames starts a new
timeline: segments were missed, so the sampler's targets and the wall-clock anchor restart there."""

MIN_PTS_STEP_S = 1e-3
"""The least step (seconds) between the ``pts`` of two consecutive frames of a stream (strictly increasing
across readers, even when the wall clock repeats or goes back)."""

Placement = Literal["replay", "same", "new"]
"""Where a decoded frame falls on the timeline: a replay of a time already passed, the next frame of the
current timeline, or the first frame of a new one."""


class SourceTimeline:
    """Replay and jump detection over the source times (seconds) of one live feed, across its reopens.

    It keeps the earliest and the latest time not replayed. For a frame at ``t``:

    - after the latest by at most ``jump_s``: "same" (it becomes the latest);
    - after the latest by more than ``jump_s``: "new" (a reconnect that missed segments; the earliest
      stays, so frames before the jump still read as replays);
    - at or before the latest, not before the earliest and at most ``replay_window_s`` behind the
      latest: "replay"; nothing changes;
    - before the earliest, or more than ``replay_window_s`` behind the latest: "new" (the producer
      restarted its clock): the earliest and the latest restart at ``t``.

    The first frame is "new". Use it only for sources that replay (HLS): an RTSP server restarts its
    clock at 0 on every session, which would read as replays. Limit: a producer restart that lands within
    ``replay_window_s`` of the latest time and not before the earliest is read as replays until its clock
    passes the latest time.

    ``sampled(t)`` and ``wall(t)`` apply to the frame just placed (not a replay).
    """

    def __init__(self, fps: float = 1.0, replay_window_s: float = 120.0, jump_s: float = JUMP_S) -> None:
        self._fps, self._window, self._jump = fps, replay_window_s, jump_s
        self._earliest: float | None = None
        self._latest: float | None = None
        self._anchor = (0.0, 0.0)  # (wall, source time) of the first frame of the current timeline
        self._select = FrameSelector(fps)

    def place(self, t: float, wall: float) -> Placement:
        """Place the frame at source time ``t``, decoded at Unix time ``wall``."""
        earliest, latest = self._earliest, self._latest
        if earliest is None or latest is None:
            return self._new(t, wall, restart=True)
        if t > latest:
            if t - latest > self._jump:
                return self._new(t, wall, restart=False)
            self._latest = t
            return "same"
        if earliest <= t and latest - t <= self._window:
            return "replay"
        return self._new(t, wall, restart=True)

    def _new(self, t: float, wall: float, restart: bool) -> Placement:
        if restart:
            self._earliest = t
        self._latest = t
        self._anchor = (wall, t)
        self._select = FrameSelector(self._fps)
        return "new"

    def sampled(self, t: float) -> bool:
        """Whether the frame just placed at ``t`` is kept: the first at or after each target 0, 1/fps,
        2/fps, ... seconds from the start of its timeline (``FrameSelector``)."""
        return self._select(t - self._anchor[1])

    def wall(self, t: float) -> float:
        """The Unix time the frame at source time ``t`` on the current timeline was shown."""
        anchor_wall, anchor_t = self._anchor
        return anchor_wall + (t - anchor_t)


def number(raw: Sequence[RawFrame], next_seq: int, last_pts: float, origin_wall: float) -> list[Frame]:
    """Number frames as a stream's hand-over does: ``seq`` from ``next_seq``, contiguous; ``pts`` the
    seconds from ``origin_wall`` (the stream's creation) to when the frame was shown (``shown_wall``),
    at least ``MIN_PTS_STEP_S`` after the previous frame's (``last_pts``, -inf for none); ``wall_time``
    the time it was shown."""
    frames = []
    for i, f in enumerate(raw):
        last_pts = max(f.shown_wall - origin_wall, last_pts + MIN_PTS_STEP_S)
        frames.append(
            Frame(
                seq=next_seq + i,
                pts=last_pts,
                image=f.image,
                keyframe=f.keyframe,
                wall_time=f.shown_wall,
                source_time=f.source_time,
            )
        )
    return frames
