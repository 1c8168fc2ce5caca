"""Answers whose client went away stop generating, and asks that no worker could answer are refused at once,
against real servers: ``vidmem serve`` in embedded mode (one answer thread), and in distributed mode with a
real redis-server and real Celery workers (one answer worker process).

The tiny model never emits its end token, so a question allowed ``LONG`` new tokens generates for about
10 s on a CPU. A client that reads a few pieces and closes the connection at 1.5 s must free the answer
thread or worker at once: the next question's first piece comes within ``FIRST_PIECE_S``, and the server's
log shows that the first generation stopped early.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import RedisServer
from tests.integration.procs import VIDMEM, Proc, distributed_env, embedded_env, run_api, run_cluster
from tests.reliability.conftest import api_client, upload, wait_job
from tests.reliability.figures import TestFigures
from tests.stream.clips import make_clip

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

LONG = 3000
"""New tokens of an abandoned answer (the servers' max_new_tokens_limit): ~10 s of the tiny model."""
ABANDON_S = 1.5
FIRST_PIECE_S = 5.0
"""Most time from a question to its first piece once the abandoned answer was cancelled."""
STOPPED = re.compile(r"answer cancelled by its client after (\d+) of (\d+) new tokens")
NEVER_RAN = "answer cancelled by its client before it started"


@dataclass
class Server:
    """A running API with a stream whose video is in its memory."""

    base: str
    api: Proc
    stream_id: str
    logs: Path
    env: dict[str, str]
    redis_url: str | None = None  # distributed mode
    answer_worker: Proc | None = None  # distributed mode, once started

    def client(self, figures: TestFigures | None = None, timeout: float = 30) -> httpx.Client:
        if self.redis_url is not None:
            return api_client(self.base, self.redis_url, figures, timeout=timeout)
        hooks = {"response": [figures.http_hook]} if figures is not None else {}
        return httpx.Client(base_url=self.base, timeout=timeout, event_hooks=hooks)

    def log(self) -> str:
        """Where answers run: the API process (embedded) or the answer worker."""
        proc = self.answer_worker or self.api
        return proc.log.read_text(errors="replace")


def _sse(r: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    kind = ""
    for line in r.iter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield kind, json.loads(line.removeprefix("data: "))


def _ask(tokens: int) -> dict[str, Any]:
    return {"question": "Describe everything.", "max_new_tokens": tokens, "stream": True}


def abandon(c: httpx.Client, stream_id: str, after_s: float = ABANDON_S) -> int:
    """Ask for LONG tokens over SSE, read pieces until ``after_s``, then close the connection; the pieces
    read."""
    pieces = 0
    t0 = time.monotonic()
    with c.stream("POST", f"/v1/streams/{stream_id}/ask", json=_ask(LONG)) as r:
        assert r.status_code == 200, r.read()
        for kind, data in _sse(r):
            assert kind in ("piece", "restart"), (kind, data)
            pieces += kind == "piece"
            if time.monotonic() - t0 >= after_s and pieces >= 2:
                break
    return pieces


def first_piece_s(c: httpx.Client, stream_id: str) -> float:
    """Seconds from a short question to its first piece (the answer is then read to its end)."""
    t0 = time.monotonic()
    first: float | None = None
    with c.stream("POST", f"/v1/streams/{stream_id}/ask", json=_ask(8)) as r:
        assert r.status_code == 200, r.read()
        kinds = []
        for kind, _ in _sse(r):
            if kind == "piece" and first is None:
                first = time.monotonic() - t0
            kinds.append(kind)
    assert kinds[-1] == "done", kinds
    assert first is not None
    return round(first, 3)


def _stopped_early(server: Server, n: int) -> list[int]:
    """The new tokens of each answer the log says was cancelled mid-generation (waits up to 10 s for n)."""
    deadline = time.monotonic() + 10
    while True:
        found = [(int(a), int(b)) for a, b in STOPPED.findall(server.log())]
        if len(found) >= n or time.monotonic() > deadline:
            assert all(total == LONG for _, total in found), found
            return [a for a, _ in found]
        time.sleep(0.2)


def _check_sse_abandon(server: Server, figures: TestFigures) -> None:
    before = len(STOPPED.findall(server.log()))
    with server.client(figures) as c:
        figures.set(baseline_first_piece_s=first_piece_s(c, server.stream_id))
        pieces = abandon(c, server.stream_id)
        wait = first_piece_s(c, server.stream_id)
        figures.set(abandoned_after_pieces=pieces, next_first_piece_s=wait)
        assert wait < FIRST_PIECE_S, f"the next question waited {wait} s behind an abandoned answer"
    stopped = _stopped_early(server, before + 1)[before:]
    figures.set(abandoned_new_tokens=stopped)
    assert len(stopped) == 1 and stopped[0] < LONG / 2, stopped


# ---- embedded: one answer thread in the API process -----------------------------------------------------


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    logs = tmp_path_factory.mktemp("embedded")
    env = embedded_env(
        tmp_path_factory.getbasetemp() / "models", logs / "uploads", frame_size=64, max_new_tokens_limit=LONG
    )
    clip = make_clip(logs / "clip.mp4", seconds=4, fps=10, size=(96, 64))
    with run_api(env, logs) as (base, api):
        with httpx.Client(base_url=base, timeout=30) as c:
            r = upload(c, clip, fps=2)
            assert r.status_code == 202, r.text
            assert wait_job(c, r.json()["job_id"], timeout_s=120)["state"] == "done"
        yield Server(base, api, r.json()["stream_id"], logs, env)


def test_embedded_sse_client_gone_stops_the_generation(embedded: Server, figures: TestFigures) -> None:
    _check_sse_abandon(embedded, figures)


def test_embedded_json_client_gone_and_queued_answers(embedded: Server, figures: TestFigures) -> None:
    """A JSON client that gives up also stops its answer; a question cancelled while it waited behind
    another never runs."""
    sid = embedded.stream_id
    before = len(STOPPED.findall(embedded.log()))
    with embedded.client(figures) as c:
        body = {"question": "Describe everything.", "max_new_tokens": LONG}
        with pytest.raises(httpx.ReadTimeout):
            c.post(f"/v1/streams/{sid}/ask", json=body, timeout=ABANDON_S)
        wait = first_piece_s(c, sid)
        figures.set(json_next_first_piece_s=wait)
        assert wait < FIRST_PIECE_S, f"the next question waited {wait} s behind an abandoned JSON answer"
        assert len(_stopped_early(embedded, before + 1)) == before + 1

        # A runs; B waits behind it for the answer thread and is abandoned there; then A is abandoned too.
        url = f"/v1/streams/{sid}/ask"
        with c.stream("POST", url, json=_ask(LONG)) as ra:
            a_events = _sse(ra)  # kept: closing the iterator would close A's connection
            assert next(a_events)[0] == "piece"
            with pytest.raises(httpx.ReadTimeout), c.stream("POST", url, json=_ask(LONG), timeout=1.0) as rb:
                next(_sse(rb))  # nothing comes: its task is queued behind A
        wait = first_piece_s(c, sid)
        figures.set(queued_next_first_piece_s=wait)
        assert wait < FIRST_PIECE_S
    assert embedded.log().count(NEVER_RAN) == 1, "the queued, abandoned question must not run"
    assert len(_stopped_early(embedded, before + 2)) == before + 2


def test_embedded_max_new_tokens_limit(embedded: Server) -> None:
    """More new tokens than max_new_tokens_limit: 422 naming the limit (not a silently shorter answer)."""
    with embedded.client() as c:
        r = c.post(
            f"/v1/streams/{embedded.stream_id}/ask", json={"question": "x", "max_new_tokens": LONG + 1}
        )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error" and str(LONG) in r.json()["error"]["message"]


def test_a_stream_named_after_a_long_file_name(
    embedded: Server, tmp_path: Path, figures: TestFigures
) -> None:
    """A stream's name taken from an upload's file name has the name field's limit: 200 characters, no
    control characters."""
    clip = make_clip(tmp_path / "clip.mp4", seconds=2, fps=10, size=(96, 64))
    filename = "\x1b[31m" + "n" * 1000 + ".mp4"
    with embedded.client(figures) as c, clip.open("rb") as fh:
        r = c.post("/v1/videos", files={"file": (filename, fh, "video/mp4")}, data={"fps": "1"})
        assert r.status_code == 202, r.text
        name = c.get(f"/v1/streams/{r.json()['stream_id']}").json()["name"]
    figures.set(name_chars=len(name))
    assert len(name) <= 200 and name.startswith("[31mnnn"), name[:20]


# ---- distributed: a real redis-server, Celery workers, the API as its own process ---------------------


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The API and an ingest+encode worker; no answer worker (``answer_worker`` starts one)."""
    redis.Redis.from_url(redis_server.url).flushdb()
    logs = tmp_path_factory.mktemp("cluster")
    env = distributed_env(
        redis_server.url, tmp_path_factory.getbasetemp() / "models", upload_dir=logs / "uploads",
        worker_heartbeat_s=0.5, max_new_tokens_limit=LONG,
    )  # fmt: skip
    worker = ["worker", "--queues", "ingest,encode", "--name", "encode@%h"]
    clip = make_clip(logs / "clip.mp4", seconds=4, fps=10, size=(96, 64))
    with run_cluster(env, logs, worker=worker) as (base, procs):
        with api_client(base, redis_server.url) as c:
            r = upload(c, clip, fps=2)
            assert r.status_code == 202, r.text
            assert wait_job(c, r.json()["job_id"], timeout_s=120)["state"] == "done"
        server = Server(base, procs["api"], r.json()["stream_id"], logs, env, redis_server.url)
        try:
            yield server
        finally:
            if server.answer_worker is not None:
                server.answer_worker.stop()


def start_answer_worker(server: Server) -> None:
    """Start the answer worker (one process, one task at a time) and wait until /healthz counts it."""
    if server.answer_worker is None:
        args = [*VIDMEM, "worker", "--queues", "answer", "--name", "answer@%h"]
        server.answer_worker = Proc("answer", args, server.env, server.logs)
    deadline = time.monotonic() + 90
    while httpx.get(f"{server.base}/healthz", timeout=5).json()["workers"]["answer"] < 1:
        if time.monotonic() > deadline:
            pytest.fail("the answer worker did not start:\n" + server.answer_worker.tail())
        time.sleep(0.2)


def test_ask_without_an_answer_worker_is_refused_at_once(cluster: Server, figures: TestFigures) -> None:
    assert cluster.answer_worker is None, "this test needs the cluster before its answer worker starts"
    with cluster.client(figures, timeout=5) as c:
        t0 = time.monotonic()
        try:
            r = c.post(f"/v1/streams/{cluster.stream_id}/ask", json={"question": "What is there?"})
        except httpx.ReadTimeout:
            pytest.fail("an ask with no answer worker waited instead of being refused")
        refused_s = round(time.monotonic() - t0, 3)
        figures.set(refused_in_s=refused_s)
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "no_worker" and "'answer'" in err["message"], err
        assert "vidmem worker --queues answer" in err["message"]
        assert int(r.headers["Retry-After"]) > 0
        assert refused_s < 2.0

        start_answer_worker(cluster)
        r = c.post(f"/v1/streams/{cluster.stream_id}/ask", json={"question": "What is there?"}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["answer"]


def test_distributed_sse_client_gone_stops_the_generation(cluster: Server, figures: TestFigures) -> None:
    start_answer_worker(cluster)
    _check_sse_abandon(cluster, figures)
