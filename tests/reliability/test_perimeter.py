"""The keyless embedded server against a hostile web page, with a real ``vidmem serve`` process.

DNS rebinding: a page whose name now points at 127.0.0.1 reaches the server with its own name in
``Host``. Every route (the page, reads, thumbnails, ask, delete, WebRTC offers, metrics) answers such a
request 421 ``bad_host``, while loopback names and ``VIDMEM_ALLOWED_HOSTS`` are served.

Cross-site requests: a form POST or a ``fetch`` from another origin needs no CORS preflight. A
state-changing request naming another ``Origin`` (``null`` included), and any request a browser marks
``Sec-Fetch-Site: cross-site`` (but a plain navigation to the page), answer 403 ``cross_site`` and change
nothing; the same requests from the page's own origin, or from a client that is not a browser, work.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import upload, wait_job
from tests.reliability.figures import TestFigures
from tests.reliability.perimeter import Embedded, embedded_server, raw_request
from tests.stream.clips import make_clip

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

ALLOWED = "vidmem.test"
"""A name the server is told to answer to (``VIDMEM_ALLOWED_HOSTS``)."""

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Embedded]:
    logs = tmp_path_factory.mktemp("perimeter")
    with embedded_server(logs, model_cache, allowed_hosts=f'["{ALLOWED}"]') as s:
        yield s


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=3, fps=10, size=(96, 64))


@pytest.fixture(scope="module")
def video(server: Embedded, clip: Path) -> dict[str, Any]:
    """An upload, encoded: its stream id and its memory's first slot."""
    with httpx.Client(base_url=server.base, timeout=30) as c:
        r = upload(c, clip, fps=2)
        assert r.status_code == 202, r.text
        ids: dict[str, Any] = r.json()
        assert wait_job(c, ids["job_id"], timeout_s=120)["state"] == "done"
        ids["slot_id"] = c.get(f"/v1/streams/{ids['stream_id']}/memory").json()["slots"][0]["slot_id"]
        return ids


