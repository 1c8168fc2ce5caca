"""A live stream's reader: one frame feed, handed over to the encoders for as long as this process holds
the stream's lease (``workers.live.LiveSupervisor`` starts, beats and closes readers).

A ``StreamReader`` owns one frame feed and a thread that hands its frames to the encoders through
``LiveRecords.dispatch``, fenced by the lease. The feed is a ``stream.live.LiveSource`` for a registered
URL (it reconnects by itself and records gaps), or a ``stream.webrtc.TrackSource`` that the API process
*adopts* for a browser's WebRTC track. A track cannot be reopened by anyone else: when it ends (the
browser left, or the watchdog saw no frames) the reader hands over what is left and marks the stream
"done".

A feed gives raw frames (``stream.frames.RawFrame``: image, wall time, time shown, source time). The
hand-over alone numbers them (``stream.timeline.number``): the stream's own sequence numbers (continuing
the previous reader's) and stream times ``pts = shown_wall - created_at``, so times agree whichever
process read them. When encoders fall behind (more than ``live_inflight`` frames handed over but not yet
in the memory) the reader stops taking frames, the source's bounded queue fills, and the source drops
(and counts) new ones.

Each beat the reader reports what its source says (counters, gaps, state) to the stream's records; what
the public sees (e.g. a stream whose reader is gone) is judged from those records, not here.
"""

from __future__ import annotations

import logging
import math
import threading

import redis

from core.logs import in_log_context
from stream.frames import Frame, RawFrame
from stream.live import LiveSource
from stream.live_types import FrameFeed, Gap, LiveConfig, LiveStats
from stream.timeline import number
from workers import metrics
from workers.lease import Lease, LeaseLost
from workers.live_records import NotOwner
from workers.queues import BrokerUnavailable
from workers.records import UnknownStreamRecord
from workers.runtime import Runtime

log = logging.getLogger(__name__)

TAKEOVER = "the stream's reader changed (an ingest process stopped or lost its lease)"
"""Gap reason for the span between the previous reader's last frame and the new reader's first."""


BACKOFF_INITIAL_S = 0.5
"""First wait before reopening a lost live source (it doubles per failed attempt)."""

HANDOVER_ERRORS = (redis.RedisError, NotOwner, BrokerUnavailable)
"""What a hand-over meets when it is not a bug: Redis or the broker away for a moment, or the stream's
lease or sequence taken by another reader (or the stream stopped)."""


def live_config(rt: Runtime, fps: float) -> LiveConfig:
    """How this process reads a live URL at ``fps``: the live settings, and the runtime's URL policy."""
    s = rt.settings
    return LiveConfig(
        fps=fps,
        open_timeout_s=s.live_open_timeout_s,
        read_timeout_s=s.live_read_timeout_s,
        hls_read_timeout_s=s.live_hls_read_timeout_s,
        backoff_max_s=max(s.live_backoff_max_s, BACKOFF_INITIAL_S),
        backoff_initial_s=BACKOFF_INITIAL_S,
        allowed_schemes=s.live_schemes,
        queue_size=s.live_queue,
        skip_similar=s.live_skip_similar,
        size=(rt.frame_side(), rt.frame_side()),
        network_policy=rt.url_policy(),
    )


