"""Shared fixtures: an in-memory Redis for unit tests, a real redis-server for integration tests, and real
live peers (RTSP, HTTP MJPEG, HLS) on loopback, stopped by PID."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

from bench.redis_server import RedisServer, free_port
from tests.stream.clips import make_clip
from tests.stream.live_peers import (
    HlsProducer,
    MjpegServer,
    RtspServer,
    StaticHttpServer,
    require_live_peers,
)

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO.parent / "shared" / "testdata"


@pytest.fixture
def closed_port() -> int:
    """A loopback TCP port with nothing listening (bound, then released)."""
    return free_port()


@pytest.fixture
def fake_redis() -> Iterator[redis.Redis]:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def real_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tiny preset is built (once per session, on the first load)."""
    return tmp_path_factory.mktemp("model_cache")


@pytest.fixture(scope="session")
def testdata() -> Path:
    return TESTDATA


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The service refuses client URLs on loopback (SSRF policy, stream.urls.NetworkPolicy), but the test
    # peers (HTTP, RTSP, MJPEG, HLS servers) all listen on 127.0.0.1: allow loopback for every Settings
    # the session builds, subprocesses included. tests/api/test_ssrf.py sets the field explicitly.
    os.environ.setdefault("VIDMEM_URL_ALLOWED_NETWORKS", '["127.0.0.0/8", "::1/128"]')


@pytest.fixture(scope="session")
def live_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 120 s H.264 MP4 (libx264, 160x96, 10 fps, keyframe every 1 s) for the live servers to stream."""
    return make_clip(
        tmp_path_factory.mktemp("live") / "live.mp4",
        seconds=120,
        fps=10,
        size=(160, 96),
        gop=10,
        codec="libx264",
    )


@pytest.fixture
def rtsp_server(live_clip: Path, tmp_path: Path) -> Iterator[RtspServer]:
    """A real RTSP server at ``rtsp_server.url``, up and streaming ``live_clip``; stopped by PID afterwards,
    also when the test fails or left it SIGSTOPped, killed or restarted."""
    require_live_peers()
    server = RtspServer(live_clip, free_port(), tmp_path / "rtsp.log")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def mjpeg_server(live_clip: Path, tmp_path: Path) -> Iterator[MjpegServer]:
    """ffmpeg serving ``live_clip`` as HTTP multipart JPEG at ``mjpeg_server.url`` (one client)."""
    require_live_peers()
    server = MjpegServer(live_clip, free_port(), tmp_path / "mjpeg.log")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def hls_server(live_clip: Path, tmp_path: Path) -> Iterator[StaticHttpServer]:
    """Live HLS at ``hls_server.url("live.m3u8")``: ffmpeg writing ``live_clip`` as a live playlist, served
    by ``python -m http.server`` (kill and ``start()`` it to cut the feed); both stopped by PID afterwards."""
    require_live_peers()
    producer = HlsProducer(live_clip, tmp_path / "hls", tmp_path / "hls.log")
    server = StaticHttpServer(producer.root, free_port(), tmp_path / "http.log")
    try:
        producer.start()
        yield server.start()
    finally:
        server.stop()
        producer.stop()
