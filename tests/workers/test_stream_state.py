"""``workers.stream_state``: a stream's public state from its record, its live status and the time, as a
table of cases without Redis; then the view over fakeredis, where frames flowing again after an outage
make the stream "live" before its reader's next heartbeat."""

from __future__ import annotations

import time

import numpy as np
import pytest
import redis

from core.settings import Settings
from stream.frames import Frame
from workers import service
from workers.lease import Lease
from workers.live_records import LiveStatus
from workers.records import StreamRecord, StreamState
from workers.runtime import Runtime
from workers.stream_state import API_PROCESS_GONE, NO_INGEST, PublicState, public_state, reader_gone

LEASE_S = 3.0
CREATED = 1000.0


def _rec(kind: str, state: StreamState) -> StreamRecord:
    return StreamRecord("s1", kind, "n", "src", state, 1.0, 512, "fps", CREATED)


LIVE = [
    # (case, kind, record state, live status, now, expected)
    ("live as written", "live", "live",
     LiveStatus(frames_sampled=9, last_frame_wall=1009.5, heartbeat_at=1010.0), 1011.0, PublicState("live")),
    ("reconnecting as written", "live", "reconnecting",
     LiveStatus(frames_sampled=9, last_frame_wall=1004.0, disconnected_since=1005.0, heartbeat_at=1010.0),
     1011.0, PublicState("reconnecting", 1005.0)),
    ("a frame read after the last report ends the outage", "live", "reconnecting",
     LiveStatus(frames_sampled=10, last_frame_wall=1010.5, disconnected_since=1005.0, heartbeat_at=1010.0),
     1011.0, PublicState("live")),
    ("a frame read before the outage, handed over late, does not", "live", "reconnecting",
     LiveStatus(frames_sampled=10, last_frame_wall=1004.5, disconnected_since=1005.0, heartbeat_at=1010.0),
     1011.0, PublicState("reconnecting", 1005.0)),
    ("HLS: a frame shown after the last report but decoded before the outage does not", "live",
     "reconnecting", LiveStatus(frames_sampled=10, last_frame_wall=1010.5, last_read_wall=1004.5,
                                disconnected_since=1005.0, heartbeat_at=1010.0),
     1011.0, PublicState("reconnecting", 1005.0)),
    ("a taking-over reader: the old reader's frames do not make it live", "live", "reconnecting",
     LiveStatus(frames_sampled=10, last_frame_wall=1004.0, heartbeat_at=1010.0), 1011.0,
     PublicState("reconnecting")),
    ("a reader that took the stream over is opening it: reconnecting", "live", "connecting",
     LiveStatus(frames_sampled=10, last_frame_wall=1004.0, heartbeat_at=1010.0), 1011.0,
     PublicState("reconnecting")),
    ("a first frame before the first report", "webrtc", "connecting",
     LiveStatus(frames_sampled=1, last_frame_wall=1000.5), 1001.0, PublicState("live")),
    ("connecting, no frame yet", "live", "connecting", LiveStatus(), 1001.0, PublicState("connecting")),
    ("a camera nobody reads yet", "live", "connecting", LiveStatus(), 1007.0,
     PublicState("connecting", reader_gone=True, reason=NO_INGEST)),
    ("a camera whose ingest processes are gone", "live", "live",
     LiveStatus(frames_sampled=5, last_frame_wall=1010.0, heartbeat_at=1010.0), 1016.5,
     PublicState("reconnecting", reader_gone=True, reason=NO_INGEST)),
    ("gone wins over frames newer than the last beat", "live", "reconnecting",
     LiveStatus(frames_sampled=5, last_frame_wall=1011.0, disconnected_since=1009.0, heartbeat_at=1010.0),
     1016.5, PublicState("reconnecting", 1009.0, reader_gone=True, reason=NO_INGEST)),
    ("a browser whose API process is gone", "webrtc", "live",
     LiveStatus(frames_sampled=5, heartbeat_at=1010.0), 1016.5,
     PublicState("stopped", reader_gone=True, reason=API_PROCESS_GONE)),
    ("two leases exactly: not gone yet", "webrtc", "live", LiveStatus(heartbeat_at=1010.0), 1016.0,
     PublicState("live")),
    ("stopped stays stopped, reader or not", "live", "stopped",
     LiveStatus(frames_sampled=5, last_frame_wall=1020.0, heartbeat_at=1010.0), 1100.0,
     PublicState("stopped")),
    ("done stays done", "webrtc", "done", LiveStatus(), 1100.0, PublicState("done")),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "state", "status", "now", "expected"), [c[1:] for c in LIVE],
                         ids=[c[0] for c in LIVE])  # fmt: skip
