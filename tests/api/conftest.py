"""Fixtures for the API tests: the FastAPI app in embedded mode (fakeredis, in-process thread pools)
with the seeded tiny model, small generated clips, a loopback HTTP server, and helpers.

The tiny model is built once per session into a session temporary directory (``model_cache``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings
from tests.stream.clips import make_clip
from tests.stream.servers import HttpServer, serve_directory

BUDGET = 512
LOCAL_BASE = "http://127.0.0.1"
"""The TestClient's base URL: the keyless embedded app answers loopback host names only."""
JOB_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ApiClips:
    root: Path
    small: Path  # 6 s, 25 fps, 160x120: 6 frames at fps=1
    short: Path  # 3 s, 25 fps, 96x64: 3 frames at fps=1
    long: Path  # 20 s, 25 fps, 96x64: 80 frames at fps=4 (a job that takes a while)


@pytest.fixture(scope="session")
def api_clips(tmp_path_factory: pytest.TempPathFactory) -> ApiClips:
    root = tmp_path_factory.mktemp("api_clips")
    return ApiClips(
        root=root,
        small=make_clip(root / "small.mp4", seconds=6, fps=25, size=(160, 120)),
        short=make_clip(root / "short.mp4", seconds=3, fps=25),
        long=make_clip(root / "long.mp4", seconds=20, fps=25),
    )


def make_settings(model_cache: Path, upload_dir: Path, **extra: Any) -> Settings:
    """Embedded-mode settings (redis_url=None explicitly, whatever the environment says)."""
    values: dict[str, Any] = {
        "redis_url": None,
        "model": "tiny",
        "model_cache": model_cache,
        "upload_dir": upload_dir,
        "budget": BUDGET,
        "device": "cpu",
        "open_timeout_s": 5.0,
    }
    return Settings(**(values | extra))


@contextmanager
def running_client(settings: Settings) -> Iterator[TestClient]:
    """A TestClient over a fresh embedded app; its in-process worker pools are shut down on exit."""
    app: FastAPI = create_app(settings)
    try:
        with TestClient(app, base_url=LOCAL_BASE) as client:
            yield client
    finally:
        dispatcher = app.state.runtime.dispatcher
        shutdown = getattr(dispatcher, "shutdown", None)
        if shutdown is not None:
            shutdown()


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def client(model_cache: Path, upload_dir: Path) -> Iterator[TestClient]:
    """The app of one test module (embedded, tiny model, budget 512)."""
    with running_client(make_settings(model_cache, upload_dir)) as c:
        yield c


@pytest.fixture(scope="module")
def web(api_clips: ApiClips, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """A loopback HTTP server holding a short clip (``clip.mp4``) and text files that are not videos."""
    root = tmp_path_factory.mktemp("www")
    (root / "clip.mp4").write_bytes(api_clips.short.read_bytes())
    (root / "hello.txt").write_text("hello")
    (root / "page.html").write_text("<html><body>" + "not a video " * 50 + "</body></html>")
    (root / "notes.txt").write_text("this is a text file, not a video\n" * 20)
    with serve_directory(root) as server:
        yield server


# ---- helpers -----------------------------------------------------------------------------


class Response(Protocol):
    """What the tests read of a TestClient response (httpx or httpx2, whichever Starlette uses)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


def upload(
    client: TestClient,
    path: Path,
    name: str | None = None,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> Response:
    data = {k: str(v) for k, v in fields.items()}
    files = {"file": (name or path.name, path.read_bytes(), "video/mp4")}
    return client.post("/v1/videos", files=files, data=data, headers=headers)


def wait_job(
    client: TestClient, job_id: str, timeout_s: float = JOB_TIMEOUT_S, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Poll GET /v1/jobs/{id} until done or failed; return every reading (the last is terminal)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        r = client.get(f"/v1/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        seen.append(r.json())
        if seen[-1]["state"] in ("done", "failed"):
            return seen
        assert time.monotonic() < deadline, f"job {job_id} did not finish: {seen[-1]}"
        time.sleep(0.05)


def assert_error(r: Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is ``status`` with a JSON ``{"error": {"code", "message"}}`` body (and ``code``)."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:500]}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict) and {"code", "message"} <= set(err), body
    assert isinstance(err["code"], str) and err["code"], body
    assert isinstance(err["message"], str) and err["message"], body
    if code is not None:
        assert err["code"] == code, body
    return err


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """Server-Sent Events -> [(event name, parsed JSON data)]."""
    events: list[tuple[str, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].lstrip())
        events.append((name, json.loads("\n".join(data))))
    return events


@contextmanager
def no_new_uploads(upload_dir: Path) -> Iterator[None]:
    """The block leaves no new file in the upload directory (a refused upload is removed)."""
    before = set(upload_dir.glob("*")) if upload_dir.exists() else set()
    yield
    after = set(upload_dir.glob("*")) if upload_dir.exists() else set()
    assert after <= before, f"files left in {upload_dir}: {sorted(p.name for p in after - before)}"
