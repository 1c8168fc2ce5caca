"""The plain functions behind every task: ingest a video, encode a chunk, answer a question.

Celery tasks (``workers.tasks``) and the embedded in-process dispatcher call exactly these.
Each takes ids and Redis keys, re-reads state, and is idempotent: a redelivered task
never loses or duplicates a frame (the memory orders and de-duplicates by frame seq).
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import redis
from PIL import Image

from core.errors import VidmemError
from core.logs import bind_log_context, log_args
from core.redis_values import PREFIX
from model.memory import MemoryBusy
from model.slots import EncodedFrame
from stream.errors import SourceError
from stream.frames import Frame
from workers import metrics
from workers.answers import AnswerChannel
from workers.lease import Lease, LeaseLost
from workers.queues import BrokerUnavailable
from workers.records import LIVE_KINDS, UnknownStreamRecord
from workers.runtime import Runtime

if TYPE_CHECKING:
    from model.answerer import Answer
    from model.memory import MemoryState

log = logging.getLogger(__name__)

OUTAGES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, BrokerUnavailable, MemoryBusy)
"""Errors of an unreachable Redis or broker (or a memory too busy to write now): a task that meets one is
run again, not failed."""

THUMB_WIDTH = 160
INGEST_LEASE_S = 30.0  # a dead ingest worker's job is taken over this long after its last renewal
WAITING_CHUNKS = 16
"""Backpressure: chunks of one upload handed to the encoders and not yet in its memory, at most."""
WAKE_S = 0.5
"""Longest sleep of an ingest that waits for the encoders: how soon it sees its stream stopped."""


def ingest_lease_key(job_id: str) -> str:
    """The lease of the ingest worker reading an upload's video (``lease.Lease``)."""
    return f"{PREFIX}:lease:ingest:{job_id}"


def encoded_key(stream_id: str) -> str:
    """A short list that an encode of an upload's chunk pushes to once the chunk is in the memory: the
    ingest waiting for the encoders (``_wait_for_encoders``) blocks on it instead of polling."""
    return f"{PREFIX}:{{{stream_id}}}:encoded"


def thumbnail(image: np.ndarray, width: int = THUMB_WIDTH) -> bytes:
    """[H, W, 3] uint8 -> a small JPEG."""
    img = Image.fromarray(image)
    h = max(1, round(img.height * width / img.width))
    buf = io.BytesIO()
    img.resize((width, h), Image.Resampling.BILINEAR).save(buf, format="JPEG", quality=70)
    return buf.getvalue()


# ---- ingest ------------------------------------------------------------------------------


@log_args("job_id")
def ingest_video(rt: Runtime, job_id: str, holder: str | None = None) -> None:
    """Sample a video's frames and hand them to the encoders in chunks (with backpressure).

    ``holder`` names this delivery of the task: run again with the same holder (after an outage), it takes
    its own lease back at once."""
    lease = Lease(rt.redis, ingest_lease_key(job_id), ttl_s=INGEST_LEASE_S, token=holder)
    # A redelivered ingest waits while the first worker is alive, and takes over if it dies.
    if not lease.acquire(give_up=lambda: rt.records.job(job_id).state in ("done", "failed")):
        return
    try:
        _ingest(rt, job_id, lease)
    finally:
        lease.release()


def _ingest(rt: Runtime, job_id: str, lease: Lease) -> None:
    from stream.sampling import sample_frames

    job = rt.records.job(job_id)
    bind_log_context(stream_id=job.stream_id, tenant=job.tenant)
    if job.state in ("done", "failed"):
        return
    if job.sampling_done:  # an earlier delivery handed every frame over: only the encodes remain
        check_done(rt, job_id)
        return
    try:
        rec = rt.records.stream(job.stream_id)
    except UnknownStreamRecord:
        _fail(rt, job_id, job.stream_id, "stream_deleted: the stream was deleted before its video was read")
        return
    rt.records.set_job_state(job_id, job.stream_id, "running")
    s = rt.settings
    frames = sample_frames(
        job.source_path,
        mode=rec.sample_mode,  # type: ignore[arg-type]
        fps=rec.fps,
        size=(rt.frame_side(), rt.frame_side()),
        allowed_schemes=s.allowed_schemes,
        allow_local=True,
        timeout_s=s.open_timeout_s,
        network_policy=rt.url_policy(),  # a URL's host is checked again here: DNS may have changed
    )
    n = _hand_over(rt, job_id, job.stream_id, rec.kind, frames, lease)
    if n is None:
        return
    rt.records.update_job(job_id, frames_sampled=n, sampling_done=1)
    log.info("job %s: %d frames sampled", job_id, n)
    check_done(rt, job_id)


