"""Open a source with PyAV safely, and turn PyAV/FFmpeg exceptions into the typed SourceErrors.

This is the only module that calls ``av.open``. Every open goes through ``check_source`` first (so a
forbidden URL raises ForbiddenUrl before FFmpeg is called) and carries ``ffmpeg_options`` (protocol
whitelist, timeouts), plus TCP transport for RTSP. A source with a ``network_policy`` (a client's URL)
has its host resolved and checked again right before each open (``check_network``: live reconnects
too), and FFmpeg never connects to that host by itself, so it can neither resolve the name a second
time (to an address nobody checked) nor follow a redirect:

- http(s): every request (the URL itself, range requests for seeking, an HLS playlist's segments) is
  made in Python by ``stream.guarded_http`` (PyAV's ``io_open``), which checks each host, connects to
  a checked address and refuses redirects, and holds every wait to the source's open and read timeouts
  itself (FFmpeg's interrupt callback, which enforces PyAV's, is not consulted during Python reads);
- rtsp(s): FFmpeg talks to a ``stream.rtsp_relay.RtspRelay`` on 127.0.0.1, connected to a checked
  address of the camera, which refuses the camera's redirects (ForbiddenUrl);
- TLS (https, rtsps) follows the policy's one rule (``NetworkPolicy.verifies_tls``, ``stream.tls``);
- any other scheme (rtmp) is refused under a policy: it could not be held to the checked address.

Error messages name the source through ``redact`` and never include the FFmpeg exception text (which
repeats the raw URL, credentials included); exceptions are re-raised ``from None`` for the same reason.

Knows nothing about sampling, frames or models.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
from av.container import InputContainer
from av.stream import Disposition
from av.video.stream import VideoStream

from stream.errors import (
    CorruptVideo,
    ForbiddenUrl,
    NotAVideo,
    NoVideoStream,
    SourceError,
    UnreachableSource,
    UnsupportedCodec,
)
from stream.guarded_http import GuardedOpener, Timeouts
from stream.rtsp_relay import RtspRelay
from stream.urls import (
    ALLOWED_SCHEMES,
    PINNED_SCHEMES,
    NetworkPolicy,
    check_network,
    classify,
    ffmpeg_options,
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
    Under a policy, a scheme outside PINNED_SCHEMES (rtmp, rtmps) is ForbiddenUrl.
    """
    url, scheme = classify(src, allowed_schemes, allow_local)
    if network_policy is not None and scheme is not None and scheme not in PINNED_SCHEMES:
        raise ForbiddenUrl(
            f"{scheme} URLs cannot be held to the checked address (FFmpeg would resolve the host itself); "
            f"under a network policy only {', '.join(PINNED_SCHEMES)} are accepted"
        )
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


def _open(source: Source, options: dict[str, str], stack: ExitStack) -> InputContainer:
    """``av.open`` the source. With a network policy, first check where its host resolves *now* (a name
    may have moved since the last open), then pin the open to the checked addresses: http(s) through a
    GuardedOpener (its waits held to the source's timeouts), rtsp(s) through an RtspRelay (entered on
    ``stack``, which the caller closes after the container).

    Raises av.error.FFmpegError, or ForbiddenUrl (the policy refuses an address, the server redirects) /
    UnreachableSource (the host does not resolve, no checked address accepts a connection, a timeout of
    a guarded request)."""
    url, io_open, relay = source.url, None, None
    open_s = source.open_timeout_s or source.timeout_s
    policy = source.network_policy
    if policy is not None:
        addresses = check_network(source.url, policy)
        if source.url.startswith(RTSP_PREFIXES):
            relay = stack.enter_context(RtspRelay(source.url, addresses, open_s, source.shown, policy))
            url = relay.url
        else:
            io_open = GuardedOpener(source.url, policy, Timeouts(open_s, source.timeout_s))
    try:
        container = av.open(
            url,
            "r",
            options=options,
            timeout=(open_s, source.timeout_s),
            metadata_errors="replace",  # junk bytes in a title tag must not fail the open
            io_open=io_open,
        )
    except av.error.FFmpegError:
        if relay is not None and relay.refusal is not None:
            raise _refused(source, relay) from None
        raise
    if io_open is not None:
        io_open.timeouts.opened()
    return container


def _refused(source: Source, relay: RtspRelay) -> ForbiddenUrl:
    refusal = relay.refusal
    assert refusal is not None
    if refusal.status is not None:
        return ForbiddenUrl(
            f"{source.shown}: the camera redirects (RTSP {refusal.status}); redirects of a client's URL are "
            "not followed, give the final address"
        )
    return ForbiddenUrl(f"{source.shown}: the camera's reply was refused ({refusal})")


def _format_refused(source: Source) -> bool:
    """Whether a refused network open was the format whitelist, not the protocol one.

    PyAV keeps FFmpeg's log off (installing its log callback can deadlock frame-threaded decoders),
    so ask FFmpeg again without the format whitelist, still held to the protocol whitelist: if that
    opens, the content was simply not an accepted container. Nothing is read from it.

    Not for an http(s) URL under a network policy: there the refusal is always the format's (its opens go
    through a GuardedOpener, which bypasses the protocol whitelist and raises its own refusals), and an
    open without the format whitelist could read an HLS playlist at any URL.
    """
    if source.network_policy is not None and source.url.startswith(("http://", "https://")):
        return True
    relaxed = {k: v for k, v in source.options.items() if k != "format_whitelist"}
    try:
        with ExitStack() as stack:
            _open(source, relaxed, stack).close()
    except (av.error.FFmpegError, SourceError):
        return False
    return True


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
    """The container's best video stream, ignoring cover art (attached pictures) and preferring one that
    FFmpeg can decode; None if there is none."""
    candidates = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    if not candidates:
        return None
    decodable = [s for s in candidates if s.codec_context is not None]
    best = container.streams.best("video")
    if isinstance(best, VideoStream) and best in (decodable or candidates):
        return best
    return (decodable or candidates)[0]


@contextmanager
def open_video(source: Source) -> Iterator[tuple[InputContainer, VideoStream]]:
    """Open ``source`` and yield (container, its video stream); always closes the container (and the
    source's relay, if any).

    Raises NotAVideo, NoVideoStream, UnsupportedCodec (no decoder for its video codec), CorruptVideo (a
    local file that claims a video container but cannot be parsed), UnreachableSource or ForbiddenUrl (a
    redirect, or a protocol outside the list).
    """
    with ExitStack() as stack:
        try:
            container = _open(source, source.options, stack)
        except av.error.FFmpegError as exc:
            raise open_error(exc, source) from None
        stack.callback(container.close)
        stream = pick_video_stream(container)
        if stream is None:
            kinds = ", ".join(sorted({str(s.type) for s in container.streams})) or "none"
            raise NoVideoStream(f"{source.shown} has no video stream (streams: {kinds})")
        if stream.codec_context is None:
            raise UnsupportedCodec(f"the video stream of {source.shown} is in a codec FFmpeg cannot decode")
        yield container, stream
