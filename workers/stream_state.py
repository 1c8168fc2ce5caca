"""A stream's public state, from what its record and its live status say, and the time.

One pure function, ``public_state``, used by the stream view (``service``), the quotas (a browser's stream
whose reader is gone does not count) and open to health. It knows no Redis: it reads value types only.

Why a rule is needed at all: the record's state is written by the stream's reader (an ingest process, or
the API process holding a WebRTC connection) once per heartbeat, or by its job (uploads and URLs). So

* a reader that is gone (no heartbeat for two leases) leaves a running state behind that nobody updates:
  a camera is shown as waiting for a reader ("connecting", or "reconnecting" once it had frames), a
  browser's stream as "stopped" (nobody else can hold its connection);
* frames flow again before the reader's next heartbeat writes "live": a frame read after the reader last
  wrote the state (after ``heartbeat_at``, and after ``disconnected_since``) is the newer fact, so the
  stream is "live", and its outage over;
* an upload's or URL's stream follows its job (``STREAM_STATE_OF_JOB``), read in one place so that the
  job's and the stream's views never disagree; a stream stopped by DELETE stays "stopped".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workers.live_records import LiveStatus
from workers.records import LIVE_KINDS, LIVE_STATES, STREAM_STATE_OF_JOB, JobState, StreamRecord, StreamState

NO_INGEST = "no ingest process is reading this stream (start `vidmem ingest`)"
"""Why a camera's stream waits: its reader stopped beating (every ingest process is down)."""

API_PROCESS_GONE = "the API process holding the connection is gone"
"""Why a browser's stream is over: its reader, in the API process holding the connection, stopped beating."""


@dataclass(frozen=True, slots=True)
class PublicState:
    """What a stream view shows of a stream's state."""

    state: StreamState
    disconnected_since: float | None = None
    """Start of the outage in progress (a live stream that is reconnecting), else None."""
    reader_gone: bool = False
    """The stream's reader stopped beating: the view shows no reader."""
    reason: str | None = None
    """Why the state is not the one the record holds (shown as the stream's ``last_error``), else None."""


def reader_gone(status: LiveStatus, created_at: float, lease_s: float, now: float) -> bool:
    """No reader has beaten for two leases (none ever: none since the stream was created at
    ``created_at``). The one staleness rule."""
    beat = status.heartbeat_at if status.heartbeat_at is not None else created_at
    return now - beat > 2 * lease_s


def frames_since_report(rec: StreamRecord, status: LiveStatus) -> bool:
    """A frame was read after the reader last wrote the stream's state (its last heartbeat, or the
    stream's creation if none) and after the outage it reported began. Read means decoded
    (``last_read_wall``): an HLS frame's shown time runs ahead of it by up to a few segments."""
    read = status.last_read_wall if status.last_read_wall is not None else status.last_frame_wall
    if read is None:
        return False
    written = status.heartbeat_at if status.heartbeat_at is not None else rec.created_at
    since = status.disconnected_since if status.disconnected_since is not None else -math.inf
    return read > max(written, since)


def live_state(rec: StreamRecord, status: LiveStatus, now: float, lease_s: float) -> PublicState:
    """The public state of a live stream (kind "live" or "webrtc")."""
    if rec.state not in LIVE_STATES:
        return PublicState(rec.state, status.disconnected_since)
    if reader_gone(status, rec.created_at, lease_s, now):
        if rec.kind == "webrtc":
            return PublicState(
                "stopped", status.disconnected_since, reader_gone=True, reason=API_PROCESS_GONE
            )
        waiting: StreamState = "reconnecting" if status.frames_sampled else "connecting"
        return PublicState(waiting, status.disconnected_since, reader_gone=True, reason=NO_INGEST)
    if rec.state != "live" and frames_since_report(rec, status):
        return PublicState("live")
    # A reader opening a stream that already has frames (it took the stream over) is reconnecting it.
    state: StreamState = "reconnecting" if rec.state == "connecting" and status.frames_sampled else rec.state
    return PublicState(state, status.disconnected_since)


def job_stream_state(rec: StreamRecord, job: JobState | None) -> StreamState:
    """The public state of an upload's or URL's stream whose job is in state ``job`` (None: the job
    record has expired, and the stream's own, final, state stands)."""
    if job is None or rec.state == "stopped":
        return rec.state
    return STREAM_STATE_OF_JOB[job]


def public_state(
    rec: StreamRecord, live: LiveStatus | None, now: float, lease_s: float, job: JobState | None = None
) -> PublicState:
    """The public state of any stream at time ``now``: a live one from its ``live`` status
    (``live_state``; None: an empty status), a file's from its ``job`` state (``job_stream_state``)."""
    if rec.kind in LIVE_KINDS:
        return live_state(rec, live if live is not None else LiveStatus(), now, lease_s)
    return PublicState(job_stream_state(rec, job))
