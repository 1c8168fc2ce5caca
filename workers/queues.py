"""The task queues (one per pipeline task, named as the task) and the error of a broker that cannot take
a task. A leaf: the broker's probes, the Celery app, health, metrics and the dispatchers all read these."""

from __future__ import annotations

from core.errors import VidmemError

QUEUES = ("ingest", "encode", "answer")


class BrokerUnavailable(VidmemError):
    """The task queue (Celery broker) could not take a task: the API answers 503 with ``Retry-After``."""

    code = "broker_unavailable"
    retry_after_s = 5
