"""SSRF: client URLs aiming at local files, internal protocols or forbidden networks are refused (issue 5).

Against the embedded API with real peers on loopback: an HTTP server serving a real clip and HLS playlists
(and recording every request it gets), a second one on 127.0.0.2 as the forbidden target of redirects and
playlist segments, and a bare TCP listener standing in for RTSP and other protocols. A refusal must be the
policy's (400 forbidden_url), not a failed connection, and the peer must have seen nothing. The session
allows loopback (tests/conftest.py); these apps set ``url_allowed_networks`` explicitly.
"""

from __future__ import annotations

import functools
import http.server
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import pytest
from fastapi.testclient import TestClient

from stream.urls import DEFAULT_NETWORK_POLICY
from tests.api.conftest import assert_error, make_settings, running_client, upload, wait_job
from tests.stream.clips import make_clip
from tests.stream.servers import in_thread

pytestmark = pytest.mark.reliability  # part of the reliability suite (SSRF)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    seen: list[str]
    target: str  # where /redirect/NAME and the segments of /abs.m3u8 point


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Files of a directory, plus ``/redirect/NAME`` (302 to the target server's NAME), ``/abs.m3u8`` and
    ``/playlist.mp4`` (the VOD playlist with its segments on the target server) and ``/red.m3u8`` (its
    segments redirected there)."""

    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", f"{self.server.target}/{self.path.removeprefix('/redirect/')}")
            self.end_headers()
            return
        target = f"{self.server.target}/"
        playlists = {"/abs.m3u8": target, "/playlist.mp4": target, "/red.m3u8": "/redirect/"}
        if self.path in playlists:
            text = (Path(self.directory) / "vod.m3u8").read_text()
            body = re.sub(r"^(seg\d+\.ts)$", playlists[self.path] + r"\1", text, flags=re.MULTILINE).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.apple.mpegurl")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


@dataclass
class Peer:
    """A recording HTTP server on ``host``."""

    base: str
    seen: list[str] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@contextmanager
def serve(root: Path, host: str, target: str = "") -> Iterator[Peer]:
    server = _Server((host, 0), functools.partial(_Handler, directory=str(root)))
    server.seen, server.target = [], target
    with in_thread(server) as base:
        yield Peer(base, server.seen)


@dataclass
class Peers:
    web: Peer  # 127.0.0.1: the clip, playlists, redirects to ``inner``
    inner: Peer  # 127.0.0.2: what a redirect or a playlist segment must never reach
    tcp_port: int  # a bare listener on 127.0.0.1 (RTSP, gopher, tcp URLs)
    tcp: socket.socket

    def connections(self) -> int:
        """Connections the bare listener got (accepts what is queued, waits 0.2 s for more)."""
        n = 0
        self.tcp.settimeout(0.2)
        while True:
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                return n
            conn.close()
            n += 1


def _write_hls(clip: Path, root: Path) -> None:
    """A VOD HLS copy of ``clip``: ``vod.m3u8`` and 1-second ``seg<N>.ts`` segments."""
    opts = {"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod",
            "hls_segment_filename": str(root / "seg%d.ts")}  # fmt: skip
    with av.open(str(clip)) as src, av.open(str(root / "vod.m3u8"), "w", format="hls", options=opts) as out:
        video = src.streams.video[0]
        copy = out.add_stream_from_template(video)
        for packet in src.demux(video):
            if packet.dts is not None:
                packet.stream = copy
                out.mux(packet)


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    root = tmp_path_factory.mktemp("ssrf_www")
    clip = make_clip(root / "clip.mp4", seconds=3, fps=10, gop=10, codec="libx264", faststart=True)
    _write_hls(clip, root)
    listener = socket.create_server(("127.0.0.1", 0))
    with serve(root, "127.0.0.2") as inner, serve(root, "127.0.0.1", target=inner.base) as web:
        try:
            yield Peers(web=web, inner=inner, tcp_port=listener.getsockname()[1], tcp=listener)
        finally:
            listener.close()


@contextmanager
def app(model_cache: Path, upload_dir: Path, allowed: list[str]) -> Iterator[TestClient]:
    settings = make_settings(model_cache, upload_dir, url_allowed_networks=allowed, live_open_timeout_s=3.0)
    assert [str(n) for n in settings.url_allowed_networks] == allowed  # not the session's environment
    with running_client(settings) as client:
        yield client


@pytest.fixture(scope="module")
def strict(model_cache: Path, upload_dir: Path) -> Iterator[TestClient]:
    """The default policy: no private, loopback, link-local... address at all."""
    with app(model_cache, upload_dir, []) as client:
        yield client


@pytest.fixture(scope="module")
def lan(model_cache: Path, upload_dir: Path) -> Iterator[TestClient]:
    """127.0.0.1 allowed (the web peer), 127.0.0.2 still forbidden (the inner peer)."""
    with app(model_cache, upload_dir, ["127.0.0.1/32"]) as client:
        yield client


def _loopback_hostname() -> list[str]:
    """The machine's own name, when it resolves to loopback only (it does on most Linux hosts)."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return []
    loopback = found and all(DEFAULT_NETWORK_POLICY.refusal(a) == "loopback" for a in found)
    return [f"http://{socket.gethostname()}:{{port}}/clip.mp4"] if loopback else []


REFUSED = [
    "http://127.0.0.1:{port}/clip.mp4",  # the real server: refused by policy, not by a failed connection
    "http://localhost:{port}/clip.mp4",
    *_loopback_hostname(),
    "http://2130706433:{port}/clip.mp4",
    "http://0x7f.1:{port}/clip.mp4",
    "http://0x7f000001:{port}/clip.mp4",
    "http://127.1:{port}/clip.mp4",
    "http://017700000001:{port}/clip.mp4",
    "http://0:{port}/clip.mp4",
    "http://[::ffff:127.0.0.1]:{port}/clip.mp4",
    "http://[::1]:{port}/clip.mp4",
    "http://[64:ff9b::7f00:1]:{port}/clip.mp4",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/clip.mp4",
    "http://[fd00::1]/clip.mp4",
    "http://100.64.0.1/clip.mp4",
    "file:///etc/passwd",
    "/etc/passwd",
    "concat:/etc/passwd|/etc/hosts",
    "subfile,,start,0,end,100,,:/etc/passwd",
    "data:video/mp4;base64,AAAA",
    "gopher://127.0.0.1:{tcp}/_GET%20/",
    "tcp://127.0.0.1:{tcp}",
    "rtsp://127.0.0.1:{tcp}/stream",
    "rtsp://localhost:{tcp}/stream",
]


def _post(client: TestClient, endpoint: str, url: str) -> Any:
    return client.post(endpoint, json={"url": url, "fps": 1} if endpoint == "/v1/streams" else {"url": url})


@pytest.mark.parametrize("endpoint", ["/v1/videos", "/v1/streams"])
@pytest.mark.parametrize("template", REFUSED)
def test_default_policy_refuses(strict: TestClient, peers: Peers, endpoint: str, template: str) -> None:
    url = template.format(port=peers.web.base.rsplit(":", 1)[1], tcp=peers.tcp_port)
    before = len(peers.web.seen)
    err = assert_error(_post(strict, endpoint, url), 400, "forbidden_url")
    assert peers.web.seen[before:] == [], "the peer got a request: the URL was opened, not refused"
    assert peers.connections() == 0
    assert "Traceback" not in err["message"]
    assert strict.get("/healthz").status_code == 200


def test_refusals_leave_the_service_serving(strict: TestClient, peers: Peers, tmp_path: Path) -> None:
    """After the refusals, the same app takes a good request (an upload: no URL involved)."""
    clip = make_clip(tmp_path / "ok.mp4", seconds=2, fps=10)
    r = upload(strict, clip, fps=1)
    assert r.status_code == 202, r.text
    assert wait_job(strict, r.json()["job_id"])[-1]["state"] == "done"
    assert strict.get("/v1/streams").status_code == 200


def test_allowed_network_is_accepted(lan: TestClient, peers: Peers) -> None:
    before = len(peers.web.seen)
    r = lan.post("/v1/videos", json={"url": peers.web.url("clip.mp4")})
    assert r.status_code == 202, r.text
    assert wait_job(lan, r.json()["job_id"])[-1]["state"] == "done"
    assert "/clip.mp4" in peers.web.seen[before:]


@pytest.mark.parametrize("endpoint", ["/v1/videos", "/v1/streams"])
def test_redirect_to_a_forbidden_address_is_not_followed(
    lan: TestClient, peers: Peers, endpoint: str
) -> None:
    """Requests are made by the guarded opener, which follows no redirect: the 302 to 127.0.0.2 is refused."""
    before = len(peers.web.seen)
    err = assert_error(_post(lan, endpoint, peers.web.url("redirect/clip.mp4")), 400, "forbidden_url")
    assert "redirect" in err["message"]
    assert "/redirect/clip.mp4" in peers.web.seen[before:]
    assert peers.inner.seen == []


@pytest.mark.parametrize("endpoint", ["/v1/videos", "/v1/streams"])
@pytest.mark.parametrize("playlist", ["abs.m3u8", "red.m3u8"])
def test_hls_segments_on_a_forbidden_host_are_refused(
    lan: TestClient, peers: Peers, endpoint: str, playlist: str
) -> None:
    """The playlist's host is allowed; its segments name 127.0.0.2, directly or through a redirect."""
    before = len(peers.web.seen)
    err = assert_error(_post(lan, endpoint, peers.web.url(playlist)), 400, "forbidden_url")
    assert "127.0.0.2" in err["message"] or "redirect" in err["message"], err
    assert f"/{playlist}" in peers.web.seen[before:]
    assert peers.inner.seen == []


def test_hls_on_an_allowed_host_is_accepted(lan: TestClient, peers: Peers) -> None:
    before = len(peers.web.seen)
    r = lan.post("/v1/videos", json={"url": peers.web.url("vod.m3u8")})
    assert r.status_code == 202, r.text
    assert wait_job(lan, r.json()["job_id"])[-1]["state"] == "done"
    assert {"/vod.m3u8", "/seg0.ts"} <= set(peers.web.seen[before:])


def test_a_playlist_at_another_path_is_not_read_as_hls(lan: TestClient, peers: Peers) -> None:
    """Only .m3u8/.m3u URLs are fetched through the guarded opener; elsewhere FFmpeg may not read HLS at
    all. A playlist served as ``playlist.mp4`` with the HLS content type (which FFmpeg's HLS probe trusts)
    and its segments on 127.0.0.2 is not a video, and 127.0.0.2 sees nothing."""
    assert_error(lan.post("/v1/videos", json={"url": peers.web.url("playlist.mp4")}), 415, "not_a_video")
    assert peers.inner.seen == []


def test_loopback_server_accepted_when_allow_list_has_it(
    model_cache: Path, upload_dir: Path, peers: Peers
) -> None:
    """The same real server URL the default policy refuses is accepted with 127.0.0.0/8 allowed; a redirect
    is still not followed, even to an allowed address."""
    with app(model_cache, upload_dir, ["127.0.0.0/8"]) as client:
        url = peers.web.url("clip.mp4")
        r = client.post("/v1/videos", json={"url": url})
        assert r.status_code == 202, r.text
        assert wait_job(client, r.json()["job_id"])[-1]["state"] == "done"
        err = assert_error(client.post("/v1/videos", json={"url": peers.web.url("redirect/clip.mp4")}), 400)
        assert err["code"] == "forbidden_url" and "redirect" in err["message"]
        assert peers.inner.seen == []
