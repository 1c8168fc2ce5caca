"""URL allow-list, network policy (SSRF), FFmpeg open options, credential redaction (no FFmpeg involved)."""

from __future__ import annotations

import os
import socket
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest

from stream.errors import ForbiddenUrl, UnreachableSource
from stream.urls import (
    ALLOWED_SCHEMES,
    DEFAULT_NETWORK_POLICY,
    LOCAL_FORMATS,
    NetworkPolicy,
    check_network,
    check_source,
    ffmpeg_options,
    guarded_playlist,
    redact,
)

FORBIDDEN = [
    "file:///etc/passwd",
    "file:/etc/passwd",
    "FILE:///etc/passwd",
    "concat:a.mp4|b.mp4",
    "subfile,,start,0,end,100,,:/etc/passwd",
    "data:video/mp4;base64,AAAA",
    "pipe:0",
    "ftp://example.com/a.mp4",
    "gopher://example.com/",
    "tcp://127.0.0.1:80",
    "udp://127.0.0.1:1234",
    "crypto:http://example.com/a.mp4",
    "crypto+http://example.com/a.mp4",
    "async:http://example.com/a.mp4",
    "cache:http://example.com/a.mp4",
    "http,tcp:127.0.0.1:80",
    "HTTP://example.com/a.mp4",
    "Https://example.com/a.mp4",
    "rtsp://camera/stream",  # not in the default allow-list
    " http://example.com/a.mp4",
    "http://example.com/a b.mp4",
    "http://example.com/a.mp4\n",
    "\thttp://example.com/a.mp4",
    "http://exa\x00mple.com/a.mp4",
    "http:///a.mp4",
    "http://",
    "http:/example.com/a.mp4",
    "http:example.com/a.mp4",
    "http://user:pw@/a.mp4",
    "http://:80/a.mp4",
    "http://example.com:99999/a.mp4",
    "http://example.com\\@evil/a.mp4",
    "http://exämple.com/a.mp4",
    "/etc/passwd",  # local path without allow_local
    "video.mp4",
    "./video.mp4",
    "",
]


@pytest.mark.parametrize("src", FORBIDDEN)
def test_forbidden_sources(src: str) -> None:
    with pytest.raises(ForbiddenUrl):
        check_source(src, ALLOWED_SCHEMES)


@pytest.mark.parametrize(
    "src",
    [
        "file:///etc/passwd",
        "concat:a|b",
        "subfile,,start,0,end,1,,:x",
        "data:x",
        "FILE:///x",
        " file:///x",
        "x\x00y",
        "/tmp/a.mp4\n",
    ],
)
def test_url_forms_stay_forbidden_with_allow_local(src: str) -> None:
    with pytest.raises(ForbiddenUrl):
        check_source(src, ALLOWED_SCHEMES, allow_local=True)


def test_forbidden_message_names_scheme_and_allow_list() -> None:
    with pytest.raises(ForbiddenUrl, match=r"'file' is not allowed.*http, https"):
        check_source("file:///etc/passwd")
    with pytest.raises(ForbiddenUrl, match="lowercase"):
        check_source("HTTP://example.com/a.mp4")
    with pytest.raises(ForbiddenUrl, match="local paths are not accepted"):
        check_source("/tmp/a.mp4")


def test_forbidden_message_hides_credentials() -> None:
    with pytest.raises(ForbiddenUrl) as info:
        check_source("http://user:hunter2@/a.mp4?token=abc")
    assert "hunter2" not in str(info.value) and "abc" not in str(info.value)


@pytest.mark.parametrize(
    "src",
    [
        "http://example.com/a.mp4",
        "https://example.com/a.mp4?x=1#t=3",
        "http://127.0.0.1:8080/a.mp4",
        "http://[::1]:8080/a.mp4",
        "https://user:pw@example.com/path/a%20b.mp4",
    ],
)
def test_allowed_urls_pass_unchanged(src: str) -> None:
    assert check_source(src, ALLOWED_SCHEMES) == src


def test_rtsp_allowed_when_listed() -> None:
    src = "rtsp://user:pw@10.0.0.5:554/stream1"
    assert check_source(src, ("rtsp",)) == src
    with pytest.raises(ForbiddenUrl):
        check_source("http://example.com/a.mp4", ("rtsp",))


