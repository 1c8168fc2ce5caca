"""A client's URL reaches only addresses the network policy checked: no second DNS answer, no redirect, on the
first open and on every live reconnect. Against a real ``vidmem serve`` (embedded mode) with hostile peers
on loopback.

The server's policy allows 127.0.0.2/32 only (Linux answers all of 127.0.0.0/8 on loopback). Each kind of
peer runs twice on the same port: a *public* one on 127.0.0.2 and an *internal* one on 127.0.0.1, which
must never see a connection.

- DNS rebinding: a ``sitecustomize.py`` on the server's PYTHONPATH makes Python's ``getaddrinfo`` answer
  127.0.0.2 for ``localhost`` (from a JSON file the test can rewrite), while FFmpeg's own lookup (libc,
  /etc/hosts) gives 127.0.0.1: the name passes the check and then points inside, as a name with TTL 0
  can. Opening ``localhost`` URLs (MP4 over http, MJPEG, RTSP) must reach the public peer only.
- RTSP redirects: a server on 127.0.0.2 answers OPTIONS with ``302 Location: rtsp://127.0.0.1:<port>/test``
  (the internal GStreamer camera). Registering it must be refused (check true) or fail at every attempt
  (check false), and the camera must see nothing.
- Unknown codec: an upload or URL whose video stream has no decoder is a 4xx, not a 500.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.procs import embedded_env, run_api
from tests.reliability.figures import TestFigures
from tests.stream.clips import make_clip, make_unknown_codec
from tests.stream.http_peers import Web, far_index, jpeg_frames, web_peer
from tests.stream.live_helpers import wait_until
from tests.stream.live_peers import RtspServer, require_live_peers
from tests.stream.rtsp_peers import RedirectingRtsp

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.slow]

PUBLIC, INTERNAL = "127.0.0.2", "127.0.0.1"

SITECUSTOMIZE = '''
"""Test only: Python's getaddrinfo answers names from the JSON map in $VIDMEM_TEST_HOSTS (read at each
lookup); FFmpeg's C lookups are untouched."""
import json, os, socket
_real = socket.getaddrinfo
def _lookup(host, port, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    try:
        with open(os.environ["VIDMEM_TEST_HOSTS"]) as f:
            hosts = json.load(f)
    except (OSError, ValueError, KeyError):
        hosts = {}
    return _real(hosts.get(name, host), port, *args, **kwargs)
socket.getaddrinfo = _lookup
'''


def twin_port() -> int:
    """A port free on both 127.0.0.2 and 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind((PUBLIC, 0))
            port = int(a.getsockname()[1])
            try:
                b.bind((INTERNAL, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free on both loopback addresses")


@dataclass
class Setup:
    base: str
    hosts: Path  # the JSON map the server's getaddrinfo reads
    public: Web
    internal: Web
    web_port: int
    rtsp_port: int
    cameras: dict[str, RtspServer]  # "public" (127.0.0.2) and "internal" (127.0.0.1), same port
    root: Path

    def resolve(self, name: str, address: str) -> None:
        self.hosts.write_text(json.dumps({name: address}))

    def client(self, figures: TestFigures) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=60, event_hooks={"response": [figures.http_hook]})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, live_clip: Path) -> Iterator[Setup]:
    require_live_peers()
    root = tmp_path_factory.mktemp("pinning")
    www = root / "www"
    www.mkdir()
    far_index(make_clip(www / "clip.mp4", seconds=3, fps=10, size=(160, 96), codec="libx264"))  # index last
    make_unknown_codec(www / "zz.avi")
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    hosts = root / "hosts.json"
    hosts.write_text(json.dumps({"localhost": PUBLIC}))
    web_port, rtsp_port = twin_port(), twin_port()
    cameras = {
        "public": RtspServer(live_clip, rtsp_port, root / "public-rtsp.log", address=PUBLIC),
        "internal": RtspServer(live_clip, rtsp_port, root / "internal-rtsp.log", address=INTERNAL),
    }
    env = embedded_env(
        model_cache, root / "uploads", frame_size=64, url_allowed_networks=f'["{PUBLIC}/32"]',
        live_open_timeout_s=3, live_read_timeout_s=2, live_backoff_max_s=1,
    )  # fmt: skip
    env |= {  # the sitecustomize, and the map it reads
        "VIDMEM_TEST_HOSTS": str(hosts),
        "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p),
    }
    jpegs = jpeg_frames()
    try:
        for camera in cameras.values():
            camera.start()
        with (
            web_peer(www, PUBLIC, web_port, jpegs=jpegs) as out,
            web_peer(www, INTERNAL, web_port, jpegs=jpegs) as inner,
            run_api(env, root) as (base, _),
        ):
            yield Setup(base, hosts, out, inner, web_port, rtsp_port, cameras, www)
    finally:
        for camera in cameras.values():
            camera.stop()


def _view(c: httpx.Client, sid: str) -> dict[str, Any]:
    r = c.get(f"/v1/streams/{sid}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _serving(c: httpx.Client) -> bool:
    return c.get("/healthz").status_code == 200 and c.get("/v1/streams").status_code == 200


def _error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    return str(err["message"])


def _within(seconds: float, cond: Callable[[], Any], what: str) -> Any:
    return wait_until(cond, seconds, what)


def test_an_rtsp_redirect_is_refused_and_never_followed(setup: Setup, figures: TestFigures) -> None:
    internal = setup.cameras["internal"]
    before = internal.clients()
    target = f"rtsp://{INTERNAL}:{setup.rtsp_port}/test"
    with RedirectingRtsp(PUBLIC, target) as hostile, setup.client(figures) as c:
        t0 = time.monotonic()
        message = _error(c.post("/v1/streams", json={"url": hostile.url, "fps": 1}), 400, "forbidden_url")
        assert "redirects (RTSP 302)" in message and "not followed" in message, message
        figures.set(check_true_refused_s=round(time.monotonic() - t0, 3))
        r = c.post("/v1/streams", json={"url": hostile.url, "fps": 1, "check": False})
        assert r.status_code == 201, r.text
        sid = r.json()["stream_id"]
        _within(20, lambda: len(hostile.requests) >= 4, "the reader to retry a few times")
        view = _view(c, sid)
        assert "redirects (RTSP 302)" in (view["last_error"] or ""), view
        assert view["frames_sampled"] == 0 and view["state"] == "connecting", view
        assert c.delete(f"/v1/streams/{sid}?purge=true").status_code == 200
        time.sleep(0.5)
        assert internal.clients() == before, "the redirect's target got a connection"
        assert _serving(c)
        figures.set(
            redirects_tried=len(hostile.requests),
            refused=len(hostile.requests),
            inner_connections=internal.clients() - before,
            server_serving=1,
        )


def test_an_mp4_url_is_fetched_from_the_checked_address(setup: Setup, figures: TestFigures) -> None:
    """``localhost`` passes the check as 127.0.0.2; FFmpeg would look it up again and get 127.0.0.1."""
    setup.resolve("localhost", PUBLIC)
    seen, inner = len(setup.public.seen), len(setup.internal.seen)
    with setup.client(figures) as c:
        t0 = time.monotonic()
        r = c.post("/v1/videos", json={"url": f"http://localhost:{setup.web_port}/clip.mp4", "fps": 2})
        assert r.status_code == 202, r.text
        job = _within(60, lambda: (j := c.get(f"/v1/jobs/{r.json()['job_id']}").json())["state"]
                      in ("done", "failed") and j, "the job to end")  # fmt: skip
        assert job["state"] == "done", job
        figures.set(job_s=round(time.monotonic() - t0, 3))
        requests = setup.public.seen[seen:]
        assert setup.internal.seen[inner:] == [], "the internal server got a request: a second lookup"
        assert {path for path, _ in requests} == {"/clip.mp4"}
        assert any(span not in (None, "bytes=0-") for _, span in requests), "no range request: the index?"
        assert _serving(c)
        figures.set(
            public_requests=len(requests), inner_requests=len(setup.internal.seen) - inner, server_serving=1
        )


def test_an_mjpeg_url_is_read_from_the_checked_address(setup: Setup, figures: TestFigures) -> None:
    setup.resolve("localhost", PUBLIC)
    seen, inner = len(setup.public.seen), len(setup.internal.seen)
    with setup.client(figures) as c:
        r = c.post("/v1/streams", json={"url": f"http://localhost:{setup.web_port}/cam.mjpg", "fps": 2})
        assert r.status_code == 201, r.text
        sid = r.json()["stream_id"]
        _within(20, lambda: _view(c, sid)["frames_sampled"] >= 2, "MJPEG frames")
        assert c.delete(f"/v1/streams/{sid}?purge=true").status_code == 200
        assert setup.internal.seen[inner:] == [], "the internal server got a request: a second lookup"
        assert ("/cam.mjpg", "bytes=0-") in setup.public.seen[seen:]
        assert _serving(c)
        figures.set(inner_requests=len(setup.internal.seen) - inner, server_serving=1)


def test_an_rtsp_url_and_its_reconnects_use_the_checked_address(setup: Setup, figures: TestFigures) -> None:
    """Each reopen checks the name again and connects where that check pointed: the public camera, never
    the internal one, nowhere once the name points outside the policy, and back when it returns."""
    public, internal = setup.cameras["public"], setup.cameras["internal"]
    setup.resolve("localhost", PUBLIC)
    inner_before = internal.clients()
    url = f"rtsp://localhost:{setup.rtsp_port}/test"
    with setup.client(figures) as c:
        r = c.post("/v1/streams", json={"url": url, "fps": 2})  # check true: opened once already
        assert r.status_code == 201, r.text
        sid = r.json()["stream_id"]
        _within(20, lambda: _view(c, sid)["state"] == "live", "the camera to be live")
        assert internal.clients() == inner_before, "the internal camera got a connection"

        public.kill()  # the reader reconnects, again and again, to the checked address only
        _within(15, lambda: "could not be reached" in (_view(c, sid)["last_error"] or ""), "a failed reopen")
        time.sleep(4)  # several more reopens (backoff at most 1 s)
        assert internal.clients() == inner_before, "a reconnect reached the internal camera"
        public.start()
        _within(20, lambda: (v := _view(c, sid))["state"] == "live" and v["reconnects"] >= 1, "the reconnect")

        setup.resolve("localhost", "127.0.0.3")  # the name now points outside the policy
        public_before = public.clients()
        public.kill()
        _within(15, lambda: "is refused" in (_view(c, sid)["last_error"] or ""), "the re-check to refuse")
        public.start()
        time.sleep(3)
        view = _view(c, sid)
        assert view["state"] == "reconnecting" and "is refused" in (view["last_error"] or ""), view
        assert public.clients() == public_before + 1, "a refused name was connected to"  # start() opens once
        setup.resolve("localhost", PUBLIC)
        view = _within(20, lambda: (v := _view(c, sid))["state"] == "live" and v, "the stream back")
        assert c.delete(f"/v1/streams/{sid}?purge=true").status_code == 200
        assert internal.clients() == inner_before, "the internal camera got a connection"
        assert _serving(c)
        figures.set(
            reconnects=view["reconnects"],
            public_connections=public.clients(),
            inner_connections=internal.clients() - inner_before,
            server_serving=1,
        )


def test_a_video_in_an_unknown_codec_is_a_4xx(setup: Setup, figures: TestFigures) -> None:
    setup.resolve("localhost", PUBLIC)
    clip = setup.root / "zz.avi"
    with setup.client(figures) as c:
        with clip.open("rb") as fh:
            r = c.post("/v1/videos", files={"file": ("zz.avi", fh, "video/x-msvideo")}, data={"fps": "1"})
        assert "codec" in _error(r, 422, "unsupported_codec")
        r = c.post("/v1/videos", json={"url": f"http://localhost:{setup.web_port}/zz.avi"})
        assert "codec" in _error(r, 422, "unsupported_codec")
        r = c.post("/v1/streams", json={"url": f"http://localhost:{setup.web_port}/zz.avi", "fps": 1})
        assert "codec" in _error(r, 422, "unsupported_codec")
        assert _serving(c)
        figures.set(probes=3, refused_4xx=3, server_serving=1)
