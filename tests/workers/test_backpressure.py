"""An ingest that waits for the encoders (at most ``WAITING_CHUNKS`` chunks in flight) sleeps in a blocking
Redis read: an encode's append wakes it at once, and it still renews its lease and sees a stop."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest

from workers import pipeline


class Lease:
    renewed = 0

    def renew(self) -> None:
        self.renewed += 1


def _runtime(state: dict[str, Any]) -> Any:
    return SimpleNamespace(
        settings=SimpleNamespace(encode_batch=4),
        redis=fakeredis.FakeRedis(server=fakeredis.FakeServer()),
        records=SimpleNamespace(stream=lambda sid: SimpleNamespace(state=state["state"])),
        memory=SimpleNamespace(next_seq=lambda sid: state["encoded"]),
    )


def test_an_encode_wakes_the_waiting_ingest_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "WAKE_S", 5.0)  # a poll would take this long to notice
    state = {"state": "running", "encoded": 0}
    rt, lease = _runtime(state), Lease()
    ahead = pipeline.WAITING_CHUNKS * 4  # as many frames as may wait: this chunk waits
    waiter = threading.Thread(target=pipeline._wait_for_encoders, args=(rt, "s1", ahead, lease))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive() and lease.renewed >= 1
    state["encoded"] = 4
    woken = time.monotonic()
    pipeline._encoded(rt, "s1")
    waiter.join(3)
    assert not waiter.is_alive() and time.monotonic() - woken < 1.0
    assert not rt.redis.exists(pipeline.encoded_key("s1"))  # the waiter took the mark


def test_marks_nobody_waits_for_stay_one_and_expire() -> None:
    rt = _runtime({"state": "running", "encoded": 0})
    for _ in range(5):
        pipeline._encoded(rt, "s1")
    key = pipeline.encoded_key("s1")
    assert rt.redis.llen(key) == 1 and 0 < rt.redis.ttl(key) <= pipeline.INGEST_LEASE_S


def test_a_stopped_stream_ends_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "WAKE_S", 0.05)
    state = {"state": "running", "encoded": 0}
    rt = _runtime(state)
    threading.Timer(0.2, lambda: state.update(state="stopped")).start()
    with pytest.raises(pipeline._Stopped):
        pipeline._wait_for_encoders(rt, "s1", pipeline.WAITING_CHUNKS * 4, Lease())  # type: ignore[arg-type]
