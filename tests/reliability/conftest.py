"""The reliability suite's shared parts: the figures recorder, the one HTTP client every test uses, and
checks of jobs and memories.

Figures go to ``$VIDMEM_RELIABILITY_FIGURES`` (default ``<basetemp>/reliability-figures.json``) when the
session ends, and are printed as a table in the terminal summary.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from model.memory import TokenMemory
from tests.integration.procs import keyed_client
from tests.reliability.figures import Figures, TestFigures

_FIGURES = pytest.StashKey[Figures]()
_FIGURES_PATH = pytest.StashKey[Path]()


@pytest.fixture(scope="session")
def figures_recorder(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Figures]:
    recorder = Figures()
    default = tmp_path_factory.getbasetemp() / "reliability-figures.json"
    path = Path(os.environ.get("VIDMEM_RELIABILITY_FIGURES") or default)
    request.config.stash[_FIGURES] = recorder
    request.config.stash[_FIGURES_PATH] = path
    yield recorder
    recorder.write(path)


@pytest.fixture
def figures(figures_recorder: Figures, request: pytest.FixtureRequest) -> TestFigures:
    """This test's figures (recorded even when the test fails)."""
    return figures_recorder.of(request.node.name)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    recorder = config.stash.get(_FIGURES, None)
    if recorder is None or not recorder.tests:
        return
    terminalreporter.section("reliability figures")
    for line in recorder.table():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"written to {config.stash[_FIGURES_PATH]}")


def api_client(
    base: str, redis_url: str, figures: TestFigures | None = None, timeout: float = 30
) -> httpx.Client:
    """The HTTP client of every request these tests make to the API at ``base``: it carries an API key
    (stored in the Redis at ``redis_url``) and counts every response in ``figures``."""
    hooks = {"response": [figures.http_hook]} if figures is not None else {}
    return keyed_client(base, redis_url, timeout=timeout, event_hooks=hooks)


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    """The response and how long it took, in seconds (rounded to ms)."""
    t0 = time.monotonic()
    r = call()
    return r, round(time.monotonic() - t0, 3)


def upload(c: httpx.Client, clip: Path, fps: float, budget: int = 600) -> httpx.Response:
    with clip.open("rb") as fh:
        return c.post(
            "/v1/videos",
            files={"file": (clip.name, fh, "video/mp4")},
            data={"fps": str(fps), "budget": str(budget)},
        )


def wait_job(
    c: httpx.Client,
    job_id: str,
    timeout_s: float,
    stall_s: float | None = None,
    explain: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """The job's view once done or failed. Fails the test after ``timeout_s``, or once the job has not
    moved (state, frames sampled or encoded) for ``stall_s``, saying what ``explain()`` gives."""
    start = last_move = time.monotonic()
    seen: tuple[Any, ...] = ()
    while True:
        r = c.get(f"/v1/jobs/{job_id}")
        now = time.monotonic()
        if r.status_code == 200:
            job: dict[str, Any] = r.json()
            if job["state"] in ("done", "failed"):
                return job
            if (moved := (job["state"], job["frames_sampled"], job["frames_encoded"])) != seen:
                seen, last_move = moved, now
        stalled = stall_s is not None and now - last_move > stall_s
        if stalled or now - start > timeout_s:
            why = f"stuck for {stall_s} s" if stalled else f"not finished after {timeout_s} s"
            more = f"\n{explain()}" if explain is not None else ""
            pytest.fail(f"job {job_id} {why}: {r.status_code} {r.text}{more}")
        time.sleep(0.25)


def stuck_work(redis_url: str, stream_id: str) -> dict[str, Any]:
    """Where a stream's frames wait, read from Redis: chunks stored for an encoder, frames waiting in the
    memory's pending hash, the memory's next seq, and the broker's queues and unacked tasks."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        pending = sorted(int(x) for x in client.hkeys(f"vm:{{{stream_id}}}:pending"))
        return {
            "next_seq": client.hget(f"vm:{{{stream_id}}}:meta", "next_seq"),
            "chunks_waiting": sorted(client.scan_iter(f"vm:{{{stream_id}}}:frames:*")),
            "pending": f"{len(pending)} frames from seq {pending[0]}" if pending else "none",
            "queues": {q: client.llen(q) for q in ("ingest", "encode", "answer")},
            "unacked_tasks": client.hlen("unacked"),
        }
    finally:
        client.close()


def memory_seqs(redis_url: str, stream_id: str) -> list[tuple[int, int]]:
    """The (seq_lo, seq_hi) ranges of the stream's memory slots, in time order, read straight from Redis."""
    client = redis.Redis.from_url(redis_url)
    try:
        state = TokenMemory(client).state(stream_id)
        assert not TokenMemory(client).pending_seqs(stream_id), "frames still wait in the pending hash"
        assert state.next_seq == (state.slots[-1].seq_hi + 1 if state.slots else 0)
        return [(s.seq_lo, s.seq_hi) for s in state.slots]
    finally:
        client.close()


def assert_exactly_once(ranges: list[tuple[int, int]], n: int) -> None:
    """Slots cover frames 0..n-1, each exactly once: ranges in order, contiguous, none overlapping."""
    assert ranges, "the memory is empty"
    assert ranges[0][0] == 0, f"the memory starts at frame {ranges[0][0]}"
    for (lo0, hi0), (lo1, hi1) in itertools.pairwise(ranges):
        assert lo0 <= hi0 and lo1 == hi0 + 1, f"frames {lo0}..{hi0} then {lo1}..{hi1}: a gap or a repeat"
    assert ranges[-1][1] == n - 1, f"the memory ends at frame {ranges[-1][1]}, {n} were sampled"