def test_local_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_source(str(tmp_path / "a.mp4"), allow_local=True) == str(tmp_path / "a.mp4")
    assert check_source("a.mp4", allow_local=True) == str(tmp_path / "a.mp4")
    # A relative name FFmpeg would read as a protocol cannot sneak through as a path...
    with pytest.raises(ForbiddenUrl):
        check_source("concat:a.mp4", allow_local=True)
    # ...but the explicit relative form is a plain file, made absolute so no prefix survives.
    resolved = check_source("./concat:a.mp4", allow_local=True)
    assert resolved == os.path.join(str(tmp_path), "concat:a.mp4") and resolved.startswith("/")


def test_allow_list_must_be_supported_schemes() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        check_source("file:///etc/passwd", ("http", "file"))
    with pytest.raises(ValueError, match="collection"):
        check_source("http://example.com/a.mp4", "http")  # a bare string is a bug, not an allow-list


@pytest.mark.parametrize(
    ("src", "schemes", "whitelist"),
    [
        ("http://example.com/a.mp4", ("http", "https"), "http,tcp"),
        ("https://example.com/a.mp4", ("http", "https"), "https,tls,tcp"),
        ("rtsp://cam/s", ("rtsp",), "rtsp,rtp,tcp,udp"),
        ("rtmp://srv/live", ("rtmp",), "rtmp,tcp"),
    ],
)
def test_ffmpeg_options_network(src: str, schemes: tuple[str, ...], whitelist: str) -> None:
    opts = ffmpeg_options(src, schemes, timeout_s=2.5)
    formats = opts.pop("format_whitelist")
    assert opts == {"protocol_whitelist": whitelist, "timeout": "2500000", "rw_timeout": "2500000"}
    assert "tty" not in formats.split(",")  # a text page must not open as ANSI-art video


def test_ffmpeg_options_local() -> None:
    opts = ffmpeg_options("/tmp/upload.mp4", ALLOWED_SCHEMES, 10.0, allow_local=True)
    assert opts == {"protocol_whitelist": "file", "format_whitelist": LOCAL_FORMATS}
    for demuxer in ("hls", "dash", "concat", "image2", "imf"):
        assert demuxer not in LOCAL_FORMATS.split(",")


def test_ffmpeg_options_refuses_like_check_source() -> None:
    with pytest.raises(ForbiddenUrl):
        ffmpeg_options("file:///etc/passwd", ALLOWED_SCHEMES, 10.0)
    with pytest.raises(ValueError, match="timeout"):
        ffmpeg_options("http://example.com/a.mp4", ALLOWED_SCHEMES, 0)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://user:pw@host/x", "rtsp://***@host/x"),
        ("rtsp://user@host:554/x", "rtsp://***@host:554/x"),
        ("http://u:p@ss@host/x", "http://***@host/x"),
        ("http://u:pa/ss@host/x", "http://***@host/x"),
        ("https://host/a.mp4?token=abc&x=1", "https://host/a.mp4?token=***&x=1"),
        ("https://host/a.mp4?x=1&api_key=abc#t", "https://host/a.mp4?x=1&api_key=***#t"),
        (
            "https://h/a?X-Amz-Signature=00ff&X-Amz-Credential=AK%2F1&v=2",
            "https://h/a?X-Amz-Signature=***&X-Amz-Credential=***&v=2",
        ),
        ("https://h/a?password=pw&secret=s&sig=q", "https://h/a?password=***&secret=***&sig=***"),
        ("https://host/a.mp4", "https://host/a.mp4"),
        ("/tmp/upload.mp4", "/tmp/upload.mp4"),
        ("", ""),
        (
            "failed: 'rtsp://a:b@h/x' then 'http://c:d@h2/y?key=1'",
            "failed: 'rtsp://***@h/x' then 'http://***@h2/y?key=***'",
        ),
    ],
)
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected


# ---- network policy (SSRF): real getaddrinfo, no FFmpeg ------------------------------------------

REFUSED_ADDRESSES = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),  # cloud metadata
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.255", "carrier-grade NAT"),
    ("0.0.0.0", "this network"),
    ("0.1.2.3", "this network"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.0.8", "IETF"),
    ("198.18.0.1", "benchmarking"),
    ("192.0.2.1", "documentation"),
    ("::1", "not global unicast"),
    ("::", "not global unicast"),
    ("::127.0.0.1", "not global unicast"),  # IPv4-compatible (deprecated)
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fec0::1", "not global unicast"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("ff02::1", "multicast"),
    ("100::1", "not global unicast"),  # discard prefix
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged by the IPv4 address
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "link-local"),
    ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
    ("64:ff9b:1::1", "not global unicast"),  # local-use NAT64
    ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
    ("2002:a9fe:a9fe::1", "link-local"),
    ("2001::1", "IETF"),  # Teredo
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
]


