"""An answer's events for an HTTP client, as JSON or as server-sent events; cancelled when the client goes.

The answer's channel is polled without blocking (each read on a pool thread for a moment, then a short
async sleep), so a waiting client holds no thread, and between reads the client's connection is looked at:
once it is gone, or the wait timed out, the request is cancelled and its task stops generating
(``workers.answers``). Knows nothing about models or where the task runs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
from fastapi import Request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.errors import ApiError
from core.errors import STATUS
from workers.answers import AnswerEvent, AnswerReader, AnswerTimeout

POLL_S = 0.05
"""Pause between two reads of the channel that found nothing new (the added latency of a piece)."""


async def events(request: Request, reader: AnswerReader) -> AsyncGenerator[AnswerEvent, None]:
    """The answer's events until ``done`` or ``error``. Ends early when the client disconnects; the request
    is then cancelled, as it is when the wait times out (AnswerTimeout) or this iterator is closed."""
    try:
        while not reader.finished:
            got = await anyio.to_thread.run_sync(reader.poll, None)
            for ev in got:
                yield ev
            if await request.is_disconnected():
                return
            if not got:
                await anyio.sleep(POLL_S)
    finally:
        if not reader.finished:
            with anyio.CancelScope(shield=True):  # also when this task is being cancelled
                await anyio.to_thread.run_sync(reader.cancel)


async def collect(request: Request, reader: AnswerReader) -> dict[str, Any]:
    """The ``done`` event's data (an ``error`` event raises ApiError; so does a client gone: 499)."""
    async with aclosing(events(request, reader)) as evs:
        async for ev in evs:
            if ev.kind == "done":
                return ev.data
            if ev.kind == "error":
                raise ApiError(ev.data["code"], ev.data["message"], STATUS.get(ev.data["code"], 500))
    raise ApiError("client_closed_request", "the client went away before the answer", 499)


async def sse(request: Request, reader: AnswerReader) -> AsyncIterator[str]:
    """The events as SSE lines. A timeout or a Redis outage ends the stream with an ``error`` event (the 200
    is already sent), not with a silent truncation."""
    try:
        async with aclosing(events(request, reader)) as evs:
            async for ev in evs:
                yield f"event: {ev.kind}\ndata: {json.dumps(ev.data)}\n\n"
    except (AnswerTimeout, RedisConnectionError, RedisTimeoutError) as e:
        code = "answer_timeout" if isinstance(e, AnswerTimeout) else "store_unavailable"
        yield f"event: error\ndata: {json.dumps({'code': code, 'message': str(e) or code})}\n\n"
