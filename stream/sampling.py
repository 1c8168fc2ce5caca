"""Sample frames from a video file or URL: keyframes only, or a target rate in frames per second.

Times come from the decoded frames (``pts * time_base``, corrected like FFmpeg's best-effort timestamp),
relative to the first decoded frame, never from header frame counts or rates: AVI headers lie, and H.264
in AVI carries decode-order timestamps that the correction repairs. Only the frames kept are converted to
RGB, resized inside PyAV (swscale) when a size is asked for.

Errors (all SourceError): ForbiddenUrl at call time, before FFmpeg is touched; NotAVideo, NoVideoStream,
UnreachableSource and CorruptVideo from the first ``next()``. Packets the decoder rejects are skipped
(FFmpeg's own policy: one damaged packet does not end an hour of video) and counted in a warning. Once
frames have been emitted, a read error (network drop, damaged container) or MAX_CONSECUTIVE_DECODE_ERRORS
rejected packets in a row end the iteration with a logged warning instead of raising, so the frames
already emitted stay valid; before the first frame they raise (UnreachableSource or CorruptVideo). A file
cut short simply ends early (FFmpeg reports no error); in "fps" mode a warning compares the last time
with the header's duration.

Knows nothing about models, workers or HTTP.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av.error
import numpy as np
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream

from stream.av_input import Source, decode_error, open_video, resolve
from stream.errors import CorruptVideo
from stream.frames import Frame
from stream.urls import ALLOWED_SCHEMES, NetworkPolicy

logger = logging.getLogger(__name__)

Mode = Literal["keyframes", "fps"]

MAX_CONSECUTIVE_DECODE_ERRORS = 250
"""Packets in a row the decoder may reject before reading stops (about 10 s of 25 fps video)."""

_EPS_S = 1e-6
"""Tolerance (seconds) when comparing a frame time with a target time."""


class TimestampGuesser:
    """FFmpeg's ``guess_correct_pts`` (the rule behind ``best_effort_timestamp``), which PyAV does not apply.

    Counts how often pts and dts each fail to increase and trusts the one that fails less. For H.264 in
    AVI the demuxer stamps packets in decode order, so frames come out with pts 1, 4, 3, 5, 2, ...;
    their dts increase, and this switches to dts after the first misordered frame.
    """

    def __init__(self) -> None:
        self._last_pts: int | None = None
        self._last_dts: int | None = None
        self._faulty_pts = 0
        self._faulty_dts = 0

    def __call__(self, pts: int | None, dts: int | None) -> int | None:
        """Return the best timestamp (stream time-base units) for a frame, or None if it has neither."""
        if dts is not None:
            self._faulty_dts += self._last_dts is not None and dts <= self._last_dts
            self._last_dts = dts
        elif pts is not None:
            self._last_dts = pts
        if pts is not None:
            self._faulty_pts += self._last_pts is not None and pts <= self._last_pts
            self._last_pts = pts
        elif dts is not None:
            self._last_pts = dts
        if pts is not None and (self._faulty_pts <= self._faulty_dts or dts is None):
            return pts
        return dts


class FrameSelector:
    """Decides which decoded frames to keep, from their times in seconds (t >= 0, from the first frame).

    fps None keeps every frame whose time is later than the last kept one. With a rate, targets are
    0, 1/fps, 2/fps, ...: a frame is kept when it is the first at or after the next target; that frame
    also covers every target up to its own time, so a gap skips targets instead of repeating a frame,
    and no target gets two frames. Frames whose time does not increase are always dropped.
    """

    def __init__(self, fps: float | None) -> None:
        self._fps = fps
        self._next_target = 0
        self._last_t = -math.inf

    def __call__(self, t: float) -> bool:
        """Return whether the frame at ``t`` seconds is kept (and advance the targets if so)."""
        if t <= self._last_t:
            return False
        if self._fps is not None:
            if t + _EPS_S < self._next_target / self._fps:
                return False
            self._next_target = math.floor(t * self._fps + _EPS_S) + 1
        self._last_t = t
        return True


@dataclass
class _DecodeStats:
    """What the decode loop saw. skipped: packets the decoder rejected; last_t: seconds of the last frame."""

    skipped: int = 0
    last_error: av.error.FFmpegError | None = None
    last_t: float | None = None


def _timed_frames(
    container: InputContainer, stream: VideoStream, stats: _DecodeStats
) -> Iterator[tuple[float, VideoFrame]]:
    """Decode ``stream``; yield (seconds from the first decoded frame, frame) in presentation order.

    Packets the decoder rejects are skipped (counted in ``stats``). Raises av.error.FFmpegError on a
    read (demux) error, or on the MAX_CONSECUTIVE_DECODE_ERRORS-th rejected packet in a row.
    """
    time_base: Fraction = stream.time_base or Fraction(1, 90_000)
    guess = TimestampGuesser()
    origin: int | None = None
    in_a_row = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            stats.skipped, stats.last_error, in_a_row = stats.skipped + 1, exc, in_a_row + 1
            if in_a_row >= MAX_CONSECUTIVE_DECODE_ERRORS:
                raise
            continue
        in_a_row = 0
        for frame in frames:
            ts = guess(frame.pts, frame.dts)
            if ts is None:
                continue
            if origin is None:
                origin = ts
            stats.last_t = float((ts - origin) * time_base)
            yield stats.last_t, frame


class SimilarFrames:
    """Skips near-identical frames: a candidate whose 32x32 grayscale differs from the last *accepted*
    frame's by less than ``threshold`` (mean absolute difference, 0-255 scale) is similar. None: never.

    ``similar(frame)`` compares and keeps the candidate's thumbnail; ``accept()`` makes it the reference
    (call it once the frame was really kept, e.g. queued). Not thread-safe: one caller.
    """

    SIDE = 32

    def __init__(self, threshold: float | None) -> None:
        self.threshold = threshold
        self._gray = VideoReformatter()
        self._last: np.ndarray | None = None
        self._pending: np.ndarray | None = None

    def similar(self, frame: VideoFrame) -> bool:
        if self.threshold is None:
            return False
        thumb = self._gray.reformat(frame, width=self.SIDE, height=self.SIDE, format="gray")
        self._pending = thumb.to_ndarray().astype(np.int16)
        return self._last is not None and float(np.abs(self._pending - self._last).mean()) < self.threshold

    def accept(self) -> None:
        if self._pending is not None:
            self._last, self._pending = self._pending, None


def to_rgb(frame: VideoFrame, reformatter: VideoReformatter, size: tuple[int, int] | None) -> np.ndarray:
    """[H, W, 3] uint8 RGB of ``frame``, at size (W, H) if given (swscale resize, no aspect kept)."""
    width, height = size if size is not None else (frame.width, frame.height)
    rgb = reformatter.reformat(frame, width=width, height=height, format="rgb24")
    return np.ascontiguousarray(rgb.to_ndarray())


def _warn_if_short(stream: VideoStream, stats: _DecodeStats, source: Source) -> None:
    """Log a warning when decoding ended well before the duration the header announces (truncated file)."""
    if stream.duration is None or stream.time_base is None or stats.last_t is None:
        return
    header_s = float(stream.duration * stream.time_base)
    if stats.last_t < 0.9 * header_s - 1.0:
        logger.warning(
            "%s ended at %.1f s but its header says %.1f s: truncated?", source.shown, stats.last_t, header_s
        )


def _generate(
    source: Source, mode: Mode, fps: float, size: tuple[int, int] | None, start_seq: int
) -> Generator[Frame, None, None]:
    """The decode loop behind ``sample_frames``; the container is closed when this generator ends."""
    with open_video(source) as (container, stream):
        if mode == "keyframes":
            # Frame threads only add overhead when most packets are skipped (measured 2x slower).
            stream.codec_context.skip_frame = "NONKEY"
        else:
            stream.thread_type = "AUTO"
        keep = FrameSelector(None if mode == "keyframes" else fps)
        reformatter = VideoReformatter()
        stats = _DecodeStats()
        seq = start_seq
        try:
            for t, vf in _timed_frames(container, stream, stats):
                if keep(t):
                    yield Frame(seq=seq, pts=t, image=to_rgb(vf, reformatter, size), keyframe=vf.key_frame)
                    seq += 1
        except av.error.FFmpegError as exc:
            if seq == start_seq:
                raise decode_error(exc, source) from None
            logger.warning(
                "stopped reading %s after %d frames (%.3f s): %s: %s",
                source.shown,
                seq - start_seq,
                stats.last_t,
                type(exc).__name__,
                exc.strerror,
            )
            return
        finally:
            if stats.skipped:
                logger.warning("skipped %d undecodable packets of %s", stats.skipped, source.shown)
        if seq == start_seq:
            if stats.last_error is not None:
                raise decode_error(stats.last_error, source)
            raise CorruptVideo(f"{source.shown} has a video stream but no frame could be decoded")
        if mode == "fps":
            _warn_if_short(stream, stats, source)


def sample_frames(
    src: str,
    *,
    mode: Mode = "fps",
    fps: float = 1.0,
    size: tuple[int, int] | None = None,
    allowed_schemes: Collection[str] = ALLOWED_SCHEMES,
    allow_local: bool = False,
    timeout_s: float = 10.0,
    start_seq: int = 0,
    network_policy: NetworkPolicy | None = None,
) -> Generator[Frame, None, None]:
    """Iterate over frames sampled from a video file or URL.

    src:       a URL whose scheme is in ``allowed_schemes``, or (with ``allow_local``) a local path.
    mode:      "keyframes": decode keyframes only (``skip_frame="NONKEY"``, the fast path), keep all;
               "fps": decode everything (frame+slice threads) and keep about ``fps`` frames per second
               (see FrameSelector: first frame at or after each target, gaps skipped, no duplicates).
    fps:       target rate in frames per second (> 0), for mode "fps".
    size:      (width, height) of the images; None keeps the native size.
    timeout_s: connect/read timeout in seconds for network sources.
    start_seq: ``seq`` of the first frame; the rest follow contiguously.
    network_policy: for a client's URL, where its host may resolve (``stream.urls.NetworkPolicy``),
               checked at the open; None trusts the URL.

    Returns a generator of Frame(seq, pts, image, keyframe): pts in seconds from the first decoded frame
    (strictly increasing), image [H, W, 3] uint8 RGB (C-contiguous), wall_time None. The container is
    closed when iteration ends or fails, or when the generator is closed (``close()`` it to stop early).
    Arguments and the URL are checked now (ValueError, ForbiddenUrl); opening and decoding happen lazily,
    from the first ``next()``: see the module docstring for those errors.
    """
    if mode not in ("keyframes", "fps"):
        raise ValueError(f"mode must be 'keyframes' or 'fps', got {mode!r}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if size is not None and (len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size)):
        raise ValueError(f"size must be (width, height) in positive pixels, got {size}")
    if start_seq < 0:
        raise ValueError(f"start_seq must be >= 0, got {start_seq}")
    source = resolve(
        src,
        allowed_schemes=allowed_schemes,
        allow_local=allow_local,
        timeout_s=timeout_s,
        network_policy=network_policy,
    )
    return _generate(source, mode, fps, size, start_seq)