@pytest.mark.parametrize(("address", "why"), REFUSED_ADDRESSES)
def test_default_policy_refuses_special_addresses(address: str, why: str) -> None:
    refusal = DEFAULT_NETWORK_POLICY.refusal(address)
    assert refusal is not None and why in refusal, refusal


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",  # just below CGNAT
        "100.128.0.0",  # just above it
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.1",
        "169.253.255.255",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2a00:1450:4001::1",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",  # NAT64 of a public address (an IPv6-only host behind DNS64)
        "2002:808:808::1",  # 6to4 of a public address
    ],
)
def test_default_policy_accepts_public_addresses(address: str) -> None:
    assert DEFAULT_NETWORK_POLICY.refusal(address) is None


def test_allowed_networks_open_a_range_and_blocked_ones_win() -> None:
    lan = NetworkPolicy(allowed_networks=["192.168.10.0/24"])
    assert lan.refusal("192.168.10.5") is None
    assert lan.refusal("::ffff:192.168.10.5") is None  # the mapped form reaches the same camera
    assert lan.refusal("192.168.11.5") == "private"
    assert lan.refusal("127.0.0.1") == "loopback"
    mixed = NetworkPolicy(allowed_networks=[IPv4Network("10.0.0.0/8")], blocked_networks=["10.1.0.0/16"])
    assert mixed.refusal("10.2.0.1") is None
    assert mixed.refusal("10.1.2.3") == "in a blocked network"
    public = NetworkPolicy(blocked_networks=["8.8.8.0/24", "2001:4860::/32"])
    for address in ("8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808", "2001:4860:4860::8888"):
        assert public.refusal(address) == "in a blocked network", address
    assert public.refusal("8.8.4.4") is None
    anything = NetworkPolicy(allowed_networks=["0.0.0.0/0", "::/0"])
    assert all(anything.refusal(a) is None for a, _ in REFUSED_ADDRESSES)


def test_policy_networks_are_validated() -> None:
    policy = NetworkPolicy(allowed_networks=["127.0.0.0/8"], blocked_networks=(IPv6Network("fd00::/8"),))
    assert policy.allowed_networks == (IPv4Network("127.0.0.0/8"),)
    assert policy.blocked_networks == (IPv6Network("fd00::/8"),)
    with pytest.raises(ValueError):
        NetworkPolicy(allowed_networks=["10.0.0.1/8"])  # host bits set: a typo, not a network
    with pytest.raises(ValueError, match="not one string"):
        NetworkPolicy(allowed_networks="10.0.0.0/8")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DEFAULT_NETWORK_POLICY.refusal("example.com")


def _loopback_names() -> list[str]:
    """Host names that resolve to loopback here: localhost, and the machine's own name when it does."""
    names = ["localhost"]
    try:
        own = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        own = set()
    if own and all(DEFAULT_NETWORK_POLICY.refusal(a) is not None for a in own):
        names.append(socket.gethostname())
    return names


LOOPBACK_URLS = [
    "http://127.0.0.1:8080/a.mp4",
    "http://2130706433/a.mp4",  # decimal
    "http://0x7f.1/a.mp4",  # hex, short form
    "http://0x7f000001/a.mp4",
    "http://127.1/a.mp4",  # short form
    "http://017700000001/a.mp4",  # octal
    "http://0177.0.0.1/a.mp4",
    "http://127.000.000.001/a.mp4",
    "http://0/a.mp4",  # 0.0.0.0: Linux connects it to the local host
    "http://0.0.0.0:8000/a.mp4",
    "http://[::1]:8080/a.mp4",
    "http://[::]/a.mp4",
    "http://[::ffff:127.0.0.1]/a.mp4",
    "http://[::ffff:7f00:1]/a.mp4",
    "http://[0:0:0:0:0:ffff:127.0.0.1]/a.mp4",
    "http://[64:ff9b::7f00:1]/a.mp4",
    "https://user:hunter2@127.0.0.1/a.mp4?token=abc",
    *(f"http://{name}:8080/a.mp4" for name in _loopback_names()),
]


