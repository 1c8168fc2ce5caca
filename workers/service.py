"""The service's operations, shared by the HTTP API and the command line.

Plain functions over a Runtime: submit a video, read jobs, streams and memories, ask.
Never imports torch: it only reads Redis and dispatches tasks by name.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stream.file_source import VideoInfo, probe, sample_frames
from stream.urls import check_source, redact
from workers.answers import AnswerChannel, AnswerEvent
from workers.records import StreamRecord, new_id
from workers.runtime import Runtime


class ServiceError(Exception):
    """A request the service refuses; ``code`` maps to an HTTP status in the API."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_video(rt: Runtime, src: str, *, local: bool) -> VideoInfo:
    """Refuse what cannot be ingested *before* accepting a job: forbidden URLs, non-video, corrupt.

    Raises stream.errors.SourceError subclasses (each with a ``code``).
    """
    s = rt.settings
    if not local:
        check_source(src, s.allowed_schemes)
    opts = {"allowed_schemes": s.allowed_schemes, "allow_local": local, "timeout_s": s.open_timeout_s}
    info = probe(src, **opts)  # type: ignore[arg-type]
    # Headers can look fine over garbage: decode one keyframe (raises CorruptVideo if none decodes).
    with contextlib.closing(sample_frames(src, mode="keyframes", size=(32, 32), **opts)) as frames:  # type: ignore[arg-type]
        next(frames, None)
    return info


def submit_video(
    rt: Runtime,
    src: str,
    *,
    local: bool,
    info: VideoInfo,
    fps: float | None = None,
    budget: int | None = None,
    mode: str | None = None,
    name: str = "",
) -> tuple[str, str]:
    """Create a stream and a job for a checked video and queue its ingest. Returns (job_id, stream_id)."""
    s = rt.settings
    fps = fps or s.fps
    mode = mode or s.sample_mode
    stream_id, job_id = new_id(), new_id()
    shown = Path(src).name if local else redact(src)
    rt.records.create_stream(
        StreamRecord(
            stream_id=stream_id,
            kind="upload" if local else "url",
            name=name or shown,
            source=shown,
            state="connecting",
            fps=fps,
            budget=budget or s.budget,
            sample_mode=mode,
            created_at=time.time(),
        )
    )
    expected = None
    if info.duration_s and mode == "fps":
        expected = max(1, int(info.duration_s * fps))
    rt.records.create_job(job_id, stream_id, src, expected)
    rt.submit("ingest", job_id)
    return job_id, stream_id


def job_view(rt: Runtime, job_id: str) -> dict[str, Any]:
    job = rt.records.job(job_id)
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


def stream_view(rt: Runtime, stream_id: str) -> dict[str, Any]:
    rec = rt.records.stream(stream_id)
    out: dict[str, Any] = asdict(rec) | {
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
    return out


def list_streams(rt: Runtime) -> list[dict[str, Any]]:
    return [stream_view(rt, sid) for sid in rt.records.stream_ids()]


def memory_view(rt: Runtime, stream_id: str) -> dict[str, Any]:
    """The memory's layout: per slot its span, side and the prompt tokens it costs."""
    rec = rt.records.stream(stream_id)
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


def thumbnail(rt: Runtime, stream_id: str, slot_id: int) -> bytes:
    rt.records.stream(stream_id)
    data = rt.memory.thumbnail(stream_id, slot_id)
    if data is None:
        raise ServiceError("unknown_slot", f"stream {stream_id} has no slot {slot_id}")
    return data


def ask(
    rt: Runtime, stream_id: str, question: str, max_new_tokens: int | None = None
) -> Iterator[AnswerEvent]:
    """Queue an answer over the stream's whole memory and yield its events (pieces, then done/error)."""
    rt.records.stream(stream_id)
    if not rt.memory.exists(stream_id) or not rt.memory.state(stream_id).slots:
        raise ServiceError("empty_memory", f"stream {stream_id} has no encoded frames yet; try again later")
    request_id = new_id()
    rt.submit("answer", stream_id, request_id, question, max_new_tokens or rt.settings.max_new_tokens)
    return AnswerChannel(rt.redis, request_id).events(rt.settings.answer_timeout_s)


def delete_stream(rt: Runtime, stream_id: str, purge: bool) -> None:
    rec = rt.records.stream(stream_id)
    if purge:
        rt.memory.delete(stream_id)
        rt.records.delete_stream(stream_id)
    elif rec.state not in ("done", "stopped"):
        rt.records.set_stream_state(stream_id, "stopped")
