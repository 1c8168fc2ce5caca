"""SDP checks and edits for WebRTC signalling: pure functions over SDP text (aiortc's parser).

``check_offer`` refuses what cannot become a stream before any connection is made: text that is not SDP,
or a media section without ICE credentials or DTLS fingerprint and role (``bad_sdp``); an offer that sends
no video (``no_video``); media whose codecs aiortc cannot negotiate (``unsupported_codec``: it decodes VP8
and H.264 in the profiles and packetization modes of ``aiortc.codecs.CODECS``, and every audio or video
section of the offer needs one common codec, even one we then set inactive). ``with_bitrate_hints`` adds
Chromium's ``x-google-{start,min,max}-bitrate`` to every VP8/H.264 format of the answer's video sections:
aiortc's bandwidth estimate starts low, and without the hint Chromium sends 480x270 for about 40 s.

Knows nothing about HTTP, Redis or peer connections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc.codecs import CODECS
from aiortc.rtcdtlstransport import X509_DIGEST_ALGORITHMS
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.sdp import MediaDescription, SessionDescription

DECODABLE = ("video/VP8", "video/H264")
"""Video codecs aiortc decodes (the names; ``find_common_codecs`` also matches H.264 parameters)."""

SENDING = (None, "sendonly", "sendrecv")
"""Directions of an offer's media section in which the browser sends (None: sendrecv by default)."""


class SdpError(ValueError):
    """An offer that cannot become a stream; ``code`` maps to an HTTP status in the API."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class OfferInfo:
    """What an acceptable offer sends: its video codecs (those aiortc decodes), and whether it has audio."""

    video_codecs: tuple[str, ...]
    has_audio: bool


def check_offer(sdp: str) -> OfferInfo:
    """Parse an SDP offer and check it sends video we can decode; raises SdpError."""
    if not sdp.lstrip().startswith("v=0"):
        raise SdpError("bad_sdp", "not an SDP description: it must start with 'v=0'")
    try:
        desc = SessionDescription.parse(sdp)
    except Exception as e:  # aiortc's parser raises many types (ValueError, AssertionError, KeyError ...)
        detail = str(e) or "a line it cannot read"
        raise SdpError("bad_sdp", f"malformed SDP ({type(e).__name__}: {detail})") from None
    media = [m for m in desc.media if m.port != 0]  # port 0: a section the offerer itself rejects
    sending = [m for m in media if m.kind == "video" and m.direction in SENDING]
    if not sending:
        kinds = sorted({m.kind for m in desc.media}) or ["no media"]
        raise SdpError("no_video", f"the offer sends no video (it has: {', '.join(kinds)}); share a camera "
                                   "or a screen")  # fmt: skip
    for m in media:
        _check_transport(m)
    for m in media:
        if m.kind in CODECS and not find_common_codecs(CODECS[m.kind], m.rtp.codecs):
            shown = ", ".join(dict.fromkeys(c.mimeType.split("/")[-1] for c in m.rtp.codecs)) or "none"
            wanted = (
                "VP8 or H264 (baseline, packetization-mode 1)" if m.kind == "video" else "Opus, G722 or G711"
            )
            raise SdpError("unsupported_codec", f"no {m.kind} codec of the offer ({shown}) can be used: "
                                                f"offer {wanted}")  # fmt: skip
    common = [c.mimeType for m in sending for c in find_common_codecs(CODECS["video"], m.rtp.codecs)]
    codecs = tuple(dict.fromkeys(c for c in common if c in DECODABLE))
    return OfferInfo(video_codecs=codecs, has_audio=any(m.kind == "audio" for m in media))


def _check_transport(m: MediaDescription) -> None:
    """A section must say how to connect (ICE credentials) and secure (DTLS fingerprint and role)."""
    if not (m.ice and m.ice.usernameFragment and m.ice.password):
        raise SdpError(
            "bad_sdp", f"the offer's {m.kind} section has no ICE credentials (a=ice-ufrag, a=ice-pwd)"
        )
    if m.dtls is None or not m.dtls.fingerprints:
        raise SdpError(
            "bad_sdp",
            f"the offer's {m.kind} section has no DTLS fingerprint and role (a=fingerprint, a=setup)",
        )
    if not any(f.algorithm.lower() in X509_DIGEST_ALGORITHMS for f in m.dtls.fingerprints):
        shown = ", ".join(f.algorithm for f in m.dtls.fingerprints)
        usable = ", ".join(X509_DIGEST_ALGORITHMS)
        raise SdpError("bad_sdp", f"the offer's DTLS fingerprints ({shown}) use none of {usable}")


_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([A-Za-z0-9_-]+)/", re.MULTILINE)


def with_bitrate_hints(sdp: str, *, start_kbps: int, min_kbps: int, max_kbps: int) -> str:
    """``sdp`` with the bitrate hints on each VP8/H264 format of its video sections (an fmtp line is
    extended, or added after the format's rtpmap line). Other sections and formats are untouched."""
    hint = ";".join(
        f"x-google-{k}-bitrate={v}" for k, v in (("start", start_kbps), ("min", min_kbps), ("max", max_kbps))
    )
    newline = "\r\n" if "\r\n" in sdp else "\n"
    sections = re.split(r"(?=^m=)", sdp, flags=re.MULTILINE)
    return "".join(_hint_section(s, hint, newline) if s.startswith("m=video") else s for s in sections)


def _hint_section(section: str, hint: str, newline: str) -> str:
    lines = section.split(newline)
    formats = {pt for pt, name in _RTPMAP.findall(section) if f"video/{name.upper()}" in DECODABLE}
    fmtp = {m.group(1) for m in re.finditer(r"^a=fmtp:(\d+) ", section, re.MULTILINE)}
    out = []
    for line in lines:
        m = re.match(r"a=fmtp:(\d+) (.*)", line)
        if m and m.group(1) in formats:
            line = f"a=fmtp:{m.group(1)} {m.group(2)};{hint}"
        out.append(line)
        r = re.match(r"a=rtpmap:(\d+) ", line)
        if r and r.group(1) in formats and r.group(1) not in fmtp:
            out.append(f"a=fmtp:{r.group(1)} {hint}")
    return newline.join(out)
