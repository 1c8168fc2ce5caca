"""SIGKILL an encode worker in the middle of its task, during a long upload.

Its task stays unacknowledged in the Redis broker (``acks_late``); once the visibility timeout has passed,
a surviving worker restores and runs it again. The job completes and every sampled frame is in the memory
exactly once: the slots' frame ranges, read straight from Redis, cover 0..N-1 with no gap and no repeat.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from core.settings import Settings
from tests.conftest import TESTDATA, RedisServer
from tests.integration.procs import Proc, distributed_env, run_cluster
from tests.reliability.conftest import api_client, assert_exactly_once, memory_seqs, upload, wait_job
from tests.reliability.figures import TestFigures
from tests.stream.clips import make_clip
from workers.celery_app import make_celery

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

VISIBILITY_S = 10  # the setting's minimum: the killed worker's task comes back this long after delivery
FPS = 2.0
ENCODERS = ("encode-a", "encode-b")
RECEIVED = re.compile(r"Task vidmem\.encode\[([0-9a-f-]+)\] received")


@pytest.fixture
def cluster(
    redis_server: RedisServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, Proc]]]:
    """API + an ingest worker + two encode workers (one process each) on a real Redis."""
    redis.Redis.from_url(redis_server.url).flushdb()
    env = distributed_env(
        redis_server.url, tmp_path_factory.getbasetemp() / "models", upload_dir=tmp_path / "uploads",
        task_visibility_timeout_s=VISIBILITY_S,
    )  # fmt: skip
    encode = ["worker", "--queues", "encode", "--concurrency", "1"]
    with run_cluster(
        env, tmp_path, ingest=["worker", "--queues", "ingest", "--name", "ingest@%h"],
        **{n: [*encode, "--name", f"{n}@%h"] for n in ENCODERS},
    ) as running:  # fmt: skip
        yield running


def long_clip(tmp_path: Path) -> Path:
    real = TESTDATA / "big_buck_bunny_60s_640x360.mp4"
    if real.exists():
        return real
    return make_clip(tmp_path / "long.mp4", seconds=60, fps=10, size=(160, 96), gop=10)


def unacked_task_ids(client: redis.Redis) -> set[str]:
    """Ids of the tasks the Redis transport has delivered and not seen acknowledged."""
    return {json.loads(raw)[0]["headers"]["id"] for raw in client.hvals("unacked")}


def busy_encoder(inspect: Any) -> tuple[str, dict[str, Any]] | None:
    """(worker name, its active encode task) of an encode worker running a task right now, if any."""
    for node, tasks in (inspect.active() or {}).items():
        for task in tasks:
            if task["name"] == "vidmem.encode":
                return node.split("@", 1)[0], task
    return None


def test_killed_encode_worker_loses_and_repeats_no_frame(
    cluster: tuple[str, dict[str, Proc]], redis_server: RedisServer, tmp_path: Path, figures: TestFigures
) -> None:
    base, procs = cluster
    broker = redis.Redis.from_url(redis_server.url)
    app = make_celery(Settings(redis_url=redis_server.url))
    nodes = [f"{n}@{socket.gethostname()}" for n in ENCODERS]
    inspect = app.control.inspect(destination=nodes, timeout=0.5, limit=len(nodes))
    clip = long_clip(tmp_path)
    with api_client(base, redis_server.url, figures, timeout=30) as c:
        r = upload(c, clip, fps=FPS, budget=600)
        assert r.status_code == 202, r.text
        job_id, sid = r.json()["job_id"], r.json()["stream_id"]

        # Once encoding is under way, freeze (SIGSTOP) an encoder seen busy; if its task is still unacked
        # and its chunk not yet appended (the frames key is deleted right after the append), SIGKILL it:
        # killed in the middle of that task. Otherwise let it go on (SIGCONT) and look again.
        deadline = time.monotonic() + 60
        while True:
            job = c.get(f"/v1/jobs/{job_id}").json()
            assert job["state"] in ("queued", "running"), job
            assert job["frames_encoded"] < 30 * FPS, f"encoding got half way before a kill: {job}"
            assert time.monotonic() < deadline, f"no encode worker was caught busy: {job}"
            busy = busy_encoder(inspect) if job["frames_encoded"] > 0 else None
            if busy is not None:
                name, task = busy
                pgid = procs[name].p.pid
                os.killpg(pgid, signal.SIGSTOP)
                frames_key = task["args"][2]
                if task["id"] in unacked_task_ids(broker) and broker.exists(frames_key):
                    break
                os.killpg(pgid, signal.SIGCONT)
                figures.add("busy_encoder_missed")
            time.sleep(0.05)
        procs[name].kill()
        killed = time.monotonic()
        figures.add("faults_injected")
        figures.set(killed_at_frames_encoded=job["frames_encoded"], killed_chunk=frames_key)

        job = wait_job(c, job_id, VISIBILITY_S + 60)
        figures.set(recovery_to_job_done_s=round(time.monotonic() - killed, 3))
        assert job["state"] == "done", job
        n = job["frames_sampled"]
        assert n == job["frames_encoded"] >= 50 * FPS, job
        mem = c.get(f"/v1/streams/{sid}/memory").json()
        assert mem["frames"] == n == sum(s["frames"] for s in mem["slots"]), mem
        assert_exactly_once(memory_seqs(redis_server.url, sid), n)
        figures.add("frames_checked", n)

    # The killed task was delivered again, to the other encoder, and acknowledged there.
    survivor = next(p for p in ENCODERS if p != name)
    assert task["id"] in procs[survivor].log.read_text(errors="replace"), "the task was not redelivered"
    assert task["id"] not in unacked_task_ids(broker)
    assert procs[survivor].p.poll() is None and procs["ingest"].p.poll() is None
    figures.set(redelivered_task=task["id"], killed_worker=name)
    # Deliveries of one task beyond the first: the killed one's, and any task that waited in a busy
    # worker's prefetch longer than the visibility timeout (run again as a no-op: its chunk was appended).
    received = Counter(
        m for n in ENCODERS for m in RECEIVED.findall(procs[n].log.read_text(errors="replace"))
    )
    figures.set(encode_tasks=len(received), encode_redeliveries=sum(v - 1 for v in received.values()))
