"""A camera on the local network, registered through a real ``vidmem serve`` as a new user would: private
addresses are reachable in embedded mode (one user, on loopback), never loopback, link-local or metadata;
the distributed mode keeps nothing beyond public by default; every refusal names the setting.

tests/conftest.py allows loopback for the whole session (VIDMEM_URL_ALLOWED_NETWORKS): these servers run
without it, as a user's would. ``"check": false`` registers without opening the camera; the stream is
purged at once, so its reader tries the (absent) camera for a moment only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bench.redis_server import RedisServer
from tests.integration.procs import distributed_env, embedded_env, keyed_client, run_api

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAMERA = "rtsp://192.168.1.64/stream1"
NEVER = [
    "rtsp://127.0.0.1:8554/stream1",
    "rtsp://localhost/stream1",
    "rtsp://[::1]/stream1",
    "rtsp://169.254.169.254/latest/meta-data/",
    "http://169.254.169.254/latest/meta-data/",
    "rtsp://[fe80::1]/stream1",
    "rtsp://100.100.100.200/stream1",  # CGNAT (Alibaba Cloud's metadata)
    "rtsp://0.0.0.0/stream1",
]


@contextmanager
def serve(env: dict[str, str], logdir: Path) -> Iterator[str]:
    env = dict(env)
    env.pop("VIDMEM_URL_ALLOWED_NETWORKS", None)  # the user's default, not the test session's
    with run_api(env, logdir) as (base, _):
        yield base


def register(client: httpx.Client, url: str) -> httpx.Response:
    return client.post("/v1/streams", json={"url": url, "check": False, "name": "cam"})


def test_embedded_mode_registers_a_lan_camera_and_refuses_local_addresses(
    tmp_path: Path, model_cache: Path
) -> None:
    env = embedded_env(model_cache, tmp_path / "uploads") | {"HOME": str(tmp_path)}
    with serve(env, tmp_path) as base, httpx.Client(base_url=base, timeout=30) as client:
        r = register(client, CAMERA)
        assert r.status_code == 201, r.text  # today: 400 forbidden_url ... private
        stream_id = r.json()["stream_id"]
        assert client.delete(f"/v1/streams/{stream_id}", params={"purge": "true"}).status_code in (200, 204)
        for url in NEVER:
            r = register(client, url)
            assert r.status_code == 400, (url, r.text)
            err = r.json()["error"]
            assert err["code"] == "forbidden_url" and "VIDMEM_URL_ALLOWED_NETWORKS" in err["message"], url
        assert client.get("/healthz").status_code == 200


def test_distributed_mode_refuses_private_cameras_by_default_and_names_the_setting(
    redis_server: RedisServer, tmp_path: Path, model_cache: Path
) -> None:
    env = distributed_env(redis_server.url, model_cache)
    with serve(env, tmp_path) as base, keyed_client(base, redis_server.url, timeout=30) as client:
        r = register(client, CAMERA)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "forbidden_url" and "private" in err["message"]
        assert "VIDMEM_URL_ALLOWED_NETWORKS" in err["message"]  # today: no word on how to allow it
