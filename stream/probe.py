"""Read a video's container metadata (duration, rate, size, codec) without decoding frames.

The values come from headers, which can lie (AVI frame counts and rates): use them for display and
planning, and the decoded frames' timestamps (``sampling``) for anything that must be right.

Knows nothing about sampling, models or HTTP.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from stream.av_input import open_video, resolve
from stream.urls import ALLOWED_SCHEMES, NetworkPolicy

_AV_TIME_BASE = 1_000_000
"""Units per second of ``InputContainer.duration`` (FFmpeg's AV_TIME_BASE)."""


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """Header metadata of a source's video stream.

    duration_s: seconds (stream duration, else container duration), None if unknown (live sources).
    fps:        average frame rate from the headers, frames per second, None if unknown.
    width, height: coded picture size in pixels.
    codec:      FFmpeg decoder name, e.g. "h264".
    has_audio:  whether the container also holds an audio stream.
    """

    duration_s: float | None
    fps: float | None
    width: int
    height: int
    codec: str
    has_audio: bool


def probe(
    src: str,
    *,
    allowed_schemes: Collection[str] = ALLOWED_SCHEMES,
    allow_local: bool = False,
    timeout_s: float = 10.0,
    network_policy: NetworkPolicy | None = None,
) -> VideoInfo:
    """Open ``src`` (same rules as ``sample_frames``) and return its VideoInfo.

    Raises ForbiddenUrl before FFmpeg is called; NotAVideo, NoVideoStream, UnsupportedCodec, CorruptVideo
    (local file that claims a video container but cannot be parsed) or UnreachableSource when opening fails.
    """
    source = resolve(
        src,
        allowed_schemes=allowed_schemes,
        allow_local=allow_local,
        timeout_s=timeout_s,
        network_policy=network_policy,
    )
    with open_video(source) as (container, stream):
        duration_s: float | None = None
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / _AV_TIME_BASE
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(
            duration_s=duration_s,
            fps=float(rate) if rate else None,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            codec=stream.codec_context.name,
            has_audio=bool(container.streams.audio),
        )
