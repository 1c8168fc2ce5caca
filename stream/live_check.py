"""Check a live URL before it is registered: open it exactly as LiveSource will and decode one frame.

A LiveSource retries an unreachable URL forever, which is right for a camera that reboots but wrong for a
mistyped address given to the API: ``check_live`` answers once, with a typed SourceError, whether the URL
gives a frame now. Messages name the source with credentials redacted and never repeat FFmpeg's text.

Knows nothing about models, workers or HTTP frameworks.
"""

from __future__ import annotations

import time

import av.error
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from stream.av_input import Source, decode_error, open_video
from stream.errors import UnreachableSource
from stream.live import live_input
from stream.live_types import LiveConfig
from stream.probe import VideoInfo
from stream.urls import redact


def check_live(url: str, config: LiveConfig) -> VideoInfo:
    """Open ``url`` with ``config``'s allow-list and timeouts (``live_input``) and decode one frame.

    Returns the VideoInfo of its video stream: width and height of the decoded frame, codec, header
    frame rate (None if unknown), whether it has audio; ``duration_s`` is None (a live feed has none).
    Takes at most about ``open_timeout_s`` plus the read timeout: ``read_timeout_s``, or
    ``hls_read_timeout_s`` for an HLS playlist URL (path ending in .m3u8 or .m3u, as LiveSource decides).

    Raises ForbiddenUrl before FFmpeg is called (a scheme outside ``config.allowed_schemes``, or
    file:, concat:, subfile:, data: ...; a host ``config.network_policy`` refuses), or when FFmpeg is led
    somewhere refused (a redirect, an HLS segment on a refused host); UnreachableSource (connection
    refused, unknown host, HTTP or RTSP 404, open timeout, no frame within the time); NotAVideo (e.g. an
    HTML page); NoVideoStream; UnsupportedCodec (no decoder for its video); CorruptVideo (packets came but
    none decoded).
    """
    source = live_input(url, config)
    limit_s = config.open_timeout_s + source.timeout_s
    deadline = time.monotonic() + limit_s
    with open_video(source) as (container, stream):
        frame = _first_frame(container, stream, source, deadline, limit_s)
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(
            duration_s=None,
            fps=float(rate) if rate else None,
            width=frame.width,
            height=frame.height,
            codec=stream.codec_context.name,
            has_audio=bool(container.streams.audio),
        )


def _first_frame(
    container: InputContainer, stream: VideoStream, source: Source, deadline: float, limit_s: float
) -> VideoFrame:
    """Decode until the first frame or ``deadline`` (monotonic), skipping packets the decoder rejects.

    Raises CorruptVideo when packets came but the decoder rejected them and gave no frame; otherwise
    UnreachableSource (read error, read timeout, stream ended, or too slow).
    """
    rejected: av.error.FFmpegError | None = None
    why = f"no frame from {source.shown} within {limit_s:g} s"
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                rejected, frames = exc, []
            if frames:
                return frames[0]
            if time.monotonic() >= deadline:
                break
        else:
            why = f"{source.shown} ended before giving a frame"
    except av.error.ExitError:  # PyAV's read timeout: nothing arrived for source.timeout_s
        pass
    except av.error.FFmpegError as exc:
        raise decode_error(exc, source) from None
    except OSError as exc:
        raise UnreachableSource(redact(f"reading {source.shown} failed ({exc.strerror or exc})")) from None
    if rejected is not None:
        raise decode_error(rejected, source) from None
    raise UnreachableSource(why)
