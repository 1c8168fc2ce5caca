"""Quick looks at the Celery broker: is it up, and how many tasks wait in each queue.

Both answer within about ``timeout_s`` when the broker is down (a fresh connection each call, short
connect and read timeouts), so a health check or a scrape never hangs on it. ``redis://`` brokers are
read with a Redis client (each queue is a list of its name); others (``amqp://``) through kombu.

Knows nothing about HTTP, models or the pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from kombu import Connection
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.settings import Settings
from workers.queues import QUEUES

log = logging.getLogger(__name__)

TIMEOUT_S = 0.5

# kombu's Redis transport keeps a queue's messages of priority p > 0 in the list "<queue>\x06\x16<p>".
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def _is_redis(url: str) -> bool:
    return url.split("://", 1)[0] in ("redis", "rediss", "unix")


def quick_redis(url: str, timeout_s: float = TIMEOUT_S) -> redis.Redis:
    """A Redis client that gives up after one try of ``timeout_s`` (redis-py retries 3 times by default)."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )


@contextmanager
def _redis(url: str, timeout_s: float) -> Iterator[redis.Redis]:
    client = quick_redis(url, timeout_s)
    try:
        yield client
    finally:
        client.close()


def broker_ok(settings: Settings, timeout_s: float = TIMEOUT_S) -> str:
    """The broker's state: "ok", or "error: <exception type>" if it does not answer within ~``timeout_s``.
    Embedded mode (no broker: in-process queues) is "ok". The URL, which may hold a password, is never
    part of the answer."""
    url = settings.broker
    if url is None:
        return "ok"
    try:
        if _is_redis(url):
            with _redis(url, timeout_s) as r:
                r.ping()
        else:
            with Connection(url, connect_timeout=timeout_s) as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout_s)
    except Exception as e:  # reported, not raised: the caller exists to say what is down
        return f"error: {type(e).__name__}"
    return "ok"


def queue_lengths(settings: Settings, timeout_s: float = TIMEOUT_S) -> dict[str, int] | None:
    """Tasks waiting (not yet taken by a worker) in each of ``QUEUES``; None if the broker does not answer
    or there is none (embedded mode)."""
    url = settings.broker
    if url is None:
        return None
    try:
        if _is_redis(url):
            with _redis(url, timeout_s) as r, r.pipeline(transaction=False) as p:
                for q in QUEUES:
                    for suffix in _PRIORITY_SUFFIXES:
                        p.llen(q + suffix)
                got = p.execute()
            n = len(_PRIORITY_SUFFIXES)
            return {q: sum(got[i * n : (i + 1) * n]) for i, q in enumerate(QUEUES)}
        with Connection(url, connect_timeout=timeout_s) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout_s)
            channel = conn.default_channel
            return {q: int(channel.queue_declare(q, passive=True).message_count) for q in QUEUES}
    except Exception as e:  # a scrape reports the broker as down instead of failing
        log.warning("broker: queue lengths unavailable: %s", type(e).__name__)
        return None
