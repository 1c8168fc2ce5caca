"""The channel an answer travels through: a short-lived Redis stream per request.

The answer task appends a ``start`` event, ``piece`` events as tokens are generated, then
one ``done`` (with the accounting) or ``error`` event; the API reads them (JSON or SSE).
The same channel serves Celery workers and the embedded mode. A task redelivered after its
worker died starts again: the reader turns the second ``start`` into a ``restart`` event,
so a client discards the pieces it already has.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from workers import metrics

TTL_S = 600


@dataclass(frozen=True, slots=True)
class AnswerEvent:
    kind: str  # "piece" | "restart" | "done" | "error"
    data: dict[str, Any]


class AnswerTimeout(TimeoutError):
    code = "answer_timeout"


class AnswerChannel:
    def __init__(self, client: redis.Redis, request_id: str, prefix: str = "vm") -> None:
        self.r = client
        self.key = f"{prefix}:answer:{request_id}"

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

    def events(self, timeout_s: float, block_ms: int = 500) -> Iterator[AnswerEvent]:
        """Yield events until ``done`` or ``error``; raise AnswerTimeout past timeout_s of silence."""
        last = "0-0"
        started = False
        deadline = time.monotonic() + timeout_s
        while True:
            got: Any = self.r.xread({self.key: last}, count=100, block=block_ms)
            if not got:
                if time.monotonic() > deadline:
                    raise AnswerTimeout(f"no answer within {timeout_s:.0f} s")
                continue
            for msg_id, fields in got[0][1]:
                last = msg_id
                f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
                kind = f["kind"].decode() if isinstance(f["kind"], bytes) else f["kind"]
                ev = AnswerEvent(kind, json.loads(f["data"]))
                if kind == "start":
                    if started:  # a redelivered task began again: what came before is void
                        yield AnswerEvent("restart", {})
                    started = True
                    continue
                if kind in ("done", "error"):
                    self.r.delete(self.key)  # before the last yield: a reader may stop there
                    yield ev
                    return
                yield ev
            deadline = time.monotonic() + timeout_s