def _hand_over(
    rt: Runtime, job_id: str, stream_id: str, kind: str, frames: Iterable[Frame], lease: Lease
) -> int | None:
    """Hand a video's frames to the encoders in chunks of ``encode_batch``: the frames handed over, or
    None when the job ended here (it failed, or another worker took it over)."""
    batch: list[Frame] = []
    n = 0  # frames handed to the encoders so far
    try:
        for frame in frames:
            batch.append(frame)
            if len(batch) >= rt.settings.encode_batch:
                n = _dispatch_chunk(rt, job_id, stream_id, kind, batch, lease)
                batch = []
        if batch:
            n = _dispatch_chunk(rt, job_id, stream_id, kind, batch, lease)
    except LeaseLost:  # our lease expired and another worker took the job over
        log.warning("job %s: ingest lease lost; another worker continues", job_id)
        return None
    except _Stopped:
        log.info("job %s: stream %s stopped after %d frames", job_id, stream_id, n)
        return n
    except UnknownStreamRecord:
        _fail(rt, job_id, stream_id, "stream_deleted: the stream was deleted while its video was read")
        return None
    except SourceError as e:
        _fail(rt, job_id, stream_id, f"{e.code}: {e}")
        return None
    except OUTAGES:  # the store or the broker is down: not the job's fault (the task runs again)
        raise
    except Exception as e:  # a bug or a broken decoder: the job fails loudly instead of waiting forever
        _fail(rt, job_id, stream_id, f"ingest_failed: {type(e).__name__}: {e}")
        raise
    if n == 0:
        _fail(rt, job_id, stream_id, "corrupt_video: no frame could be sampled")
        return None
    return n


class _Stopped(Exception):
    """The stream was stopped (DELETE) while its video was being read."""


def _dispatch_chunk(
    rt: Runtime, job_id: str, stream_id: str, kind: str, batch: list[Frame], lease: Lease
) -> int:
    """Queue one chunk for the encoders; returns the frames handed over so far.

    A chunk already in the memory (an ingest taken over from a dead worker) is not sent again.
    """
    lease.renew()
    end = batch[-1].seq + 1
    if end <= rt.memory.next_seq(stream_id):
        return end
    _wait_for_encoders(rt, stream_id, batch[0].seq, lease)
    key = rt.frames.put(stream_id, batch)
    rt.records.update_job(job_id, frames_sampled=end)
    rt.submit("encode", job_id, stream_id, key)
    metrics.record(rt.redis, metrics.inc(metrics.FRAMES_SAMPLED, len(batch), kind=kind))
    return end


def _wait_for_encoders(rt: Runtime, stream_id: str, next_seq: int, lease: Lease) -> None:
    """Backpressure: at most ``WAITING_CHUNKS`` chunks wait for the encoders. Raises _Stopped if the
    stream stops. Sleeps in a blocking read of ``encoded_key`` (woken as soon as an encode appends a
    chunk), at most ``WAKE_S`` at a time: so the lease is renewed and the stop is seen meanwhile."""
    limit = WAITING_CHUNKS * rt.settings.encode_batch
    while True:
        if rt.records.stream(stream_id).state == "stopped":
            raise _Stopped
        if next_seq - rt.memory.next_seq(stream_id) < limit:
            return
        lease.renew()
        rt.redis.blpop([encoded_key(stream_id)], timeout=WAKE_S)


def _encoded(rt: Runtime, stream_id: str) -> None:
    """Wake the ingest waiting for the encoders of an upload (one mark is enough: it looks again)."""
    key = encoded_key(stream_id)
    with rt.redis.pipeline(transaction=False) as p:
        p.rpush(key, 1)
        p.ltrim(key, -1, -1)
        p.expire(key, int(INGEST_LEASE_S))
        p.execute()


def _fail(rt: Runtime, job_id: str, stream_id: str, message: str) -> None:
    log.warning("job %s failed: %s", job_id, message)
    rt.records.set_job_state(job_id, stream_id, "failed", error=message)
    _finish(rt, job_id)


def _finish(rt: Runtime, job_id: str) -> None:
    """A job ended: its record expires later, and an uploaded file is no longer needed."""
    rt.records.expire_job(job_id, rt.settings.job_ttl_s)
    src = Path(rt.records.job(job_id).source_path).resolve()
    if src.parent == rt.settings.upload_dir.resolve():  # never a user's own file (vidmem ask)
        src.unlink(missing_ok=True)


