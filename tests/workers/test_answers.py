"""The answer channel: events in order, a redelivered task's restart made visible, cleanup."""

from __future__ import annotations

import threading

import pytest
import redis

from workers.answers import AnswerChannel, AnswerTimeout


def test_events_in_order_then_the_stream_is_deleted(fake_redis: redis.Redis) -> None:
    ch = AnswerChannel(fake_redis, "r1")
    ch.start()
    ch.piece("Hel")
    ch.piece("lo")
    ch.done(answer="Hello", tokens_used=3)
    events = list(AnswerChannel(fake_redis, "r1").events(timeout_s=1))
    assert [(e.kind, e.data.get("text")) for e in events] == [
        ("piece", "Hel"),
        ("piece", "lo"),
        ("done", None),
    ]
    assert events[-1].data["answer"] == "Hello"
    assert not fake_redis.exists(ch.key)


def test_a_redelivered_task_restarts_the_answer(fake_redis: redis.Redis) -> None:
    ch = AnswerChannel(fake_redis, "r2")
    ch.start()
    ch.piece("half an ans")  # the worker died here; the broker redelivered the task
    ch.start()
    ch.piece("whole answer")
    ch.done(answer="whole answer")
    kinds = [e.kind for e in AnswerChannel(fake_redis, "r2").events(timeout_s=1)]
    assert kinds == ["piece", "restart", "piece", "done"]


def test_silence_times_out_and_late_events_are_read(fake_redis: redis.Redis) -> None:
    ch = AnswerChannel(fake_redis, "r3")
    with pytest.raises(AnswerTimeout):
        list(ch.events(timeout_s=0.3, block_ms=50))
    timer = threading.Timer(0.2, lambda: (ch.start(), ch.error("empty_memory", "nothing yet")))
    timer.start()
    events = list(ch.events(timeout_s=5, block_ms=50))
    timer.join()
    assert [e.kind for e in events] == ["error"] and events[0].data["code"] == "empty_memory"


def test_a_reader_closed_early_cancels_the_request(fake_redis: redis.Redis) -> None:
    ch = AnswerChannel(fake_redis, "r4")
    ch.start()
    ch.piece("one")
    ch.piece("two")
    reader = AnswerChannel(fake_redis, "r4").events(timeout_s=5, block_ms=50)
    it = iter(reader)
    assert next(it).data["text"] == "one"
    assert not ch.cancelled()
    it.close()  # the client went away
    assert ch.cancelled() and not fake_redis.exists(ch.key)


def test_a_finished_or_timed_out_reader(fake_redis: redis.Redis) -> None:
    """A reader that saw the end cancels nothing; one that gave up waiting cancels the request."""
    ch = AnswerChannel(fake_redis, "r5")
    ch.start()
    ch.done(answer="x")
    assert [e.kind for e in ch.events(timeout_s=1)] == ["done"]
    assert not ch.cancelled()
    late = AnswerChannel(fake_redis, "r6")
    with pytest.raises(AnswerTimeout):
        list(late.events(timeout_s=0.2, block_ms=50))
    assert late.cancelled()
