"""Request bodies against a real ``vidmem serve``: only a multipart upload may be large.

A 300 MB JSON document to ``/v1/videos`` (the upload route) is refused 413 at once, declared or chunked,
and the server's resident memory stays flat (it read none of it); an oversized chunked body anywhere,
multipart upload or JSON, is 413 ``payload_too_large`` (not FastAPI's 400 "error parsing the body");
the server keeps serving.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.figures import TestFigures
from tests.reliability.perimeter import Embedded, RawResponse, embedded_server, pieces, raw_request, rss_kib

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

BIG_JSON = 300 * 2**20
RSS_GROWTH_MAX_MB = 50
REFUSED_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Embedded]:
    """The default limits: uploads up to 1024 MiB, other bodies up to 256 KiB."""
    with embedded_server(tmp_path_factory.mktemp("bodies"), model_cache) as s:
        yield s


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Embedded]:
    """Small limits, so that an oversized upload is quick to send: 1 MiB uploads, 64 KiB other bodies."""
    with embedded_server(tmp_path_factory.mktemp("small"), model_cache, max_upload_mb=1, max_body_kb=64) as s:
        yield s


def _assert_413(r: RawResponse) -> None:
    assert r.status == 413, f"expected 413, got {r.status}: {r.body[:300]!r}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert r.json()["error"]["code"] == "payload_too_large", r.body


def _still_serving(s: Embedded) -> None:
    with httpx.Client(base_url=s.base, timeout=30) as c:
        assert c.get("/healthz").status_code == 200
        # A small JSON body to the upload route still reaches the route (an unreachable URL: 422).
        r = c.post("/v1/videos", json={"url": "http://127.0.0.1:9/clip.mp4"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "unreachable_source", r.text


def test_json_to_the_upload_route_gets_the_small_limit(server: Embedded, figures: TestFigures) -> None:
    pid = server.proc.p.pid
    before = rss_kib(pid)
    headers = {"Host": f"127.0.0.1:{server.port}", "Content-Type": "application/json"}
    first = b'{"url": "http://example.com/'
    declared = raw_request(server.port, "POST", "/v1/videos", headers | {"Content-Length": str(BIG_JSON)},
                           pieces(BIG_JSON, first=first))  # fmt: skip
    _assert_413(declared)
    chunked = raw_request(server.port, "POST", "/v1/videos", headers, pieces(BIG_JSON, first=first),
                          chunked=True)  # fmt: skip
    _assert_413(chunked)
    time.sleep(0.5)
    growth_mb = (rss_kib(pid) - before) / 1024
    figures.set(
        declared_refused_s=declared.seconds, declared_sent_mb=round(declared.sent / 2**20, 1),
        chunked_refused_s=chunked.seconds, chunked_sent_mb=round(chunked.sent / 2**20, 1),
        rss_growth_mb=round(growth_mb, 1),
    )  # fmt: skip
    print(f"declared: 413 after {declared.seconds} s, {declared.sent} bytes sent; chunked: 413 after "
          f"{chunked.seconds} s, {chunked.sent} bytes sent; server RSS grew {growth_mb:.1f} MB")  # fmt: skip
    assert declared.seconds < REFUSED_WITHIN_S and chunked.seconds < REFUSED_WITHIN_S
    assert growth_mb < RSS_GROWTH_MAX_MB, f"the server's RSS grew {growth_mb:.0f} MB"
    _still_serving(server)


def test_oversized_chunked_bodies_get_413(small: Embedded, figures: TestFigures) -> None:
    host = {"Host": f"127.0.0.1:{small.port}"}
    boundary = "vidmemboundary"
    multipart = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    part = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n").encode()  # fmt: skip
    uploads_before = set(small.upload_dir.glob("*"))
    probes = {
        "multipart upload": ("/v1/videos", multipart, pieces(3 * 2**20, 64 * 2**10, first=part)),
        "JSON video URL": ("/v1/videos", {"Content-Type": "application/json"},
                           pieces(2**20, 16 * 2**10, first=b'{"url": "')),
        "JSON live stream": ("/v1/streams", {"Content-Type": "application/json"},
                             pieces(2**20, 16 * 2**10, first=b'{"url": "')),
        "JSON question": ("/v1/streams/0123456789abcdef/ask", {"Content-Type": "application/json"},
                          pieces(2**20, 16 * 2**10, first=b'{"question": "')),
        "SDP offer": ("/v1/webrtc/offer", {"Content-Type": "application/json"},
                      pieces(2**20, 16 * 2**10, first=b'{"sdp": "')),
    }  # fmt: skip
    for name, (path, headers, body) in probes.items():
        r = raw_request(small.port, "POST", path, host | headers, body, chunked=True)
        print(f"{name}: {r.status} after {r.sent} bytes, {r.seconds} s")
        _assert_413(r)
        figures.add("refused")
    assert set(small.upload_dir.glob("*")) <= uploads_before, "a refused upload left a file"
    _still_serving(small)
    figures.set(probes=len(probes))