# ---- encode ------------------------------------------------------------------------------


@log_args("job_id", "stream_id")
def encode_chunk(rt: Runtime, job_id: str, stream_id: str, frames_key: str) -> None:
    """Encode one chunk of frames and append it to the stream's memory (idempotent).

    ``job_id`` is the upload job the chunk belongs to, or "" for a live stream's chunk.
    """
    frames = rt.frames.get(frames_key)
    if frames is None:  # a redelivery of a chunk already appended, or frames that expired
        _chunk_gone(rt, job_id, stream_id, frames_key)
        return
    if not rt.records.stream_exists(stream_id):  # purged meanwhile: do not recreate its memory
        rt.frames.delete(frames_key)
        return
    try:
        _encode(rt, stream_id, frames)
    except OUTAGES:  # the store or the broker is down: not the chunk's fault (the task runs again)
        raise
    except Exception as e:  # a bug or a broken model: fail loudly instead of waiting forever
        _chunk_failed(rt, job_id, stream_id, f"encode_failed: {type(e).__name__}: {e}")
        raise
    rt.frames.delete(frames_key)
    if job_id:
        _encoded(rt, stream_id)
        check_done(rt, job_id)


def _chunk_gone(rt: Runtime, job_id: str, stream_id: str, frames_key: str) -> None:
    """A chunk whose frames are no longer stored: appended already (a redelivery), or expired waiting."""
    missing = _not_in_memory(rt, stream_id, rt.frames.seqs(frames_key))
    if missing:
        ttl = rt.settings.frame_ttl_s
        msg = f"frames_expired: frames {missing[0]}..{missing[-1]} waited longer than frame_ttl_s ({ttl} s)"
        _chunk_failed(rt, job_id, stream_id, msg + " for an encoder")
    elif job_id:
        check_done(rt, job_id)


def _encode(rt: Runtime, stream_id: str, frames: list[Frame]) -> None:
    """Encode frames with the loaded model and append them to the stream's memory."""
    from workers.models import text_costs

    backend = rt.backend()
    rec = rt.records.stream(stream_id)
    bind_log_context(tenant=rec.tenant)
    cfg = rt.memory.create(stream_id, rt.memory_config(rec.budget))
    cfg.require_backend(backend.info.fingerprint, backend.info.dim)
    t0 = time.perf_counter()
    tokens = backend.encode(np.stack([f.image for f in frames]))
    encode_s = time.perf_counter() - t0
    texts = text_costs(backend, cfg, [f.pts for f in frames])
    encoded = [
        EncodedFrame(
            seq=f.seq,
            t=f.pts,
            tokens=tokens[i],
            thumb=thumbnail(f.image),
            wall_time=f.wall_time,
            text_tokens=texts[i],
        )
        for i, f in enumerate(frames)
    ]
    rt.memory.append(stream_id, encoded)
    metrics.record(rt.redis, metrics.inc(metrics.FRAMES_ENCODED, len(frames), kind=rec.kind),
                   metrics.observe(metrics.ENCODE_SECONDS, encode_s))  # fmt: skip


def _chunk_failed(rt: Runtime, job_id: str, stream_id: str, message: str) -> None:
    """An upload's job fails; a live stream keeps running, with the error shown in its state."""
    if job_id:
        _fail(rt, job_id, stream_id, message)
    else:
        log.error("stream %s: %s", stream_id, message)
        rt.records.set_stream_error(stream_id, message)


def _not_in_memory(rt: Runtime, stream_id: str, seqs: range) -> list[int]:
    """The frames of ``seqs`` neither appended to the memory nor waiting in its pending hash."""
    done, waiting = rt.memory.next_seq(stream_id), set(rt.memory.pending_seqs(stream_id))
    return [q for q in seqs if q >= done and q not in waiting]


def check_done(rt: Runtime, job_id: str) -> None:
    """Update progress; mark the job done once every sampled frame is in the memory."""
    job = rt.records.job(job_id)
    if job.state in ("done", "failed"):
        return
    encoded = rt.memory.next_seq(job.stream_id)
    if job.sampling_done and encoded >= job.frames_sampled:
        rt.records.raise_progress(job_id, 1.0)
        rt.records.set_job_state(job_id, job.stream_id, "done")
        _finish(rt, job_id)
        return
    total = max(job.expected_frames or 0, job.frames_sampled, 1)
    if job.sampling_done:
        total = job.frames_sampled
    rt.records.raise_progress(job_id, min(0.99, encoded / total))


