"""Which gaps of a live stream a prompt names: those in the window asked about, the longest first,
the outage going on now included, in stream time."""

from __future__ import annotations

import time

import redis

from core.settings import Settings
from stream.live_types import Gap
from workers.pipeline import prompt_gaps
from workers.records import StreamRecord
from workers.runtime import Runtime


def test_prompt_gaps(fake_redis: redis.Redis) -> None:
    rt = Runtime.create(Settings(redis_url=None, prompt_max_gaps=3), client=fake_redis)
    c = time.time() - 1_000.0
    rt.live.create(StreamRecord("s", "live", "cam", "rtsp://cam", "live", 1.0, 512, "fps", c), "rtsp://cam")
    for a, b in [(10, 12), (20, 40), (50, 51), (60, 90), (100, 105)]:
        rt.live.add_gap("s", Gap(c + a, c + b, "stream ended"), keep=100)

    def gaps(lo: float, hi: float) -> list[tuple[float, float]]:
        return [(round(a, 3), round(b, 3)) for a, b in prompt_gaps(rt, "s", lo, hi)]

    assert gaps(0, 1e9) == [(20, 40), (60, 90), (100, 105)]  # the 3 longest, in time order
    assert gaps(0, 55) == [(10, 12), (20, 40), (50, 51)]  # only those in the window
    assert gaps(95, 1e9) == [(100, 105)]

    # An outage going on now ends now.
    since = time.time() - 30
    rt.live.report("s", owner="p", increments={}, disconnected_since=since, last_error="gone")
    ((a, b),) = gaps(200, 1e9)
    assert a == round(since - c, 3) and abs(a - 970) < 1 and abs(b - 1000) < 5

    # Videos have no gaps.
    rt.records.create_stream(StreamRecord("v", "upload", "clip", "clip.mp4", "done", 1.0, 512, "fps", c))
    assert prompt_gaps(rt, "v", 0, 1e9) == []
