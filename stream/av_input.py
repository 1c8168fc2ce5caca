"""Open a source with PyAV safely, and turn PyAV/FFmpeg exceptions into the typed SourceErrors.

This is the only module that calls ``av.open``. Every open goes through ``check_source`` first (so a
forbidden URL raises ForbiddenUrl before FFmpeg is called) and carries ``ffmpeg_options`` (protocol
whitelist, timeouts), plus TCP transport for RTSP. A source with a ``network_policy`` (a client's URL)
has its host resolved and checked again right before each open (``check_network``: live reconnects
too), and an HLS playlist of such a source is fetched by ``stream.guarded_http`` (PyAV's ``io_open``),
which checks every segment's host as well. Error messages name the source through ``redact`` and never
include the FFmpeg exception text (which repeats the raw URL, credentials included); exceptions are
re-raised ``from None`` for the same reason.

Knows nothing about sampling, frames or models.
"""

from __future__ import annotations

import errno
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
from av.container import InputContainer
from av.stream import Disposition
from av.video.stream import VideoStream

from stream.errors import CorruptVideo, ForbiddenUrl, NotAVideo, NoVideoStream, SourceError, UnreachableSource
from stream.guarded_http import GuardedOpener
from stream.urls import (
    ALLOWED_SCHEMES,
    NetworkPolicy,
    check_network,
    classify,
    ffmpeg_options,
    guarded_playlist,
    redact,
)

_CONTAINER_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftyp", "an MP4/MOV file"),
    (8, b"AVI ", "an AVI file"),
    (0, b"\x1a\x45\xdf\xa3", "a Matroska/WebM file"),
    (0, b"FLV", "an FLV file"),
    (0, b"\x30\x26\xb2\x75", "an ASF/WMV file"),
)
"""(offset, magic bytes, description): signatures of video containers, to tell a damaged video from a
file that is not a video at all when FFmpeg refuses to open it."""

RTSP_PREFIXES = ("rtsp:", "rtsps:")
"""URL prefixes of the RTSP schemes: opened with ``rtsp_transport=tcp``."""


@dataclass(frozen=True, slots=True)
class Source:
    """A source that passed ``check_source``.

    url:     what FFmpeg opens (an absolute path for local files).
    shown:   the same with credentials redacted: the only form allowed in messages and logs.
    network: True for URLs, False for local files.
    options: ``av.open`` options (protocol whitelist, timeouts; TCP interleaved transport for RTSP).
    timeout_s: PyAV read timeout in seconds (and open timeout when ``open_timeout_s`` is None).
    open_timeout_s: PyAV open timeout in seconds, if different from ``timeout_s``.
    network_policy: for a URL given by a client: which addresses its host (and, for HLS, every segment's
             host) may resolve to, checked before each open. None: the URL is trusted as it is.
    """

    url: str
    shown: str
    network: bool
    options: dict[str, str]
    timeout_s: float
    open_timeout_s: float | None = None
    network_policy: NetworkPolicy | None = None


def resolve(
    src: str,
    *,
    allowed_schemes: Collection[str] = ALLOWED_SCHEMES,
    allow_local: bool = False,
    timeout_s: float,
    open_timeout_s: float | None = None,
    network_policy: NetworkPolicy | None = None,
) -> Source:
    """Check ``src`` (raises ForbiddenUrl, or ValueError for bad arguments) and build its open options.

    rtsp and rtsps URLs get ``rtsp_transport=tcp`` (RTP interleaved in the RTSP connection): FFmpeg's
    default tries UDP first, which a firewall or NAT between us and a camera silently drops.
    ``network_policy`` is kept for the opens (``open_video``); its host lookup happens there, not here.
    """
    url, scheme = classify(src, allowed_schemes, allow_local)
    options = ffmpeg_options(
        src, allowed_schemes, timeout_s, allow_local=allow_local, network_policy=network_policy
    )
    if url.startswith(RTSP_PREFIXES):
        options["rtsp_transport"] = "tcp"
    return Source(
        url=url,
        shown=redact(url),
        network=scheme is not None,
        options=options,
        timeout_s=timeout_s,
        open_timeout_s=open_timeout_s,
        network_policy=network_policy if scheme is not None else None,
    )


def _describe(exc: av.error.FFmpegError) -> str:
    """FFmpeg's error text without the filename PyAV appends (which may hold credentials)."""
    return f"{type(exc).__name__}: {exc.strerror}" if exc.strerror else type(exc).__name__


def _is_network_failure(exc: av.error.FFmpegError) -> bool:
    """Connection refused/reset, DNS or socket I/O failure, timeout, HTTP 4xx/5xx, PyAV's own timeout."""
    return isinstance(exc, OSError | av.error.HTTPError | av.error.HTTPClientError | av.error.ExitError)


def _sniff(path: str) -> str | None:
    """Describe the video container a local file's first bytes claim to be, or None."""
    try:
        with Path(path).open("rb") as f:
            head = f.read(16)
    except OSError:
        return None
    for offset, magic, what in _CONTAINER_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return what
    return None


def _open(source: Source, options: dict[str, str]) -> InputContainer:
    """``av.open`` the source; with a network policy, first check where its host resolves *now* (a name
    may have moved since the last open), and fetch an HLS playlist through a GuardedOpener.

    Raises av.error.FFmpegError, or ForbiddenUrl / UnreachableSource from the policy's check."""
    io_open = None
    if source.network_policy is not None:
        check_network(source.url, source.network_policy)
        if guarded_playlist(source.url, source.network_policy):
            io_open = GuardedOpener(source.url, source.network_policy, source.timeout_s)
    return av.open(
        source.url,
        "r",
        options=options,
        timeout=(source.open_timeout_s or source.timeout_s, source.timeout_s),
        metadata_errors="replace",  # junk bytes in a title tag must not fail the open
        io_open=io_open,
    )