@pytest.mark.parametrize("url", LOOPBACK_URLS)
def test_default_policy_refuses_loopback_in_any_spelling(url: str) -> None:
    with pytest.raises(ForbiddenUrl, match="is refused") as info:
        check_source(url, ALLOWED_SCHEMES, network_policy=DEFAULT_NETWORK_POLICY)
    assert "hunter2" not in str(info.value) and "abc" not in str(info.value)
    assert check_source(url, ALLOWED_SCHEMES) == url  # without a policy: the server's own URL, trusted


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/a.mp4",
        "http://[fe80::1]/a.mp4",
        "http://[fd00::1]/a.mp4",
        "http://100.64.0.1/a.mp4",
        "http://224.0.0.1/a.mp4",
        "rtsp://192.168.1.20:554/stream1",
    ],
)
def test_default_policy_refuses_internal_networks(url: str) -> None:
    with pytest.raises(ForbiddenUrl, match="is refused"):
        check_source(url, ("http", "rtsp"), network_policy=DEFAULT_NETWORK_POLICY)


def test_allow_list_lets_loopback_through_but_not_other_ranges() -> None:
    policy = NetworkPolicy(allowed_networks=["127.0.0.0/8"])
    for url in ("http://127.0.0.1:8080/a.mp4", "http://2130706433/a.mp4", "http://[::ffff:127.0.0.1]/a"):
        assert check_source(url, ALLOWED_SCHEMES, network_policy=policy) == url
    assert check_network("http://localhost:8080/a.mp4", policy) == ("127.0.0.1",)
    for url in ("http://[::1]/a.mp4", "http://0/a.mp4", "http://169.254.169.254/"):
        with pytest.raises(ForbiddenUrl):
            check_source(url, ALLOWED_SCHEMES, network_policy=policy)


def test_public_literals_pass_and_unknown_hosts_are_unreachable() -> None:
    assert check_network("http://8.8.8.8/a.mp4", DEFAULT_NETWORK_POLICY) == ("8.8.8.8",)
    assert check_network("https://[2606:4700:4700::1111]:8443/a", DEFAULT_NETWORK_POLICY) == (
        "2606:4700:4700::1111",
    )
    with pytest.raises(UnreachableSource, match="could not be resolved"):
        check_source("http://no-such-host.invalid/a.mp4", network_policy=DEFAULT_NETWORK_POLICY)


def test_ffmpeg_options_under_a_policy() -> None:
    plain = ffmpeg_options("http://example.com/a.mp4", ALLOWED_SCHEMES, 5.0)
    assert "max_redirects" not in plain and "hls" in plain["format_whitelist"].split(",")
    guarded = ffmpeg_options(
        "http://example.com/a.mp4", ALLOWED_SCHEMES, 5.0, network_policy=DEFAULT_NETWORK_POLICY
    )
    # FFmpeg cannot be talked into HLS (segments on any host) at a non-playlist URL
    assert "hls" not in guarded["format_whitelist"].split(",")
    assert "mpjpeg" in guarded["format_whitelist"].split(",")
    playlist = ffmpeg_options(
        "https://example.com/live/index.m3u8?x=1", ALLOWED_SCHEMES, 5.0, network_policy=DEFAULT_NETWORK_POLICY
    )
    assert guarded_playlist("https://example.com/live/index.m3u8?x=1", DEFAULT_NETWORK_POLICY)
    assert not guarded_playlist("https://example.com/live/index.m3u8", None)
    assert "hls" in playlist["format_whitelist"].split(",")
    assert (playlist["http_persistent"], playlist["http_multiple"]) == ("0", "0")
    # under a policy FFmpeg speaks plain RTSP over TCP to the relay (stream.rtsp_relay), and nothing else
    rtsp = ffmpeg_options("rtsps://cam/s", ("rtsps",), 5.0, network_policy=DEFAULT_NETWORK_POLICY)
    assert rtsp["protocol_whitelist"] == "rtsp,tcp"
    assert ffmpeg_options("rtsps://cam/s", ("rtsps",), 5.0)["protocol_whitelist"] == "rtsps,rtp,tls,tcp,udp"


def test_schemes_that_cannot_be_pinned_are_refused_under_a_policy() -> None:
    """FFmpeg's rtmp client resolves and connects by itself: under a policy it is refused (no lookup)."""
    from stream.av_input import resolve

    with pytest.raises(ForbiddenUrl, match="cannot be held to the checked address"):
        resolve(
            "rtmp://8.8.8.8/live",
            allowed_schemes=("rtmp",),
            timeout_s=1,
            network_policy=DEFAULT_NETWORK_POLICY,
        )
    assert resolve("rtmp://8.8.8.8/live", allowed_schemes=("rtmp",), timeout_s=1).network_policy is None
