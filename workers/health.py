"""Who is alive: worker heartbeats in Redis, and the cluster's health as ``GET /healthz`` reports it.

Each Celery worker node (``workers.tasks``, from ``worker_ready``) and each ingest process that claims
live streams (``LiveSupervisor``) publishes a *beat*: the key ``<PREFIX>:beat:<name>`` = JSON ``{"queues",
"host", "pid"}`` with a short TTL, refreshed well within it, and its name in the set ``<PREFIX>:beats``. A
process that dies stops refreshing and its key expires; readers drop expired names from the set. TTLs
are kept by Redis, so clocks of different machines never matter.

Knows nothing about HTTP or models.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Sequence
from typing import Any

import redis

from core.errors import VidmemError
from core.redis_values import PREFIX, text
from workers.broker import TIMEOUT_S, broker_ok, quick_redis
from workers.queues import QUEUES
from workers.runtime import Runtime

log = logging.getLogger(__name__)

BEATS = f"{PREFIX}:beats"
LIVE = "live_readers"
"""The pseudo-queue of processes reading live cameras (``vidmem ingest``, the embedded server)."""


def _beat_key(name: str) -> str:
    return f"{PREFIX}:beat:{name}"


def publish_beat(client: redis.Redis, name: str, queues: Sequence[str], ttl_s: float) -> None:
    """Say that ``name`` is alive and consumes ``queues`` (QUEUES names, or LIVE), for ``ttl_s``."""
    data = json.dumps({"queues": list(queues), "host": socket.gethostname(), "pid": os.getpid()})
    with client.pipeline(transaction=False) as p:
        p.set(_beat_key(name), data, px=max(1, int(ttl_s * 1000)))
        p.sadd(BEATS, name)
        p.execute()


def drop_beat(client: redis.Redis, name: str) -> None:
    """A clean shutdown: gone at once rather than when the beat expires."""
    with client.pipeline(transaction=False) as p:
        p.delete(_beat_key(name))
        p.srem(BEATS, name)
        p.execute()


def beats(client: redis.Redis) -> dict[str, list[str]]:
    """Every live beat: name -> its queues. Names whose beat expired are removed from the set."""
    names = sorted(text(x) for x in client.smembers(BEATS))
    if not names:
        return {}
    raw: list[Any] = client.mget([_beat_key(n) for n in names])
    gone = [n for n, v in zip(names, raw, strict=True) if v is None]
    if gone:
        client.srem(BEATS, *gone)
    return {n: list(json.loads(v)["queues"]) for n, v in zip(names, raw, strict=True) if v is not None}


def worker_counts(rt: Runtime, client: redis.Redis | None = None) -> dict[str, int]:
    """Live workers per queue and live readers: ``{"ingest": n, "encode": n, "answer": n, LIVE: n}``.
    In-process pools (``Runtime.in_process``: the embedded mode's) count as one worker per queue."""
    counts = dict.fromkeys((*QUEUES, LIVE), 0)
    for queues in beats(client if client is not None else rt.redis).values():
        for q in queues:
            if q in counts:
                counts[q] += 1
    if rt.in_process:
        counts |= {q: max(1, counts[q]) for q in QUEUES}
    return counts


class NoWorker(VidmemError):
    """No live worker consumes a queue: work sent there would wait for nobody (the API answers 503)."""

    code = "no_worker"
    retry_after_s = 10

    def __init__(self, queue: str) -> None:
        super().__init__(
            f"no live worker consumes the {queue!r} queue; start one: `vidmem worker --queues {queue}`"
        )
        self.queue = queue


def require_worker(rt: Runtime, queue: str) -> None:
    """Raise NoWorker when the heartbeats say that no live worker consumes ``queue`` (never with in-process
    pools, as in embedded mode). Costs two small Redis reads (the beats set and their keys)."""
    if worker_counts(rt)[queue] == 0:
        raise NoWorker(queue)


class WorkerBeat:
    """A daemon thread publishing a beat every ``interval_s`` (TTL 3 x interval) from ``start`` on."""

    def __init__(self, client: redis.Redis, interval_s: float) -> None:
        self.client, self.interval_s = client, interval_s
        self.name = ""
        self.queues: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vidmem-beat", daemon=True)

    def start(self, name: str, queues: Sequence[str]) -> WorkerBeat:
        self.name, self.queues = name, list(queues)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                publish_beat(self.client, self.name, self.queues, 3 * self.interval_s)
            except redis.RedisError as e:  # Redis away for a moment: the next beat tries again
                log.warning("%s: heartbeat failed: %s", self.name, e)
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        """Stop beating and remove the beat at once (readers need not wait for it to expire)."""
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._thread.join(5)
        try:
            drop_beat(self.client, self.name)
        except redis.RedisError as e:
            log.warning("%s: could not remove its heartbeat: %s", self.name, e)


def check(rt: Runtime, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """``{"status", "mode", "model", "redis", "broker", "workers"}``. ``status``: "down" if Redis or the
    broker does not answer, "degraded" if a queue has no live worker (or live cameras are registered and
    no process reads them), else "ok". Answers within about 2 x ``timeout_s`` when a backend is down."""
    s = rt.settings
    body: dict[str, Any] = {
        "status": "ok",
        "mode": "embedded" if s.embedded else "distributed",
        "model": s.model,
        "redis": "ok",
        "broker": broker_ok(s, timeout_s),
        "workers": None,
    }
    # Distributed: a client of our own, with short timeouts (the runtime's waits for a hung Redis).
    client = rt.redis if s.redis_url is None else quick_redis(s.redis_url, timeout_s)
    try:
        client.ping()
        workers = worker_counts(rt, client)
        cameras = bool(rt.live.active())
    except Exception as e:  # reported, not raised: this check exists to say what is down
        body["redis"] = f"error: {type(e).__name__}"
    else:
        body["workers"] = workers
        if any(workers[q] == 0 for q in QUEUES) or (cameras and workers[LIVE] == 0):
            body["status"] = "degraded"
    finally:
        if client is not rt.redis:
            client.close()
    if body["redis"] != "ok" or body["broker"] != "ok":
        body["status"] = "down"
    return body
