"""Time windows of questions (``since`` / ``until``), turned into the stream's own time (slot ``t``).

A bound is one of:
  - a relative time, ``-10m``, ``-1h30m``, ``-90s``, ``-2d``: before *now* on a live stream (wall clock),
    before the last frame on a video;
  - an offset from the stream's start, ``+5m``, ``+0s``;
  - ``now``: now on a live stream, the last frame on a video;
  - an absolute time, ISO 8601 (``2026-11-21T10:00:00Z``; no zone means UTC) or Unix seconds (a number):
    only for streams with a wall clock (live streams).

Standard library only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from core.errors import VidmemError

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class BadWindow(VidmemError, ValueError):
    code = "bad_time_window"


@dataclass(frozen=True, slots=True)
class Clock:
    """What a bound is resolved against. Stream time is ``wall - created_at`` on live streams."""

    now: float  # Unix time now
    created_at: float  # Unix time of the stream's creation (stream time 0 on a live stream)
    end: float  # stream time of the last frame in the memory
    live: bool  # whether the stream's times are wall-clock times


def duration_s(text: str) -> float:
    """Seconds of ``1h30m``, ``90s``, ``250ms``, ``2d`` (parts in any order, at least one)."""
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise BadWindow(f"{text!r} is not a duration like 10m, 1h30m, 90s")
    return total


def bound(value: str | float, clock: Clock) -> float:
    """One bound, in stream time. Raises BadWindow."""
    if isinstance(value, bool):
        raise BadWindow("a time bound cannot be true or false")
    if isinstance(value, int | float):
        return _absolute(float(value), clock)
    text = value.strip()
    if text == "now":
        return clock.now - clock.created_at if clock.live else clock.end
    if text[:1] == "-":
        back = duration_s(text[1:])
        return (clock.now - clock.created_at if clock.live else clock.end) - back
    if text[:1] == "+":
        return duration_s(text[1:])
    try:
        return _absolute(float(text), clock)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadWindow(
            f"{value!r} is not a time: use -10m (relative), +5m (from the start), now, "
            "an ISO 8601 time or Unix seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _absolute(when.timestamp(), clock)


def _absolute(unix: float, clock: Clock) -> float:
    if not math.isfinite(unix):
        raise BadWindow("a time bound must be finite")
    if not clock.live:
        raise BadWindow("absolute times need a live stream; use -10m or +5m on a video")
    return unix - clock.created_at


def window(since: str | float | None, until: str | float | None, clock: Clock) -> tuple[float, float] | None:
    """(lo, hi) in stream time, or None for the whole stream. Raises BadWindow (also when lo > hi)."""
    if since is None and until is None:
        return None
    lo = bound(since, clock) if since is not None else -math.inf
    hi = bound(until, clock) if until is not None else math.inf
    if lo > hi:
        raise BadWindow("since is later than until")
    return lo, hi
