"""Fixtures for the stream tests: synthetic clips, a loopback HTTP server, silent ports, real clips.

The live peers (RTSP, MJPEG, HLS) are in the top-level conftest: the API and integration tests use
them too."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stream.clips import TESTDATA, Clips, make_clip_set
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
