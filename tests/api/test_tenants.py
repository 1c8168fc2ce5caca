"""Tenants: API keys, isolation between tenants, per-tenant quotas, the ask rate limit, body size limits.

The app runs as in distributed mode (a Redis URL is set, so keys are required) over an in-memory Redis
and in-process workers; tests/reliability/test_tenant_isolation.py repeats isolation with real processes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.main import create_app
from core.settings import Settings
from tests import tenancy
from tests.api.conftest import ApiClips, assert_error, make_settings, upload, wait_job
from vidmem.cli import main as cli_main
from workers.dispatch import InProcessDispatcher
from workers.runtime import Runtime
from workers.tenants import ApiKeys

KEYED_URL = "redis://keyed.invalid:6379/0"  # never connected to: the runtime gets an in-memory client


class Keyed:
    """A keyed app and its keys: ``a`` and ``a2`` belong to tenant acme, ``b`` to tenant globex."""

    def __init__(self, client: TestClient, rt: Runtime) -> None:
        self.client, self.rt = client, rt
        keys = ApiKeys(rt.redis)
        self.a = keys.create("acme", "alice")[1]
        self.a2 = keys.create("acme", "bob")[1]
        self.b = keys.create("globex")[1]

    def as_(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


def keyed_settings(model_cache: Path, upload_dir: Path, **extra: Any) -> Settings:
    return make_settings(model_cache, upload_dir, redis_url=KEYED_URL, **extra)


def keyed_app(settings: Settings) -> Iterator[Keyed]:
    rt = Runtime.create(settings, client=fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    rt.dispatcher = InProcessDispatcher(rt)
    app = create_app(settings, rt)
    try:
        with TestClient(app) as c:
            yield Keyed(c, rt)
    finally:
        rt.close()


@pytest.fixture(scope="module")
def keyed(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    yield from keyed_app(keyed_settings(model_cache, tmp_path_factory.mktemp("up"), ask_per_minute=1000))


@pytest.fixture(scope="module")
def acme_video(keyed: Keyed, api_clips: ApiClips) -> dict[str, Any]:
    """One finished upload of tenant acme: its job and stream ids and its memory's first slot."""
    c = keyed.client
    r = upload(c, api_clips.small, headers=keyed.as_(keyed.a), fps=1)
    assert r.status_code == 202, r.text
    ids = r.json()
    assert wait_job(c, ids["job_id"], headers=keyed.as_(keyed.a))[-1]["state"] == "done"
    mem = c.get(f"/v1/streams/{ids['stream_id']}/memory", headers=keyed.as_(keyed.a)).json()
    return ids | {"slot_id": mem["slots"][0]["slot_id"]}


# ---- keys ----------------------------------------------------------------------------------


def test_every_v1_route_needs_a_valid_key(keyed: Keyed) -> None:
    routes = tenancy.v1_operations(keyed.client)
    assert len(routes) >= 10
    for route, method in routes:
        path = re.sub(r"\{[a-z_]+\}", "0", route)
        for headers in ({}, keyed.as_("vmk_00000000_" + "x" * 43), {"Authorization": "Basic abc"}):
            r = keyed.client.request(method, path, headers=headers)
            err = assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"] == "Bearer", (method, path)
            assert "key" in err["message"]


def test_open_paths_need_no_key(keyed: Keyed) -> None:
    for path in ("/", "/openapi.json", "/static/app.js"):
        assert keyed.client.get(path).status_code == 200, path
    # (503 here: this app's Redis URL is never reachable, only its in-memory client is.)
    assert keyed.client.get("/healthz").json()["mode"] == "distributed"
    schemes = keyed.client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert schemes == {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": schemes["HTTPBearer"]["description"],
        }
    }


