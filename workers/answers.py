"""The channel an answer travels through: a short-lived Redis stream per request.

The answer task appends a ``start`` event, ``piece`` events as tokens are generated, then
one ``done`` (with the accounting) or ``error`` event; the API reads them (JSON or SSE).
The same channel serves Celery workers and the embedded mode. A task redelivered after its
worker died starts again: the reader turns the second ``start`` into a ``restart`` event,
so a client discards the pieces it already has.

A reader that stops before the end (its client went away, or it gave up waiting) *cancels* the
request: a key next to the stream. The task looks at it before it starts and while it generates;
a cancelled task stops generating (or never starts) and ends the channel without an event.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from core.errors import VidmemError
from core.redis_values import PREFIX, text
from workers import metrics

log = logging.getLogger(__name__)

TTL_S = 600
"""Lifetime of a channel's stream and of its cancel mark (past it, a task still queued would run)."""


@dataclass(frozen=True, slots=True)
class AnswerEvent:
    kind: str  # "piece" | "restart" | "done" | "error"
    data: dict[str, Any]


class AnswerTimeout(VidmemError, TimeoutError):
    code = "answer_timeout"


class AnswerChannel:
    def __init__(self, client: redis.Redis, request_id: str, prefix: str = PREFIX) -> None:
        self.r = client
        self.key = f"{prefix}:answer:{request_id}"
        self.cancel_key = f"{self.key}:cancelled"

    def _add(self, kind: str, data: dict[str, Any]) -> None:
        with self.r.pipeline() as p:
            p.xadd(self.key, {"kind": kind, "data": json.dumps(data)})
            p.expire(self.key, TTL_S)
            p.execute()

    def start(self) -> None:
        self._add("start", {})

    def piece(self, text: str) -> None:
        self._add("piece", {"text": text})

    def done(self, **stats: Any) -> None:
        self._add("done", stats)
        times = {metrics.ANSWER_TTFT_SECONDS: "ttft_s", metrics.ANSWER_SECONDS: "latency_s"}
        events = [metrics.observe(m, stats[k]) for m, k in times.items() if stats.get(k) is not None]
        metrics.record(self.r, metrics.inc(metrics.ANSWERS, result="ok"), *events)

    def error(self, code: str, message: str) -> None:
        self._add("error", {"code": code, "message": message})
        metrics.record(self.r, metrics.inc(metrics.ANSWERS, result=code))

    def cancel(self) -> None:
        """The reader went away: the task must stop generating, or never start."""
        with self.r.pipeline() as p:
            p.set(self.cancel_key, 1, ex=TTL_S)
            p.delete(self.key)
            p.execute()

    def cancelled(self) -> bool:
        return bool(self.r.exists(self.cancel_key))

    def drop(self) -> None:
        """The task ends a cancelled request: no more events, and the stream is removed."""
        self.r.delete(self.key)
        metrics.record(self.r, metrics.inc(metrics.ANSWERS, result="cancelled"))

    def events(self, timeout_s: float, block_ms: int = 500) -> AnswerReader:
        """This request's events, read until ``done`` or ``error`` (see AnswerReader)."""
        return AnswerReader(self, timeout_s, block_ms)


class AnswerReader:
    """One request's events as its client reads them: ``poll`` (one bounded read, for an async caller) or
    iteration (blocking). Raises AnswerTimeout past ``timeout_s`` of silence. A reader that stops before
    ``done`` or ``error`` (a client gone, a timeout, an iteration closed early) must ``cancel``; iteration
    does it by itself."""

    def __init__(self, channel: AnswerChannel, timeout_s: float, block_ms: int = 500) -> None:
        self.channel, self.timeout_s, self.block_ms = channel, timeout_s, block_ms
        self.finished = False
        self._last = "0-0"
        self._started = False
        self._deadline = time.monotonic() + timeout_s

    def poll(self, block_ms: int | None = None) -> list[AnswerEvent]:
        """The events that have arrived, after waiting up to ``block_ms`` for the first (None: not at all).
        [] once finished."""
        if self.finished:
            return []
        r = self.channel.r
        got: Any = r.xread({self.channel.key: self._last}, count=100, block=block_ms)
        if not got:
            if time.monotonic() > self._deadline:
                raise AnswerTimeout(f"no answer within {self.timeout_s:.0f} s")
            return []
        out: list[AnswerEvent] = []
        for msg_id, fields in got[0][1]:
            self._last = msg_id
            f = {text(k): v for k, v in fields.items()}
            kind = text(f["kind"])
            ev = AnswerEvent(kind, json.loads(f["data"]))
            if kind == "start":
                if self._started:  # a redelivered task began again: what came before is void
                    out.append(AnswerEvent("restart", {}))
                self._started = True
            elif kind in ("done", "error"):
                self.finished = True
                r.delete(self.channel.key)
                out.append(ev)
                return out
            else:
                out.append(ev)
        self._deadline = time.monotonic() + self.timeout_s
        return out

    def cancel(self) -> None:
        """Tell the task to stop (a no-op once the answer has finished). With Redis unreachable the mark
        is lost (logged): the task then generates to its end, as nobody can read it anyway."""
        if self.finished:
            return
        self.finished = True
        try:
            self.channel.cancel()
        except redis.RedisError as e:
            log.warning("answer %s not cancelled: Redis unreachable (%s)", self.channel.key, e)

    def __iter__(self) -> Iterator[AnswerEvent]:
        try:
            while not self.finished:
                yield from self.poll(self.block_ms)
        finally:
            self.cancel()