# ---- answer ------------------------------------------------------------------------------


@log_args("stream_id", answer_id="request_id")
def answer_question(
    rt: Runtime,
    stream_id: str,
    request_id: str,
    question: str,
    max_new_tokens: int,
    window: list[float | None] | None = None,
) -> None:
    """Answer over the stream's memory (or its slots within ``window`` = [lo, hi] in stream time, None
    for an open bound); events go to the request's AnswerChannel. A live stream's gaps are named in the
    prompt, so the model knows when the camera saw nothing.

    A request its client cancelled (``AnswerChannel.cancel``) does not start, or stops generating within
    about ``AnswerConfig.stop_poll_s``; its channel then ends without an event."""
    channel = AnswerChannel(rt.redis, request_id)
    if channel.cancelled():  # its client left while the task was queued
        log.info("answer cancelled by its client before it started")
        channel.drop()
        return
    channel.start()
    try:
        got = _generate(rt, channel, stream_id, question, max_new_tokens, window)
    except OUTAGES:  # the store is down: not the question's fault (the task runs again, from the start)
        raise
    except VidmemError as e:  # nothing to answer over, purged while it waited, another model, a bad question
        channel.error(e.code, str(e))
        return
    except Exception as e:  # reported to the waiting client, then re-raised for the worker's log
        channel.error("answer_failed", f"{type(e).__name__}: {e}")
        raise
    if got is None:
        channel.drop()
        return
    state, result = got
    channel.done(
        answer=result.text,
        tokens_used=result.tokens_used,
        budget=result.budget,
        slots_used=result.slots_used,
        prompt_tokens=result.prompt_tokens,
        ttft_s=result.ttft_s,
        latency_s=result.total_s,
        memory_version=state.version,
    )


def _generate(
    rt: Runtime,
    channel: AnswerChannel,
    stream_id: str,
    question: str,
    max_new_tokens: int,
    window: list[float | None] | None,
) -> tuple[MemoryState, Answer] | None:
    """Generate the answer, its pieces into ``channel``: (the memory read, the answer), or None when its
    client cancelled it meanwhile. Raises EmptyMemory when there is nothing to answer over."""
    from model.prompt import EmptyMemory
    from workers.models import answerer_for

    if not rt.memory.exists(stream_id):
        raise EmptyMemory(f"stream {stream_id} has no encoded frames yet")
    state = rt.memory.state(stream_id, with_tokens=True)
    info = rt.backend().info
    state.config.require_backend(info.fingerprint, info.dim)
    lo, hi = _bounds(window)
    slots = [s for s in state.as_slots() if s.t1 >= lo and s.t0 <= hi]
    if not slots:
        raise EmptyMemory(f"stream {stream_id} has no frames in the window asked about")
    gaps = prompt_gaps(rt, stream_id, max(lo, slots[0].t0), hi)
    answerer = answerer_for(rt.backend(), state.config, max_new_tokens)
    with answerer.stream(slots, question, state.config.budget, gaps, channel.cancelled) as pieces:
        for piece in pieces:
            channel.piece(piece)
        result = pieces.result()
    if pieces.stopped_early:
        log.info("answer cancelled by its client after %d of %d new tokens", result.new_tokens,
                 max_new_tokens)  # fmt: skip
        return None
    return state, result


def _bounds(window: list[float | None] | None) -> tuple[float, float]:
    lo, hi = window if window is not None else (None, None)
    return (-math.inf if lo is None else lo), (math.inf if hi is None else hi)


def prompt_gaps(rt: Runtime, stream_id: str, lo: float, hi: float) -> list[tuple[float, float]]:
    """A live stream's gaps overlapping [lo, hi] (stream time), in stream time: the ``prompt_max_gaps``
    longest, counting the outage going on now (if the source is disconnected), which ends now."""
    rec = rt.records.stream(stream_id)
    if rec.kind not in LIVE_KINDS:
        return []
    c = rec.created_at
    spans = [(g.start_wall - c, g.end_wall - c) for g in rt.live.gaps(stream_id)]
    since = rt.live.status(stream_id).disconnected_since
    if since is not None:
        spans.append((since - c, max(since, time.time()) - c))
    spans = [(a, b) for a, b in spans if b >= lo and a <= hi]
    spans.sort(key=lambda g: g[1] - g[0], reverse=True)
    return sorted(spans[: rt.settings.prompt_max_gaps])


TASKS: dict[str, Callable[..., None]] = {
    "ingest": ingest_video,
    "encode": encode_chunk,
    "answer": answer_question,
}