def _requests(ids: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, httpx keyword arguments): every kind of route, reads and writes."""
    sid, slot = ids["stream_id"], ids["slot_id"]
    return [
        ("GET", "/", {}),
        ("GET", "/static/app.js", {}),
        ("GET", "/healthz", {}),
        ("GET", "/metrics", {}),
        ("GET", "/openapi.json", {}),
        ("GET", "/v1/streams", {}),
        ("GET", f"/v1/streams/{sid}", {}),
        ("GET", f"/v1/streams/{sid}/memory", {}),
        ("GET", f"/v1/streams/{sid}/slots/{slot}/thumbnail", {}),
        ("GET", f"/v1/jobs/{ids['job_id']}", {}),
        ("POST", f"/v1/streams/{sid}/ask", {"json": {"question": "what happened?"}}),
        ("POST", "/v1/streams", {"json": {"url": "rtsp://127.0.0.1:9/cam", "check": False}}),
        ("POST", "/v1/webrtc/offer", {"json": {"sdp": SDP}}),
        ("DELETE", f"/v1/streams/{sid}", {"params": {"purge": "true"}}),
    ]


def _assert_refused(r: httpx.Response | Any, status: int, code: str) -> None:
    assert r.status_code == status, f"expected {status} {code}, got {r.status_code}: {r.text[:300]}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert r.json()["error"]["code"] == code, r.text


def test_foreign_host_names_are_refused(
    server: Embedded, video: dict[str, Any], figures: TestFigures
) -> None:
    foreign = ["evil.example", f"evil.example:{server.port}", f"127.0.0.1.nip.io:{server.port}",
               f"localhost.evil.example:{server.port}", "[::2]", "127.0.0.1:port"]  # fmt: skip
    with httpx.Client(base_url=server.base, timeout=30) as c:
        streams_before = c.get("/v1/streams").json()
        for host in foreign:
            for method, path, kwargs in _requests(video):
                r = c.request(method, path, headers={"Host": host}, **kwargs)
                _assert_refused(r, 421, "bad_host")
                figures.add("refused")
        # HTTP/1.0 without any Host header at all
        r10 = raw_request(server.port, "GET", "/v1/streams", {}, version="1.0")
        assert r10.status == 421 and r10.json()["error"]["code"] == "bad_host", r10
        figures.add("refused")
        assert c.get("/v1/streams").json() == streams_before, "a refused request changed the streams"

        # Loopback names (any port) and the configured name are served.
        for host in [f"127.0.0.1:{server.port}", f"localhost:{server.port}", f"[::1]:{server.port}",
                     "127.0.0.1", "LOCALHOST", f"{ALLOWED}:{server.port}", ALLOWED.upper()]:  # fmt: skip
            for path in ("/", "/v1/streams", f"/v1/streams/{video['stream_id']}/memory", "/healthz"):
                r = c.get(path, headers={"Host": host})
                assert r.status_code == 200, (host, path, r.status_code, r.text[:300])
                figures.add("served")
        assert c.get("/healthz").status_code == 200
    figures.set(foreign_hosts=len(foreign), routes=len(_requests(video)))


def test_cross_site_requests_are_refused(
    server: Embedded, video: dict[str, Any], clip: Path, figures: TestFigures
) -> None:
    own = server.base
    evil = "http://evil.example"
    other_local = f"http://localhost:{server.port + 1}"  # another local app: another origin
    sid = video["stream_id"]
    files = {"file": ("clip.mp4", clip.read_bytes(), "video/mp4")}
    with httpx.Client(base_url=own, timeout=30) as c:
        before = c.get("/v1/streams").json()["streams"]
        uploads_before = set(server.upload_dir.glob("*"))

        refused: list[tuple[str, str, dict[str, Any]]] = [
            # A form on another site posting a video (a "simple" request: no preflight).
            ("POST", "/v1/videos", {"files": files, "headers": {"Origin": evil}}),
            ("POST", "/v1/videos", {"files": files, "headers": {"Sec-Fetch-Site": "cross-site"}}),
            ("POST", "/v1/videos", {"files": files, "headers": {"Origin": "null"}}),
            ("POST", "/v1/videos", {"files": files, "headers": {"Origin": other_local}}),
            ("POST", "/v1/videos", {"json": {"url": "http://127.0.0.1:9/a"}, "headers": {"Origin": evil}}),
            ("POST", "/v1/streams", {"json": {"url": "rtsp://127.0.0.1:9/c", "check": False},
                                     "headers": {"Origin": evil, "Sec-Fetch-Site": "cross-site"}}),
            ("POST", f"/v1/streams/{sid}/ask", {"content": '{"question": "hi"}',
                                                "headers": {"Origin": evil, "Content-Type": "text/plain"}}),
            ("POST", "/v1/webrtc/offer", {"json": {"sdp": SDP}, "headers": {"Origin": evil}}),
            ("DELETE", f"/v1/streams/{sid}", {"headers": {"Sec-Fetch-Site": "cross-site"}}),
            ("DELETE", f"/v1/streams/{sid}", {"headers": {"Origin": other_local}}),
            ("DELETE", f"/v1/streams/{sid}", {"headers": {"Sec-Fetch-Site": "same-site"}}),
            # Reads by another site's page: an <img> of a thumbnail, a fetch of the list.
            ("GET", f"/v1/streams/{sid}/slots/{video['slot_id']}/thumbnail",
             {"headers": {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors",
                          "Sec-Fetch-Dest": "image"}}),
            ("GET", "/v1/streams", {"headers": {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors",
                                                "Origin": evil}}),
        ]  # fmt: skip
        for method, path, kwargs in refused:
            r = c.request(method, path, **kwargs)
            _assert_refused(r, 403, "cross_site")
            figures.add("refused")
        assert c.get("/v1/streams").json()["streams"] == before, "a refused request changed the streams"
        assert set(server.upload_dir.glob("*")) <= uploads_before, "a refused upload left a file"
        assert c.get(f"/v1/streams/{sid}").status_code == 200, "a refused DELETE removed the stream"

        # The page's own requests work: an upload, then a DELETE, as the browser sends them.
        page = {"Origin": own, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
        r = c.post("/v1/videos", files=files, data={"fps": "2"}, headers=page)
        assert r.status_code == 202, r.text
        new = r.json()["stream_id"]
        assert wait_job(c, r.json()["job_id"], timeout_s=120)["state"] == "done"
        r = c.delete(f"/v1/streams/{new}", params={"purge": "true"}, headers=page)
        assert r.status_code == 200, r.text
        # A link to the page from anywhere still opens it; a client that is not a browser is served.
        nav = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
        assert c.get("/", headers=nav).status_code == 200
        assert c.get("/v1/streams", headers={"Sec-Fetch-Site": "none"}).status_code == 200
        assert c.get(f"/v1/streams/{sid}").status_code == 200
        figures.add("served", 5)
    figures.set(probes=len(refused))
