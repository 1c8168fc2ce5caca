"""The live supervisor's own robustness (no peers needed): a failing beat does not end it, and HLS
frame times come from the stream's clock, not from when a burst was decoded."""

from __future__ import annotations

import time

import numpy as np
import redis

from stream.frames import Frame
from vidmem.settings import Settings
from workers.live import LiveSupervisor, SourceClock
from workers.runtime import Runtime


def test_a_failed_beat_is_retried(fake_redis: redis.Redis) -> None:
    rt = Runtime.create(Settings(redis_url=None, live_heartbeat_s=0.05), client=fake_redis)
    calls = []
    active = rt.live.active

    def flaky() -> list[str]:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise redis.ConnectionError("Redis went away for a moment")
        return active()

    rt.live.active = flaky  # type: ignore[method-assign]
    sup = LiveSupervisor(rt).start()
    try:
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(calls) >= 3 and sup.alive
    finally:
        sup.stop()
    assert not sup.alive


def _f(source_time: float | None, wall: float) -> Frame:
    return Frame(seq=0, pts=0.0, image=np.zeros((2, 2, 3), np.uint8), wall_time=wall, source_time=source_time)


def test_hls_times_follow_the_stream_clock() -> None:
    clock = SourceClock()
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
