"""Which sources FFmpeg may open, with which options, and how to print them safely.

FFmpeg opens far more than http: ``file:``, ``concat:``, ``subfile,,start,..:``, ``data:``, ``pipe:``,
``crypto+http:``, ``tcp:``, ``udp:`` and more, chosen from the text before the first ``:``. A URL given
by an API client is therefore checked here against an allow-list of schemes *before* FFmpeg sees it,
and every open also carries a ``protocol_whitelist`` so that FFmpeg itself refuses nested opens
(redirects, playlists, references inside containers) to any other protocol.

Local paths are never accepted from clients: only the server passes ``allow_local=True``, for uploads
it saved itself. Local opens are also limited to a list of single-file container demuxers, so that an
uploaded playlist or concat script (HLS, DASH, ffconcat, IMF, ...) cannot make FFmpeg read other local
files.

Knows nothing about decoding, models or HTTP frameworks; standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from urllib.parse import urlsplit

from stream.errors import ForbiddenUrl

ALLOWED_SCHEMES: tuple[str, ...] = ("http", "https")
"""Default allow-list for clip URLs given by clients."""

SCHEME_PROTOCOLS: Mapping[str, str] = {
    "http": "http,tcp",
    "https": "https,tls,tcp",
    "rtsp": "rtsp,rtp,tcp,udp",
    "rtsps": "rtsps,rtp,tls,tcp,udp",
    "rtmp": "rtmp,tcp",
    "rtmps": "rtmps,tls,tcp",
}
"""Every scheme this module can allow, with the FFmpeg protocols its open needs (``protocol_whitelist``).

https does not include ``http``: a redirect from https to plain http is refused (no downgrade).
rtsp needs rtp+udp for the UDP transport and tcp for the control connection and interleaved transport.
"""

LOCAL_PROTOCOLS = "file"
"""``protocol_whitelist`` for local files."""

LOCAL_FORMATS = (
    "mov,matroska,avi,mpegts,mpeg,mpegvideo,flv,asf,ogg,nut,mxf,ivf,yuv4mpegpipe,"
    "h264,hevc,m4v,mjpeg,gif,dv,wav,mp3,aac,flac"
)
"""``format_whitelist`` for local files: single-file demuxers only (no hls, dash, concat, imf, image2).

Audio demuxers are listed so that an audio-only upload is reported as such (NoVideoStream).
"""

SCHEME_FORMATS = {
    "http": LOCAL_FORMATS + ",hls,mpjpeg",
    "https": LOCAL_FORMATS + ",hls,mpjpeg",
    "rtsp": "rtsp",
    "rtsps": "rtsp",
    "rtmp": "flv,live_flv",
    "rtmps": "flv,live_flv",
}
"""``format_whitelist`` per network scheme: video containers only, so that e.g. a text page is not
read as FFmpeg's ANSI-art "video" (tty demuxer). HLS playlists stay within the protocol whitelist."""

_FFMPEG_PREFIX = re.compile(r"[A-Za-z0-9+.\-]+[:,]")
"""Text FFmpeg may read as a protocol name: ``url_find_protocol`` takes the leading run of scheme
characters when a ``:`` follows it, and ``subfile,opts:`` uses a ``,``. Anything matching is a URL to us."""

_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")
_HOST = re.compile(r"[A-Za-z0-9.\-_:%]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^?#\s'\"]*@")
"""Up to the *last* '@' before any '?', '#', quote or space, '/' included: a password with an unescaped '/'
or '@' is still hidden, at the cost of also hiding the host of the rare URL with an '@' in its path."""
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;][^=&#\s]*?(?:token|key|pass|pwd|secret|sig|auth|credential)[^=&#\s]*=)[^&#\s'\"]*",
    re.IGNORECASE,
)


def _validate_allow_list(allowed_schemes: Collection[str]) -> None:
    """Raise ValueError (a configuration bug, not a client error) for a scheme we cannot whitelist."""
    if isinstance(allowed_schemes, str):
        raise ValueError("allowed_schemes must be a collection of scheme names, not one string")
    unknown = [s for s in allowed_schemes if s not in SCHEME_PROTOCOLS]
    if unknown:
        raise ValueError(
            f"unsupported schemes in allow-list: {unknown}; supported: {sorted(SCHEME_PROTOCOLS)}"
        )


