"""A WebRTC video track (aiortc) as a live source: frames sampled at ``fps`` per second of wall-clock time.

aiortc decodes every frame the browser sends (VP8 or H.264) and hands it to ``track.recv()`` on the event
loop that owns the peer connection. ``TrackSource`` runs a consumer task on that loop: it takes every frame
at once (aiortc's own queue is unbounded), keeps about ``fps`` of them per second (``FrameSelector`` on
seconds since the source started), optionally skips near-identical ones (a shared screen that does not
change), converts the kept ones to RGB at ``size`` and puts them on a bounded thread-safe queue as
``RawFrame`` (the consumer numbers them). When the consumer is slow the newest frame is dropped and
counted.

It offers the same consumer interface as ``stream.live.LiveSource`` (``start``, ``stop``, ``get``,
``qsize``, ``stats``, ``state``, ``shown``), so one reader hands either kind to the encoders. Unlike a
camera URL, a track is never reopened: it *ends* (state "ended", final) when the peer closes it, or when
the watchdog sees no frame for ``watchdog_s`` (``first_frame_timeout_s`` before the first frame). A
browser killed outright still looks connected to ICE for about 35 s; the watchdog ends it sooner.

Knows nothing about SDP, HTTP, Redis or models.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter

from stream.feed import QueuedFeed
from stream.frames import RawFrame
from stream.sampling import FrameSelector, SimilarFrames, to_rgb

logger = logging.getLogger(__name__)

PEER_LEFT = "the browser closed the connection"
"""Why a track ended when its peer connection closed (``track.recv`` raised MediaStreamError)."""


@dataclass(frozen=True, slots=True)
class TrackConfig:
    """How a WebRTC track is sampled. Times in seconds.

    fps:                   frames kept per second of wall-clock time (> 0).
    size:                  (width, height) of the images; None keeps the size the browser sends.
    queue_size:            frames held for a slow consumer (>= 1); when full, new frames are dropped.
    skip_similar:          skip a frame whose 32x32 grayscale differs from the last kept one by less
                           than this mean absolute difference (0-255); None keeps every frame.
    watchdog_s:            the track ends when no frame arrives for this long (> 0).
    first_frame_timeout_s: the same, before the first frame (ICE and DTLS take a moment) (> 0).
    """

    fps: float = 1.0
    size: tuple[int, int] | None = None
    queue_size: int = 16
    skip_similar: float | None = None
    watchdog_s: float = 10.0
    first_frame_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("fps", "watchdog_s", "first_frame_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")


class TrackSource(QueuedFeed):
    """Sampled frames of one received WebRTC video track, until it ends or ``stop()``.

    Build it on the event loop that runs the peer connection (or pass that ``loop``); ``start`` and
    ``stop`` may then be called from any thread. ``on_end`` (called on the loop, once) learns that the
    consumer task finished, for whatever reason: the caller closes the peer connection there.
    """

    shown = "webrtc"

    def __init__(
        self,
        track: MediaStreamTrack,
        config: TrackConfig | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        if track.kind != "video":
            raise ValueError(f"a TrackSource needs a video track, got {track.kind!r}")
        self.track = track
        self.config = config = config or TrackConfig()
        super().__init__(config.queue_size)
        self._loop = loop or asyncio.get_running_loop()
        self._on_end = on_end
        self._started = False
        self._task: asyncio.Task[None] | None = None
        # Consumer-task state (only that task touches it).
        self._t0 = time.monotonic()
        self._select = FrameSelector(config.fps)
        self._similar = SimilarFrames(config.skip_similar)
        self._rgb = VideoReformatter()

    # ---- life cycle (any thread) ----

    def start(self) -> TrackSource:
        """Start consuming the track (once); returns self."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        self._loop.call_soon_threadsafe(self._spawn)
        return self

    def _spawn(self) -> None:
        self._task = self._loop.create_task(self._consume(), name="vidmem-webrtc-track")
        self._task.add_done_callback(self._consumed)  # also runs if it is cancelled before it starts

    def _consumed(self, _: asyncio.Task[None]) -> None:
        self._finish()
        if self._on_end is not None:
            self._on_end()

    def stop(self) -> None:
        """Stop consuming (state "stopped", unless it had already ended); queued frames stay readable."""
        with self._lock:
            if self._stats.state not in ("stopped", "ended"):
                self._stats = dataclasses.replace(self._stats, state="stopped")
        self._finish()
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def end(self, reason: str) -> None:
        """End the source for good (on the loop's thread or any other): the connection failed or closed."""
        with self._lock:
            if self._stats.state in ("stopped", "ended"):
                return
            self._stats = dataclasses.replace(self._stats, state="ended", last_error=reason)
        logger.info("webrtc track ended: %s", reason)
        self._finish()
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._cancel)

    # ---- the consumer task (event loop) ----

    async def _consume(self) -> None:
        try:
            while not self._done.is_set():
                first = self.stats.last_frame_wall is None
                limit = self.config.first_frame_timeout_s if first else self.config.watchdog_s
                try:
                    vf = await asyncio.wait_for(self.track.recv(), limit)
                except TimeoutError:
                    what = "no frame came" if first else "no frame"
                    self.end(f"{what} for {limit:g} s (watchdog)")
                    return
                except MediaStreamError:
                    self.end(PEER_LEFT)
                    return
                assert isinstance(vf, VideoFrame)
                self._on_frame(vf)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a decoder or conversion bug: end the stream visibly, never hang it
            logger.exception("webrtc track consumer failed")
            self.end(f"internal error reading the track ({type(exc).__name__})")

    def _on_frame(self, vf: VideoFrame) -> None:
        wall, t = time.time(), time.monotonic() - self._t0
        with self._lock:
            if self._stats.state in ("stopped", "ended"):  # ended in the same loop turn: final
                return
            self._stats = dataclasses.replace(
                self._stats, state="live", last_frame_wall=wall, resolution=(vf.width, vf.height)
            )
        if not self._select(t):
            return
        if self._similar.similar(vf):
            self._count(frames_skipped_similar=1)
            return
        image = to_rgb(vf, self._rgb, self.config.size)
        frame = RawFrame(image, wall_time=wall, shown_wall=wall, source_time=vf.time, keyframe=vf.key_frame)
        if self._offer(frame):
            self._similar.accept()
