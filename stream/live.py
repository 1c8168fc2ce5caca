"""A live source (RTSP camera, HTTP MJPEG feed, HLS playlist): read in a background thread, sampled at
``fps`` frames per second.

A reader thread opens the URL with PyAV (``live_input``, through ``av_input``: allow-listed scheme,
``protocol_whitelist``, socket and PyAV open/read timeouts, TCP transport for RTSP), decodes every frame
and keeps about ``fps`` per second:

- RTSP and MJPEG (frames arrive as they are captured): per second of *wall-clock* time. A frame is kept
  when it is the first decoded at or after the next target (``FrameSelector`` on seconds since the
  source was created).
- HLS (the container format is ``hls``): per second of *stream* time. FFmpeg's HLS demuxer delivers a
  whole segment within milliseconds once it appears (and, on open, the last few segments of the
  playlist at once), so a wall-clock sampler would keep one frame per segment. Every decoded frame is
  placed on a ``stream.timeline.SourceTimeline`` by its source timestamp (``frame.time``): a replay is
  skipped, and the others are sampled by source time on their timeline and given the time they were
  shown (``RawFrame.shown_wall``). Frames without a source timestamp fall back to the wall clock.

Kept frames go to a bounded queue as ``RawFrame`` (image, wall time at decode, time shown, source time):
the consumer numbers them. When the consumer is slow the newest frame is dropped and counted, so memory
stays bounded.

A live feed is never "done": when the decode loop ends (the server hung up), raises (FFmpeg or socket
error), or stalls past the read timeout (a frozen server: ``read_timeout_s``, or ``hls_read_timeout_s``
for HLS, whose healthy reads block until the next segment appears), the source records a disconnect,
reopens with exponential backoff and jitter until it succeeds, and records the Gap between the last
frame before and the first frame after. Only ``stop()`` ends it.

A reopened HLS playlist starts a few segments behind its end, so FFmpeg decodes again frames read before
the disconnect. The timeline is kept across reopens: a replayed frame still marks the feed live and
closes the gap (the server is back), but it is never sampled, and it is counted in ``frames_replayed``.
Kept frames of an HLS source therefore have strictly increasing ``source_time`` unless the producer
restarts its clock.

Credentials never reach logs, errors, gap reasons or stats: every text goes through ``redact`` and
FFmpeg's own exception text (which repeats the raw URL) is never used.

Knows nothing about models, workers or HTTP frameworks.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import av.error
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from stream.av_input import Source, decode_error, open_video, resolve
from stream.errors import SourceError
from stream.feed import QueuedFeed
from stream.frames import RawFrame
from stream.live_types import Backoff, Gap, LiveConfig
from stream.sampling import MAX_CONSECUTIVE_DECODE_ERRORS, FrameSelector, SimilarFrames, to_rgb
from stream.timeline import SourceTimeline
from stream.urls import is_hls_url, redact

logger = logging.getLogger(__name__)

ANALYZE_DURATION_US = "500000"
"""FFmpeg's ``analyzeduration`` for live opens (microseconds): probing stops after 0.5 s of stream.
The default (5 s) made an RTSP open take 2-3 s on loopback; this one takes about 0.6 s."""

ENDED = "stream ended"
"""Gap reason when the server closed the stream without an error."""


def live_input(url: str, config: LiveConfig) -> Source:
    """How a live URL is opened, by ``LiveSource`` and ``check_live`` alike: ``config.allowed_schemes``,
    open timeout ``open_timeout_s``, socket and read timeout ``read_timeout_s`` (``hls_read_timeout_s``
    for an HLS playlist URL, see ``is_hls_url``: FFmpeg takes the read timeout at open, before the
    format is known; the chosen one is ``Source.timeout_s``), short ``analyzeduration`` (and, from
    ``av_input.resolve``, TCP transport for RTSP), ``config.network_policy`` (checked at each open,
    reconnects included). Raises ForbiddenUrl; opens nothing."""
    source = resolve(
        url,
        allowed_schemes=config.allowed_schemes,
        timeout_s=config.hls_read_timeout_s if is_hls_url(url) else config.read_timeout_s,
        open_timeout_s=config.open_timeout_s,
        network_policy=config.network_policy,
    )
    return dataclasses.replace(source, options={**source.options, "analyzeduration": ANALYZE_DURATION_US})


def replays_segments(container: InputContainer) -> bool:
    """Whether this container is HLS: a reopen may decode again frames already read, frames come in
    bursts of a segment (both handled by ``SourceTimeline``) and a healthy read waits up to about 1.5
    segments (``hls_read_timeout_s``)."""
    return "hls" in container.format.name


class LiveSource(QueuedFeed):
    """Frames of a live URL, sampled at ``config.fps`` by a reader thread, with reconnects and gaps.

    ``fps`` counts wall-clock seconds for RTSP and MJPEG, stream seconds for HLS (see the module doc).

    ``LiveSource(url, config)`` checks the URL now (ForbiddenUrl for a scheme outside
    ``config.allowed_schemes``, or file:, concat:, subfile:, data: ...) but opens nothing; ``start()`` (or
    ``with``) starts the reader. ``get()`` gives RawFrame(image [H, W, 3] uint8 RGB, wall_time, shown_wall,
    source_time, keyframe) until ``stop()``; ``stats`` is a LiveStats snapshot. A source
    that cannot be reached is retried forever (state "connecting" or "reconnecting", ``stats.last_error``
    says why).

    ``stop()`` returns once the reader has closed the container: at once while frames flow or between
    retries, after at most the read timeout (``read_timeout_s``, or ``hls_read_timeout_s`` for an HLS
    playlist URL) on a stalled read and ``open_timeout_s`` during an open.
    """

    def __init__(self, url: str, config: LiveConfig | None = None) -> None:
        self.config = config = config or LiveConfig()
        super().__init__(config.queue_size)
        self._source = live_input(url, config)
        self.shown = self._source.shown
        """The URL with credentials redacted: the only form to print."""
        self._t0 = time.monotonic()
        self._gap_reason = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Reader-thread state (no lock needed: only the reader touches it).
        self._select = FrameSelector(config.fps)
        self._timeline = SourceTimeline(config.fps, config.replay_window_s)
        self._backoff = Backoff(config.backoff_initial_s, config.backoff_max_s, config.jitter)
        self._similar = SimilarFrames(config.skip_similar)

    # ---- consumer side -------------------------------------------------------------------------------

    def start(self) -> LiveSource:
        """Start the reader thread (once); returns self."""
        with self._lock:
            if self._thread is not None:
                return self
            self._thread = threading.Thread(target=self._run, name="vidmem-live", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the reader and wait for it to close the container; the state becomes "stopped" (final).

        Waits at most ``timeout_s`` (default: open timeout + read timeout given to FFmpeg + 1 s), then
        logs a warning. Frames still queued can be read; then ``get()`` gives None.
        """
        self._stop.set()
        thread = self._thread
        if thread is not None:
            limit = (
                timeout_s
                if timeout_s is not None
                else self.config.open_timeout_s + self._source.timeout_s + 1
            )
            thread.join(limit)
            if thread.is_alive():
                logger.warning("live reader of %s did not stop within %.1f s", self.shown, limit)
        self._finish()
        self._update(state="stopped")

    def __enter__(self) -> LiveSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, timeout_s: float | None = None) -> RawFrame | None:
        """The next frame, waiting at most ``timeout_s`` (None: until one comes or the source stops);
        None on timeout or once the source has stopped and the queue is empty."""
        if self._thread is None:
            raise RuntimeError("LiveSource.start() was not called")
        return super().get(timeout_s)

    # ---- reader thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        """Reader-thread body: read, and on each failure record it, wait (backoff) and reopen."""
        try:
            while not self._stop.is_set():
                self._read_once()
                self._stop.wait(self._backoff.next_delay())
        except Exception:
            logger.exception("live reader of %s failed", self.shown)
            raise
        finally:
            self._finish()
            self._update(state="stopped")

    def _read_once(self) -> None:
        """Open the source and read until it ends or fails, then record why (``_on_disconnect``).

        A failure is recorded before the container is closed: closing an RTSP session sends a TEARDOWN,
        which waits for a frozen server up to the read timeout again.
        """
        try:
            with open_video(self._source) as (container, stream):
                try:
                    stalled_after = self._decode(container, stream)
                    reason = ENDED if stalled_after is None else self._stalled(stalled_after)
                except (av.error.FFmpegError, OSError) as exc:
                    reason = self._describe(exc)
                if not self._stop.is_set():
                    self._on_disconnect(reason)
                return
        except (SourceError, av.error.FFmpegError, OSError) as exc:
            reason = self._describe(exc)
        if not self._stop.is_set():
            self._on_disconnect(reason)

    def _stalled(self, limit_s: float) -> str:
        return f"no frame from {self.shown} for {limit_s:g} s (read timeout)"

    def _describe(self, exc: Exception) -> str:
        """Why reading failed, in words safe to show (credentials redacted, no raw FFmpeg text)."""
        if isinstance(exc, SourceError):
            return redact(str(exc))
        if isinstance(exc, av.error.ExitError):  # PyAV's read timeout: nothing arrived for its timeout
            return self._stalled(self._source.timeout_s)
        if isinstance(exc, av.error.FFmpegError):
            return redact(str(decode_error(exc, self._source)))
        assert isinstance(exc, OSError)
        return redact(f"{type(exc).__name__}: {exc.strerror or exc}")

    def _decode(self, container: InputContainer, stream: VideoStream) -> float | None:
        """Decode until the stream ends or stop() is called (None), or until a read took the read timeout
        (that timeout in seconds: a stalled feed). The timeout is the one given to FFmpeg at open, or
        ``hls_read_timeout_s`` once the container is known to be HLS (a healthy HLS read waits for the
        next segment), whatever the URL. A frozen RTSP server makes PyAV's timed-out read return the
        partial packet it had, and raise ExitError only on the next read, one more timeout later; that
        partial packet is recognised by its wait and not decoded.

        Packets the decoder rejects are skipped; raises av.error.FFmpegError on a read error (ExitError:
        PyAV's read timeout) or on MAX_CONSECUTIVE_DECODE_ERRORS rejected packets in a row.
        """
        rgb = VideoReformatter()
        hls = replays_segments(container)
        limit_s = self.config.hls_read_timeout_s if hls else self._source.timeout_s
        in_a_row = 0
        last_read = time.monotonic()
        for packet in container.demux(stream):
            now = time.monotonic()
            if self._stop.is_set():
                return None
            if now - last_read >= limit_s:
                return limit_s
            last_read = now
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:
                in_a_row += 1
                if in_a_row >= MAX_CONSECUTIVE_DECODE_ERRORS:
                    raise
                continue
            in_a_row = 0
            for vf in decoded:
                self._on_frame(vf, rgb, hls)
        return None

    def _on_frame(self, vf: VideoFrame, rgb: VideoReformatter, hls: bool) -> None:
        """A decoded frame: mark the feed live (closing a gap); for ``hls``, place it on the timeline
        (a replay is counted and dropped) and sample it by its source time; otherwise by wall-clock time.
        A kept frame that is not near-identical to the last queued one is queued."""
        wall, t = time.time(), time.monotonic() - self._t0
        if not self._mark_live(wall, vf):
            return
        self._backoff.reset()
        source_time, shown = vf.time, wall
        if hls and source_time is not None:
            if self._timeline.place(source_time, wall) == "replay":
                self._count(frames_replayed=1)
                return
            if not self._timeline.sampled(source_time):
                return
            shown = self._timeline.wall(source_time)
        elif not self._select(t):
            return
        if self._similar.similar(vf):
            self._count(frames_skipped_similar=1)
            return
        image = to_rgb(vf, rgb, self.config.size)
        frame = RawFrame(
            image, wall_time=wall, shown_wall=shown, source_time=source_time, keyframe=vf.key_frame
        )
        if self._offer(frame):
            self._similar.accept()

    def _mark_live(self, wall: float, vf: VideoFrame) -> bool:
        """A frame was decoded at ``wall``: the state becomes "live", and a gap open since a disconnect
        closes. False once the source is stopped (the frame is then dropped)."""
        with self._lock:
            s = self._stats
            if s.state == "stopped":
                return False
            if s.state == "reconnecting" and s.disconnected_since is not None:
                gap = Gap(
                    start_wall=s.disconnected_since,
                    end_wall=max(wall, s.disconnected_since),
                    reason=self._gap_reason,
                )
                logger.info(
                    "%s is back after %.1f s (%s)", self.shown, gap.end_wall - gap.start_wall, gap.reason
                )
                s = dataclasses.replace(
                    s, gaps=(*s.gaps, gap), reconnects=s.reconnects + 1, disconnected_since=None
                )
            self._stats = dataclasses.replace(
                s, state="live", last_frame_wall=wall, resolution=(vf.width, vf.height)
            )
        return True

    def _on_disconnect(self, reason: str) -> None:
        """The read ended or failed: open a gap if the feed was live; remember the error either way."""
        logger.info("%s: %s", self.shown, reason)
        with self._lock:
            s = self._stats
            if s.state == "stopped":
                return
            if s.state == "live":
                self._gap_reason = reason
                since = s.last_frame_wall if s.last_frame_wall is not None else time.time()
                s = dataclasses.replace(s, state="reconnecting", disconnected_since=since)
            self._stats = dataclasses.replace(s, last_error=reason)