def test_live_public_state(
    kind: str, state: StreamState, status: LiveStatus, now: float, expected: PublicState
) -> None:
    assert public_state(_rec(kind, state), status, now, LEASE_S) == expected


@pytest.mark.parametrize(
    ("state", "job", "expected"),
    [("connecting", "queued", "connecting"), ("connecting", "running", "live"), ("live", "done", "done"),
     ("live", "failed", "stopped"), ("stopped", "running", "stopped"), ("done", None, "done")],
)  # fmt: skip
def test_a_file_stream_follows_its_job(state: StreamState, job: str | None, expected: str) -> None:
    got = public_state(_rec("upload", state), None, 5000.0, LEASE_S, job=job)  # type: ignore[arg-type]
    assert got == PublicState(expected)  # type: ignore[arg-type]


def test_the_staleness_rule() -> None:
    assert not reader_gone(LiveStatus(), CREATED, LEASE_S, CREATED + 6)
    assert reader_gone(LiveStatus(), CREATED, LEASE_S, CREATED + 6.1)
    assert not reader_gone(LiveStatus(heartbeat_at=CREATED + 50), CREATED, LEASE_S, CREATED + 55)


def _frame(seq: int, wall: float) -> Frame:
    return Frame(seq=seq, pts=float(seq), image=np.zeros((4, 4, 3), np.uint8), wall_time=wall)


def test_the_view_is_live_as_soon_as_frames_flow_again(fake_redis: redis.Redis) -> None:
    """The reader writes the record's state once per heartbeat, while each hand-over moves the frames on
    at once: the view follows the newer fact, not the state the last heartbeat wrote."""
    rt = Runtime.create(Settings(redis_url=None, live_lease_s=LEASE_S), client=fake_redis)
    rec = StreamRecord(
        "cam", "live", "cam", "rtsp://cam/x", "connecting", 1.0, 512, "fps", time.time(), tenant="acme"
    )
    assert rt.live.create(rec, "rtsp://cam/x")
    lease = Lease(fake_redis, rt.live.lease_key("cam"), ttl_s=int(LEASE_S))
    assert lease.try_acquire()
    before = time.time()
    rt.live.dispatch("cam", lease.token, [_frame(0, before), _frame(1, before + 0.01)])
    # The source lost the camera; the reader's heartbeat reports the outage and writes the state.
    rt.live.report("cam", owner="p1", increments={}, disconnected_since=before + 0.02, last_error="timeout")
    rt.records.set_stream_state("cam", "reconnecting")
    view = service.stream_view(rt, "acme", "cam")
    assert (view["state"], view["disconnected_since"]) == ("reconnecting", before + 0.02)

    beat = rt.live.status("cam").heartbeat_at
    assert beat is not None
    rt.live.dispatch("cam", lease.token, [_frame(2, before + 0.015)])  # queued before the outage
    assert service.stream_view(rt, "acme", "cam")["state"] == "reconnecting"

    rt.live.dispatch("cam", lease.token, [_frame(3, beat + 0.05)])  # read after the camera came back
    view = service.stream_view(rt, "acme", "cam")
    assert (view["state"], view["disconnected_since"], view["reader"]) == ("live", None, "p1")
    assert view["frames_sampled"] == 4 and rt.records.stream("cam").state == "reconnecting"
