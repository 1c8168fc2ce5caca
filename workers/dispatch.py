"""Dispatchers: where a task runs. Celery queues in distributed mode, thread pools in embedded mode.

Both run the same plain functions (``pipeline.TASKS``); queue names equal task names.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from celery import Celery

from workers.runtime import Runtime

log = logging.getLogger(__name__)

QUEUES = ("ingest", "encode", "answer")


class InProcessDispatcher:
    """Embedded mode: one thread pool per queue, calling the pipeline functions directly."""

    def __init__(self, rt: Runtime, threads: dict[str, int] | None = None) -> None:
        sizes = {"ingest": 2, "encode": 1, "answer": 1} | (threads or {})
        self.rt = rt
        self.pools = {q: ThreadPoolExecutor(sizes[q], thread_name_prefix=f"vidmem-{q}") for q in QUEUES}

    def submit(self, task: str, *args: Any) -> Future[None]:
        from workers.pipeline import TASKS

        fut = self.pools[task].submit(TASKS[task], self.rt, *args)
        fut.add_done_callback(_log_failure)
        return fut

    def shutdown(self) -> None:
        for pool in self.pools.values():
            pool.shutdown(wait=False, cancel_futures=True)


def _log_failure(fut: Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("in-process task failed", exc_info=fut.exception())


class CeleryDispatcher:
    """Distributed mode: send the task by name to its queue; any worker on that queue runs it."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def submit(self, task: str, *args: Any) -> None:
        if task not in QUEUES:
            raise ValueError(f"unknown task {task!r}")
        self.app.send_task(f"vidmem.{task}", args=list(args), queue=task)