def test_keys_are_stored_hashed_and_revocable() -> None:
    r = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    keys = ApiKeys(r)
    rec, key = keys.create("acme", "ci")
    assert re.fullmatch(r"vmk_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", key) and key.split("_")[1] == rec.key_id
    dump = b"".join(k + b"".join(v for pair in r.hgetall(k).items() for v in pair) for k in r.keys("*"))
    assert key.encode() not in dump and key.split("_", 2)[2].encode() not in dump
    assert keys.lookup(key) == rec
    assert keys.lookup(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert [k.key_id for k in keys.list()] == [rec.key_id]
    assert keys.revoke(rec.key_id) and not keys.revoke(rec.key_id)
    assert keys.lookup(key) is None and keys.list() == []
    with pytest.raises(ValueError, match="tenant"):
        keys.create("Bad Tenant")
    with pytest.raises(ValueError, match="reserved"):
        keys.create("local")  # the keyless embedded mode's tenant


def test_revoked_key_is_refused_at_once(keyed: Keyed) -> None:
    keys = ApiKeys(keyed.rt.redis)
    rec, key = keys.create("acme", "temp")
    assert keyed.client.get("/v1/streams", headers=keyed.as_(key)).status_code == 200
    keys.revoke(rec.key_id)
    assert_error(keyed.client.get("/v1/streams", headers=keyed.as_(key)), 401, "unauthorized")


def test_cli_keys_against_a_real_redis(
    redis_server: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = redis_server.url
    redis.Redis.from_url(url).flushdb()
    assert cli_main(["keys", "--redis-url", url, "create", "--tenant", "acme", "--name", "ops"]) == 0
    key = capsys.readouterr().out.strip()
    rec = ApiKeys(redis.Redis.from_url(url)).lookup(key)
    assert rec is not None and rec.tenant == "acme" and rec.name == "ops"
    assert cli_main(["keys", "--redis-url", url, "list"]) == 0
    listed = capsys.readouterr().out
    assert rec.key_id in listed and "acme" in listed and key not in listed
    assert cli_main(["keys", "--redis-url", url, "revoke", rec.key_id]) == 0
    assert cli_main(["keys", "--redis-url", url, "revoke", rec.key_id]) == 1
    assert ApiKeys(redis.Redis.from_url(url)).lookup(key) is None
    assert cli_main(["keys", "--redis-url", url, "create", "--tenant", "NO WAY"]) == 2
    capsys.readouterr()
    monkeypatch.delenv("VIDMEM_REDIS_URL", raising=False)
    assert cli_main(["keys", "list"]) == 2
    assert "Redis" in capsys.readouterr().err


def test_embedded_mode_binds_only_to_loopback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.5"):
        assert Settings(redis_url=None, host=host).embedded
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(ValidationError, match="loopback"):
            Settings(redis_url=None, host=host)
    assert Settings(redis_url=KEYED_URL, host="0.0.0.0").host == "0.0.0.0"
    # The command refuses before binding anything, with a message instead of a traceback.
    monkeypatch.delenv("VIDMEM_REDIS_URL", raising=False)
    assert cli_main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "loopback" in capsys.readouterr().err


# ---- isolation -----------------------------------------------------------------------------


def test_another_tenants_ids_are_unknown_on_every_route(keyed: Keyed, acme_video: dict[str, Any]) -> None:
    c = keyed.client
    listed = c.get("/v1/streams", headers=keyed.as_(keyed.a2)).json()["streams"]
    assert [(v["stream_id"], v["tenant"]) for v in listed] == [(acme_video["stream_id"], "acme")]
    for path, method in tenancy.id_operations(c):
        other = tenancy.call(c, path, method, acme_video, keyed.b)
        assert_error(other, 404, tenancy.expected_code(path))
        view = c.get(f"/v1/streams/{acme_video['stream_id']}", headers=keyed.as_(keyed.a)).json()
        assert view["state"] == "done", view  # whatever the other tenant tried, the stream is as it was
        # The owner, with either of its keys, is served: the 404 above is isolation, not a broken call.
        owner = tenancy.call(c, path, method, acme_video, keyed.a2)
        assert owner.status_code in (200, 201), (method, path, owner.status_code, owner.text[:300])
    assert c.get("/v1/streams", headers=keyed.as_(keyed.b)).json() == {"streams": []}
    assert c.get("/v1/streams", headers=keyed.as_(keyed.a)).json() == {"streams": []}  # the owner's purge


# ---- quotas, rate, size ---------------------------------------------------------------------


@pytest.fixture
def strict(model_cache: Path, tmp_path: Path) -> Iterator[Keyed]:
    yield from keyed_app(
        keyed_settings(
            model_cache,
            tmp_path,
            tenant_max_jobs=1,
            tenant_max_live_streams=1,
            ask_per_minute=2,
            max_body_kb=4,
        )
    )


def test_job_quota_per_tenant(strict: Keyed, api_clips: ApiClips) -> None:
    c = strict.client
    first = upload(c, api_clips.long, headers=strict.as_(strict.a), fps=4)
    assert first.status_code == 202, first.text
    second = upload(c, api_clips.short, headers=strict.as_(strict.a2))
    err = assert_error(second, 429, "quota_exceeded")
    assert "acme" in err["message"] and int(second.headers["retry-after"]) > 0
    url_job = c.post("/v1/videos", headers=strict.as_(strict.a), json={"url": "http://example.com/x.mp4"})
    assert_error(url_job, 429, "quota_exceeded")
    other = upload(c, api_clips.short, headers=strict.as_(strict.b))
    assert other.status_code == 202, other.text
    assert wait_job(c, first.json()["job_id"], headers=strict.as_(strict.a))[-1]["state"] == "done"
    again = upload(c, api_clips.short, headers=strict.as_(strict.a))
    assert again.status_code == 202, again.text


def test_live_stream_quota_per_tenant(strict: Keyed) -> None:
    c, h = strict.client, strict.as_(strict.a)
    cam = {"url": "rtsp://93.184.215.14/live", "check": False}  # a public address; never connected to
    first = c.post("/v1/streams", headers=h, json=cam)
    assert first.status_code == 201, first.text
    assert_error(c.post("/v1/streams", headers=h, json=cam), 429, "quota_exceeded")
    assert c.post("/v1/streams", headers=strict.as_(strict.b), json=cam).status_code == 201
    assert c.delete(f"/v1/streams/{first.json()['stream_id']}", headers=h).status_code == 200
    assert c.post("/v1/streams", headers=h, json=cam).status_code == 201


def test_ask_rate_limit_per_tenant(strict: Keyed, api_clips: ApiClips) -> None:
    c = strict.client
    ids = {}
    for key in (strict.a, strict.b):
        r = upload(c, api_clips.short, headers=strict.as_(key))
        assert r.status_code == 202, r.text
        assert wait_job(c, r.json()["job_id"], headers=strict.as_(key))[-1]["state"] == "done"
        ids[key] = r.json()["stream_id"]
    q = {"question": "what?", "max_new_tokens": 2}
    for _ in range(2):
        assert (
            c.post(f"/v1/streams/{ids[strict.a]}/ask", headers=strict.as_(strict.a), json=q).status_code
            == 200
        )
    limited = c.post(f"/v1/streams/{ids[strict.a]}/ask", headers=strict.as_(strict.a2), json=q)
    err = assert_error(limited, 429, "rate_limited")
    assert "acme" in err["message"] and 1 <= int(limited.headers["retry-after"]) <= 60
    # Another tenant's budget is its own.
    assert c.post(f"/v1/streams/{ids[strict.b]}/ask", headers=strict.as_(strict.b), json=q).status_code == 200


def test_request_body_limits(strict: Keyed, api_clips: ApiClips) -> None:
    c, h = strict.client, strict.as_(strict.a)
    big = {"url": "rtsp://93.184.215.14/" + "x" * 5000, "check": False}
    assert_error(c.post("/v1/streams", headers=h, json=big), 413, "payload_too_large")
    # Declaring a multipart body does not buy the upload limit on another route (nor before the key check).
    fake_form = b"--b\r\n" + b"x" * 10_000
    multipart = {"content-type": "multipart/form-data; boundary=b"}
    assert_error(c.post("/v1/streams", headers=h | multipart, content=fake_form), 413, "payload_too_large")
    assert_error(c.post("/v1/streams", headers=multipart, content=fake_form), 413, "payload_too_large")
    sdp = {"sdp": "v=0\r\n" + "a=x\r\n" * 2000, "type": "offer"}
    assert_error(c.post("/v1/webrtc/offer", headers=h, json=sdp), 413, "payload_too_large")
    # Uploads have their own, larger limit: a clip far over 4 KiB is accepted.
    assert api_clips.short.stat().st_size > 4096
    r = upload(c, api_clips.short, headers=h)
    assert r.status_code == 202, r.text
