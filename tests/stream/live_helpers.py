"""Helpers for the live-source tests: wait for a condition, collect frames, number them as the hand-over
does, check their invariants."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from typing import TypeVar

from stream.feed import QueuedFeed
from stream.frames import Frame, RawFrame
from stream.timeline import number

T = TypeVar("T")


def wait_for(cond: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``cond`` every 20 ms for up to ``timeout_s``; its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def wait_until(cond: Callable[[], T], timeout_s: float, what: str) -> T:
    """Poll ``cond`` every 100 ms until it gives a truthy value, and return that value; fail the test
    (naming ``what``) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        time.sleep(0.1)


def collect(src: QueuedFeed, seconds: float) -> list[RawFrame]:
    """The frames ``src`` (a LiveSource or a TrackSource) gives during ``seconds``."""
    frames: list[RawFrame] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        frame = src.get(timeout_s=left)
        if frame is not None:
            frames.append(frame)
    return frames


def assert_well_formed(frames: list[Frame], first_seq: int = 0) -> None:
    """Contiguous seq from ``first_seq``, strictly increasing pts, recent wall times, RGB images."""
    assert [f.seq for f in frames] == list(range(first_seq, first_seq + len(frames)))
    assert all(b.pts > a.pts for a, b in itertools.pairwise(frames))
    assert all(f.wall_time is not None and abs(f.wall_time - time.time()) < 60 for f in frames)
    assert all(f.image.ndim == 3 and f.image.shape[2] == 3 for f in frames)


def numbered(frames: list[RawFrame], first_seq: int = 0) -> list[Frame]:
    """``frames`` numbered as the live reader's hand-over numbers them (``stream.timeline.number``):
    seq from ``first_seq``, pts the seconds they were shown after the first one."""
    if not frames:
        return []
    return number(frames, first_seq, -math.inf, origin_wall=frames[0].shown_wall)


def queued_before(src: QueuedFeed, taken: list[RawFrame]) -> int:
    """How many frames ``src`` queued before ``taken``, the last frames taken from it (once it stopped
    queueing): the seq the first of them gets."""
    return src.stats.frames_sampled - src.qsize() - len(taken)