def _check_url(src: str, allowed_schemes: Collection[str]) -> str:
    """Validate a URL against the allow-list; return its scheme."""
    shown = redact(src)
    if not _PRINTABLE_ASCII.fullmatch(src) or "\\" in src:
        raise ForbiddenUrl(f"URL {shown!r} contains whitespace, control, backslash or non-ASCII characters")
    prefix = _FFMPEG_PREFIX.match(src)
    assert prefix is not None  # the caller only routes matching text here
    scheme, sep = prefix.group()[:-1], prefix.group()[-1]
    allowed = ", ".join(sorted(allowed_schemes)) or "none"
    if sep == "," or "+" in scheme:
        raise ForbiddenUrl(f"FFmpeg protocol syntax is not allowed in {shown!r} (allowed schemes: {allowed})")
    if scheme not in allowed_schemes:
        hint = " (schemes must be lowercase)" if scheme.lower() in allowed_schemes else ""
        raise ForbiddenUrl(f"scheme {scheme!r} is not allowed{hint}; allowed schemes: {allowed}")
    if not src.startswith(scheme + "://"):
        raise ForbiddenUrl(f"URL {shown!r} must have the form {scheme}://host/...")
    try:
        parts = urlsplit(src)  # raises ValueError for a malformed host ("http://[zz]/x")
    except ValueError:
        raise ForbiddenUrl(f"URL {shown!r} is malformed") from None
    try:
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        raise ForbiddenUrl(f"URL {shown!r} has an invalid port") from None
    if not parts.hostname or not _HOST.fullmatch(parts.hostname):
        raise ForbiddenUrl(f"URL {shown!r} has no valid host")
    return scheme


def _check_local(src: str) -> str:
    """Validate a local path; return it absolute (a leading '/' means FFmpeg can only read it as a file)."""
    if _CONTROL.search(src) or src != src.strip():
        raise ForbiddenUrl("local path contains control characters or surrounding whitespace")
    return os.path.abspath(src)


def classify(src: str, allowed_schemes: Collection[str], allow_local: bool) -> tuple[str, str | None]:
    """Check ``src`` like ``check_source``; return (string for FFmpeg, scheme or None for a local path)."""
    _validate_allow_list(allowed_schemes)
    if not isinstance(src, str) or not src:
        raise ForbiddenUrl("empty source")
    if _FFMPEG_PREFIX.match(src):
        return src, _check_url(src, allowed_schemes)
    if not allow_local:
        allowed = ", ".join(sorted(allowed_schemes)) or "none"
        raise ForbiddenUrl(f"local paths are not accepted; give a URL with one of these schemes: {allowed}")
    return _check_local(src), None


def check_source(
    src: str, allowed_schemes: Collection[str] = ALLOWED_SCHEMES, *, allow_local: bool = False
) -> str:
    """Check that FFmpeg may open ``src``; return the string to hand to FFmpeg.

    Anything that starts like ``word:`` or ``word,`` is a URL (that is what FFmpeg would treat as a
    protocol), and must be ``scheme://host...`` with a lowercase scheme from ``allowed_schemes``,
    printable ASCII only, no ``+`` nested protocols and a host. Everything else is a local path,
    accepted only with ``allow_local=True`` (server-side uploads) and returned as an absolute path, so
    that FFmpeg cannot read a protocol prefix into it (``concat:a|b`` becomes ``/cwd/concat:a|b``).

    Raises ForbiddenUrl (message with credentials redacted); ValueError if ``allowed_schemes`` names a
    scheme outside SCHEME_PROTOCOLS (``file`` can never be allowed as a URL).
    """
    return classify(src, allowed_schemes, allow_local)[0]


def ffmpeg_options(
    src: str,
    allowed_schemes: Collection[str] = ALLOWED_SCHEMES,
    timeout_s: float = 10.0,
    *,
    allow_local: bool = False,
) -> dict[str, str]:
    """Return the ``options`` for ``av.open`` for a source that passes ``check_source``.

    Always ``protocol_whitelist``: exactly the protocols the scheme needs (``"http,tcp"`` for http,
    ``"https,tls,tcp"`` for https, ``"file"`` for a local path). Local paths also get
    ``format_whitelist`` (LOCAL_FORMATS; SCHEME_FORMATS for URLs). Network sources get ``timeout``
    and ``rw_timeout``: socket and read timeouts in microseconds, from ``timeout_s`` seconds.
    Raises like ``check_source``.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    _, scheme = classify(src, allowed_schemes, allow_local)
    if scheme is None:
        return {"protocol_whitelist": LOCAL_PROTOCOLS, "format_whitelist": LOCAL_FORMATS}
    micros = str(round(timeout_s * 1_000_000))
    return {
        "protocol_whitelist": SCHEME_PROTOCOLS[scheme],
        "format_whitelist": SCHEME_FORMATS[scheme],
        "timeout": micros,
        "rw_timeout": micros,
    }


def redact(url: str) -> str:
    """Hide credentials in a URL, or in any text that contains URLs (error messages, log lines).

    ``rtsp://user:pw@host/x`` -> ``rtsp://***@host/x``; the value of every query parameter whose name
    contains token, key, pass, pwd, secret, sig, auth or credential becomes ``***``. Never raises;
    text without URLs comes back unchanged.
    """
    text = _USERINFO.sub(r"\g<scheme>***@", url)
    return _SECRET_PARAM.sub(r"\g<name>***", text)
