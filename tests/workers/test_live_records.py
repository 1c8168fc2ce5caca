"""Live stream records: the fenced hand-over of frames (exactly-once reading), gaps, counters."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import redis

from stream.frames import Frame
from stream.live_types import Gap
from workers.frames import FrameStore
from workers.lease import Lease
from workers.live_records import LiveRecords, NotOwner
from workers.records import LIVE_FIELDS, Records, StreamRecord


def _frames(lo: int, n: int) -> list[Frame]:
    return [Frame(seq=q, pts=float(q), image=np.full((4, 4, 3), q, np.uint8), wall_time=100.0 + q)
            for q in range(lo, lo + n)]  # fmt: skip


@pytest.fixture
def live(fake_redis: redis.Redis) -> LiveRecords:
    records = Records(fake_redis)
    lr = LiveRecords(fake_redis, records, FrameStore(fake_redis, ttl_s=60))
    rec = StreamRecord("s1", "live", "cam", "rtsp://***@cam/x", "connecting", 1.0, 512, "fps", 100.0)
    lr.create(rec, "rtsp://user:secret@cam/x")
    return lr


def test_only_the_lease_holder_hands_frames_over(live: LiveRecords, fake_redis: redis.Redis) -> None:
    a = Lease(fake_redis, live.lease_key("s1"), ttl_s=5)
    assert a.try_acquire()
    key = live.dispatch("s1", a.token, _frames(0, 3))
    assert live.frames.get(key) is not None and live.frames.inflight("s1") == [key]
    assert live.status("s1").frames_sampled == 3 and live.status("s1").last_frame_wall == 102.0

    # Another reader without the lease cannot, nor can a stale holder once the lease moved on.
    with pytest.raises(NotOwner, match="lease"):
        live.dispatch("s1", "not-the-token", _frames(3, 1))
    fake_redis.delete(live.lease_key("s1"))
    b = Lease(fake_redis, live.lease_key("s1"), ttl_s=5)
    assert b.try_acquire()
    with pytest.raises(NotOwner):
        live.dispatch("s1", a.token, _frames(3, 1))

    # The new holder must continue the sequence exactly: no overlap, no hole.
    with pytest.raises(NotOwner, match="sequence"):
        live.dispatch("s1", b.token, _frames(2, 2))
    with pytest.raises(NotOwner, match="sequence"):
        live.dispatch("s1", b.token, _frames(4, 1))
    live.dispatch("s1", b.token, _frames(3, 2))
    assert live.status("s1").frames_sampled == 5
    assert [live.frames.seqs(k) for k in live.frames.inflight("s1")] == [range(0, 3), range(3, 5)]


def test_a_stopped_stream_takes_no_frames(live: LiveRecords, fake_redis: redis.Redis) -> None:
    a = Lease(fake_redis, live.lease_key("s1"), ttl_s=5)
    assert a.try_acquire()
    live.records.set_stream_state("s1", "stopped")
    with pytest.raises(NotOwner, match="stopped"):
        live.dispatch("s1", a.token, _frames(0, 1))
    assert live.status("s1").frames_sampled == 0


def test_a_deleted_stream_takes_no_frames(live: LiveRecords, fake_redis: redis.Redis) -> None:
    a = Lease(fake_redis, live.lease_key("s1"), ttl_s=5)
    assert a.try_acquire()
    live.dispatch("s1", a.token, _frames(0, 1))
    live.records.delete_stream("s1")
    with pytest.raises(NotOwner):
        live.dispatch("s1", a.token, _frames(1, 1))
    live.delete("s1")
    assert live.active() == [] and live.frames.inflight("s1") == []
    assert not fake_redis.exists(live.lease_key("s1"))


def test_counters_gaps_and_registry(live: LiveRecords) -> None:
    assert live.active() == ["s1"] and live.url("s1") == "rtsp://user:secret@cam/x"
    live.report("s1", owner="p1", increments={"frames_dropped": 2, "reconnects": 1},
                disconnected_since=150.0, last_error="boom")  # fmt: skip
    live.report("s1", owner="p2", increments={"frames_dropped": 3}, disconnected_since=None, last_error=None)
    st = live.status("s1")
    assert (st.frames_dropped, st.reconnects, st.owner, st.disconnected_since) == (5, 1, "p2", None)
    assert st.last_error == "boom" and st.heartbeat_at is not None
    with pytest.raises(ValueError):
        live.report("s1", owner="p", increments={"bogus": 1}, disconnected_since=None, last_error=None)

    for i in range(5):
        live.add_gap("s1", Gap(float(i), i + 0.5, f"r{i}"), keep=3)
    assert [g.reason for g in live.gaps("s1")] == ["r2", "r3", "r4"]
    assert [g.reason for g in live.gaps("s1", last=2)] == ["r3", "r4"]
    assert live.status("s1").gaps_total == 5
    live.retire("s1")
    assert live.active() == []


def test_the_stream_hash_holds_only_declared_fields(live: LiveRecords, fake_redis: redis.Redis) -> None:
    """``Records`` owns the stream hash: every field the live side writes is one of ``LIVE_FIELDS``."""
    a = Lease(fake_redis, live.lease_key("s1"), ttl_s=5)
    assert a.try_acquire()
    live.dispatch("s1", a.token, _frames(0, 2))
    counters = {"frames_dropped": 1, "frames_skipped": 1, "frames_replayed": 1, "reconnects": 1}
    live.report("s1", owner="p1", increments=counters, disconnected_since=150.0, last_error="boom",
                resolution=(640, 480))  # fmt: skip
    live.add_gap("s1", Gap(1.0, 2.0, "r"), keep=3)
    written = {k.decode() for k in fake_redis.hkeys(live.records.stream_key("s1"))}
    record = {f.name for f in fields(StreamRecord)}
    assert written - record == LIVE_FIELDS and not record & LIVE_FIELDS
    with fake_redis.pipeline() as p, pytest.raises(ValueError, match="bogus"):
        live.records.write_live(p, "s1", values={"bogus": 1})
    with pytest.raises(ValueError, match="bogus"):
        live.records.create_stream(StreamRecord("s2", "live", "c", "c", "connecting", 1.0, 512, "fps", 1.0),
                                   extra={"bogus": 1})  # fmt: skip
    assert not live.records.stream_exists("s2")


def test_a_place_given_up_registers_no_live_fields(live: LiveRecords, fake_redis: redis.Redis) -> None:
    rec = StreamRecord("s3", "live", "cam", "rtsp://cam/y", "connecting", 1.0, 512, "fps", 100.0)
    assert not live.create(rec, "rtsp://cam/y", reservation="r:gone")
    assert not fake_redis.exists(live.records.stream_key("s3")) and live.active() == ["s1"]


def test_kinds_and_tenants_of_listed_streams_leave_out_the_deleted(fake_redis: redis.Redis) -> None:
    records = Records(fake_redis)
    for sid, kind, tenant in (("a", "live", "acme"), ("b", "upload", "beta")):
        records.create_stream(
            StreamRecord(sid, kind, "n", "src", "live", 1.0, 512, "fps", 1.0, tenant=tenant)
        )
    records.delete_stream("b")
    assert records.kinds_and_tenants(["a", "b", "never"]) == {"a": ("live", "acme")}
