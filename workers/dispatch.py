"""Dispatchers: where a task runs. Celery queues in distributed mode, thread pools in embedded mode.

Both run the same plain functions (``pipeline.TASKS``); queue names equal task names. ``runtime_for``
builds a process's Runtime with the dispatcher of its mode: the dispatcher sits above the runtime and the
pipeline, so the runtime never needs to know the kinds.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError

from core.settings import Settings
from workers.celery_app import make_celery
from workers.pipeline import TASKS
from workers.queues import QUEUES, BrokerUnavailable
from workers.runtime import Runtime

log = logging.getLogger(__name__)


class InProcessDispatcher:
    """Embedded mode: one thread pool per queue, calling the pipeline functions directly."""

    in_process = True

    def __init__(self, rt: Runtime, threads: dict[str, int] | None = None) -> None:
        sizes = {"ingest": 2, "encode": 1, "answer": 1} | (threads or {})
        self.rt = rt
        self.pools = {q: ThreadPoolExecutor(sizes[q], thread_name_prefix=f"vidmem-{q}") for q in QUEUES}

    def submit(self, task: str, *args: Any) -> Future[None]:
        fut = self.pools[task].submit(TASKS[task], self.rt, *args)
        fut.add_done_callback(_log_failure)
        return fut

    def shutdown(self) -> None:
        for pool in self.pools.values():
            pool.shutdown(wait=False, cancel_futures=True)


def _log_failure(fut: Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("in-process task failed", exc_info=fut.exception())


PUBLISH_FAST: dict[str, float] = {"max_retries": 0}
"""Publishing for a waiting client (the API, a live reader): one attempt, so an unreachable broker is
reported at once when its port is closed, and within ``celery_app.BROKER_SOCKET_TIMEOUT_S`` when it hangs.
(A pooled connection the broker closed is replaced before use by redis-py, so a restarted broker needs no
retry.)"""

PUBLISH_PATIENT: dict[str, float] = {
    "max_retries": 12,
    "interval_start": 0.5,
    "interval_step": 0.5,
    "interval_max": 2,
}
"""Publishing from inside a task (ingest queueing encodes, a task's retry after an outage): nobody waits
on it, and a failure would fail the job, so it rides out a broker restart of about 20 s."""


class CeleryDispatcher:
    """Distributed mode: send the task by name to its queue; any worker on that queue runs it.

    Raises ``BrokerUnavailable`` when the broker cannot be reached (fast from the API, patiently from a
    worker's task). Results are never stored (``ignore_result``): sending does not touch the result backend.
    """

    in_process = False

    def __init__(self, app: Celery) -> None:
        self.app = app

    def submit(self, task: str, *args: Any) -> None:
        if task not in QUEUES:
            raise ValueError(f"unknown task {task!r}")
        in_task = self.app.current_worker_task is not None
        try:
            self.app.send_task(
                f"vidmem.{task}",
                args=list(args),
                queue=task,
                ignore_result=True,
                retry=True,
                retry_policy=PUBLISH_PATIENT if in_task else PUBLISH_FAST,
            )
        except OperationalError as e:  # kombu's wrapper of the transport's connection and timeout errors
            log.warning("task %s not queued: the broker is unreachable (%s)", task, e)
            raise BrokerUnavailable("the task queue is unreachable; try again later") from e


def runtime_for(settings: Settings, *, trusted_urls: bool = False) -> Runtime:
    """Embedded mode (no Redis URL): in-memory Redis + in-process thread pools.
    Distributed mode: the Redis at settings.redis_url + Celery queues.
    ``trusted_urls``: see ``Runtime.trusted_urls``."""
    rt = Runtime.create(settings, trusted_urls=trusted_urls)
    if settings.embedded:
        rt.dispatcher = InProcessDispatcher(rt)
    else:
        rt.dispatcher = CeleryDispatcher(make_celery(settings))
    return rt
