"""Which sources FFmpeg may open, with which options, and how to print them safely.

FFmpeg opens far more than http: ``file:``, ``concat:``, ``subfile,,start,..:``, ``data:``, ``pipe:``,
``crypto+http:``, ``tcp:``, ``udp:`` and more, chosen from the text before the first ``:``. A URL given
by an API client is therefore checked here against an allow-list of schemes *before* FFmpeg sees it,
and every open also carries a ``protocol_whitelist`` so that FFmpeg itself refuses nested opens
(redirects, playlists, references inside containers) to any other protocol.

A client's URL must also not reach the service's own networks (SSRF): with a ``NetworkPolicy``, its host
is resolved like FFmpeg resolves it (``getaddrinfo``) and every address must lie outside loopback,
private, link-local (cloud metadata), CGNAT, multicast and reserved ranges (FORBIDDEN_NETWORKS), unless
the policy allows that network. ``check_network`` runs before every open (``stream.av_input``), live
reconnects included, and under a policy FFmpeg never connects to a client's host by itself (which would
resolve the name again, and follow redirects): http(s) is fetched through ``stream.guarded_http``, rtsp(s)
through ``stream.rtsp_relay``, both connected to a checked address (PINNED_SCHEMES).

Local paths are never accepted from clients: only the server passes ``allow_local=True``, for uploads
it saved itself. Local opens are also limited to a list of single-file container demuxers, so that an
uploaded playlist or concat script (HLS, DASH, ffconcat, IMF, ...) cannot make FFmpeg read other local
files.

Knows nothing about decoding, models or HTTP frameworks; standard library only.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from stream.errors import ForbiddenUrl, UnreachableSource

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

PINNED_SCHEMES: tuple[str, ...] = ("http", "https", "rtsp", "rtsps")
"""Schemes whose opens ``stream.av_input`` can hold to the addresses a NetworkPolicy checked; under a
policy, any other scheme is refused."""

RELAYED_PROTOCOLS = "rtsp,tcp"
"""``protocol_whitelist`` of an rtsp(s) open under a policy: FFmpeg speaks plain RTSP over TCP to the
relay (``stream.rtsp_relay``) and nothing else (TCP interleaved transport: no rtp or udp)."""

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
read as FFmpeg's ANSI-art "video" (tty demuxer). HLS playlists stay within the protocol whitelist; under
a network policy only ``guarded_playlist`` URLs may be read as HLS (``ffmpeg_options``)."""

HLS_EXTENSIONS = (".m3u8", ".m3u")
"""URL path endings (any case) of HLS playlists (``is_hls_url``)."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

FORBIDDEN_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("0.0.0.0/8", "'this network' (0.0.0.0 reaches the local host)"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved (and broadcast)"),
        # IPv6 outside global unicast 2000::/3: unspecified ::, loopback ::1, IPv4-compatible ::/96,
        # discard 100::/64, local-use NAT64 64:ff9b:1::/48, unique-local fc00::/7, link-local fe80::/10,
        # site-local fec0::/10, multicast ff00::/8 and unassigned space.
        ("::/3", "not global unicast IPv6"),
        ("4000::/2", "not global unicast IPv6"),
        ("8000::/1", "not global unicast IPv6 (unique-local, link-local, multicast...)"),
        ("2001::/23", "IETF protocol assignments (Teredo...)"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
    )
)
"""Networks a client's URL may not reach unless a NetworkPolicy allows them, with why (IANA special-purpose
registries). IPv4-mapped (``::ffff:a.b.c.d``) and NAT64 (``64:ff9b::a.b.c.d``) addresses are judged by the
IPv4 address they reach; 6to4 (``2002:aabb:ccdd::``) by both (``NetworkPolicy.refusal``)."""

NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
"""RFC 6052's well-known NAT64 prefix: its last 32 bits are the IPv4 address a NAT64 gateway connects to."""


BLOCKED = "in a blocked network"
"""``NetworkPolicy.refusal``'s reason for an address in ``blocked_networks``."""

TlsRule = Literal["public", "always", "never"]
"""``NetworkPolicy.verify_tls``: which TLS certificates of a client's host must be valid."""

TLS_RULES: tuple[TlsRule, ...] = ("public", "always", "never")


