"""One state model for every kind of stream (README, "Stream states"), checked on a real ``vidmem serve``.

An upload's or URL's stream follows its job: queued -> connecting, running -> live, done -> done, failed
-> stopped (with the job's error as ``last_error``); a DELETE stops it for good. Every stream view of such
a stream carries its ``job_id`` and ``job_state``, so the stream and the job never seem to disagree.

The embedded server reads two videos at a time, so two long uploads keep a third job queued; the URL of
that third job is removed from its (loopback) HTTP server before it runs, so its job fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.procs import embedded_env, run_api
from tests.stream.clips import make_clip
from tests.stream.live_helpers import wait_until
from tests.stream.servers import HttpServer, serve_directory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STREAM_STATE_OF_JOB = {"queued": "connecting", "running": "live", "done": "done", "failed": "stopped"}


@dataclass(frozen=True)
class Server:
    client: httpx.Client
    files: HttpServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Server]:
    """``vidmem serve`` (embedded, tiny model) and a loopback HTTP server of video files."""
    logs = tmp_path_factory.mktemp("states")
    files = logs / "files"
    files.mkdir()
    env = embedded_env(model_cache, logs / "uploads", budget=256)
    with (
        run_api(env, logs) as (base, _),
        serve_directory(files) as http,
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        yield Server(client, http)


def view(c: httpx.Client, sid: str) -> dict[str, Any]:
    r = c.get(f"/v1/streams/{sid}")
    assert r.status_code == 200, r.text
    v: dict[str, Any] = r.json()
    return v


def job(c: httpx.Client, job_id: str) -> dict[str, Any]:
    r = c.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    j: dict[str, Any] = r.json()
    return j


def follows_its_job(v: dict[str, Any], job_id: str) -> bool:
    """The stream view names its job, and (unless stopped by DELETE) shows the state of that job's."""
    assert v["job_id"] == job_id, v
    assert v["job_state"] in STREAM_STATE_OF_JOB, v
    return bool(v["state"] == STREAM_STATE_OF_JOB[v["job_state"]])


def until(what: str, cond: Callable[[], Any], timeout_s: float = 60) -> Any:
    return wait_until(cond, timeout_s, what)


def test_stream_states_follow_jobs(server: Server, tmp_path: Path) -> None:
    c = server.client
    long_clip = make_clip(tmp_path / "long.mp4", seconds=120, fps=25, size=(96, 64))
    make_clip(Path(server.files.root) / "url.mp4", seconds=3, fps=25)

    # Two long uploads: the server's two ingest threads are busy with them.
    busy = []
    for i in range(2):
        files = {"file": (f"long{i}.mp4", long_clip.read_bytes(), "video/mp4")}
        r = c.post("/v1/videos", files=files, data={"fps": "4"})
        assert r.status_code == 202, r.text
        busy.append(r.json())
    first = busy[0]

    # While a job runs, its stream is live; the view says which job and its state, in one reading.
    running = until(
        "the first job running",
        lambda: (v := view(c, first["stream_id"]))["job_state"] == "running" and v,
    )
    assert follows_its_job(running, first["job_id"]) and running["state"] == "live", running
    assert job(c, first["job_id"])["state"] == "running"
    assert running["last_error"] is None, running

    # A third video waits: its job is queued, its stream connecting.
    r = c.post("/v1/videos", json={"url": server.files.url("url.mp4"), "fps": 1})
    assert r.status_code == 202, r.text
    third = r.json()
    queued = view(c, third["stream_id"])
    assert job(c, third["job_id"])["state"] == "queued"
    assert follows_its_job(queued, third["job_id"]) and queued["state"] == "connecting", queued
    assert queued["job_state"] == "queued"

    # Its file disappears before it is read: when the busy streams are stopped, the job runs and fails.
    (Path(server.files.root) / "url.mp4").unlink()
    for b in busy:
        assert c.delete(f"/v1/streams/{b['stream_id']}").status_code == 200
    failed = until(
        "the third job failed",
        lambda: (v := view(c, third["stream_id"]))["job_state"] in ("done", "failed") and v,
    )
    assert failed["job_state"] == "failed", failed
    assert follows_its_job(failed, third["job_id"]) and failed["state"] == "stopped", failed
    ended = job(c, third["job_id"])
    assert ended["state"] == "failed" and failed["last_error"] == ended["error"] and ended["error"], ended

    # A stream stopped by DELETE stays stopped, whatever its job did since (it ends with what it read).
    for b in busy:
        v = until(
            "the stopped job to end", lambda b=b: (v := view(c, b["stream_id"]))["job_state"] == "done" and v
        )
        assert v["state"] == "stopped" and job(c, b["job_id"])["state"] == "done", v

    # Every view of the list agrees with the single views.
    listed = {s["stream_id"]: s for s in c.get("/v1/streams").json()["streams"]}
    for ids in (*busy, third):
        assert listed[ids["stream_id"]]["state"] == view(c, ids["stream_id"])["state"]
        assert listed[ids["stream_id"]]["job_id"] == ids["job_id"]
