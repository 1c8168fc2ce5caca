"""The live supervisor's own robustness (no peers needed): a failing beat does not end it, and a feed only
this process can read (a WebRTC track) survives Redis hiccups, hands over everything it queued, and ends
its stream. (That HLS frame times come from the stream's clock is tested with the timeline:
tests/stream/test_stream_timeline.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import redis

from core.settings import Settings
from stream.feed import QueuedFeed
from stream.frames import RawFrame
from workers import service
from workers.live import LiveSupervisor
from workers.runtime import Runtime
from workers.tenants import LOCAL_TENANT


class _Beating:
    """A stand-in reader: its heartbeat says alive, or raises (a bug); ``close`` is recorded."""

    def __init__(self, sid: str, bug: bool, closed: list[str]) -> None:
        self.sid, self.bug, self.closed = sid, bug, closed

    def heartbeat(self) -> bool:
        if self.bug:
            raise RuntimeError("a bug in this stream's reader")
        return True

    def close(self, release: bool) -> None:
        self.closed.append(self.sid)


def test_a_bug_in_one_readers_heartbeat_closes_that_reader_only(fake_redis: redis.Redis) -> None:
    rt = Runtime.create(Settings(redis_url=None), client=fake_redis)
    sup = LiveSupervisor(rt, claim=False)
    closed: list[str] = []
    sup.readers = {"ok": _Beating("ok", False, closed), "bad": _Beating("bad", True, closed)}  # type: ignore[dict-item]
    sup.tick()  # does not raise: the other streams go on
    assert list(sup.readers) == ["ok"]
    deadline = time.monotonic() + 5
    while closed != ["bad"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed == ["bad"]


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


class _Feed(QueuedFeed):
    """A FrameFeed the test fills by hand (as a WebRTC track would), and ends."""

    shown = "test feed"

    def __init__(self) -> None:
        super().__init__(queue_size=64)
        self.t0 = time.time()

    def start(self) -> _Feed:
        return self

    def stop(self) -> None:
        if self.state != "ended":
            self._update(state="stopped")
        self._finish()

    def push(self, n: int) -> None:
        for _ in range(n):
            seq = self.stats.frames_sampled
            wall = self.t0 + seq * 0.5
            self._update(state="live", last_frame_wall=wall)
            self._offer(RawFrame(np.zeros((4, 4, 3), np.uint8), wall_time=wall, shown_wall=wall))

    def end(self) -> None:
        self._update(state="ended", last_error="the browser closed the connection")
        self._finish()


def _wait(cond: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _webrtc_runtime(fake_redis: redis.Redis, **settings: Any) -> tuple[Runtime, list[tuple[Any, ...]]]:
    """An embedded runtime whose encode tasks are only recorded (no model): what was handed over."""
    rt = Runtime.create(
        Settings(redis_url=None, live_heartbeat_s=0.05, live_lease_s=0.5, encode_batch=4, **settings),
        client=fake_redis,
    )
    submitted: list[tuple[Any, ...]] = []
    rt.submit = lambda queue, *args: submitted.append((queue, *args))  # type: ignore[method-assign]
    return rt, submitted


def _handed_over(rt: Runtime, sid: str) -> list[int]:
    return sorted(seq for key in rt.frames.inflight(sid) for seq in rt.frames.seqs(key))


def test_an_adopted_feed_survives_a_failed_hand_over_and_an_expired_lease(fake_redis: redis.Redis) -> None:
    rt, submitted = _webrtc_runtime(fake_redis)
    sid = service.create_webrtc_stream(rt, LOCAL_TENANT)
    dispatch, failures = rt.live.dispatch, []

    def flaky(*args: Any, **kwargs: Any) -> str:
        if len(failures) < 2:  # Redis goes away twice, after the chunk was stored the first time
            failures.append(1)
            if len(failures) == 1:
                dispatch(*args, **kwargs)
            raise redis.ConnectionError("Redis went away for a moment")
        return dispatch(*args, **kwargs)

    rt.live.dispatch = flaky  # type: ignore[method-assign]
    feed = _Feed()
    sup = LiveSupervisor(rt, claim=False).start()
    try:
        sup.adopt(sid, feed)
        feed.push(4)
        _wait(lambda: rt.live.status(sid).frames_sampled >= 4, "the first chunk handed over")
        fake_redis.delete(rt.live.lease_key(sid))  # the lease expired during an outage: nobody else reads it
        time.sleep(0.3)
        feed.push(6)
        _wait(lambda: rt.live.status(sid).frames_sampled >= 8, "hand-over going on after the failures")
        assert sid in sup.readers and rt.records.stream(sid).state == "live"
        feed.end()
        _wait(lambda: rt.records.stream(sid).state == "done", "the stream done once the feed ended")
    finally:
        sup.stop()
    # The chunk whose queueing failed was queued again; no seq is handed over twice or skipped.
    seqs = _handed_over(rt, sid)
    assert seqs == sorted(set(seqs)) and seqs[:4] == [0, 1, 2, 3], seqs
    assert len(seqs) == rt.live.status(sid).frames_sampled
    assert {args[-1] for q, *args in submitted if q == "encode"} == set(rt.frames.inflight(sid))
    assert sid not in sup.readers and fake_redis.get(rt.live.lease_key(sid)) is None


def test_an_ended_feed_hands_over_its_queue_then_the_stream_is_done(fake_redis: redis.Redis) -> None:
    rt, _ = _webrtc_runtime(fake_redis)
    sid = service.create_webrtc_stream(rt, LOCAL_TENANT)
    feed = _Feed()
    feed.push(7)
    feed.end()  # the browser left with 7 frames still queued
    sup = LiveSupervisor(rt, claim=False).start()
    try:
        sup.adopt(sid, feed)
        _wait(lambda: rt.records.stream(sid).state == "done", "the stream done")
    finally:
        sup.stop()
    assert _handed_over(rt, sid) == list(range(7))
    assert rt.live.status(sid).last_error == "the browser closed the connection"


def test_a_deleted_webrtc_stream_stays_stopped(fake_redis: redis.Redis) -> None:
    rt, _ = _webrtc_runtime(fake_redis)
    sid = service.create_webrtc_stream(rt, LOCAL_TENANT)
    feed = _Feed()
    sup = LiveSupervisor(rt, claim=False).start()
    try:
        sup.adopt(sid, feed)
        feed.push(2)
        _wait(lambda: rt.live.status(sid).frames_sampled == 2, "frames handed over")
        service.delete_stream(rt, LOCAL_TENANT, sid, purge=False)
        _wait(lambda: feed.state == "stopped", "the reader closed its feed")
        _wait(lambda: sid not in sup.readers, "the reader gone")
    finally:
        sup.stop()
    assert rt.records.stream(sid).state == "stopped"


def test_a_bug_while_judging_a_failed_hand_over_ends_the_reader(
    fake_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug where the reader asks whether its stream is over does not read as "not over" (retrying
    every second forever): the reader fails, logged, and the feed's stream ends."""
    rt, _ = _webrtc_runtime(fake_redis)
    sid = service.create_webrtc_stream(rt, LOCAL_TENANT)
    reader_thread = f"vidmem-live-{sid[:8]}"

    def down(*args: Any, **kwargs: Any) -> str:
        raise redis.ConnectionError("Redis went away for a moment")

    def buggy(stream_id: str) -> Any:
        if threading.current_thread().name == reader_thread:
            raise RuntimeError("a bug in the reader")
        return stream(stream_id)

    stream = rt.records.stream
    rt.live.dispatch = down  # type: ignore[method-assign]
    rt.records.stream = buggy  # type: ignore[method-assign]
    feed = _Feed()
    feed.push(2)  # queued before the reader starts: its first hand-over fails at once
    sup = LiveSupervisor(rt, claim=False).start()
    try:
        sup.adopt(sid, feed)
        _wait(
            lambda: sid not in sup.readers and stream(sid).state == "done", "the reader gone, its stream done"
        )
    finally:
        sup.stop()
    assert feed.state == "stopped"
    assert "reader failed (a bug)" in caplog.text and "a bug in the reader" in caplog.text
