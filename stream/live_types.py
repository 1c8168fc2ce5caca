"""Value objects of a live source (its config, the gaps in its feed, a snapshot of its counters), its
reconnect backoff, and ``FrameFeed``: the one interface every live source offers its consumer.

Standard library only; knows nothing about PyAV, threads or consumers (see ``stream.live``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from stream.frames import RawFrame

from stream.urls import SCHEME_PROTOCOLS, NetworkPolicy

LiveState = Literal["connecting", "live", "reconnecting", "stopped", "ended"]
"""connecting: no frame yet; live: frames flowing; reconnecting: the feed was lost and is being reopened;
stopped: ``stop()`` was called (final); ended: the source finished by itself and cannot come back (a
WebRTC peer left or went silent; a live URL never ends) (final)."""


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """How a live source is read. Times in seconds.

    fps:               frames kept per second (> 0): of wall-clock time for RTSP and MJPEG, of stream time
                       (the frames' source timestamps) for HLS, whose frames arrive in bursts of a segment.
    open_timeout_s:    limit for opening the stream (connect, handshake, probe) (> 0).
    read_timeout_s:    limit for one read; a frozen source is detected within it (> 0). Not for HLS URLs.
    hls_read_timeout_s: the same for HLS (> 0). A healthy HLS read blocks until the next segment appears
                       and FFmpeg has reloaded the playlist (every target duration, then every half of
                       it): up to about 1.5 segment lengths, so this must exceed that. Chosen by URL (a
                       path ending in .m3u8 or .m3u, see ``stream.urls.is_hls_url``) for the read timeout
                       given to FFmpeg at open, and by container format for LiveSource's own stall check.
                       An HLS feed at another URL still gets ``read_timeout_s`` from FFmpeg: give such a
                       feed a ``read_timeout_s`` above 1.5 segment lengths.
    backoff_initial_s: wait before the first reopen after a failure (> 0); doubles per failed attempt.
    backoff_max_s:     cap on that wait (>= backoff_initial_s).
    jitter:            each wait is scaled by a random factor in [1 - jitter, 1 + jitter] (0 <= jitter < 1).
    allowed_schemes:   URL schemes accepted (each must be in ``stream.urls.SCHEME_PROTOCOLS``).
    queue_size:        frames held for a slow consumer (>= 1); when full, new frames are dropped.
    skip_similar:      if set, a frame whose 32x32 grayscale differs from the last queued one by less than
                       this mean absolute difference (0-255 scale) is skipped; None keeps every frame.
    size:              (width, height) of the images; None keeps the native size.
    replay_window_s:   HLS only: a decoded frame at most this far behind the latest source time seen (and
                       not before the earliest) replays a segment already read and is skipped; further
                       behind, the producer restarted its clock and the frame is kept
                       (``stream.timeline.SourceTimeline``) (> 0).
    network_policy:    for a client's URL: the networks its host (and an HLS playlist's segment hosts) may
                       resolve to, checked at every open, reconnects included (``stream.urls.NetworkPolicy``);
                       None trusts the URL.
    """

    fps: float = 1.0
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    hls_read_timeout_s: float = 15.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    jitter: float = 0.2
    allowed_schemes: tuple[str, ...] = ("rtsp", "rtsps", "http", "https")
    queue_size: int = 16
    skip_similar: float | None = None
    size: tuple[int, int] | None = None
    replay_window_s: float = 120.0
    network_policy: NetworkPolicy | None = None

    def __post_init__(self) -> None:
        for name in (
            "fps",
            "open_timeout_s",
            "read_timeout_s",
            "hls_read_timeout_s",
            "backoff_initial_s",
            "replay_window_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not self.backoff_max_s >= self.backoff_initial_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s}) must be >= "
                f"backoff_initial_s ({self.backoff_initial_s})"
            )
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if isinstance(self.allowed_schemes, str) or not self.allowed_schemes:
            raise ValueError(
                f"allowed_schemes must be a non-empty tuple of schemes, got {self.allowed_schemes!r}"
            )
        unknown = [s for s in self.allowed_schemes if s not in SCHEME_PROTOCOLS]
        if unknown:
            raise ValueError(f"unsupported schemes {unknown}; supported: {sorted(SCHEME_PROTOCOLS)}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.skip_similar is not None and not (
            math.isfinite(self.skip_similar) and self.skip_similar >= 0
        ):
            raise ValueError(f"skip_similar must be None or a number >= 0, got {self.skip_similar}")
        if self.size is not None and (
            len(self.size) != 2 or not all(isinstance(v, int) and v > 0 for v in self.size)
        ):
            raise ValueError(f"size must be (width, height) in positive pixels, got {self.size}")


@dataclass(frozen=True, slots=True)
class Gap:
    """A span with no frames: from the last frame before a disconnect to the first one after it.

    start_wall, end_wall: Unix times (start < end). reason: why the feed was lost, credentials redacted
    (an FFmpeg error, a read timeout, or "stream ended").
    """

    start_wall: float
    end_wall: float
    reason: str


@dataclass(frozen=True, slots=True)
class LiveStats:
    """A snapshot of a live source's counters.

    frames_sampled:         frames queued for the consumer.
    frames_dropped:         frames picked by the sampler but dropped because the queue was full.
    frames_skipped_similar: frames picked by the sampler but skipped as near-identical (``skip_similar``).
    frames_replayed:        decoded HLS frames skipped as replays of segments already read (SourceTimeline).
    reconnects:             times the feed came back after a disconnect (= len(gaps)).
    gaps:                   closed gaps, oldest first.
    state:                  see LiveState.
    last_frame_wall:        Unix time of the last decoded frame, None before the first.
    disconnected_since:     start of the gap now open (while reconnecting), else None.
    last_error:             the last failure (open or read), credentials redacted, or None.
    resolution:             (width, height) of the last decoded frame as the source sent it, or None.
    """

    frames_sampled: int = 0
    frames_dropped: int = 0
    frames_skipped_similar: int = 0
    frames_replayed: int = 0
    reconnects: int = 0
    gaps: tuple[Gap, ...] = ()
    state: LiveState = "connecting"
    last_frame_wall: float | None = None
    disconnected_since: float | None = None
    last_error: str | None = None
    resolution: tuple[int, int] | None = None


class Backoff:
    """Exponential backoff with jitter: initial, 2x initial, 4x ... capped at max, each times a random
    factor in [1 - jitter, 1 + jitter]. ``reset()`` after a success starts again from initial."""

    def __init__(
        self, initial_s: float, max_s: float, jitter: float, rng: random.Random | None = None
    ) -> None:
        self._initial, self._max, self._jitter = initial_s, max_s, jitter
        self._rng = rng or random.Random()
        self._attempt = 0

    def next_delay(self) -> float:
        """The wait before the next attempt, in seconds; each call counts one failed attempt."""
        base = min(self._max, self._initial * 2.0 ** min(self._attempt, 60))
        self._attempt += 1
        return base * (1.0 + self._jitter * self._rng.uniform(-1.0, 1.0))

    def reset(self) -> None:
        self._attempt = 0


class FrameFeed(Protocol):
    """What a live reader consumes: ``stream.live.LiveSource`` (a URL) or ``stream.webrtc.TrackSource``.

    ``get`` gives the kept frames in order, not numbered (``stream.frames.RawFrame``: the consumer
    numbers them); None on timeout, or once the source has finished and its queue is empty.
    """

    shown: str
    """What to call the source in logs (credentials redacted)."""

    def start(self) -> FrameFeed: ...
    def stop(self) -> None: ...
    def get(self, timeout_s: float | None = None) -> RawFrame | None: ...
    def qsize(self) -> int: ...
    @property
    def stats(self) -> LiveStats: ...
    @property
    def state(self) -> LiveState: ...