class StreamReader:
    """Reads one live stream for as long as this process holds its lease.

    ``source`` None: open the stream's registered URL (a LiveSource, resumable by any ingest process).
    Otherwise that feed (a WebRTC track): when it ends, the stream is done.
    """

    def __init__(
        self, rt: Runtime, sid: str, lease: Lease, owner: str, source: FrameFeed | None = None
    ) -> None:
        self.rt, self.sid, self.lease, self.owner = rt, sid, lease, owner
        self.rec = rt.records.stream(sid)
        self.resumable = source is None
        if source is None:
            source = LiveSource(rt.live.url(sid), live_config(rt, self.rec.fps))
        self.source = source
        status = rt.live.status(sid)
        self.next_seq = status.frames_sampled
        self.last_pts = status.last_pts if status.last_pts is not None else -math.inf
        self._resume_wall = status.last_frame_wall  # the previous reader's last frame, if any
        self._reported = LiveStats()
        self._drained = False  # the feed ended and every frame it gave was handed over
        self._unsent: list[RawFrame] = []  # a batch whose hand-over failed, to send again (``_resync``)
        self._stop = threading.Event()
        run = in_log_context(self._run, stream_id=sid, tenant=self.rec.tenant)
        self._thread = threading.Thread(target=run, name=f"vidmem-live-{sid[:8]}", daemon=True)

    # ---- life cycle (supervisor thread) ----

    def start(self) -> StreamReader:
        self.source.start()
        self._thread.start()
        log.info("stream %s: reading %s", self.sid, self.source.shown)
        return self

    def heartbeat(self) -> bool:
        """Renew the lease and report; False when this reader is finished (it then closes itself)."""
        if self.resumable and self.source.state == "stopped":  # its thread died (a bug): let it restart
            log.error("stream %s: the live source stopped by itself; releasing the stream", self.sid)
            self._close_later(release=True)
            return False
        if self._stop.is_set():  # the hand-over thread ended: the feed is over, the lease lost, or a failure
            self._close_later(release=self._drained)
            return False
        try:
            state = self.rt.records.stream(self.sid).state
        except UnknownStreamRecord:
            state = "stopped"
        if state == "stopped":  # DELETE: stop reading, and let nobody pick it up again
            self.rt.live.retire(self.sid)
            self._close_later(release=True)
            return False
        try:
            self.lease.renew()
        except LeaseLost:
            # Nobody else reads a feed held by this process (it is not in vm:live): after a Redis outage
            # or a long pause, take the lease again and go on.
            if not self.resumable and self.lease.try_acquire():
                log.warning("stream %s: lease had expired; taken again", self.sid)
            else:
                log.warning("stream %s: lease lost; another ingest process reads it now", self.sid)
                self._close_later(release=False)
                return False
        self._report()
        return True

    def close(self, release: bool) -> None:
        """Stop the source and the hand-over thread; give the lease back if asked (a clean shutdown).

        A feed nobody else can read (WebRTC) first gets its queued frames handed over, and its stream
        is then over: "done" (a stream already "stopped" stays so).
        """
        self.source.stop()
        if not self.resumable:
            self._thread.join(2)  # the hand-over thread drains the queue and returns
        self._stop.set()
        self._thread.join(5)
        if release:
            try:
                self.lease.renew()
                self._report()
            except LeaseLost:
                release = False
        if not self.resumable:
            try:
                self.rt.records.set_stream_state(self.sid, "done")
            except redis.RedisError:
                log.exception("stream %s: could not mark it done", self.sid)
        if release:
            self.lease.release()

    def _close_later(self, release: bool) -> None:
        """Close without blocking the heartbeat loop (a stalled open can take seconds to give up)."""
        self._stop.set()
        close = in_log_context(lambda: self.close(release), stream_id=self.sid, tenant=self.rec.tenant)
        threading.Thread(target=close, daemon=True).start()

    # ---- reporting ----

    def _report(self) -> None:
        """Report what the source says since the last report: counter increments, new gaps, its error
        and connection state, and its state as the stream's record state (a final "stopped" or "ended"
        is left to ``close``)."""
        st, prev = self.source.stats, self._reported
        increments = {
            "frames_dropped": st.frames_dropped - prev.frames_dropped,
            "frames_skipped": st.frames_skipped_similar - prev.frames_skipped_similar,
            "frames_replayed": st.frames_replayed - prev.frames_replayed,
            "reconnects": st.reconnects - prev.reconnects,
        }
        for gap in st.gaps[len(prev.gaps) :]:
            self.rt.live.add_gap(self.sid, gap, self.rt.settings.live_max_gaps)
        self.rt.live.report(
            self.sid,
            owner=self.owner,
            increments=increments,
            disconnected_since=st.disconnected_since,
            last_error=st.last_error,
            resolution=st.resolution,
        )
        if st.state != "stopped" and st.state != "ended":
            self.rt.records.set_stream_state(self.sid, st.state)
        metrics.record(self.rt.redis, *metrics.live_counts(self.rec.kind, increments))
        self._reported = st

    # ---- hand-over thread ----

    def _run(self) -> None:
        """The hand-over thread's body: hand frames over until stopped or the feed is drained."""
        try:
            self._hand_over_all()
        except Exception:  # the thread's boundary: a bug ends the reader, logged, never silently
            what = "it will be restarted" if self.resumable else "its stream ends"
            log.exception("stream %s: reader failed (a bug); %s", self.sid, what)
        finally:
            self._stop.set()

    def _hand_over_all(self) -> None:
        """Hand frames over until stopped, or the feed is drained. A resumable reader whose hand-over
        fails (HANDOVER_ERRORS) returns (the supervisor, or another process, starts a new one); one that
        holds a feed nobody else can read retries every second, re-reading where the stream's sequence
        stands, until the stream is stopped or deleted."""
        retry = False
        while not self._stop.is_set():
            try:
                if retry:
                    self._resync()
                self._resend_inflight()
                self._loop()
                return
            except HANDOVER_ERRORS as e:
                if self.resumable or self._over():
                    if isinstance(e, NotOwner):
                        log.warning("%s", e)
                    else:
                        log.exception("stream %s: reader failed; it will be restarted", self.sid)
                    return
                log.exception("stream %s: hand-over failed; retrying", self.sid)
                retry = True
                self._stop.wait(1.0)

    def _resync(self) -> None:
        """After a failed hand-over: continue from the stream's recorded sequence and time. A batch whose
        dispatch raised but was stored (the reply was lost) is not sent again."""
        status = self.rt.live.status(self.sid)
        if self._unsent and status.frames_sampled >= self.next_seq + len(self._unsent):
            self._unsent = []
        self.next_seq = status.frames_sampled
        if status.last_pts is not None:
            self.last_pts = max(self.last_pts, status.last_pts)

    def _over(self) -> bool:
        """Whether the stream was stopped or deleted (then a refused hand-over is final); not while Redis
        cannot say (the hand-over is retried). Anything else is a bug, and ends the reader."""
        try:
            return self.rt.records.stream(self.sid).state == "stopped"
        except UnknownStreamRecord:
            return True
        except redis.RedisError:
            return False

    def _loop(self) -> None:
        s = self.rt.settings
        if self._unsent:  # a batch whose hand-over failed: it goes first
            batch, self._unsent = self._unsent, []
            self._hand_over(batch)
        while not self._stop.is_set():
            if self.next_seq - self.rt.memory.next_seq(self.sid) >= s.live_inflight:
                self._stop.wait(0.05)  # backpressure: the source's queue fills and it drops frames
                continue
            first = self.source.get(0.2)
            if first is None:
                if self.source.state in ("ended", "stopped") and not self.source.qsize():
                    self._drained = self.source.state == "ended"
                    if self._drained:
                        ended = metrics.feed_ended(self.rec.kind, self.source.stats.last_error)
                        metrics.record(self.rt.redis, ended)
                    return
                continue
            batch = [first]
            while len(batch) < s.encode_batch and (more := self.source.get(0)) is not None:
                batch.append(more)
            self._hand_over(batch)

    def _hand_over(self, batch: list[RawFrame]) -> None:
        """Number and dispatch ``batch``; if the dispatch fails it is kept in ``_unsent`` (and
        ``_resync`` decides whether it was stored after all)."""
        frames = number(batch, self.next_seq, self.last_pts, self.rec.created_at)
        try:
            key = self.rt.live.dispatch(self.sid, self.lease.token, frames, read_wall=batch[-1].wall_time)
        except HANDOVER_ERRORS:
            self._unsent = batch
            raise
        self.last_pts = frames[-1].pts
        self.next_seq += len(frames)
        self.rt.submit("encode", "", self.sid, key)
        metrics.record(self.rt.redis, metrics.inc(metrics.FRAMES_SAMPLED, len(frames), kind=self.rec.kind))
        if self._resume_wall is not None:
            self._takeover_gap(frames[0])

    def _takeover_gap(self, first: Frame) -> None:
        """Record the span between the previous reader's last frame and ours, when frames were missed."""
        start, self._resume_wall = self._resume_wall, None
        assert start is not None and first.wall_time is not None
        if first.wall_time - start > max(2.0, 2.0 / self.rec.fps):
            gap = Gap(start_wall=start, end_wall=first.wall_time, reason=TAKEOVER)
            self.rt.live.add_gap(self.sid, gap, self.rt.settings.live_max_gaps)

    def _resend_inflight(self) -> None:
        """Chunks the previous reader handed over that are not in the memory yet: queue them again (an
        encode is idempotent), in case that reader died between storing a chunk and queueing its task."""
        done = self.rt.memory.next_seq(self.sid)
        for key in self.rt.frames.inflight(self.sid):
            if self.rt.frames.seqs(key).stop <= done:
                self.rt.frames.delete(key)
            else:
                self.rt.submit("encode", "", self.sid, key)
