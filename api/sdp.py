"""SDP checks and edits for WebRTC signalling: pure functions over SDP text (aiortc's parser).

``check_offer`` refuses what cannot become a stream before any connection is made: text that is not SDP,
or a media section without ICE credentials or DTLS fingerprint and role (``bad_sdp``); an offer that sends
no video (``no_video``); media whose codecs aiortc cannot negotiate (``unsupported_codec``: it decodes VP8
and H.264 in the profiles and packetization modes of ``aiortc.codecs.CODECS``, and every audio or video
section of the offer needs one common codec, even one we then set inactive). ``with_bitrate_hints`` adds
Chromium's ``x-google-{start,min,max}-bitrate`` to every VP8/H.264 format of the answer's video sections:
aiortc's bandwidth estimate starts low, and without the hint Chromium sends 480x270 for about 40 s.

``screen_candidates`` applies the URL network policy to the offer's ICE candidates, before aiortc sees
them. aiortc takes remote candidates only from the offer's ``a=candidate`` lines (the server has no
trickle endpoint: ``addIceCandidate`` is never called), and aioice sends STUN checks to each of them. So:

* An offer naming more than ``max_candidates``, or a candidate that is malformed (a port outside
  1-65535, an address that is neither an IP address nor an mDNS name, an unknown type) is ``bad_sdp``:
  a browser never sends one.
* A candidate whose address the policy refuses (``NetworkPolicy.refusal``: loopback, private,
  link-local ...) is dropped from the SDP, so no packet is ever sent there. Loopback is no exception,
  even with ``webrtc_loopback``: that setting adds 127.0.0.1 to the *server's* candidates, so a peer on
  the same host sends its checks there, and aioice answers the address a check comes from (a
  peer-reflexive candidate, RFC 8445 7.3.1.3) without needing the peer's own loopback candidate. A
  client can thus make the server talk only to where its checks come from.
* An mDNS candidate (``<uuid>.local``, a browser hiding its addresses) is resolved by aioice itself
  (``Connection.add_remote_candidate``: a multicast query on the server's own links, then STUN to the
  answer) after any check we could make, and may resolve to any address of those links. It is dropped
  unless the policy allows every address (``0.0.0.0/0`` and ``::/0``); the browser still connects
  through its checks to the server's candidates, as above, or through its STUN/TURN candidates.
* An offer left with no candidate is still answered: its peer may connect through its own checks. Once
  a candidate is dropped, so is ``a=end-of-candidates``: told that no candidate will come, aioice would
  drop the component and gather no candidate of its own. If the peer does not connect,
  ``webrtc_ice_timeout_s`` ends the stream, and its error names the refused candidates.

Knows nothing about HTTP, Redis or peer connections.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from aioice.mdns import is_mdns_hostname
from aiortc.codecs import CODECS
from aiortc.rtcdtlstransport import X509_DIGEST_ALGORITHMS
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.sdp import MediaDescription, SessionDescription

from stream.urls import FORBIDDEN_NETWORKS, NetworkPolicy

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


@dataclass(frozen=True, slots=True)
class Screened:
    """An offer's SDP without the candidates the network policy refuses, and those refused, each shown as
    "address:port (why)"."""

    sdp: str
    kept: int
    refused: tuple[str, ...]


CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")


def screen_candidates(sdp: str, policy: NetworkPolicy | None, *, max_candidates: int) -> Screened:
    """Check every ``a=candidate`` line of an offer and drop those the policy refuses (see the module's
    docstring); raises SdpError (bad_sdp) for too many candidates, or a malformed one."""
    lines = sdp.splitlines(keepends=True)
    candidates = [i for i, line in enumerate(lines) if line.startswith("a=candidate:")]
    if len(candidates) > max_candidates:
        raise SdpError(
            "bad_sdp",
            f"the offer names {len(candidates)} ICE candidates; at most {max_candidates} are accepted "
            "(webrtc_max_candidates)",
        )
    refused: dict[int, str] = {}
    for i in candidates:
        address, port = _candidate_address(lines[i].strip())
        why = _refusal(address, policy)
        if why is not None:
            refused[i] = f"{f'[{address}]' if ':' in address else address}:{port} ({why})"
    drop = set(refused)
    if refused:  # else aioice, told that no candidate will come, gives up before the peer's checks arrive
        drop |= {i for i, line in enumerate(lines) if line.startswith("a=end-of-candidates")}
    kept = "".join(line for i, line in enumerate(lines) if i not in drop)
    return Screened(sdp=kept, kept=len(candidates) - len(refused), refused=tuple(refused.values()))


def _candidate_address(line: str) -> tuple[str, int]:
    """(address, port) of a well-formed candidate line (RFC 8839 5.1), else SdpError."""
    fields = line[len("a=candidate:") :].split()
    problem: str | None
    if len(fields) < 8 or fields[6] != "typ":
        problem = "expected 'a=candidate:foundation component transport priority address port typ type'"
    else:
        problem = _candidate_problem(*(fields[i] for i in (1, 2, 3, 4, 5, 7)))
    if problem is not None:
        shown = line if len(line) <= 120 else line[:117] + "..."
        raise SdpError("bad_sdp", f"malformed ICE candidate {shown!r}: {problem}")
    return fields[4], int(fields[5])


def _candidate_problem(
    component: str, transport: str, priority: str, address: str, port: str, kind: str
) -> str | None:
    transport = transport.lower()
    if transport not in ("udp", "tcp"):
        return f"transport {transport!r} is neither udp nor tcp"
    if not (_int_in(component, 1, 256) and _int_in(priority, 0, 2**32 - 1)):
        return "component or priority out of range"
    # An active TCP candidate names port 9 (or 0): it only connects out (RFC 6544 4.5).
    if not _int_in(port, 0 if transport == "tcp" else 1, 65535):
        return f"port {port!r} is not in 1-65535"
    if kind not in CANDIDATE_TYPES:
        return f"type {kind!r} is not one of {', '.join(CANDIDATE_TYPES)}"
    if is_mdns_hostname(address):
        return None
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return f"{address!r} is neither an IP address nor an mDNS name (<name>.local)"
    return None


def _int_in(text: str, lo: int, hi: int) -> bool:
    return text.isascii() and text.isdigit() and lo <= int(text) <= hi


def _refusal(address: str, policy: NetworkPolicy | None) -> str | None:
    """Why the candidate's address is refused, or None; no policy (trusted URLs) refuses nothing."""
    if policy is None:
        return None
    if is_mdns_hostname(address):
        return None if _allows_every_address(policy) else "an mDNS name, resolved after any check"
    return policy.refusal(address)


def _allows_every_address(policy: NetworkPolicy) -> bool:
    """The policy lets a client reach any address: it blocks nothing and allows every forbidden network."""
    return not policy.blocked_networks and all(
        any(net.version == ok.version and net.subnet_of(ok) for ok in policy.allowed_networks)  # type: ignore[arg-type]
        for net, _ in FORBIDDEN_NETWORKS
    )


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
