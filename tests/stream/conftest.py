"""Fixtures for the stream tests: synthetic clips, loopback HTTP/RTSP/MJPEG servers, closed/silent ports,
real clips."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.redis_server import free_port
from tests.stream.clips import TESTDATA, Clips, make_clip, make_clip_set
from tests.stream.live_peers import MjpegServer, RtspServer, require_live_peers
from tests.stream.servers import HttpServer, serve_directory


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    """Synthetic clips, written once per session."""
    return make_clip_set(tmp_path_factory.mktemp("clips"))


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    """A loopback HTTP server over an empty directory (``http_server.root``)."""
    root = tmp_path / "www"
    root.mkdir()
    with serve_directory(root) as server:
        yield server


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback TCP port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


@pytest.fixture
def real_clips_dir() -> Path:
    """``../shared/testdata`` beside the project; tests using it are skipped when it is absent."""
    if not TESTDATA.is_dir():
        pytest.skip(f"real clips not found at {TESTDATA}")
    return TESTDATA


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
