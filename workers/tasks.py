"""Celery tasks: thin wrappers over ``workers.pipeline``. One Runtime (and model) per worker process."""

from __future__ import annotations

import logging
import os
import uuid
from functools import lru_cache
from typing import Any

import redis
from celery import Task, current_app, shared_task
from celery.exceptions import Reject
from celery.signals import setup_logging, worker_process_init, worker_ready, worker_shutdown

from core.logs import configure_logging
from core.settings import get_settings
from workers import pipeline
from workers.dispatch import PUBLISH_PATIENT, CeleryDispatcher
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
    """Load the model once per worker process, before the first task (not in the parent: torch + fork).
    Only processes of the model queues (``Settings.worker_queues``, which ``vidmem worker`` sets) load it."""
    s = get_settings()
    rt = runtime()
    if {"encode", "answer"} & set(s.worker_queues):
        import torch

        torch.set_num_threads(s.torch_threads or os.cpu_count() or 1)
        rt.backend()


class OutageRetry(Task):
    """A task that waits out an unreachable Redis or broker (``pipeline.OUTAGES``) with Celery's retries:
    each retry is a new message sent with a growing, jittered countdown of at most ``retry_backoff_max``
    seconds, so no worker slot sleeps between tries; the pipeline functions are idempotent, so running
    one again is safe. A wrong password or a forbidden command is a configuration error, not an outage: it
    fails at once.

    An outage lasts as long as it lasts, so the retries do not run out (``max_retries = None``): the
    message waits in the broker, at most ``retry_backoff_max`` between tries, and nothing is lost. With
    ``acks_late``, a retry acknowledges the message it replaces once the new one is sent. The new one is
    sent patiently (``dispatch.PUBLISH_PATIENT``: the broker may be the Redis that is down, and a restart
    of about 20 s is ridden out), so that a short outage costs seconds, not a visibility timeout. A retry
    that still cannot be sent gives its message back to the queue (Celery would drop it:
    ``Reject(requeue=False)``); with the broker down the give-back fails too and the message stays
    unacknowledged, and the broker delivers it again after ``task_visibility_timeout_s``."""

    autoretry_for = pipeline.OUTAGES
    dont_autoretry_for = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
    retry_backoff = True  # 1, 2, 4... s, each drawn at random below that (full jitter)
    retry_backoff_max = 5
    retry_jitter = True
    max_retries = None
    ignore_result = True

    def retry(self, *args: Any, exc: BaseException | None = None, **kwargs: Any) -> Any:
        log.warning("%s: store or broker unreachable (%s); retrying", self.name, exc)
        try:
            return super().retry(*args, exc=exc, retry_policy=PUBLISH_PATIENT, **kwargs)
        except Reject as e:  # the retry could not be sent: give the message back instead of dropping it
            raise Reject(e.reason, requeue=True) from exc


@shared_task(base=OutageRetry, bind=True, name="vidmem.ingest")
def ingest(self: Task, job_id: str, holder: str | None = None) -> None:
    """``holder`` names this delivery's hold on the job's lease. The first run draws it and its retries
    carry it (``Task.retry`` sends the request's kwargs again), so a retry after an outage takes its own
    lease straight back instead of waiting for it to expire."""
    if holder is None:
        holder = self.request.kwargs["holder"] = uuid.uuid4().hex
    pipeline.ingest_video(runtime(), job_id, holder)


@shared_task(base=OutageRetry, name="vidmem.encode")
def encode(job_id: str, stream_id: str, frames_key: str) -> None:
    pipeline.encode_chunk(runtime(), job_id, stream_id, frames_key)


@shared_task(base=OutageRetry, name="vidmem.answer")
def answer(
    stream_id: str,
    request_id: str,
    question: str,
    max_new_tokens: int,
    window: list[float | None] | None = None,
) -> None:
    """A retried answer starts again: its reader turns the second ``start`` into a ``restart`` event."""
    pipeline.answer_question(runtime(), stream_id, request_id, question, max_new_tokens, window)
