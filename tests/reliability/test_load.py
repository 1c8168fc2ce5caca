"""A bounded load run with real parts: N clients asking questions in a loop while M live cameras stream,
for T seconds, against the API, an ingest process and a Celery worker on a real redis-server.

No request may fail, every camera stays live and keeps adding frames, and once every memory is at its
budget Redis's memory stays flat: a memory holds a fixed number of tokens whatever the stream's length,
and nothing else may grow with time (answers, frames in transit, counters and gaps are all bounded).

T defaults to 60 s here; ``VIDMEM_LOAD_SECONDS`` runs it longer (the figures in docs/reliability.md).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import RedisServer
from tests.integration.procs import distributed_env, run_cluster
from tests.reliability.conftest import api_client
from tests.reliability.figures import TestFigures
from tests.stream.live_helpers import wait_until
from tests.stream.live_peers import RtspServer

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

ASKERS = 4  # N
CAMERAS = 2  # M
SECONDS = float(os.environ.get("VIDMEM_LOAD_SECONDS", "60"))  # T
BUDGET = 96  # small, so that every memory is full within seconds
INFLIGHT = 4
"""Frames of a camera handed to the encoders and not yet in its memory, at most (``live_inflight``). Small,
so that a backlog of frames in transit (bounded, but 12 KB a frame) stays far below ``FLAT_BYTES`` on a
machine whose encoder falls behind the cameras while it answers."""
FLAT_BYTES = 256 * 1024
"""Most Redis may grow over the second half of the run (allocator noise, not growth with time)."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of its own, so that its memory is this run's alone."""
    (tmp_path / "store").mkdir()
    server = RedisServer(tmp_path / "store").start()
    yield server
    server.stop()


@pytest.fixture
def cluster(store: RedisServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = distributed_env(
        store.url, tmp_path_factory.getbasetemp() / "models", budget=BUDGET, fps=2, max_new_tokens=8,
        ask_per_minute=100_000, live_heartbeat_s=0.5, live_inflight=INFLIGHT,
    )  # fmt: skip
    with run_cluster(
        env, tmp_path, ingest=["ingest", "--name", "ingest-1"],
        worker=["worker", "--queues", "encode,answer", "--name", "gpu@%h"],
    ) as (base, _):  # fmt: skip
        yield base


class Askers:
    """N threads asking about the cameras in turn until stopped; every answer's status and latency."""

    def __init__(self, c: httpx.Client, sids: list[str]) -> None:
        self.c, self.sids = c, sids
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.statuses: list[int] = []
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(ASKERS)]

    def __enter__(self) -> Askers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)

    def _run(self, i: int) -> None:
        n = i
        while not self.stop.is_set():
            sid = self.sids[n % len(self.sids)]
            n += 1
            t0 = time.monotonic()
            try:
                r = self.c.post(f"/v1/streams/{sid}/ask", json={"question": f"What happened? ({n})"})
            except httpx.HTTPError as e:
                with self.lock:
                    self.errors.append(repr(e))
                continue
            with self.lock:
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.latencies.append(time.monotonic() - t0)
                else:
                    self.errors.append(f"{r.status_code}: {r.text[:200]}")


def used_memory(client: redis.Redis) -> int:
    info: dict[str, Any] = client.info("memory")
    return int(info["used_memory"])


def bytes_by_key_shape(client: redis.Redis, top: int = 12) -> list[tuple[str, int, int]]:
    """(key shape, keys, bytes) of the largest shapes, ids and numbers masked: what grew, if anything did."""
    sizes: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for k in client.scan_iter(count=1000):
        shape = re.sub(r"\d+", "<n>", re.sub(r"[0-9a-f]{32}", "<id>", k.decode(errors="replace")))
        sizes[shape] += int(client.memory_usage(k) or 0)
        counts[shape] += 1
    return [(shape, counts[shape], b) for shape, b in sizes.most_common(top)]


def test_bounded_load_keeps_redis_flat(
    cluster: str, store: RedisServer, rtsp_server: RtspServer, figures: TestFigures
) -> None:
    r = redis.Redis.from_url(store.url)
    with api_client(cluster, store.url, figures, timeout=120) as c:
        sids = []
        for i in range(CAMERAS):
            res = c.post(
                "/v1/streams", json={"url": rtsp_server.url, "fps": 2, "budget": BUDGET, "name": f"cam{i}"}
            )
            assert res.status_code == 201, res.text
            sids.append(res.json()["stream_id"])

        def full() -> bool:
            views = [c.get(f"/v1/streams/{s}/memory").json() for s in sids]
            # at its budget: the next frame can only shrink or merge slots, never add tokens
            return all(v["tokens_used"] > BUDGET * 0.8 and v["frames"] > v["budget"] // 9 for v in views)

        wait_until(full, 120, "every memory at its budget")
        frames0 = {s: c.get(f"/v1/streams/{s}").json()["frames_encoded"] for s in sids}
        samples: list[tuple[float, int]] = []
        t0 = time.monotonic()
        with Askers(c, sids) as askers:
            while (now := time.monotonic() - t0) < SECONDS:
                samples.append((now, used_memory(r)))
                time.sleep(1.0)
        views = [c.get(f"/v1/streams/{s}").json() for s in sids]

    lat = sorted(askers.latencies) or [-1.0]
    figures.set(
        seconds=round(SECONDS, 1), askers=ASKERS, cameras=CAMERAS, budget=BUDGET,
        asks=len(askers.statuses), ask_errors=len(askers.errors),
        ask_p50_s=round(lat[len(lat) // 2], 3), ask_p95_s=round(lat[int(len(lat) * 0.95)], 3),
        frames_encoded_during_run=sum(v["frames_encoded"] - frames0[v["stream_id"]] for v in views),
        frames_dropped=sum(v["frames_dropped"] for v in views),
        redis_used_memory_start=samples[0][1], redis_used_memory_end=samples[-1][1],
        redis_used_memory_max=max(m for _, m in samples),
    )  # fmt: skip
    assert not askers.errors, askers.errors[:5]
    assert len(askers.statuses) >= ASKERS, "the askers got no answers"
    for v in views:
        assert v["state"] == "live", v
        assert v["frames_encoded"] > frames0[v["stream_id"]], f"no frame encoded during the run: {v}"
        assert v["tokens_used"] <= BUDGET
    # Flat: the second half of the run ends no higher than its own start, within allocator noise.
    half = [m for t, m in samples if t >= SECONDS / 2]
    growth = half[-1] - half[0]
    figures.set(redis_growth_second_half_bytes=growth)
    if growth >= FLAT_BYTES:
        keys, clients = bytes_by_key_shape(r), r.info("clients")
        pytest.fail(f"Redis grew {growth} bytes in the second half: {samples}; keys now: {keys}; {clients}")
