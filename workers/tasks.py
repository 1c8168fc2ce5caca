"""Celery tasks: thin wrappers over ``workers.pipeline``. One Runtime (and model) per worker process."""

from __future__ import annotations

import logging
import os
import time
import uuid
from functools import lru_cache
from typing import Any

import redis
from celery import current_app, shared_task
from celery.exceptions import Reject
from celery.signals import setup_logging, worker_process_init, worker_ready, worker_shutdown

from core.logs import configure_logging
from core.settings import get_settings
from workers import pipeline
from workers.dispatch import CeleryDispatcher
from workers.health import WorkerBeat
from workers.runtime import Runtime

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    rt = Runtime.create(get_settings())
    rt.dispatcher = CeleryDispatcher(current_app._get_current_object())
    return rt


@setup_logging.connect
def _logging(loglevel: int | str | None = None, **_: object) -> None:
    """vidmem configures the logs (JSON lines by default), Celery's own included; Celery then leaves them.
    The level is the worker's ``--loglevel``, else ``VIDMEM_LOG_LEVEL``."""
    s = get_settings()
    configure_logging(s.log_format, loglevel or s.log_level)


@lru_cache(maxsize=1)
def heartbeat() -> WorkerBeat:
    """This worker node's heartbeat, published by its main process (where ``worker_ready`` runs)."""
    s = get_settings()
    if s.redis_url is None:
        raise RuntimeError("a Celery worker needs VIDMEM_REDIS_URL")
    client = redis.Redis.from_url(s.redis_url, socket_connect_timeout=2, socket_timeout=2)
    return WorkerBeat(client, s.worker_heartbeat_s)


@worker_ready.connect
def _announce(sender: Any, **_: object) -> None:
    """Publish this node's presence and the queues it consumes (for /healthz) until it shuts down."""
    heartbeat().start(f"celery:{sender.hostname}", sorted(sender.app.amqp.queues.consume_from))


@worker_shutdown.connect
def _retire(**_: object) -> None:
    if heartbeat.cache_info().currsize:
        heartbeat().stop()


@worker_process_init.connect
def _load_models(**_: object) -> None:
    """Load the model once per worker process, before the first task (not in the parent: torch + fork)."""
    queues = set(os.environ.get("VIDMEM_WORKER_QUEUES", "").split(","))
    rt = runtime()
    if queues & {"encode", "answer"}:
        import torch

        torch.set_num_threads(max(1, int(os.environ.get("VIDMEM_TORCH_THREADS", str(os.cpu_count() or 1)))))
        rt.backend()


OUTAGE_WAIT_S = 120.0
"""How long a task waits out an unreachable Redis or broker before it gives its message back."""


def _outlast(fn: Any, *args: Any) -> None:
    """Run an idempotent pipeline function; while Redis or the broker is unreachable, wait and run it
    again. Past OUTAGE_WAIT_S, give the message back (requeue; or, with the broker down, it stays unacked
    and returns after the visibility timeout) instead of failing and acknowledging it."""
    deadline = time.monotonic() + OUTAGE_WAIT_S
    delay = 0.5
    while True:
        try:
            fn(*args)
            return
        except pipeline.OUTAGES as e:
            if isinstance(e, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError):
                raise  # a wrong password is a configuration error, not an outage to wait out
            if time.monotonic() > deadline:
                raise Reject(e, requeue=True) from e
            log.warning("%s: store or broker unreachable (%s); again in %.1f s", fn.__name__, e, delay)
            time.sleep(delay)
            delay = min(2 * delay, 5.0)


@shared_task(name="vidmem.ingest", ignore_result=True)
def ingest(job_id: str) -> None:
    # One holder for every attempt of this delivery: a retry after an outage takes its lease straight back.
    _outlast(pipeline.ingest_video, runtime(), job_id, uuid.uuid4().hex)


@shared_task(name="vidmem.encode", ignore_result=True)
def encode(job_id: str, stream_id: str, frames_key: str) -> None:
    _outlast(pipeline.encode_chunk, runtime(), job_id, stream_id, frames_key)


@shared_task(name="vidmem.answer", ignore_result=True)
def answer(
    stream_id: str,
    request_id: str,
    question: str,
    max_new_tokens: int,
    window: list[float | None] | None = None,
) -> None:
    pipeline.answer_question(runtime(), stream_id, request_id, question, max_new_tokens, window)
