"""The Celery app: Redis broker and result backend, queues ingest/encode/answer, JSON only.

Importing this module does not import torch (the API sends tasks by name through it).
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from core.settings import Settings
from workers.queues import QUEUES

BROKER_SOCKET_TIMEOUT_S = 1.0
"""Connect and reply timeouts of the Redis broker's sockets. Without them a publish to a broker that
hangs (stopped process, dropped packets) waits forever. Task messages are small (ids and keys): 1 s is
plenty on a healthy broker, and the worker's BRPOP is read only once the socket is readable."""


def restore_every_s(visibility_timeout_s: int) -> int:
    """Seconds between scans for tasks to redeliver: a tenth of the visibility timeout, 1 to 60 s."""
    return max(1, min(60, visibility_timeout_s // 10))


def make_celery(settings: Settings) -> Celery:
    if settings.redis_url is None:
        raise ValueError("Celery needs a Redis URL (VIDMEM_REDIS_URL); the embedded mode runs without Celery")
    app = Celery("vidmem", broker=settings.broker, backend=settings.redis_url, include=["workers.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,  # a task of a killed worker is delivered again...
        task_reject_on_worker_lost=True,  # ...at once when its child process dies
        worker_prefetch_multiplier=1,  # model queues: one task at a time per process
        broker_transport_options={
            "visibility_timeout": settings.task_visibility_timeout_s,
            "socket_connect_timeout": BROKER_SOCKET_TIMEOUT_S,
            "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
            # How often a worker looks for unacked tasks of dead workers older than visibility_timeout
            # (kombu's default, one scan per 100 s, would add up to 100 s to every redelivery).
            "unacked_restore_interval": restore_every_s(settings.task_visibility_timeout_s),
            "unacked_restore_throttle": 1,
        },
        broker_connection_timeout=BROKER_SOCKET_TIMEOUT_S,  # the same limit for an AMQP broker
        result_backend_transport_options={"visibility_timeout": settings.task_visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(q) for q in QUEUES],
        task_default_queue="ingest",
        task_routes={f"vidmem.{q}": {"queue": q} for q in QUEUES},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app
