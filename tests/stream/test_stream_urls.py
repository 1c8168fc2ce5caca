"""URL allow-list, FFmpeg open options and credential redaction (no FFmpeg involved)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stream.errors import ForbiddenUrl
from stream.urls import (
    ALLOWED_SCHEMES,
    LOCAL_FORMATS,
    check_source,
    ffmpeg_options,
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
