"""Where the perimeter checks apply (``api.origin_guard``, ``api.security_headers``), fast, in-process:
the embedded app answers loopback names and refuses cross-site writes; the keyed app answers any Host
unless ``allowed_hosts`` is set, and has no cross-site check (its bearer keys are never sent by a
browser on its own); every response, refusals included, carries the security headers.
(The real-server tests of these holes are tests/reliability/test_perimeter.py and test_body_limits.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.origin_guard import host_name, is_loopback_name
from tests.api.conftest import LOCAL_BASE, assert_error, make_settings, running_client
from workers.dispatch import InProcessDispatcher
from workers.runtime import Runtime
from workers.tenants import ApiKeys

EVIL = {"Host": "evil.example"}


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("LocalHost", "localhost"),
        ("[::1]:80", "[::1]"),
        ("[::1]", "[::1]"),
        ("vidmem.lan:443", "vidmem.lan"),
        ("a:b", None),
        ("[::1]x", None),
        ("[::1", None),
        ("", None),
        (":80", None),
    ],
)
def test_host_name(header: str, host: str | None) -> None:
    assert host_name(header) == host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("127.9.9.9", True), ("[::1]", True), ("::1", True),
     ("[::2]", False), ("localhost.evil.example", False), ("10.0.0.1", False), ("[evil]", False)],
)  # fmt: skip
def test_is_loopback_name(host: str, loopback: bool) -> None:
    assert is_loopback_name(host) is loopback


@pytest.fixture(scope="module")
def embedded(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(model_cache, tmp_path_factory.mktemp("up"), allowed_hosts=["vidmem.lan"])
    with running_client(settings) as c:
        yield c


def _headers_present(r: Any) -> None:
    assert r.headers["x-frame-options"] == "DENY", r.headers
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "script-src 'self'" in r.headers["content-security-policy"]


def test_embedded_answers_loopback_and_allowed_names_only(embedded: TestClient) -> None:
    for host in ("127.0.0.1:1234", "localhost", "[::1]:8000", "vidmem.lan", "VIDMEM.LAN:80"):
        assert embedded.get("/v1/streams", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "vidmem.lan.evil.example", "testserver"):
        r = embedded.get("/v1/streams", headers={"Host": host})
        assert_error(r, 421, "bad_host")
        _headers_present(r)


def test_embedded_refuses_cross_site_writes(embedded: TestClient) -> None:
    body = {"url": "rtsp://127.0.0.1:9/cam", "check": False}
    r = embedded.post("/v1/streams", json=body, headers={"Origin": "http://evil.example"})
    assert_error(r, 403, "cross_site")
    _headers_present(r)
    r = embedded.post("/v1/streams", json=body, headers={"Origin": LOCAL_BASE})
    assert r.status_code == 201, r.text
    assert embedded.delete(f"/v1/streams/{r.json()['stream_id']}").status_code == 200


def test_security_headers_everywhere(embedded: TestClient) -> None:
    for path in ("/", "/static/app.js", "/static/style.css", "/v1/streams", "/healthz", "/nope"):
        _headers_present(embedded.get(path))
    r = embedded.post(
        "/v1/streams", content=b"x" * (300 * 2**10), headers={"Content-Type": "application/json"}
    )
    assert_error(r, 413, "payload_too_large")
    _headers_present(r)


def _keyed(model_cache: Path, upload_dir: Path, **extra: Any) -> tuple[TestClient, Runtime]:
    settings = make_settings(model_cache, upload_dir, redis_url="redis://keyed.invalid:6379/0", **extra)
    rt = Runtime.create(settings, client=fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    rt.dispatcher = InProcessDispatcher(rt)
    return TestClient(create_app(settings, rt)), rt


def test_keyed_mode_checks_host_only_when_told(model_cache: Path, tmp_path: Path) -> None:
    c, rt = _keyed(model_cache, tmp_path)
    try:
        with c:
            key = {"Authorization": f"Bearer {ApiKeys(rt.redis).create('acme')[1]}"}
            # Any Host (the proxy's job), and no cross-site check: a browser never sends the key itself.
            r = c.get("/v1/streams", headers=key | EVIL)
            assert r.status_code == 200, r.text
            body = {"url": "rtsp://127.0.0.1:9/cam", "check": False}
            r = c.post("/v1/streams", json=body, headers=key | {"Origin": "http://evil.example"})
            assert r.status_code == 201, r.text
            _headers_present(r)
    finally:
        rt.close()
    c, rt = _keyed(model_cache, tmp_path, allowed_hosts=["api.example.com"])
    try:
        with c:
            assert_error(c.get("/v1/streams", headers=EVIL), 421, "bad_host")
            # Served (then refused for want of a key): the name set, and loopback (health checks).
            for host in ("api.example.com", "127.0.0.1:8000"):
                assert_error(c.get("/v1/streams", headers={"Host": host}), 401, "unauthorized")
    finally:
        rt.close()
