"""Typed errors raised by sources. Each carries a stable machine-readable ``code``."""

from __future__ import annotations

from core.errors import VidmemError


class SourceError(VidmemError):
    """Base class: the input could not be read as video."""

    code = "source_error"


class ForbiddenUrl(SourceError):
    """The URL's scheme or host is not on the allow-list (e.g. file:, concat:, data:)."""

    code = "forbidden_url"


class UnreachableSource(SourceError):
    """The URL could not be opened (connection refused, DNS failure, HTTP 4xx/5xx, timeout)."""

    code = "unreachable_source"


class NotAVideo(SourceError):
    """The input is not a media container FFmpeg understands (text, empty file, random bytes)."""

    code = "not_a_video"


class NoVideoStream(SourceError):
    """The container opened but holds no video stream (e.g. audio-only)."""

    code = "no_video_stream"


class UnsupportedCodec(SourceError):
    """The container has a video stream, but in a codec FFmpeg has no decoder for."""

    code = "unsupported_codec"


class CorruptVideo(SourceError):
    """The container has a video stream but no frame could be decoded from it."""

    code = "corrupt_video"


def why(exc: BaseException) -> str:
    """A network exception in words (its type and OS or TLS reason), without the text of any URL."""
    detail = getattr(exc, "strerror", None) or getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