def _format_refused(source: Source) -> bool:
    """Whether a refused network open was the format whitelist, not the protocol one.

    PyAV keeps FFmpeg's log off (installing its log callback can deadlock frame-threaded decoders),
    so ask FFmpeg again without the format whitelist, still held to the protocol whitelist: if that
    opens, the content was simply not an accepted container. Nothing is read from it.

    Not for an http(s) URL under a network policy: there the refusal is always the format's (a redirect
    fails with EIO under ``max_redirects=0``, and a guarded playlist's opens bypass the protocol
    whitelist), and an open without the format whitelist could read an HLS playlist, whose segments
    FFmpeg would fetch from any host.
    """
    if source.network_policy is not None and source.url.startswith(("http://", "https://")):
        return True
    relaxed = {k: v for k, v in source.options.items() if k != "format_whitelist"}
    try:
        _open(source, relaxed).close()
    except (av.error.FFmpegError, SourceError):
        return False
    return True


def _redirect_refused(exc: av.error.FFmpegError, source: Source) -> bool:
    """Whether an http(s) open under a network policy failed because FFmpeg refused a redirect.

    With ``max_redirects=0`` FFmpeg answers a redirect with a bare EIO, and PyAV keeps FFmpeg's log off,
    so ask the server again, from Python (checked like the first request, no body read).
    """
    if source.network_policy is None or not (isinstance(exc, OSError) and exc.errno == errno.EIO):
        return False
    if not source.url.startswith(("http://", "https://")):
        return False
    try:
        return GuardedOpener(source.url, source.network_policy, source.timeout_s).redirects(source.url)
    except SourceError:
        return False


def open_error(exc: av.error.FFmpegError, source: Source) -> SourceError:
    """Map an exception raised by ``av.open`` to a SourceError."""
    detail = _describe(exc)
    if isinstance(exc, av.error.ArgumentError):
        # Our options are valid, so EINVAL at open means a whitelist refused something.
        if source.network and "format_whitelist" in source.options and _format_refused(source):
            return NotAVideo(f"{source.shown} is not in an accepted video container format ({detail})")
        if source.network:
            return ForbiddenUrl(
                f"{source.shown} led FFmpeg to a protocol outside the allow-list (e.g. a redirect to "
                f"another scheme) ({detail})"
            )
        return NotAVideo(f"{source.shown} is not in an accepted video container format ({detail})")
    if _redirect_refused(exc, source):
        return ForbiddenUrl(
            f"{source.shown} redirects to another address; redirects of a client's URL are not followed, "
            "give the final address"
        )
    if _is_network_failure(exc):
        where = "could not be reached" if source.network else "could not be opened"
        return UnreachableSource(f"{source.shown} {where} ({detail})")
    if isinstance(exc, av.error.InvalidDataError) and source.url.startswith(RTSP_PREFIXES):
        # FFmpeg's RTSP client reports a missing or garbled reply (a silent port, not an RTSP server)
        # as invalid data: the media was never reached.
        return UnreachableSource(f"{source.shown} gave no valid RTSP reply ({detail})")
    if not source.network and (claimed := _sniff(source.url)) is not None:
        return CorruptVideo(
            f"{source.shown} looks like {claimed} but could not be parsed: truncated or damaged"
        )
    if (
        isinstance(exc, av.error.InvalidDataError | av.error.EOFError | av.error.LookupError)
        or not source.network
    ):
        return NotAVideo(f"{source.shown} is not a video FFmpeg can read ({detail})")
    return UnreachableSource(f"{source.shown} could not be opened ({detail})")


def decode_error(exc: av.error.FFmpegError, source: Source) -> SourceError:
    """Map an exception raised while reading/decoding, before any frame was produced, to a SourceError."""
    if source.network and _is_network_failure(exc):
        return UnreachableSource(f"reading {source.shown} failed ({_describe(exc)})")
    return CorruptVideo(f"no frame of {source.shown} could be decoded ({_describe(exc)})")


def pick_video_stream(container: InputContainer) -> VideoStream | None:
    """The container's best video stream, ignoring cover art (attached pictures); None if there is none."""
    candidates = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    if not candidates:
        return None
    best = container.streams.best("video")
    return best if isinstance(best, VideoStream) and best in candidates else candidates[0]


@contextmanager
def open_video(source: Source) -> Iterator[tuple[InputContainer, VideoStream]]:
    """Open ``source`` and yield (container, its video stream); always closes the container.

    Raises NotAVideo, NoVideoStream, CorruptVideo (a local file that claims a video container but
    cannot be parsed), UnreachableSource or ForbiddenUrl (a redirect to a protocol outside the list).
    """
    try:
        container = _open(source, source.options)
    except av.error.FFmpegError as exc:
        raise open_error(exc, source) from None
    try:
        stream = pick_video_stream(container)
        if stream is None:
            kinds = ", ".join(sorted({str(s.type) for s in container.streams})) or "none"
            raise NoVideoStream(f"{source.shown} has no video stream (streams: {kinds})")
        yield container, stream
    finally:
        container.close()
