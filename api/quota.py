"""Quota places of requests in progress (``workers.quotas``): taken before the request's work begins,
renewed while it runs, and given back when it ends, whether it made a stream (the place then already
became the stream, and giving it back does nothing), failed, or its client went away.

``JobPlace`` and ``LivePlace`` are route dependencies: a route that declares one is refused (429
``quota_exceeded``) before its body is read.

Knows nothing about what the request does with its place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from redis.exceptions import RedisError

from api.auth import TenantDep
from workers import quotas
from workers.quotas import Reservation
from workers.runtime import Runtime

log = logging.getLogger(__name__)


@asynccontextmanager
async def hold(rt: Runtime, tenant: str, kind: str) -> AsyncIterator[Reservation]:
    """A place for a new stream of ``kind`` while the block runs (QuotaExceeded if there is none)."""
    held = await run_in_threadpool(quotas.reserve, rt, tenant, kind)
    renewing = asyncio.create_task(_renew(rt, held))
    try:
        yield held
    finally:
        renewing.cancel()
        with anyio.CancelScope(shield=True):  # a cancelled request still gives its place back
            try:
                await run_in_threadpool(quotas.release, rt, held)
            except RedisError as e:  # the place expires by itself after tenant_reservation_ttl_s
                log.warning("quota place %s not released (%s); it expires by itself", held.member, e)


async def _renew(rt: Runtime, held: Reservation) -> None:
    while True:
        await asyncio.sleep(rt.settings.tenant_reservation_ttl_s / 3)
        try:
            await run_in_threadpool(quotas.renew, rt, held)
        except RedisError as e:
            log.warning("quota place %s not renewed (%s)", held.member, e)


async def _job_place(request: Request, tenant: TenantDep) -> AsyncIterator[Reservation]:
    async with hold(request.app.state.runtime, tenant, "upload") as held:
        yield held


async def _live_place(request: Request, tenant: TenantDep) -> AsyncIterator[Reservation]:
    async with hold(request.app.state.runtime, tenant, "live") as held:
        yield held


JobPlace = Annotated[Reservation, Depends(_job_place)]
"""A place among the tenant's videos in progress (``tenant_max_jobs``)."""
LivePlace = Annotated[Reservation, Depends(_live_place)]
"""A place among the tenant's live streams (``tenant_max_live_streams``)."""
