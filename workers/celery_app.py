"""The Celery app: Redis broker and result backend, queues ingest/encode/answer, JSON only.

Importing this module does not import torch (the API sends tasks by name through it).
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from vidmem.settings import Settings
from workers.dispatch import QUEUES


def make_celery(settings: Settings) -> Celery:
    if settings.redis_url is None:
        raise ValueError("Celery needs a Redis URL (VIDMEM_REDIS_URL); the embedded mode runs without Celery")
    app = Celery("vidmem", broker=settings.redis_url, backend=settings.redis_url, include=["workers.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,  # a task of a killed worker is delivered again...
        task_reject_on_worker_lost=True,  # ...at once when its child process dies
        worker_prefetch_multiplier=1,  # model queues: one task at a time per process
        broker_transport_options={"visibility_timeout": settings.task_visibility_timeout_s},
        result_backend_transport_options={"visibility_timeout": settings.task_visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(q) for q in QUEUES],
        task_default_queue="ingest",
        task_routes={f"vidmem.{q}": {"queue": q} for q in QUEUES},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app
