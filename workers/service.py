"""The service's operations, shared by the HTTP API and the command line.

Plain functions over a Runtime: submit a video, read jobs, streams and memories, ask.
Never imports torch: it only reads Redis and dispatches tasks by name.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.errors import VidmemError
from stream.live_check import check_live
from stream.probe import VideoInfo, probe
from stream.sampling import sample_frames
from stream.urls import check_source, redact
from workers import timewindow
from workers.answers import AnswerChannel, AnswerReader
from workers.health import require_worker
from workers.live_reader import live_config
from workers.quotas import QuotaExceeded, Reservation, check_ask_rate
from workers.records import LIVE_KINDS, StreamRecord, UnknownJob, UnknownStreamRecord, new_id
from workers.runtime import Runtime
from workers.stream_state import public_state

GAPS_SHOWN = 100
"""Gaps a stream view lists (the newest); ``gaps_total`` counts them all."""


class ServiceError(VidmemError):
    """A request the service refuses, by ``code`` (its status: ``core.errors.STATUS``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


def check_video(rt: Runtime, src: str, *, local: bool) -> VideoInfo:
    """Refuse what cannot be ingested *before* accepting a job: forbidden URLs, non-video, corrupt.

    Raises stream.errors.SourceError subclasses (each with a ``code``).
    """
    s = rt.settings
    policy = rt.url_policy()  # where a URL's host may resolve: checked here and again at each open
    if not local:
        check_source(src, s.allowed_schemes, network_policy=policy)
    opts = {
        "allowed_schemes": s.allowed_schemes,
        "allow_local": local,
        "timeout_s": s.open_timeout_s,
        "network_policy": policy,
    }
    info = probe(src, **opts)  # type: ignore[arg-type]
    # Headers can look fine over garbage: decode one keyframe (raises CorruptVideo if none decodes).
    with contextlib.closing(sample_frames(src, mode="keyframes", size=(32, 32), **opts)) as frames:  # type: ignore[arg-type]
        next(frames, None)
    return info


def submit_video(
    rt: Runtime,
    tenant: str,
    src: str,
    *,
    local: bool,
    info: VideoInfo,
    fps: float | None = None,
    budget: int | None = None,
    mode: str | None = None,
    name: str = "",
    reservation: Reservation | None = None,
) -> tuple[str, str]:
    """Create a stream and a job for a checked video and queue its ingest. Returns (job_id, stream_id).

    The stream takes the quota place of ``reservation`` (``workers.quotas``; None: unchecked, the
    command line's own user). If the task cannot be queued (the broker is down: BrokerUnavailable), the
    stream and the job are removed again, so that nothing looks queued forever, and the error is raised."""
    job_id = new_id()
    shown = Path(src).name if local else redact(src)
    rec = _new_record(rt, tenant, "upload" if local else "url", name or shown, shown, fps, budget,
                      mode=mode or rt.settings.sample_mode, job_id=job_id)  # fmt: skip
    stream_id = rec.stream_id
    if not rt.records.create_stream(rec, reservation=_member(reservation)):
        raise _place_gone(tenant)
    expected = None
    if info.duration_s and rec.sample_mode == "fps":
        expected = max(1, int(info.duration_s * rec.fps))
    rt.records.create_job(job_id, stream_id, src, expected, tenant=tenant)
    try:
        rt.submit("ingest", job_id)
    except BaseException:
        rt.records.delete_job(job_id)
        rt.records.delete_stream(stream_id)
        raise
    return job_id, stream_id


def create_live_stream(
    rt: Runtime,
    tenant: str,
    url: str,
    *,
    fps: float | None = None,
    budget: int | None = None,
    name: str = "",
    check: bool = True,
    reservation: Reservation | None = None,
) -> str:
    """Register a live stream (RTSP, HTTP MJPEG, HLS); an ingest process starts reading it at once.

    With ``check``, the URL must give a frame within the live open and read timeouts, so a wrong
    address is refused now (SourceError) rather than retried forever. The stream takes the quota place
    of ``reservation`` (None: unchecked).
    """
    fps = fps or rt.settings.fps
    config = live_config(rt, fps)
    if check:
        check_live(url, config)
    else:
        check_source(url, config.allowed_schemes, network_policy=config.network_policy)
    shown = redact(url)
    rec = _new_record(rt, tenant, "live", name or shown, shown, fps, budget)
    if not rt.live.create(rec, url, reservation=_member(reservation)):
        raise _place_gone(tenant)
    return rec.stream_id


def create_webrtc_stream(
    rt: Runtime,
    tenant: str,
    *,
    fps: float | None = None,
    budget: int | None = None,
    name: str = "",
    reservation: Reservation | None = None,
) -> str:
    """Register a stream of kind "webrtc": the API process that holds the connection reads its track.
    It takes the quota place of ``reservation`` (None: unchecked)."""
    rec = _new_record(rt, tenant, "webrtc", name or "browser", "webrtc", fps, budget)
    if not rt.live.create(rec, None, reservation=_member(reservation)):
        raise _place_gone(tenant)
    return rec.stream_id


def _new_record(
    rt: Runtime, tenant: str, kind: str, name: str, source: str, fps: float | None, budget: int | None,
    mode: str = "fps", job_id: str | None = None,
) -> StreamRecord:  # fmt: skip
    """A new stream's record, "connecting", with the server's fps and budget where the request gave none."""
    return StreamRecord(
        stream_id=new_id(),
        kind=kind,
        name=name,
        source=source,
        state="connecting",
        fps=fps or rt.settings.fps,
        budget=rt.stream_budget(budget),
        sample_mode=mode,
        created_at=time.time(),
        tenant=tenant,
        job_id=job_id,
    )


def _member(reservation: Reservation | None) -> str | None:
    return None if reservation is None else reservation.member


def _place_gone(tenant: str) -> QuotaExceeded:
    """The request's quota place was given back (it was cancelled) or expired before its stream could take
    it: creating the stream now could pass the tenant's limit."""
    return QuotaExceeded(
        "quota_exceeded",
        f"the quota place of tenant {tenant!r} for this request was given up before its stream was created "
        "(the request was cancelled, or outlived tenant_reservation_ttl_s); try again",
        retry_after_s=1,
    )


def job_view(rt: Runtime, tenant: str, job_id: str) -> dict[str, Any]:
    job = rt.records.owned_job(job_id, tenant)
    encoded = rt.memory.next_seq(job.stream_id)
    return {
        "job_id": job.job_id,
        "stream_id": job.stream_id,
        "state": job.state,
        "progress": round(job.progress, 4),
        "frames_sampled": job.frames_sampled,
        "frames_encoded": encoded,
        "error": job.error,
    }


def stream_view(rt: Runtime, tenant: str, stream_id: str) -> dict[str, Any]:
    """A stream's record, memory counters and state (``api.schemas.StreamPublic``)."""
    rec = rt.records.owned_stream(stream_id, tenant)
    out: dict[str, Any] = asdict(rec) | {
        "job_state": None,
        "last_error": rec.error,
        "frames_encoded": 0,
        "tokens_used": 0,
        "slots": 0,
        "gaps": [],
        "last_frame_t": None,
    }
    if rt.memory.exists(stream_id):
        st = rt.memory.state(stream_id)
        out.update(
            frames_encoded=st.next_seq,
            tokens_used=st.tokens_used,
            slots=len(st.slots),
            last_frame_t=st.slots[-1].t1 if st.slots else None,
        )
    if rec.kind in LIVE_KINDS:
        out.update(_live_view(rt, rec))
    elif rec.job_id is not None:
        out.update(_job_state_view(rt, rec, rec.job_id))
    return out


def _job_state_view(rt: Runtime, rec: StreamRecord, job_id: str) -> dict[str, Any]:
    """An upload's or URL's stream follows its job (``stream_state.public_state``). Once the job record
    has expired, the stream's own (final) state stands."""
    try:
        job = rt.records.job(job_id)
    except UnknownJob:
        return {}
    state = public_state(rec, None, time.time(), rt.settings.live_lease_s, job=job.state).state
    return {"state": state, "job_state": job.state, "last_error": job.error or rec.error}


def _live_view(rt: Runtime, rec: StreamRecord) -> dict[str, Any]:
    """A live stream's counters, gaps, reader and public state (``stream_state.public_state``: a stream
    whose reader stopped beating shows no reader, and why)."""
    st = rt.live.status(rec.stream_id)
    shown = public_state(rec, st, time.time(), rt.settings.live_lease_s)
    out: dict[str, Any] = {
        "state": shown.state,
        "frames_sampled": st.frames_sampled,
        "frames_dropped": st.frames_dropped,
        "frames_skipped": st.frames_skipped,
        "frames_replayed": st.frames_replayed,
        "reconnects": st.reconnects,
        "gaps_total": st.gaps_total,
        "gaps": [
            {
                "start": g.start_wall,
                "end": g.end_wall,
                "duration_s": round(g.end_wall - g.start_wall, 3),
                "reason": g.reason,
            }
            for g in rt.live.gaps(rec.stream_id, last=GAPS_SHOWN)
        ],
        "last_frame_time": st.last_frame_wall,
        "disconnected_since": shown.disconnected_since,
        "last_error": st.last_error or rec.error,  # a source's last error, else why the stream stopped
        "reader": st.owner,
        "resolution": st.resolution,
    }
    if shown.reader_gone:
        out.update(reader=None, last_error=shown.reason)
    return out


def list_streams(rt: Runtime, tenant: str) -> list[dict[str, Any]]:
    out = []
    for sid in rt.records.tenant_stream_ids(tenant):
        try:
            out.append(stream_view(rt, tenant, sid))
        except UnknownStreamRecord:  # purged while we listed
            continue
    return out


def memory_view(rt: Runtime, tenant: str, stream_id: str) -> dict[str, Any]:
    """The memory's layout: per slot its span, side and the prompt tokens it costs."""
    rec = rt.records.owned_stream(stream_id, tenant)
    if not rt.memory.exists(stream_id):
        return {"stream_id": stream_id, "budget": rec.budget, "tokens_used": 0, "version": 0, "side": None,
                "frames": 0, "slots": []}  # fmt: skip
    st = rt.memory.state(stream_id)
    return {
        "stream_id": stream_id,
        "budget": st.config.budget,
        "tokens_used": st.tokens_used,
        "version": st.version,
        "side": st.side,
        "frames": st.next_seq,
        "policy": st.config.policy,
        "slots": [
            {
                "slot_id": s.slot_id,
                "t0": s.t0,
                "t1": s.t1,
                "side": s.side,
                "tokens": s.side * s.side + s.text,  # visual tokens + its timestamp text
                "frames": s.frames,
                "thumbnail": f"/v1/streams/{stream_id}/slots/{s.slot_id}/thumbnail",
            }
            for s in st.slots
        ],
    }


def thumbnail(rt: Runtime, tenant: str, stream_id: str, slot_id: int) -> bytes:
    rt.records.owned_stream(stream_id, tenant)
    data = rt.memory.thumbnail(stream_id, slot_id)
    if data is None:
        raise ServiceError("unknown_slot", f"stream {stream_id} has no slot {slot_id}")
    return data


def thumbnail_at(rt: Runtime, tenant: str, stream_id: str, t: float) -> tuple[int, float, float, bytes]:
    """(slot_id, t0, t1, JPEG) of the slot covering stream time ``t``, or of the nearest slot."""
    rt.records.owned_stream(stream_id, tenant)
    if not rt.memory.exists(stream_id) or not (slots := rt.memory.state(stream_id).slots):
        raise ServiceError("empty_memory", f"stream {stream_id} has no encoded frames yet; try again later")
    slot = min(slots, key=lambda s: 0.0 if s.t0 <= t <= s.t1 else min(abs(t - s.t0), abs(t - s.t1)))
    data = rt.memory.thumbnail(stream_id, slot.slot_id)
    if data is None:  # merged away since the state was read
        raise ServiceError("unknown_slot", f"stream {stream_id} has no slot {slot.slot_id} any more")
    return slot.slot_id, slot.t0, slot.t1, data


def ask(
    rt: Runtime,
    tenant: str,
    stream_id: str,
    question: str,
    max_new_tokens: int | None = None,
    since: str | float | None = None,
    until: str | float | None = None,
) -> AnswerReader:
    """Queue an answer; its events (pieces, then done/error) come from the returned reader, which cancels
    the answer's generation if its reader stops early.

    The answer covers the stream's whole memory, or the slots between ``since`` and ``until``
    (``timewindow``), which then have the prompt's whole budget to themselves. Each ask counts against
    the tenant's ``ask_per_minute`` (QuotaExceeded beyond it). More than ``max_new_tokens_limit`` new
    tokens are refused (``validation_error``), and so is any ask while no live worker consumes the answer
    queue (NoWorker), at once rather than after ``answer_timeout_s``.
    """
    limit = rt.settings.max_new_tokens_limit
    if max_new_tokens is not None and max_new_tokens > limit:
        raise ServiceError(
            "validation_error", f"max_new_tokens is {max_new_tokens}; this server allows at most {limit}"
        )
    rec = rt.records.owned_stream(stream_id, tenant)
    require_worker(rt, "answer")
    check_ask_rate(rt, tenant)
    if not rt.memory.exists(stream_id) or not (slots := rt.memory.state(stream_id).slots):
        raise ServiceError("empty_memory", f"stream {stream_id} has no encoded frames yet; try again later")
    clock = timewindow.Clock(now=time.time(), created_at=rec.created_at, end=slots[-1].t1,
                             live=rec.kind in LIVE_KINDS)  # fmt: skip
    try:
        span = timewindow.window(since, until, clock)
    except timewindow.BadWindow as e:
        raise ServiceError(e.code, str(e)) from None
    if span is not None and not any(s.t1 >= span[0] and s.t0 <= span[1] for s in slots):
        raise ServiceError(
            "empty_window",
            f"no frame of stream {stream_id} lies between since={since!r} and until={until!r} "
            f"(the memory covers {slots[0].t0:.1f} s to {slots[-1].t1:.1f} s of stream time)",
        )
    window = None if span is None else [_finite(span[0]), _finite(span[1])]
    request_id = new_id()
    rt.submit("answer", stream_id, request_id, question, max_new_tokens or rt.settings.max_new_tokens, window)
    return AnswerChannel(rt.redis, request_id).events(rt.settings.answer_timeout_s)


def _finite(x: float) -> float | None:
    """JSON (task arguments) has no infinity: an open bound travels as None."""
    return x if abs(x) != float("inf") else None


def delete_stream(rt: Runtime, tenant: str, stream_id: str, purge: bool) -> None:
    rec = rt.records.owned_stream(stream_id, tenant)
    if purge:
        rt.records.delete_stream(stream_id)  # first: a reader's next hand-over and encodes now refuse it
        rt.live.delete(stream_id)
        rt.memory.delete(stream_id)
    elif rec.state not in ("done", "stopped"):
        rt.records.set_stream_state(stream_id, "stopped")
        rt.live.retire(stream_id)