def _as_networks(nets: Iterable[IPNetwork | str]) -> tuple[IPNetwork, ...]:
    if isinstance(nets, str):
        raise ValueError("networks must be a collection of networks, not one string")
    return tuple(ipaddress.ip_network(n) for n in nets)


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """Which addresses a client's URL may reach (see ``refusal``). Frozen; pass it to every open.

    allowed_networks: networks reachable although FORBIDDEN_NETWORKS lists them (a camera LAN,
                      ``192.168.10.0/24``; ``0.0.0.0/0`` and ``::/0`` switch the check off).
    blocked_networks: networks never reachable, even when allowed (e.g. a public range of your own).

    hint:             a sentence appended to a refusal that ``allowed_networks`` could lift (not to one by
                      ``blocked_networks``): how the operator allows a network, e.g. the setting's name.
    verify_tls:       whose TLS certificate (https, rtsps) must be valid for the URL's host, see
                      ``verifies_tls``: "public" (default), "always" or "never".
    tls_hint:         a sentence appended to a refused certificate: how the operator changes that rule.

    Both accept ``ipaddress`` networks or strings (``"10.1.0.0/16"``); a network with host bits set
    (``"10.1.0.1/16"``) is a ValueError.
    """

    allowed_networks: tuple[IPNetwork, ...] = ()
    blocked_networks: tuple[IPNetwork, ...] = ()
    hint: str = ""
    verify_tls: TlsRule = "public"
    tls_hint: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_networks", _as_networks(self.allowed_networks))
        object.__setattr__(self, "blocked_networks", _as_networks(self.blocked_networks))
        if self.verify_tls not in TLS_RULES:
            raise ValueError(f"verify_tls must be one of {', '.join(TLS_RULES)}, got {self.verify_tls!r}")

    def verifies_tls(self, address: IPAddress | str) -> bool:
        """Whether a TLS connection to the checked ``address`` must show a valid certificate for the URL's
        host: "always", "never", or by default ("public") when the address is public, i.e. in none of
        FORBIDDEN_NETWORKS (judged like ``refusal``, whatever the policy allows). An address the policy had
        to allow (a LAN camera, usually with a self-signed certificate) is then encrypted, not verified."""
        if self.verify_tls != "public":
            return self.verify_tls == "always"
        return DEFAULT_NETWORK_POLICY.refusal(address) is None

    def refusal(self, address: IPAddress | str) -> str | None:
        """Why ``address`` may not be reached ("loopback", "private", "in a blocked network"...), or None.

        An IPv4-mapped or NAT64 IPv6 address is judged by the IPv4 address it reaches, a 6to4 one by
        itself and by its IPv4 address. Blocked networks win over allowed ones, allowed ones over
        FORBIDDEN_NETWORKS. Raises ValueError for text that is not an IP address.
        """
        ip = ipaddress.ip_address(address)
        forms: tuple[IPAddress, ...] = (ip,)
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                forms = (ip.ipv4_mapped,)
            elif ip in NAT64_PREFIX:
                forms = (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
            elif ip.sixtofour is not None:
                forms = (ip, ip.sixtofour)
        if any(form in net for form in forms for net in self.blocked_networks):
            return BLOCKED
        for form in forms:
            if any(form in net for net in self.allowed_networks):
                continue
            for net, why in FORBIDDEN_NETWORKS:
                if form in net:
                    return why
        return None


DEFAULT_NETWORK_POLICY = NetworkPolicy()
"""Nothing allowed beyond public addresses: what a service facing untrusted clients wants."""

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


def check_network(src: str, policy: NetworkPolicy) -> tuple[str, ...]:
    """Resolve the host of the URL ``src`` (one that passed ``check_source``) as FFmpeg will, and check
    every address against ``policy``; return the addresses (getaddrinfo's order, no duplicates).

    FFmpeg's tcp protocol calls ``getaddrinfo(host, port)`` (any family, TCP) and may connect to any
    address it returns, so each one must pass. Numeric hosts in any form libc accepts (``2130706433``,
    ``0x7f.1``, ``127.1``, ``0``, ``[::ffff:127.0.0.1]``) resolve to the address they mean. Raises
    ForbiddenUrl (an address the policy refuses), UnreachableSource (the host does not resolve).
    """
    shown = redact(src)
    parts = urlsplit(src)
    host = parts.hostname
    if not host:
        raise ForbiddenUrl(f"URL {shown!r} has no valid host")
    try:
        # bytes: handed to libc as they are, like FFmpeg does (a str would go through the idna codec)
        infos = socket.getaddrinfo(host.encode("ascii"), parts.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnreachableSource(f"the host of {shown} could not be resolved ({exc.strerror})") from None
    except (UnicodeError, ValueError, OSError) as exc:
        raise ForbiddenUrl(f"the host of {shown} cannot be checked ({type(exc).__name__})") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UnreachableSource(f"the host of {shown} resolved to no address")
    try:
        literal = ipaddress.ip_address(host) is not None
    except ValueError:
        literal = False
    for address in addresses:
        why = policy.refusal(address)
        if why is None:
            continue
        hint = f"; {policy.hint}" if policy.hint and why != BLOCKED else ""
        if literal or address == host:
            raise ForbiddenUrl(f"{shown} is refused: address {address} is {why}{hint}")
        raise ForbiddenUrl(
            f"{shown} is refused: its host {host!r} resolves to an address that is {why}{hint}"
        )
    return addresses


def is_hls_url(url: str) -> bool:
    """Whether ``url`` names an HLS playlist: its path (query and fragment ignored) ends in .m3u8 or .m3u,
    in any case."""
    try:
        path = urlsplit(url).path
    except ValueError:  # malformed: not HLS (and refused by the URL check anyway)
        return False
    return path.lower().endswith(HLS_EXTENSIONS)


def classify(src: str, allowed_schemes: Collection[str], allow_local: bool) -> tuple[str, str | None]:
    """Check ``src`` like ``check_source`` without a policy (no host lookup); return (string for FFmpeg,
    scheme or None for a local path)."""
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
    src: str,
    allowed_schemes: Collection[str] = ALLOWED_SCHEMES,
    *,
    allow_local: bool = False,
    network_policy: NetworkPolicy | None = None,
) -> str:
    """Check that FFmpeg may open ``src``; return the string to hand to FFmpeg.

    Anything that starts like ``word:`` or ``word,`` is a URL (that is what FFmpeg would treat as a
    protocol), and must be ``scheme://host...`` with a lowercase scheme from ``allowed_schemes``,
    printable ASCII only, no ``+`` nested protocols and a host. Everything else is a local path,
    accepted only with ``allow_local=True`` (server-side uploads) and returned as an absolute path, so
    that FFmpeg cannot read a protocol prefix into it (``concat:a|b`` becomes ``/cwd/concat:a|b``).
    With ``network_policy``, a URL's host is also resolved and checked (``check_network``); None skips
    that check, for URLs the server itself trusts.

    Raises ForbiddenUrl (message with credentials redacted), UnreachableSource (with a policy: the host
    does not resolve); ValueError if ``allowed_schemes`` names a scheme outside SCHEME_PROTOCOLS
    (``file`` can never be allowed as a URL).
    """
    url, scheme = classify(src, allowed_schemes, allow_local)
    if scheme is not None and network_policy is not None:
        check_network(url, network_policy)
    return url


def guarded_playlist(src: str, network_policy: NetworkPolicy | None) -> bool:
    """Whether ``src`` (checked) may be read as an HLS playlist under a policy: an http(s) URL whose path
    ends in .m3u8 or .m3u (``is_hls_url``). Its segments may name any host; ``stream.guarded_http``
    checks each of them, like every other request of an http(s) URL under a policy."""
    return network_policy is not None and src.startswith(("http://", "https://")) and is_hls_url(src)


def ffmpeg_options(
    src: str,
    allowed_schemes: Collection[str] = ALLOWED_SCHEMES,
    timeout_s: float = 10.0,
    *,
    allow_local: bool = False,
    network_policy: NetworkPolicy | None = None,
) -> dict[str, str]:
    """Return the ``options`` for ``av.open`` for a source that passes ``check_source``.

    Always ``protocol_whitelist``: exactly the protocols the scheme needs (``"http,tcp"`` for http,
    ``"https,tls,tcp"`` for https, ``"file"`` for a local path). Local paths also get
    ``format_whitelist`` (LOCAL_FORMATS; SCHEME_FORMATS for URLs). Network sources get ``timeout``
    and ``rw_timeout``: socket and read timeouts in microseconds, from ``timeout_s`` seconds.

    With ``network_policy`` (client URLs), only a ``guarded_playlist`` URL may be read as HLS (with
    ``http_persistent=0`` and ``http_multiple=0``: FFmpeg's keep-alive reuse asserts on I/O it did not
    open itself), and rtsp(s) gets RELAYED_PROTOCOLS (FFmpeg only talks to the relay). The policy's host
    check itself is ``check_network``, run before every open by ``stream.av_input``, not here. Raises
    like ``classify`` (no host lookup).
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    _, scheme = classify(src, allowed_schemes, allow_local)
    if scheme is None:
        return {"protocol_whitelist": LOCAL_PROTOCOLS, "format_whitelist": LOCAL_FORMATS}
    micros = str(round(timeout_s * 1_000_000))
    options = {
        "protocol_whitelist": SCHEME_PROTOCOLS[scheme],
        "format_whitelist": SCHEME_FORMATS[scheme],
        "timeout": micros,
        "rw_timeout": micros,
    }
    if network_policy is not None and scheme in ("rtsp", "rtsps"):
        options["protocol_whitelist"] = RELAYED_PROTOCOLS
    if network_policy is not None and scheme in ("http", "https"):
        if guarded_playlist(src, network_policy):
            options |= {"http_persistent": "0", "http_multiple": "0"}
        else:
            options["format_whitelist"] = ",".join(f for f in SCHEME_FORMATS[scheme].split(",") if f != "hls")
    return options


def redact(url: str) -> str:
    """Hide credentials in a URL, or in any text that contains URLs (error messages, log lines).

    ``rtsp://user:pw@host/x`` -> ``rtsp://***@host/x``; the value of every query parameter whose name
    contains token, key, pass, pwd, secret, sig, auth or credential becomes ``***``. Never raises;
    text without URLs comes back unchanged.
    """
    text = _USERINFO.sub(r"\g<scheme>***@", url)
    return _SECRET_PARAM.sub(r"\g<name>***", text)
